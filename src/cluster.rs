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
//! Each instance holds two Redis connections, whatever its client count: one
//! in pub/sub mode and one multiplexed connection for commands.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, RwLock, Weak,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use futures_util::StreamExt;
use prometheus::{Histogram, HistogramOpts, IntCounter, IntGauge};
use redis::aio::{MultiplexedConnection, PubSubSink, PubSubStream};
use socketioxide::adapter::Emitter;
use socketioxide_redis::{
    CustomRedisAdapter, RedisAdapterConfig, RedisAdapterCtr,
    drivers::{ChanItem, Driver, MessageStream},
};
use tokio::sync::{mpsc, oneshot};

use crate::{
    config::{RedisSettings, mask},
    http::AdapterHealth,
    metrics::{Metrics, MetricsError},
};

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

/// Errors the driver reports to socketioxide-redis. Publishing never fails
/// (see the module docs); only bookkeeping can.
#[derive(Debug, thiserror::Error)]
#[error("redis driver: {0}")]
pub struct DriverError(String);

/// What the supervisor is asked to do on the live pub/sub connection.
enum Control {
    /// Subscribe to a channel; answer once Redis confirmed it.
    Subscribe(String, Option<oneshot::Sender<()>>),
    /// Unsubscribe from a channel.
    Unsubscribe(String),
    /// A command failed in a way that suggests the connection is gone.
    Reconnect,
    /// The app is stopping: leave Redis.
    Stop,
}

/// Adapter metrics, registered in the app's registry.
#[derive(Clone)]
struct RedisMetrics {
    /// 1 while both connections are up and subscribed.
    up: IntGauge,
    /// Connections re-established after a loss.
    reconnects_total: IntCounter,
    /// Connection attempts that failed.
    connect_failures_total: IntCounter,
    /// Messages published to the cluster.
    published_total: IntCounter,
    /// Messages that could not be published (Redis down or slow).
    publish_failures_total: IntCounter,
    /// Messages received from the cluster.
    received_total: IntCounter,
    /// Round trip of the health PING on the command connection.
    ping_seconds: Histogram,
    /// Instances seen in the last stats round.
    cluster_instances: IntGauge,
    /// Sockets connected across the cluster, as of the last stats round.
    cluster_sockets: IntGauge,
}

