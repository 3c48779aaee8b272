//! The cluster adapter: socketioxide's Redis adapter on a driver that survives
//! Redis going away.
//!
//! socketioxide-redis leaves the connection to a [`Driver`]. Its stock driver
//! connects once: when Redis drops, its subscriptions stay dead until the
//! process restarts, and a failed publish makes `broadcast()` return before
//! the local sockets are served. [`ResilientDriver`] instead:
//!
//! - keeps the wanted subscriptions in a registry and lets a supervisor task
//!   own the connections: it connects with capped, jittered backoff,
//!   subscribes to every registered channel, pings both connections every
//!   second, and on any failure drops them and starts over;
//! - never fails a publish: a publish that cannot reach Redis is counted,
//!   logged (rate-limited) and reported as sent, so the adapter goes on to
//!   deliver to the local sockets;
//! - answers `subscribe` at once, so ecos starts and serves local clients
//!   while Redis is unreachable.
//!
//! Files:
//!
//! - [`driver`]: the [`Driver`](socketioxide_redis::drivers::Driver) socketioxide-redis calls;
//! - `supervisor`: owns the connections, reconnects with backoff, pings;
//! - `stats`: the cluster-wide socket count `/readyz` reports;
//! - `metrics`: the `ecos_redis_*` and `ecos_cluster_*` series;
//! - [`emitter`]: the listener for socket.io's own Redis format, so that
//!   `@socket.io/redis-emitter` reaches ecos's clients;
//! - [`overflow`]: full queues met by broadcasts from other instances, which
//!   socketioxide reports only in its log.
//!
//! Each instance holds two Redis connections, whatever its client count: one
//! in pub/sub mode and one multiplexed connection for commands; a third, in
//! pub/sub mode, while the emitter listener runs (`emitter.enabled`).

pub mod driver;
pub mod emitter;
mod metrics;
pub mod overflow;
mod stats;
mod supervisor;

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

use socketioxide::{
    SocketIo,
    adapter::{Adapter, Emitter},
};
use socketioxide_redis::{CustomRedisAdapter, RedisAdapterConfig, RedisAdapterCtr};
use tokio::sync::mpsc;

use crate::{
    config::{RedisSettings, SocketIoParser, mask},
    metrics::{Metrics, MetricsError},
    net::SlowConsumers,
};

pub use driver::ResilientDriver;
pub use emitter::EmitterListener;
pub use stats::ClusterStats;

use driver::{Control, Inner};
use metrics::RedisMetrics;

/// The Redis adapter type the app runs with when `REDIS_URL` is set.
pub type ClusterAdapter = CustomRedisAdapter<Emitter, ResilientDriver>;

/// Why the cluster adapter could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The URL was accepted by the config check but the client refused it.
    #[error("invalid `redis.url` {url}: {source}")]
    Url {
        /// The URL, password masked.
        url: String,
        /// What the client said.
        source: redis::RedisError,
    },
    /// The adapter's metrics could not be registered.
    #[error(transparent)]
    Metrics(#[from] MetricsError),
}

/// What the app needs from the cluster: the adapter's constructor state, its
/// health, and a way to leave Redis on shutdown.
pub struct Cluster {
    /// The driver, shared with the adapter.
    driver: ResilientDriver,
    /// Adapter settings (prefix, request timeout).
    config: RedisAdapterConfig,
    /// Redis hash holding every node's socket count.
    stats_key: String,
    /// This instance's id in that hash.
    node: String,
    /// The emitter listener, when `emitter.enabled`.
    emitter: Option<EmitterListener>,
    /// Acts on full queues met by other instances' broadcasts, once watching.
    overflow: Option<overflow::WatchGuard>,
}

