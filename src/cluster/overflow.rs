//! Full queues met by broadcasts from other instances.
//!
//! A broadcast that arrives through Redis is delivered to this instance's
//! sockets inside socketioxide (socketioxide-core's `recv_broadcast`); when a
//! socket's queue is full, the error goes no further than a warning in the
//! log (`remote request broadcast handler: [InternalChannelFull, ...]`,
//! target `socketioxide_core::adapter::request`, with the receiving
//! instance's `node_id`). That log event is the only report there is, so ecos
//! listens to it: [`layer`] is part of the log subscriber, reads the event
//! whatever the log level, and hands each full queue to the instance it names,
//! which counts it in `ecos_messages_dropped_total{event="cluster"}` and
//! closes its slow consumers as it does for its own broadcasts.

use std::{
    collections::HashMap,
    fmt::{self, Write as _},
    sync::{Mutex, OnceLock},
};

use tracing::{
    Event, Level, Subscriber,
    field::{Field, Visit},
};
use tracing_subscriber::{
    Layer,
    filter::{Filtered, Targets},
    layer::Context,
};

use crate::{metrics::Metrics, net::SlowConsumers};

/// The log target of socketioxide's report of a remote broadcast that failed.
const TARGET: &str = "socketioxide_core::adapter::request";

/// How that report begins.
const REPORT: &str = "remote request broadcast handler";

/// The error each full queue adds to the report.
const FULL: &str = "InternalChannelFull";

/// The metric label of messages a broadcast from another instance could not queue.
pub const CLUSTER_LABEL: &str = "cluster";

/// An instance's way to act on a full queue.
#[derive(Clone)]
struct Watcher {
    slow_consumers: SlowConsumers,
    metrics: Metrics,
}

/// The instances of this process that listen, by socketioxide server id
/// (one in production; several in a test that starts a cluster in-process).
fn watchers() -> &'static Mutex<HashMap<String, Watcher>> {
    static WATCHERS: OnceLock<Mutex<HashMap<String, Watcher>>> = OnceLock::new();
    WATCHERS.get_or_init(Mutex::default)
}

/// Listens for full queues met by remote broadcasts at the instance whose
/// socketioxide server id is `server_id`, until the guard is dropped.
pub fn watch(server_id: String, slow_consumers: SlowConsumers, metrics: Metrics) -> WatchGuard {
    if let Ok(mut map) = watchers().lock() {
        map.insert(
            server_id.clone(),
            Watcher {
                slow_consumers,
                metrics,
            },
        );
    }
    WatchGuard(server_id)
}

/// Stops an instance's listening when dropped.
#[derive(Debug)]
pub struct WatchGuard(String);

impl Drop for WatchGuard {
    fn drop(&mut self) {
        if let Ok(mut map) = watchers().lock() {
            map.remove(&self.0);
        }
    }
}

/// The subscriber layer that reads socketioxide's report; it sees only that
/// one target, whatever `log.level` lets through to the log.
pub fn layer<S: Subscriber>() -> Filtered<OverflowLayer, Targets, S> {
    OverflowLayer.with_filter(Targets::new().with_target(TARGET, Level::WARN))
}

/// See [`layer`].
#[derive(Debug)]
pub struct OverflowLayer;

impl<S: Subscriber> Layer<S> for OverflowLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut report = Report::default();
        event.record(&mut report);
        if !report.message.starts_with(REPORT) {
            return;
        }
        let full = report.message.matches(FULL).count();
        if full == 0 {
            return;
        }
        let watcher = watchers()
            .lock()
            .ok()
            .and_then(|map| map.get(&report.node_id).cloned());
        let Some(watcher) = watcher else {
            return;
        };
        watcher.metrics.messages_dropped_by(CLUSTER_LABEL, full);
        // Out of socketioxide's delivery, which is what logged this.
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(async move {
                    watcher.slow_consumers.on_overflow(full);
                });
            }
            Err(_) => {
                watcher.slow_consumers.on_overflow(full);
            }
        }
    }
}

/// The fields of socketioxide's report.
#[derive(Default)]
struct Report {
    message: String,
    node_id: String,
}

impl Visit for Report {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        match field.name() {
            "message" => {
                let _ = write!(self.message, "{value:?}");
            }
            "node_id" => {
                let _ = write!(self.node_id, "{value:?}");
            }
            _ => {}
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.message.push_str(value),
            "node_id" => self.node_id.push_str(value),
            _ => {}
        }
    }
}