impl RedisMetrics {
    fn new(metrics: &Metrics) -> Result<Self, MetricsError> {
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

/// Cluster-wide totals from the last stats round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ClusterStats {
    /// Instances that reported within the last three intervals.
    pub instances: u64,
    /// Sockets connected across those instances.
    pub connected_sockets: u64,
}

/// State shared by the driver's clones and its supervisor.
struct Inner {
    /// Client built from the URL; cheap to reuse for every reconnect.
    client: redis::Client,
    /// The URL with its password masked, for logs.
    shown_url: String,
    /// Channel -> where its messages go. The registry is the truth about
    /// what to subscribe to; the supervisor replays it on every connect.
    subscriptions: Mutex<HashMap<String, mpsc::Sender<ChanItem>>>,
    /// The command connection while the link is up (both connections up and
    /// subscribed); `None` is what "down" means everywhere.
    commands: RwLock<Option<MultiplexedConnection>>,
    /// Requests to the supervisor.
    control: mpsc::UnboundedSender<Control>,
    /// Why the link is down, for `/readyz`.
    last_error: Mutex<String>,
    /// Milliseconds since the epoch of the last publish-failure warning.
    last_publish_warning_ms: AtomicU64,
    /// Publish failures not yet mentioned in a warning.
    unreported_publish_failures: AtomicU64,
    /// Latest cluster totals (instances << 32 | sockets), 0 before the first round.
    stats: AtomicU64,
    /// Set when the app leaves the cluster, so stats stop being reported.
    stopped: AtomicBool,
    /// Timeouts and intervals.
    settings: RedisSettings,
    /// Adapter metrics.
    metrics: RedisMetrics,
}

/// A [`Driver`] for socketioxide-redis that reconnects and resubscribes by itself.
#[derive(Clone)]
pub struct ResilientDriver {
    /// Shared state; the supervisor holds only a weak reference.
    inner: Arc<Inner>,
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
        // rustls needs a process-wide crypto provider for rediss://; a second
        // install (another app in the same process) is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
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
            stats: AtomicU64::new(0),
            stopped: AtomicBool::new(false),
            settings: settings.clone(),
            metrics: RedisMetrics::new(metrics)?,
        });
        let stats_key = format!("{}#stats", settings.prefix);
        tokio::spawn(supervise(Arc::downgrade(&inner), control_rx));
        tokio::spawn(report_stats(
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
        })
    }

    /// The constructor state socketioxide's builder takes for the adapter.
    pub fn adapter_state(&self) -> RedisAdapterCtr<ResilientDriver> {
        RedisAdapterCtr::new_with_driver(self.driver.clone(), self.config.clone())
    }

    /// Readiness of the cluster link, for `/readyz`.
    pub fn health(&self) -> Arc<dyn AdapterHealth> {
        Arc::new(ClusterHealth {
            inner: self.driver.inner.clone(),
        })
    }

    /// Leaves the cluster: removes this node from the stats, stops the
    /// supervisor and closes the Redis connections.
    pub async fn stop(&self) {
        let inner = &self.driver.inner;
        inner.stopped.store(true, Ordering::SeqCst);
        stats_round(inner, &self.stats_key, &self.node, None).await;
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

impl Inner {
    fn set_down(&self, reason: String) {
        self.metrics.up.set(0);
        *self.commands.write().unwrap_or_else(|p| p.into_inner()) = None;
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = reason;
    }

    fn set_up(&self, commands: MultiplexedConnection) {
        *self.commands.write().unwrap_or_else(|p| p.into_inner()) = Some(commands);
        self.metrics.up.set(1);
    }

    fn is_up(&self) -> bool {
        self.commands
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    fn command_connection(&self) -> Option<MultiplexedConnection> {
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

    fn stats(&self) -> Option<ClusterStats> {
        let packed = self.stats.load(Ordering::Relaxed);
        (packed != 0).then_some(ClusterStats {
            instances: packed >> 32,
            connected_sockets: packed & 0xffff_ffff,
        })
    }
}

fn now_ms() -> u64 {
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

/// Readiness as `/readyz` sees it.
struct ClusterHealth {
    /// The driver state.
    inner: Arc<Inner>,
}

impl AdapterHealth for ClusterHealth {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn ready(&self) -> Result<(), String> {
        if self.inner.is_up() {
            Ok(())
        } else {
            let reason = self
                .inner
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            Err(format!(
                "redis unavailable at {}: {reason}",
                self.inner.shown_url
            ))
        }
    }

    fn cluster(&self) -> Option<serde_json::Value> {
        self.inner
            .stats()
            .and_then(|s| serde_json::to_value(s).ok())
    }
}

/// Exponential backoff from 100 ms to 5 s with jitter, so a fleet of
/// instances does not reconnect in lockstep after an outage.
struct Backoff {
    /// The next base delay.
    next: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(5);

    fn new() -> Self {
        Self { next: Self::FIRST }
    }

    fn reset(&mut self) {
        self.next = Self::FIRST;
    }

    fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        // Up to 25 % jitter, from the clock's low bits: good enough to spread retries.
        let jitter = (now_ms() % 250) as f64 / 1000.0;
        base.mul_f64(1.0 + jitter)
    }
}

/// Owns the Redis connections for the life of the app.
async fn supervise(weak: Weak<Inner>, mut control: mpsc::UnboundedReceiver<Control>) {
    let mut backoff = Backoff::new();
    let mut connected_before = false;
    loop {
        let Some(inner) = weak.upgrade() else { return };
        match connect(&inner).await {
            Ok((sink, stream, commands)) => {
                inner.set_up(commands.clone());
                backoff.reset();
                if connected_before {
                    inner.metrics.reconnects_total.inc();
                    tracing::info!(url = %inner.shown_url, "redis reconnected; cluster delivery resumed");
                } else {
                    tracing::info!(url = %inner.shown_url, "redis connected");
                }
                connected_before = true;
                let ended = run_link(&inner, sink, stream, commands, &mut control).await;
                match ended {
                    LinkEnd::Stopped => {
                        inner.set_down("stopped".to_owned());
                        return;
                    }
                    LinkEnd::Lost(reason) => {
                        tracing::warn!(url = %inner.shown_url, %reason, "redis connection lost; serving local clients only until it returns");
                        inner.set_down(reason);
                    }
                }
            }
            Err(reason) => {
                inner.metrics.connect_failures_total.inc();
                // Warn on the first failure of an outage, then only at debug.
                if backoff.next == Backoff::FIRST {
                    tracing::warn!(url = %inner.shown_url, %reason, "cannot connect to redis; retrying with backoff");
                } else {
                    tracing::debug!(url = %inner.shown_url, %reason, "redis connection attempt failed");
                }
                inner.set_down(reason);
            }
        }
        drop(inner);
        // Wait out the backoff, still answering Stop; subscription changes
        // need no action while down (the registry is replayed on connect).
        let delay = tokio::time::sleep(backoff.next_delay());
        tokio::pin!(delay);
        loop {
            tokio::select! {
                _ = &mut delay => break,
                message = control.recv() => match message {
                    None | Some(Control::Stop) => return,
                    Some(_) => continue,
                },
            }
        }
    }
}

/// Opens both connections and subscribes to every registered channel.
async fn connect(
    inner: &Inner,
) -> Result<(PubSubSink, PubSubStream, MultiplexedConnection), String> {
    let settings = &inner.settings;
    let attempt = async {
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(settings.connect_timeout))
            .set_response_timeout(Some(settings.command_timeout));
        let commands = inner
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| e.to_string())?;
        let (mut sink, stream) = inner
            .client
            .get_async_pubsub()
            .await
            .map_err(|e| e.to_string())?
            .split();
        let channels: Vec<String> = inner
            .subscriptions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect();
        if !channels.is_empty() {
            sink.subscribe(&channels).await.map_err(|e| e.to_string())?;
        }
        Ok((sink, stream, commands))
    };
    // One bound for the whole attempt: TCP, TLS, AUTH, SELECT and SUBSCRIBE.
    match tokio::time::timeout(settings.connect_timeout + settings.command_timeout, attempt).await {
        Ok(result) => result,
        Err(_) => Err("connection attempt timed out".to_owned()),
    }
}

/// How a live link ended.
enum LinkEnd {
    /// The app asked the driver to stop.
    Stopped,
    /// The connection failed; the reason is logged and shown by `/readyz`.
    Lost(String),
}

/// Pumps messages to the adapter and serves subscription requests until the link fails.
async fn run_link(
    inner: &Inner,
    mut sink: PubSubSink,
    mut stream: PubSubStream,
    mut commands: MultiplexedConnection,
    control: &mut mpsc::UnboundedReceiver<Control>,
) -> LinkEnd {
    let timeout = inner.settings.command_timeout;
    let mut health = tokio::time::interval(Duration::from_secs(1));
    health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            message = stream.next() => {
                let Some(message) = message else {
                    return LinkEnd::Lost("pub/sub connection closed".to_owned());
                };
                inner.metrics.received_total.inc();
                let channel = message.get_channel_name().to_owned();
                let sender = inner.subscriptions.lock().unwrap_or_else(|p| p.into_inner()).get(&channel).cloned();
                if let Some(sender) = sender {
                    // Waiting here pushes back on Redis instead of dropping
                    // a message when the adapter is momentarily behind.
                    let _ = sender.send((channel, message.get_payload_bytes().to_vec())).await;
                }
            }
            request = control.recv() => match request {
                None | Some(Control::Stop) => return LinkEnd::Stopped,
                Some(Control::Reconnect) => return LinkEnd::Lost("a command failed".to_owned()),
                Some(Control::Subscribe(channel, done)) => {
                    match tokio::time::timeout(timeout, sink.subscribe(&channel)).await {
                        Ok(Ok(())) => if let Some(done) = done { let _ = done.send(()); },
                        Ok(Err(e)) => return LinkEnd::Lost(format!("SUBSCRIBE failed: {e}")),
                        Err(_) => return LinkEnd::Lost("SUBSCRIBE timed out".to_owned()),
                    }
                }
                Some(Control::Unsubscribe(channel)) => {
                    if let Ok(Err(e)) = tokio::time::timeout(timeout, sink.unsubscribe(&channel)).await {
                        return LinkEnd::Lost(format!("UNSUBSCRIBE failed: {e}"));
                    }
                }
            },
            _ = health.tick() => {
                let started = Instant::now();
                let command = redis::cmd("PING");
                let ping = command.query_async::<String>(&mut commands);
                match tokio::time::timeout(timeout, ping).await {
                    Ok(Ok(_)) => inner.metrics.ping_seconds.observe(started.elapsed().as_secs_f64()),
                    Ok(Err(e)) => return LinkEnd::Lost(format!("PING failed: {e}")),
                    Err(_) => return LinkEnd::Lost("PING timed out".to_owned()),
                }
                // A pub/sub connection can die silently on its own; ping it too.
                match tokio::time::timeout(timeout, sink.ping::<redis::Value>()).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return LinkEnd::Lost(format!("pub/sub PING failed: {e}")),
                    Err(_) => return LinkEnd::Lost("pub/sub PING timed out".to_owned()),
                }
            }
        }
    }
}