impl Cluster {
    /// Creates the driver and starts its supervisor; does not wait for Redis.
    ///
    /// `local_sockets` reads this instance's socket count for the cluster stats.
    pub fn start(
        settings: &RedisSettings,
        url: &str,
        node: &str,
        metrics: &Metrics,
        local_sockets: impl Fn() -> u64 + Send + Sync + 'static,
    ) -> Result<Self, ClusterError> {
        // Installed by `Application::build` too; here for callers that set up a cluster on its own.
        crate::app::install_crypto_provider();
        let client =
            redis::Client::open(connection_url(url, settings.tls_insecure)).map_err(|source| {
                ClusterError::Url {
                    url: mask(url),
                    source,
                }
            })?;
        let (control, control_rx) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            client,
            shown_url: mask(url),
            subscriptions: Mutex::new(HashMap::new()),
            commands: RwLock::new(None),
            control,
            last_error: Mutex::new("not connected yet".to_owned()),
            last_publish_warning_ms: AtomicU64::new(0),
            unreported_publish_failures: AtomicU64::new(0),
            stats: Mutex::new(None),
            stopped: AtomicBool::new(false),
            settings: settings.clone(),
            metrics: RedisMetrics::new(metrics)?,
        });
        let stats_key = format!("{}#stats", settings.prefix);
        tokio::spawn(supervisor::supervise(Arc::downgrade(&inner), control_rx));
        tokio::spawn(stats::report_stats(
            Arc::downgrade(&inner),
            stats_key.clone(),
            node.to_owned(),
            local_sockets,
        ));
        let config = RedisAdapterConfig::new()
            .with_prefix(settings.prefix.clone())
            .with_request_timeout(settings.request_timeout);
        Ok(Self {
            driver: ResilientDriver { inner },
            config,
            stats_key,
            node: node.to_owned(),
            emitter: None,
            overflow: None,
        })
    }

    /// Starts listening to socket.io's own Redis format under `prefix` (the
    /// emitter's `key`), on a connection of its own, applying what arrives to
    /// the local sockets of `io`. Does not wait for Redis.
    pub fn listen_to_emitter<A: Adapter>(
        &mut self,
        prefix: &str,
        io: SocketIo<A>,
        parser: SocketIoParser,
        slow_consumers: SlowConsumers,
        metrics: &Metrics,
    ) -> Result<(), ClusterError> {
        let inner = &self.driver.inner;
        let listener = EmitterListener::start(
            inner.client.clone(),
            inner.shown_url.clone(),
            inner.settings.clone(),
            prefix,
            emitter::Applier {
                io,
                parser,
                slow_consumers,
            },
            metrics,
        )?;
        self.emitter = Some(listener);
        Ok(())
    }

    /// Counts the messages other instances' broadcasts could not queue here
    /// and closes the slow consumers behind them; `server_id` is socketioxide's
    /// id of this instance (`SocketIoConfig::server_id`).
    pub fn watch_overflows(
        &mut self,
        server_id: String,
        slow_consumers: SlowConsumers,
        metrics: &Metrics,
    ) {
        self.overflow = Some(overflow::watch(server_id, slow_consumers, metrics.clone()));
    }

    /// The constructor state socketioxide's builder takes for the adapter.
    pub fn adapter_state(&self) -> RedisAdapterCtr<ResilientDriver> {
        RedisAdapterCtr::new_with_driver(self.driver.clone(), self.config.clone())
    }

    /// `Ok` while the Redis link is up, else why it is down (password masked).
    pub fn link(&self) -> Result<(), String> {
        self.driver.inner.link()
    }

    /// Cluster-wide totals from the last stats round, if one has completed.
    pub fn stats(&self) -> Option<ClusterStats> {
        self.driver.inner.stats()
    }

    /// Leaves the cluster: stops the emitter listener, removes this node from
    /// the stats, stops the supervisor and closes the Redis connections.
    pub async fn stop(&self) {
        if let Some(emitter) = &self.emitter {
            emitter.stop().await;
        }
        let inner = &self.driver.inner;
        inner.stopped.store(true, Ordering::SeqCst);
        stats::stats_round(inner, &self.stats_key, &self.node, None).await;
        let _ = inner.control.send(Control::Stop);
    }
}

/// `rediss://` URLs get the client's `#insecure` marker when verification is off.
fn connection_url(url: &str, tls_insecure: bool) -> String {
    if tls_insecure && url.starts_with("rediss://") && !url.contains('#') {
        format!("{url}#insecure")
    } else {
        url.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insecure_marker_is_added_only_to_tls_urls_without_a_fragment() {
        assert_eq!(
            connection_url("rediss://h:1", true),
            "rediss://h:1#insecure"
        );
        assert_eq!(connection_url("rediss://h:1", false), "rediss://h:1");
        assert_eq!(connection_url("redis://h:1", true), "redis://h:1");
        assert_eq!(
            connection_url("rediss://h:1#insecure", true),
            "rediss://h:1#insecure"
        );
    }
}
