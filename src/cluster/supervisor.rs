//! The supervisor: owns the Redis connections for the life of the app,
//! connects with capped, jittered backoff, subscribes to every registered
//! channel, pings both connections every second, and on any failure drops
//! them and starts over.

use std::{
    sync::Weak,
    time::{Duration, Instant},
};

use futures_util::StreamExt;
use redis::aio::{MultiplexedConnection, PubSubSink, PubSubStream};
use tokio::sync::mpsc;

use super::driver::{Control, Inner, now_ms};

/// Exponential backoff from 100 ms to 5 s with jitter, so a fleet of
/// instances does not reconnect in lockstep after an outage. The emitter
/// listener's connection uses it too.
pub(super) struct Backoff {
    /// The next base delay.
    next: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(5);

    /// Starts at the first delay.
    pub(super) fn new() -> Self {
        Self { next: Self::FIRST }
    }

    /// Back to the first delay, after a success.
    pub(super) fn reset(&mut self) {
        self.next = Self::FIRST;
    }

    /// Whether the next delay is the first: the first failure of an outage.
    pub(super) fn is_first(&self) -> bool {
        self.next == Self::FIRST
    }

    /// The delay to wait now; doubles the next one.
    pub(super) fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        // Up to 25 % jitter, from the clock's low bits: good enough to spread retries.
        let jitter = (now_ms() % 250) as f64 / 1000.0;
        base.mul_f64(1.0 + jitter)
    }
}

/// Owns the Redis connections for the life of the app.
pub(super) async fn supervise(weak: Weak<Inner>, mut control: mpsc::UnboundedReceiver<Control>) {
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
                if backoff.is_first() {
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

#[cfg(test)]
mod tests {
    use super::*;

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
