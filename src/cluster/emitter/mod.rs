//! The official Redis emitter, unchanged, against ecos.
//!
//! Backends publish to connected clients with `@socket.io/redis-emitter`
//! (or a compatible emitter in another language): it writes socket.io's own
//! Redis format, which ecos's adapter (socketioxide-redis) does not speak. This
//! listener reads that format on its own pub/sub connection and applies every
//! message to this instance's sockets only: each instance of the cluster
//! receives the same message from Redis and serves its own clients, as each
//! Node socket.io server does.
//!
//! Files:
//!
//! - [`wire`]: channel names and the decoding of broadcasts and requests;
//! - `values`: what clients receive for each msgpack value (dates, nil,
//!   binary), the same as a Node server's clients receive;
//! - `link`: the pub/sub connection, which reconnects with backoff and is
//!   pinged every second, like the adapter's.
//!
//! Nothing is answered: the emitter expects no answer, and requests that do
//! (one Node server asking others) are counted as `ignored`.

mod link;
mod values;
pub mod wire;

use std::sync::Mutex;

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts};
use socketioxide::{
    BroadcastError, SocketError, SocketIo, adapter::Adapter, operators::BroadcastOperators,
};
use tokio::{sync::oneshot, task::JoinHandle};

use crate::{
    config::{RedisSettings, SocketIoParser},
    metrics::{Metrics, MetricsError},
    net::SlowConsumers,
    realtime::args::Args,
};

use wire::{BroadcastMessage, ChannelKind, Channels, Request, Target};

/// The `kind` label values of `ecos_emitter_messages_total`.
pub const KINDS: [&str; 7] = [
    "emit",
    "join",
    "leave",
    "disconnect",
    "ignored",
    "malformed",
    "failed",
];

/// The emitter listener's metrics.
#[derive(Clone)]
pub(super) struct EmitterMetrics {
    /// Messages received, by what became of them ([`KINDS`]).
    messages_total: IntCounterVec,
    /// 1 while the listener's connection is up and subscribed.
    up: IntGauge,
    /// Connections re-established after a loss.
    reconnects_total: IntCounter,
}

impl EmitterMetrics {
    fn new(metrics: &Metrics) -> Result<Self, MetricsError> {
        let m = Self {
            messages_total: IntCounterVec::new(
                Opts::new(
                    "emitter_messages_total",
                    "Messages in socket.io's Redis format received from emitters, by what was done: emit, join, leave, disconnect, ignored (another namespace, or a request ecos does not serve), malformed (could not be decoded), failed (decoded, but not every selected socket could take it).",
                ),
                &["kind"],
            )?,
            up: IntGauge::new(
                "emitter_up",
                "1 while the emitter listener's Redis connection is up and subscribed.",
            )?,
            reconnects_total: IntCounter::new(
                "emitter_reconnects_total",
                "Emitter listener connections re-established after a loss.",
            )?,
        };
        metrics.register(Box::new(m.messages_total.clone()))?;
        metrics.register(Box::new(m.up.clone()))?;
        metrics.register(Box::new(m.reconnects_total.clone()))?;
        for kind in KINDS {
            m.messages_total.with_label_values(&[kind]);
        }
        Ok(m)
    }

    fn count(&self, kind: &str) {
        self.messages_total.with_label_values(&[kind]).inc();
    }
}

/// The running listener; [`EmitterListener::stop`] ends it.
pub struct EmitterListener {
    /// Tells the link task to leave Redis.
    stop: Mutex<Option<oneshot::Sender<()>>>,
    /// The link task, awaited on stop.
    task: Mutex<Option<JoinHandle<()>>>,
}

impl EmitterListener {
    /// Starts listening on `prefix` (the emitter's `key`), applying what
    /// arrives with `applier`; does not wait for Redis.
    pub(super) fn start<A: Adapter>(
        client: redis::Client,
        shown_url: String,
        settings: RedisSettings,
        prefix: &str,
        applier: Applier<A>,
        metrics: &Metrics,
    ) -> Result<Self, MetricsError> {
        let metrics = EmitterMetrics::new(metrics)?;
        let (stop, stopped) = oneshot::channel();
        let link = link::Link {
            client,
            shown_url,
            settings,
            channels: Channels::new(prefix),
            metrics,
        };
        let task = tokio::spawn(link.run(applier, stopped));
        Ok(Self {
            stop: Mutex::new(Some(stop)),
            task: Mutex::new(Some(task)),
        })
    }

