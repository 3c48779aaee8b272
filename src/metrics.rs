//! Prometheus metrics: one registry per running app, exposed at `/metrics`.
//!
//! Every series carries a constant `node` label with the instance id: behind a
//! router `/metrics` reaches a random instance, and Prometheus reserves the
//! `instance` label for the scrape target.

use std::collections::HashMap;

use crate::realtime::events::{ClientEvent, OTHER_EVENT_LABEL};

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Why the metrics could not be registered.
#[derive(Debug, thiserror::Error)]
#[error("cannot register metric: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

/// All metrics ecos exports, registered in their own registry.
#[derive(Clone)]
pub struct Metrics {
    /// The registry rendered by `/metrics`.
    registry: Registry,
    /// Sockets connected to this instance right now.
    pub connected_sockets: IntGauge,
    /// Sockets that completed the namespace handshake.
    pub connections_total: IntCounter,
    /// Sockets that left, by reason (bounded set, see `realtime::reason_label`).
    pub disconnections_total: IntCounterVec,
    /// Client events received, by event name (known events plus `other`).
    events_received_total: IntCounterVec,
    /// Broadcasts sent by this instance, by event.
    broadcasts_total: IntCounterVec,
    /// Broadcasts that could not be sent at all (encoding or adapter error), by event.
    broadcast_failures_total: IntCounterVec,
    /// Messages not queued for a socket because its buffer was full, by event.
    messages_dropped_total: IntCounterVec,
    /// Client events refused by the per-socket rate limit, by event.
    rate_limited_total: IntCounterVec,
    /// Client events refused because the socket's grants do not allow them, by event.
    forbidden_total: IntCounterVec,
    /// Broadcasts refused while the instance sheds load, by event.
    overloaded_total: IntCounterVec,
    /// Handshakes refused because the instance is draining.
    pub refused_connections_total: IntCounter,
    /// HTTP requests, by route template, method and status.
    pub http_requests_total: IntCounterVec,
    /// HTTP request latency, by route template and method.
    pub http_request_duration_seconds: HistogramVec,
    /// TCP connections open right now (upgraded WebSockets included).
    pub tcp_connections_open: IntGauge,
    /// TCP connections refused, by reason (`max_connections`).
    pub tcp_connections_refused_total: IntCounterVec,
    /// TCP connections the connection layer closed, by reason
    /// (`header_timeout`, `keep_alive_timeout`, `header_too_large`).
    pub tcp_connections_closed_total: IntCounterVec,
    /// Failed `accept` calls, by reason (`fd_limit`, `other`).
    pub tcp_accept_errors_total: IntCounterVec,
}

/// The `reason` of `ecos_tcp_connections_refused_total`: over `limits.max_connections`.
pub const REFUSED_MAX_CONNECTIONS: &str = "max_connections";
/// The `reason`s of `ecos_tcp_connections_closed_total`.
pub const CLOSED_REASONS: [&str; 3] = ["header_timeout", "keep_alive_timeout", "header_too_large"];
/// The `reason`s of `ecos_tcp_accept_errors_total`: out of file descriptors, or anything else.
pub const ACCEPT_ERROR_REASONS: [&str; 2] = ["fd_limit", "other"];