/// Lua: record this node's count with Redis's clock, drop stale nodes, sum the rest.
const STATS_SCRIPT: &str = r"
local now = tonumber(redis.call('TIME')[1])
local stale_after = tonumber(ARGV[3])
if ARGV[2] ~= '' then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. ' ' .. now)
else
  redis.call('HDEL', KEYS[1], ARGV[1])
end
local all = redis.call('HGETALL', KEYS[1])
local instances, sockets = 0, 0
for i = 1, #all, 2 do
  local count, seen = string.match(all[i + 1], '^(%d+) (%d+)$')
  if seen and now - tonumber(seen) <= stale_after then
    instances = instances + 1
    sockets = sockets + tonumber(count)
  else
    redis.call('HDEL', KEYS[1], all[i])
  end
end
redis.call('EXPIRE', KEYS[1], stale_after * 2)
return {instances, sockets}
";

/// Every `stats_interval`, publishes this instance's socket count and reads
/// the cluster's total. Runs off the hot path; `/readyz` shows the last result.
async fn report_stats(
    weak: Weak<Inner>,
    key: String,
    node: String,
    local_sockets: impl Fn() -> u64 + Send + Sync + 'static,
) {
    let Some(interval) = weak.upgrade().map(|i| i.settings.stats_interval) else {
        return;
    };
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let Some(inner) = weak.upgrade() else { return };
        if inner.stopped.load(Ordering::SeqCst) {
            return;
        }
        stats_round(&inner, &key, &node, Some(local_sockets())).await;
    }
}

