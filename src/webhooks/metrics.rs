//! What the webhooks count: requests by type and outcome, their duration,
//! retries, the disconnect queue, and what was dropped.

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
};

use super::{Hook, Outcome};
use crate::metrics::{Metrics, MetricsError};

/// Why a disconnect notification was given up, as its `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// The queue was full when the socket disconnected.
    QueueFull,
    /// Every attempt within `webhooks.retry_for_secs` failed.
    RetriesExhausted,
    /// ecos stopped before it could be delivered.
    Shutdown,
}

impl Dropped {
    const ALL: [Dropped; 3] = [
        Dropped::QueueFull,
        Dropped::RetriesExhausted,
        Dropped::Shutdown,
    ];

    fn label(self) -> &'static str {
        match self {
            Dropped::QueueFull => "queue_full",
            Dropped::RetriesExhausted => "retries_exhausted",
            Dropped::Shutdown => "shutdown",
        }
    }
}

/// The webhook metrics, registered in the app's registry.
#[derive(Clone)]
pub struct WebhookMetrics {
    requests: IntCounterVec,
    duration: HistogramVec,
    retries: IntCounter,
    /// Disconnect notifications waiting or being retried.
    pub queue_depth: IntGauge,
    dropped: IntCounterVec,
}

impl WebhookMetrics {
    /// Creates and registers the metrics, with every label pair at zero.
    pub fn new(metrics: &Metrics) -> Result<Self, MetricsError> {
        let requests = IntCounterVec::new(
            Opts::new(
                "webhook_requests_total",
                "Webhook requests to the backend, by hook and outcome (ok, denied, error, timeout, unavailable).",
            ),
            &["type", "outcome"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "webhook_request_duration_seconds",
                "Time from a webhook request's start (waiting for a free slot included) to the backend's answer.",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                60.0,
            ]),
            &["type"],
        )?;
        let retries = IntCounter::new(
            "webhook_retries_total",
            "Disconnect notifications sent again after a failed attempt.",
        )?;
        let queue_depth = IntGauge::new(
            "webhook_queue_depth",
            "Disconnect notifications waiting to be delivered or retried.",
        )?;
        let dropped = IntCounterVec::new(
            Opts::new(
                "webhook_dropped_total",
                "Disconnect notifications given up, by reason (queue_full, retries_exhausted, shutdown).",
            ),
            &["reason"],
        )?;
        for hook in Hook::ALL {
            duration.with_label_values(&[hook.name()]);
            for outcome in Outcome::ALL {
                requests.with_label_values(&[hook.name(), outcome.label()]);
            }
        }
        for reason in Dropped::ALL {
            dropped.with_label_values(&[reason.label()]);
        }
        metrics.register(Box::new(requests.clone()))?;
        metrics.register(Box::new(duration.clone()))?;
        metrics.register(Box::new(retries.clone()))?;
        metrics.register(Box::new(queue_depth.clone()))?;
        metrics.register(Box::new(dropped.clone()))?;
        Ok(Self {
            requests,
            duration,
            retries,
            queue_depth,
            dropped,
        })
    }

    /// Counts one request's outcome.
    pub fn request(&self, hook: Hook, outcome: Outcome) {
        self.requests
            .with_label_values(&[hook.name(), outcome.label()])
            .inc();
    }

    /// The duration histogram of `hook`.
    pub fn duration(&self, hook: Hook) -> Histogram {
        self.duration.with_label_values(&[hook.name()])
    }

    /// Counts a retry.
    pub fn retried(&self) {
        self.retries.inc();
    }

    /// Counts `n` notifications given up for `reason`.
    pub fn dropped(&self, reason: Dropped, n: u64) {
        self.dropped.with_label_values(&[reason.label()]).inc_by(n);
    }
}