impl Metrics {
    /// Creates and registers every metric, labelled with this instance's `node` id.
    pub fn new(node: &str, version: &str) -> Result<Self, MetricsError> {
        let labels = HashMap::from([("node".to_owned(), node.to_owned())]);
        let registry = Registry::new_custom(Some("ecos".to_owned()), Some(labels))?;

        let connected_sockets =
            IntGauge::new("connected_sockets", "Sockets connected to this instance.")?;
        let connections_total = IntCounter::new(
            "connections_total",
            "Sockets that connected to a namespace.",
        )?;
        let disconnections_total = IntCounterVec::new(
            Opts::new(
                "disconnections_total",
                "Sockets that disconnected, by reason.",
            ),
            &["reason"],
        )?;
        let events_received_total = IntCounterVec::new(
            Opts::new(
                "events_received_total",
                "Client events received, by event (unknown events as `other`).",
            ),
            &["event"],
        )?;
        let broadcasts_total = IntCounterVec::new(
            Opts::new("broadcasts_total", "Broadcasts sent, by event."),
            &["event"],
        )?;
        let broadcast_failures_total = IntCounterVec::new(
            Opts::new(
                "broadcast_failures_total",
                "Broadcasts that could not be sent at all (encoding or adapter error), by event.",
            ),
            &["event"],
        )?;
        let messages_dropped_total = IntCounterVec::new(
            Opts::new(
                "messages_dropped_total",
                "Messages not queued for a socket because its buffer was full (the socket is closed as a slow consumer), by event.",
            ),
            &["event"],
        )?;
        let rate_limited_total = IntCounterVec::new(
            Opts::new(
                "rate_limited_total",
                "Client events refused by the per-socket rate limit, by event (unknown events as `other`).",
            ),
            &["event"],
        )?;
        let forbidden_total = IntCounterVec::new(
            Opts::new(
                "forbidden_total",
                "Client events refused because the socket's grants (its token's rooms claim, the reserved user: rooms) do not allow them, by event.",
            ),
            &["event"],
        )?;
        let overloaded_total = IntCounterVec::new(
            Opts::new(
                "overloaded_total",
                "Broadcasts refused (acked `overloaded`) because a broadcast found a full outgoing queue within `limits.overload_shed_secs`, by event.",
            ),
            &["event"],
        )?;
        let refused_connections_total = IntCounter::new(
            "refused_connections_total",
            "New Engine.IO sessions refused because the instance is draining.",
        )?;
        let http_requests_total = IntCounterVec::new(
            Opts::new(
                "http_requests_total",
                "HTTP requests, by route, method and status.",
            ),
            &["route", "method", "status"],
        )?;
        let http_request_duration_seconds = HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "HTTP request latency, by route and method.",
            )
            .buckets(vec![
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            &["route", "method"],
        )?;
        let tcp_connections_open = IntGauge::new(
            "tcp_connections_open",
            "TCP connections open, upgraded WebSockets included.",
        )?;
        let tcp_connections_refused_total = IntCounterVec::new(
            Opts::new(
                "tcp_connections_refused_total",
                "TCP connections refused (503 or closed unanswered), by reason.",
            ),
            &["reason"],
        )?;
        let tcp_connections_closed_total = IntCounterVec::new(
            Opts::new(
                "tcp_connections_closed_total",
                "TCP connections closed by the connection limits, by reason.",
            ),
            &["reason"],
        )?;
        let tcp_accept_errors_total = IntCounterVec::new(
            Opts::new(
                "tcp_accept_errors_total",
                "Failed accepts of a new TCP connection, by reason.",
            ),
            &["reason"],
        )?;
        let build_info = IntGaugeVec::new(
            Opts::new("build_info", "Always 1; the labels carry the version."),
            &["version"],
        )?;
        build_info.with_label_values(&[version]).set(1);

        registry.register(Box::new(connected_sockets.clone()))?;
        registry.register(Box::new(connections_total.clone()))?;
        registry.register(Box::new(disconnections_total.clone()))?;
        registry.register(Box::new(events_received_total.clone()))?;
        registry.register(Box::new(broadcasts_total.clone()))?;
        registry.register(Box::new(broadcast_failures_total.clone()))?;
        registry.register(Box::new(messages_dropped_total.clone()))?;
        registry.register(Box::new(rate_limited_total.clone()))?;
        registry.register(Box::new(forbidden_total.clone()))?;
        registry.register(Box::new(overloaded_total.clone()))?;
        registry.register(Box::new(refused_connections_total.clone()))?;
        registry.register(Box::new(http_requests_total.clone()))?;
        registry.register(Box::new(http_request_duration_seconds.clone()))?;
        registry.register(Box::new(tcp_connections_open.clone()))?;
        registry.register(Box::new(tcp_connections_refused_total.clone()))?;
        registry.register(Box::new(tcp_connections_closed_total.clone()))?;
        registry.register(Box::new(tcp_accept_errors_total.clone()))?;
        registry.register(Box::new(build_info.clone()))?;

        // Pre-create the bounded label sets so dashboards see zeros, not gaps.
        for label in ClientEvent::ALL
            .iter()
            .map(|e| e.name())
            .chain([OTHER_EVENT_LABEL])
        {
            events_received_total.with_label_values(&[label]);
            rate_limited_total.with_label_values(&[label]);
        }
        for event in ClientEvent::ALL {
            forbidden_total.with_label_values(&[event.name()]);
        }
        for event in [ClientEvent::Message, ClientEvent::RoomMessage] {
            overloaded_total.with_label_values(&[event.name()]);
        }
        tcp_connections_refused_total.with_label_values(&[REFUSED_MAX_CONNECTIONS]);
        for reason in CLOSED_REASONS {
            tcp_connections_closed_total.with_label_values(&[reason]);
        }
        for reason in ACCEPT_ERROR_REASONS {
            tcp_accept_errors_total.with_label_values(&[reason]);
        }

        Ok(Self {
            registry,
            connected_sockets,
            connections_total,
            disconnections_total,
            events_received_total,
            broadcasts_total,
            broadcast_failures_total,
            messages_dropped_total,
            rate_limited_total,
            forbidden_total,
            overloaded_total,
            refused_connections_total,
            http_requests_total,
            http_request_duration_seconds,
            tcp_connections_open,
            tcp_connections_refused_total,
            tcp_connections_closed_total,
            tcp_accept_errors_total,
        })
    }