/// One stats round; `count: None` removes this node (on shutdown).
async fn stats_round(inner: &Inner, key: &str, node: &str, count: Option<u64>) {
    let Some(mut conn) = inner.command_connection() else {
        return;
    };
    // A node is stale after three missed rounds (at least 2 s: TIME has whole seconds).
    let stale_after = (inner.settings.stats_interval.as_secs_f64() * 3.0)
        .ceil()
        .max(2.0) as u64;
    let script = redis::Script::new(STATS_SCRIPT);
    let mut invocation = script.key(key);
    invocation
        .arg(node)
        .arg(count.map(|c| c.to_string()).unwrap_or_default())
        .arg(stale_after);
    let call = invocation.invoke_async::<(u64, u64)>(&mut conn);
    match tokio::time::timeout(inner.settings.command_timeout, call).await {
        Ok(Ok((instances, sockets))) if count.is_some() => {
            inner.stats.store(
                (instances << 32) | (sockets & 0xffff_ffff),
                Ordering::Relaxed,
            );
            inner.metrics.cluster_instances.set(instances as i64);
            inner.metrics.cluster_sockets.set(sockets as i64);
        }
        Ok(Ok(_)) => {}
        Ok(Err(error)) => tracing::debug!(%error, "cluster stats round failed"),
        Err(_) => tracing::debug!("cluster stats round timed out"),
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

    #[test]
    fn backoff_doubles_up_to_a_cap_and_resets() {
        let mut b = Backoff::new();
        let first = b.next_delay();
        assert!(first >= Duration::from_millis(100) && first <= Duration::from_millis(125));
        for _ in 0..10 {
            b.next_delay();
        }
        let capped = b.next_delay();
        assert!(capped >= Duration::from_secs(5) && capped <= Duration::from_millis(6250));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(125));
    }
}
