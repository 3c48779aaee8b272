//! The listener's own pub/sub connection: connects with the adapter's capped,
//! jittered backoff, pattern-subscribes to the emitter's channels, pings every
//! second, and on any failure drops the connection and starts over.
//!
//! Messages published while the connection is down are lost: Redis pub/sub
//! keeps nothing for an absent subscriber.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use redis::aio::{PubSubSink, PubSubStream};
use socketioxide::adapter::Adapter;
use tokio::sync::oneshot;

use super::{Applier, EmitterMetrics, wire::Channels};
use crate::{cluster::supervisor::Backoff, config::RedisSettings};

/// Everything the connection loop needs.
pub(super) struct Link {
    /// Client built from `redis.url`, shared with the adapter's driver.
    pub(super) client: redis::Client,
    /// The URL with its password masked, for logs.
    pub(super) shown_url: String,
    /// Connect and command timeouts.
    pub(super) settings: RedisSettings,
    /// The emitter's channels.
    pub(super) channels: Channels,
    /// The listener's metrics.
    pub(super) metrics: EmitterMetrics,
}

/// How a live connection ended.
enum End {
    /// The app is stopping.
    Stopped,
    /// The connection failed, for this reason.
    Lost(String),
}

/// Warns about messages that were dropped at most every five seconds, with the count.
struct WarnEvery {
    /// When the last warning was written.
    last: Option<Instant>,
    /// Malformed messages since then.
    unreported: u64,
}

impl WarnEvery {
    const EVERY: Duration = Duration::from_secs(5);

    fn new() -> Self {
        Self {
            last: None,
            unreported: 0,
        }
    }

    /// Counts one; returns the count to report when a warning is due.
    fn due(&mut self) -> Option<u64> {
        self.unreported += 1;
        if self.last.is_some_and(|at| at.elapsed() < Self::EVERY) {
            return None;
        }
        self.last = Some(Instant::now());
        Some(std::mem::take(&mut self.unreported))
    }

    fn malformed(&mut self, channel: &[u8], reason: &str) {
        let Some(count) = self.due() else { return };
        // Channel names are chosen by the publisher: keep the line short.
        let channel = String::from_utf8_lossy(&channel[..channel.len().min(200)]).into_owned();
        tracing::warn!(
            count,
            %channel,
            reason,
            "emitter message ignored: it is not socket.io's Redis format"
        );
    }

    fn failed(&mut self, reason: &str) {
        let Some(count) = self.due() else { return };
        tracing::warn!(count, reason, "emitter message could not be applied");
    }
}

impl Link {
    /// Runs until `stop` fires (or its sender is dropped).
    pub(super) async fn run<A: Adapter>(
        self,
        applier: Applier<A>,
        mut stop: oneshot::Receiver<()>,
    ) {
        let mut backoff = Backoff::new();
        let mut connected_before = false;
        let mut malformed = WarnEvery::new();
        let mut failed = WarnEvery::new();
        loop {
            let attempt = tokio::select! {
                attempt = self.connect() => attempt,
                _ = &mut stop => return,
            };
            match attempt {
                Ok((sink, stream)) => {
                    self.metrics.up.set(1);
                    backoff.reset();
                    if connected_before {
                        self.metrics.reconnects_total.inc();
                        tracing::info!(url = %self.shown_url, "emitter listener reconnected");
                    } else {
                        tracing::info!(
                            url = %self.shown_url,
                            patterns = ?self.channels.patterns(),
                            "emitter listener subscribed"
                        );
                    }
                    connected_before = true;
                    let end = self
                        .listen(
                            &applier,
                            sink,
                            stream,
                            &mut stop,
                            [&mut malformed, &mut failed],
                        )
                        .await;
                    self.metrics.up.set(0);
                    match end {
                        End::Stopped => return,
                        End::Lost(reason) => tracing::warn!(
                            url = %self.shown_url,
                            %reason,
                            "emitter listener lost redis; emitter messages published until it returns are missed"
                        ),
                    }
                }
                Err(reason) => {
                    if backoff.is_first() {
                        tracing::warn!(url = %self.shown_url, %reason, "emitter listener cannot connect to redis; retrying with backoff");
                    } else {
                        tracing::debug!(url = %self.shown_url, %reason, "emitter listener connection attempt failed");
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff.next_delay()) => {}
                _ = &mut stop => return,
            }
        }
    }

    /// Opens the pub/sub connection and subscribes to both patterns.
    async fn connect(&self) -> Result<(PubSubSink, PubSubStream), String> {
        let attempt = async {
            let (mut sink, stream) = self
                .client
                .get_async_pubsub()
                .await
                .map_err(|e| e.to_string())?
                .split();
            sink.psubscribe(self.channels.patterns().as_slice())
                .await
                .map_err(|e| e.to_string())?;
            Ok((sink, stream))
        };
        let bound = self.settings.connect_timeout + self.settings.command_timeout;
        tokio::time::timeout(bound, attempt)
            .await
            .unwrap_or_else(|_| Err("connection attempt timed out".to_owned()))
    }

    /// Applies messages until the connection fails or the app stops.
    async fn listen<A: Adapter>(
        &self,
        applier: &Applier<A>,
        mut sink: PubSubSink,
        mut stream: PubSubStream,
        stop: &mut oneshot::Receiver<()>,
        [malformed, failed]: [&mut WarnEvery; 2],
    ) -> End {
        let timeout = self.settings.command_timeout;
        let mut health = tokio::time::interval(Duration::from_secs(1));
        health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                message = stream.next() => {
                    let Some(message) = message else {
                        return End::Lost("pub/sub connection closed".to_owned());
                    };
                    let channel: Vec<u8> = message.get_channel().unwrap_or_default();
                    let Some(kind) = self.channels.classify(&channel) else {
                        continue;
                    };
                    // One message at a time, in order: a socketsJoin and the
                    // emit to that room right after it must not swap.
                    match applier.apply(kind, message.get_payload_bytes()).await {
                        Ok(label) => self.metrics.count(label),
                        Err(error) => {
                            self.metrics.count(error.kind());
                            match error {
                                super::ApplyError::Malformed(reason) => {
                                    malformed.malformed(&channel, &reason.to_string());
                                }
                                super::ApplyError::Failed(reason) => failed.failed(&reason),
                            }
                        }
                    }
                }
                _ = &mut *stop => return End::Stopped,
                _ = health.tick() => {
                    match tokio::time::timeout(timeout, sink.ping::<redis::Value>()).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => return End::Lost(format!("PING failed: {e}")),
                        Err(_) => return End::Lost("PING timed out".to_owned()),
                    }
                }
            }
        }
    }
}
