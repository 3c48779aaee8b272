//! The [`Driver`] socketioxide-redis publishes and subscribes through.
//!
//! It never talks to Redis directly for subscriptions: it records what is
//! wanted and asks the supervisor, which owns the connections and replays
//! the registry on every reconnect.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{SystemTime, UNIX_EPOCH},
};

use redis::aio::MultiplexedConnection;
use socketioxide_redis::drivers::{ChanItem, Driver, MessageStream};
use tokio::sync::{mpsc, oneshot};

use super::{ClusterStats, metrics::RedisMetrics};
use crate::config::RedisSettings;

/// Errors the driver reports to socketioxide-redis. Publishing never fails
/// (see the module docs); only bookkeeping can.
#[derive(Debug, thiserror::Error)]
#[error("redis driver: {0}")]
pub struct DriverError(String);

/// What the supervisor is asked to do on the live pub/sub connection.
pub(super) enum Control {
    /// Subscribe to a channel; answer once Redis confirmed it.
    Subscribe(String, Option<oneshot::Sender<()>>),
    /// Unsubscribe from a channel.
    Unsubscribe(String),
    /// A command failed in a way that suggests the connection is gone.
    Reconnect,
    /// The app is stopping: leave Redis.
    Stop,
}

/// State shared by the driver's clones and its supervisor.
pub(crate) struct Inner {
    /// Client built from the URL; cheap to reuse for every reconnect.
    pub(super) client: redis::Client,
    /// The URL with its password masked, for logs.
    pub(super) shown_url: String,
    /// Channel -> where its messages go. The registry is the truth about
    /// what to subscribe to; the supervisor replays it on every connect.
    pub(super) subscriptions: Mutex<HashMap<String, mpsc::Sender<ChanItem>>>,
    /// The command connection while the link is up (both connections up and
    /// subscribed); `None` is what "down" means everywhere.
    pub(super) commands: RwLock<Option<MultiplexedConnection>>,
    /// Requests to the supervisor.
    pub(super) control: mpsc::UnboundedSender<Control>,
    /// Why the link is down, for `/readyz`.
    pub(super) last_error: Mutex<String>,
    /// Milliseconds since the epoch of the last publish-failure warning.
    pub(super) last_publish_warning_ms: AtomicU64,
    /// Publish failures not yet mentioned in a warning.
    pub(super) unreported_publish_failures: AtomicU64,
    /// Latest cluster totals, `None` before the first round.
    pub(super) stats: Mutex<Option<ClusterStats>>,
    /// Set when the app leaves the cluster, so stats stop being reported.
    pub(super) stopped: AtomicBool,
    /// Timeouts and intervals.
    pub(super) settings: RedisSettings,
    /// Adapter metrics.
    pub(super) metrics: RedisMetrics,
}

/// A [`Driver`] for socketioxide-redis that reconnects and resubscribes by itself.
#[derive(Clone)]
pub struct ResilientDriver {
    /// Shared state; the supervisor holds only a weak reference.
    pub(super) inner: Arc<Inner>,
}

impl Inner {
    pub(super) fn set_down(&self, reason: String) {
        self.metrics.up.set(0);
        *self.commands.write().unwrap_or_else(|p| p.into_inner()) = None;
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = reason;
    }

    pub(super) fn set_up(&self, commands: MultiplexedConnection) {
        *self.commands.write().unwrap_or_else(|p| p.into_inner()) = Some(commands);
        self.metrics.up.set(1);
    }

    pub(super) fn is_up(&self) -> bool {
        self.commands
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    pub(super) fn command_connection(&self) -> Option<MultiplexedConnection> {
        self.commands
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Counts a lost publish and warns at most every five seconds.
    fn publish_failed(&self, reason: &str) {
        self.metrics.publish_failures_total.inc();
        self.unreported_publish_failures
            .fetch_add(1, Ordering::Relaxed);
        let now = now_ms();
        let last = self.last_publish_warning_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= 5_000
            && self
                .last_publish_warning_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let lost = self.unreported_publish_failures.swap(0, Ordering::Relaxed);
            tracing::warn!(
                lost,
                reason,
                "cluster publish failed; local sockets still got the message"
            );
        }
    }

    pub(super) fn stats(&self) -> Option<ClusterStats> {
        *self.stats.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn set_stats(&self, stats: ClusterStats) {
        *self.stats.lock().unwrap_or_else(|p| p.into_inner()) = Some(stats);
    }

    /// `Ok` while the link is up, else why it is down, for `/readyz`.
    pub(super) fn link(&self) -> Result<(), String> {
        if self.is_up() {
            return Ok(());
        }
        let reason = self
            .last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        Err(format!("redis unavailable at {}: {reason}", self.shown_url))
    }
}

pub(super) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

impl Driver for ResilientDriver {
    type Error = DriverError;

    async fn publish(&self, chan: String, val: Vec<u8>) -> Result<(), Self::Error> {
        let inner = &self.inner;
        let Some(mut conn) = inner.command_connection() else {
            inner.publish_failed("redis is not connected");
            return Ok(());
        };
        let mut command = redis::cmd("PUBLISH");
        command.arg(chan).arg(val);
        let publish = command.query_async::<i64>(&mut conn);
        match tokio::time::timeout(inner.settings.command_timeout, publish).await {
            Ok(Ok(_)) => inner.metrics.published_total.inc(),
            Ok(Err(error)) => {
                inner.publish_failed(&error.to_string());
                if error.is_io_error()
                    || error.is_connection_dropped()
                    || error.is_unrecoverable_error()
                {
                    let _ = inner.control.send(Control::Reconnect);
                }
            }
            Err(_) => inner.publish_failed("publish timed out"),
        }
        Ok(())
    }

    async fn subscribe(
        &self,
        chan: String,
        size: usize,
    ) -> Result<MessageStream<ChanItem>, Self::Error> {
        let (tx, rx) = mpsc::channel(size.max(1));
        self.inner
            .subscriptions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(chan.clone(), tx);
        if self.inner.is_up() {
            // Wait (bounded) for Redis to confirm, so a broadcast right after
            // start-up is not missed; if the link is down the supervisor
            // subscribes on reconnect.
            let (done, confirmed) = oneshot::channel();
            if self
                .inner
                .control
                .send(Control::Subscribe(chan, Some(done)))
                .is_ok()
            {
                let _ = tokio::time::timeout(self.inner.settings.command_timeout, confirmed).await;
            }
        }
        Ok(MessageStream::new(rx))
    }

    async fn unsubscribe(&self, chan: String) -> Result<(), Self::Error> {
        self.inner
            .subscriptions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&chan);
        let _ = self.inner.control.send(Control::Unsubscribe(chan));
        Ok(())
    }

    /// Instances subscribed to `chan`; just this one while Redis is down, so
    /// cluster requests do not wait for answers that cannot come.
    async fn num_serv(&self, chan: &str) -> Result<u16, Self::Error> {
        let Some(mut conn) = self.inner.command_connection() else {
            return Ok(1);
        };
        let mut command = redis::cmd("PUBSUB");
        command.arg("NUMSUB").arg(chan);
        let query = command.query_async::<(String, u16)>(&mut conn);
        match tokio::time::timeout(self.inner.settings.command_timeout, query).await {
            Ok(Ok((_, count))) => Ok(count.max(1)),
            Ok(Err(error)) => {
                tracing::debug!(%error, "PUBSUB NUMSUB failed; assuming this instance alone");
                Ok(1)
            }
            Err(_) => Ok(1),
        }
    }
}