    /// Counts one received client event (`None`: an unknown event, as `other`).
    pub fn event_received(&self, event: Option<ClientEvent>) {
        let label = event.map_or(OTHER_EVENT_LABEL, ClientEvent::name);
        self.events_received_total.with_label_values(&[label]).inc();
    }

    /// Counts one broadcast sent by this instance.
    pub fn broadcast_sent(&self, event: ClientEvent) {
        self.broadcasts_total
            .with_label_values(&[event.name()])
            .inc();
    }

    /// Counts one broadcast that could not be sent at all.
    pub fn broadcast_failed(&self, event: ClientEvent) {
        self.broadcast_failures_total
            .with_label_values(&[event.name()])
            .inc();
    }

    /// Counts one event refused by the rate limit (`None`: an unknown event).
    pub fn rate_limited(&self, event: Option<ClientEvent>) {
        let label = event.map_or(OTHER_EVENT_LABEL, ClientEvent::name);
        self.rate_limited_total.with_label_values(&[label]).inc();
    }

    /// Counts one broadcast refused while the instance sheds load.
    pub fn overloaded(&self, event: ClientEvent) {
        self.overloaded_total
            .with_label_values(&[event.name()])
            .inc();
    }

    /// Counts one event the socket's grants refused.
    pub fn forbidden(&self, event: ClientEvent) {
        self.forbidden_total
            .with_label_values(&[event.name()])
            .inc();
    }

    /// Counts messages that full queues refused.
    pub fn messages_dropped(&self, event: ClientEvent, count: usize) {
        self.messages_dropped_by(event.name(), count);
    }

    /// Counts messages that full queues refused, under a label of the
    /// caller's (an event name, or `cluster` for other instances' broadcasts).
    pub fn messages_dropped_by(&self, label: &'static str, count: usize) {
        self.messages_dropped_total
            .with_label_values(&[label])
            .inc_by(count as u64);
    }

    /// Renders every metric in the Prometheus text format.
    pub fn render(&self) -> Result<String, MetricsError> {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf)?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }

    /// Registers an extra collector (e.g. the cluster adapter's) in this registry.
    pub fn register(
        &self,
        collector: Box<dyn prometheus::core::Collector>,
    ) -> Result<(), MetricsError> {
        Ok(self.registry.register(collector)?)
    }
}
