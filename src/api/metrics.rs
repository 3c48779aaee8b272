//! `ecos_api_requests_total{route,status}` and
//! `ecos_api_request_duration_seconds{route}`, registered in the app's
//! registry when the API is on.

use std::time::Duration;

use axum::http::StatusCode;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts};

use crate::metrics::{Metrics, MetricsError};

/// The server API's metrics. `route` is one of [`super::ROUTES`] or
/// `unmatched`, so the label set stays bounded whatever paths are asked for.
#[derive(Clone)]
pub struct ApiMetrics {
    /// Calls, by route and status (refused ones included).
    requests_total: IntCounterVec,
    /// Call latency, by route.
    request_duration_seconds: HistogramVec,
}

impl ApiMetrics {
    /// Creates the series and registers them in the app's registry.
    pub fn new(metrics: &Metrics) -> Result<Self, MetricsError> {
        let requests_total = IntCounterVec::new(
            Opts::new(
                "api_requests_total",
                "Server API calls, by route and status (refused calls included).",
            ),
            &["route", "status"],
        )?;
        let request_duration_seconds = HistogramVec::new(
            HistogramOpts::new(
                "api_request_duration_seconds",
                "Server API call latency, by route.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ]),
            &["route"],
        )?;
        metrics.register(Box::new(requests_total.clone()))?;
        metrics.register(Box::new(request_duration_seconds.clone()))?;
        Ok(Self {
            requests_total,
            request_duration_seconds,
        })
    }

    /// Counts and times one call.
    pub fn observe(&self, route: &str, status: StatusCode, elapsed: Duration) {
        self.requests_total
            .with_label_values(&[route, status.as_str()])
            .inc();
        self.request_duration_seconds
            .with_label_values(&[route])
            .observe(elapsed.as_secs_f64());
    }
}