    /// Leaves Redis and waits (briefly) for the link task to end.
    pub async fn stop(&self) {
        if let Some(stop) = self.stop.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = stop.send(());
        }
        let task = self.task.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(task) = task
            && tokio::time::timeout(std::time::Duration::from_secs(2), task)
                .await
                .is_err()
        {
            tracing::warn!("emitter listener did not stop within 2 s");
        }
    }
}

/// Why a message was not applied; the text goes to the log.
#[derive(Debug, thiserror::Error)]
enum ApplyError {
    /// It could not be decoded (`malformed`).
    #[error(transparent)]
    Malformed(#[from] wire::DecodeError),
    /// It decoded but the sockets could not be reached (`failed`).
    #[error("{0}")]
    Failed(String),
}

impl ApplyError {
    fn kind(&self) -> &'static str {
        match self {
            ApplyError::Malformed(_) => "malformed",
            ApplyError::Failed(_) => "failed",
        }
    }
}

/// Applies decoded messages to this instance's sockets.
pub(super) struct Applier<A: Adapter> {
    /// The Socket.IO server; every operation is made `.local()`.
    pub(super) io: SocketIo<A>,
    /// The clients' parser, which decides how dates are sent.
    pub(super) parser: SocketIoParser,
    /// Closes the clients whose full queues refused a broadcast, as for client broadcasts.
    pub(super) slow_consumers: SlowConsumers,
}

impl<A: Adapter> Applier<A> {
    /// Decodes and applies one message; returns its `kind` label.
    async fn apply(
        &self,
        channel: ChannelKind,
        payload: &[u8],
    ) -> Result<&'static str, ApplyError> {
        match channel {
            ChannelKind::OtherNamespace => Ok("ignored"),
            ChannelKind::Broadcast => match wire::decode_broadcast(payload)? {
                BroadcastMessage::OtherNamespace => Ok("ignored"),
                BroadcastMessage::Deliver(b) => {
                    let args = Args(
                        b.args
                            .into_iter()
                            .map(|v| values::for_clients(v, self.parser))
                            .collect(),
                    );
                    match self.local(b.target).emit(b.event, &args).await {
                        Ok(()) => Ok("emit"),
                        Err(BroadcastError::Socket(errors)) => {
                            // `Closed`: the socket left meanwhile; nothing was lost.
                            let full = errors
                                .iter()
                                .filter(|e| matches!(e, SocketError::InternalChannelFull))
                                .count();
                            if full == 0 {
                                return Ok("emit");
                            }
                            let closed = self.slow_consumers.on_overflow(full);
                            Err(ApplyError::Failed(format!(
                                "emit: {full} full queue(s); closed {closed} slow consumer(s)"
                            )))
                        }
                        Err(e) => Err(ApplyError::Failed(format!("emit: {e}"))),
                    }
                }
            },
            ChannelKind::Request => match wire::decode_request(payload)? {
                Request::Join(target, rooms) => {
                    self.local(target)
                        .join(rooms)
                        .await
                        .map_err(|e| ApplyError::Failed(format!("socketsJoin: {e}")))?;
                    Ok("join")
                }
                Request::Leave(target, rooms) => {
                    self.local(target)
                        .leave(rooms)
                        .await
                        .map_err(|e| ApplyError::Failed(format!("socketsLeave: {e}")))?;
                    Ok("leave")
                }
                // `close` also closes the transport on Node; either way the
                // client gets a DISCONNECT ("io server disconnect") and does
                // not reconnect by itself.
                Request::Disconnect(target, _close) => {
                    self.local(target)
                        .disconnect()
                        .await
                        .map_err(|e| ApplyError::Failed(format!("disconnectSockets: {e}")))?;
                    Ok("disconnect")
                }
                Request::Ignored(kind) => {
                    tracing::debug!(kind, "emitter request of a type ecos does not serve");
                    Ok("ignored")
                }
            },
        }
    }

    /// This instance's sockets in `target`.
    fn local(&self, target: Target) -> BroadcastOperators<A> {
        self.io.to(target.rooms).except(target.except).local()
    }
}
