//! The `ecos_redis_*` and `ecos_cluster_*` series, registered in the app's registry.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntGauge};

use crate::metrics::{Metrics, MetricsError};

/// Adapter metrics, registered in the app's registry.
#[derive(Clone)]
pub(super) struct RedisMetrics {
    /// 1 while both connections are up and subscribed.
    pub(super) up: IntGauge,
    /// Connections re-established after a loss.
    pub(super) reconnects_total: IntCounter,
    /// Connection attempts that failed.
    pub(super) connect_failures_total: IntCounter,
    /// Messages published to the cluster.
    pub(super) published_total: IntCounter,
    /// Messages that could not be published (Redis down or slow).
    pub(super) publish_failures_total: IntCounter,
    /// Messages received from the cluster.
    pub(super) received_total: IntCounter,
    /// Round trip of the health PING on the command connection.
    pub(super) ping_seconds: Histogram,
    /// Instances seen in the last stats round.
    pub(super) cluster_instances: IntGauge,
    /// Sockets connected across the cluster, as of the last stats round.
    pub(super) cluster_sockets: IntGauge,
}

impl RedisMetrics {
    pub(super) fn new(metrics: &Metrics) -> Result<Self, MetricsError> {
        let m = Self {
            up: IntGauge::new(
                "redis_up",
                "1 while the Redis connections are up and subscribed.",
            )?,
            reconnects_total: IntCounter::new(
                "redis_reconnects_total",
                "Redis connections re-established after a loss.",
            )?,
            connect_failures_total: IntCounter::new(
                "redis_connect_failures_total",
                "Redis connection attempts that failed.",
            )?,
            published_total: IntCounter::new(
                "redis_published_total",
                "Messages published to the cluster.",
            )?,
            publish_failures_total: IntCounter::new(
                "redis_publish_failures_total",
                "Messages that could not be published to the cluster (Redis down or slow).",
            )?,
            received_total: IntCounter::new(
                "redis_received_total",
                "Messages received from the cluster.",
            )?,
            ping_seconds: Histogram::with_opts(
                HistogramOpts::new("redis_ping_seconds", "Round trip of the Redis health PING.")
                    .buckets(vec![
                        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                    ]),
            )?,
            cluster_instances: IntGauge::new(
                "cluster_instances",
                "Instances seen in the last cluster stats round.",
            )?,
            cluster_sockets: IntGauge::new(
                "cluster_connected_sockets",
                "Sockets connected across the cluster, as of the last stats round.",
            )?,
        };
        metrics.register(Box::new(m.up.clone()))?;
        metrics.register(Box::new(m.reconnects_total.clone()))?;
        metrics.register(Box::new(m.connect_failures_total.clone()))?;
        metrics.register(Box::new(m.published_total.clone()))?;
        metrics.register(Box::new(m.publish_failures_total.clone()))?;
        metrics.register(Box::new(m.received_total.clone()))?;
        metrics.register(Box::new(m.ping_seconds.clone()))?;
        metrics.register(Box::new(m.cluster_instances.clone()))?;
        metrics.register(Box::new(m.cluster_sockets.clone()))?;
        Ok(m)
    }
}
