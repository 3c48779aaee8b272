//! Disconnect notifications: delivered at least once, retried with backoff
//! for a bounded time, from a queue of bounded size.
//!
//! Each notification is its own task, which waits for a slot like any other
//! call; the queue is only a count of the tasks not yet settled, so a full
//! queue refuses a new notification (counted) instead of growing.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use serde::Serialize;
use tokio::sync::Notify;

use super::{Hook, Outcome, SocketInfo, Webhooks, metrics::Dropped, sign};

/// The first wait before a retry; each further wait doubles, up to [`LONGEST_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);

/// The longest wait between two attempts.
const LONGEST_BACKOFF: Duration = Duration::from_secs(10);

/// Disconnect notifications not yet delivered or given up.
pub struct Queue {
    capacity: usize,
    retry_for: Duration,
    pending: AtomicUsize,
    settled: Notify,
}

impl Queue {
    /// A queue of at most `capacity` notifications, each retried for `retry_for`.
    pub fn new(capacity: usize, retry_for: Duration) -> Self {
        Self {
            capacity,
            retry_for,
            pending: AtomicUsize::new(0),
            settled: Notify::new(),
        }
    }

    /// Notifications waiting or being retried.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Acquire)
    }
}

/// The body of a disconnect call.
#[derive(Serialize)]
struct DisconnectBody<'a> {
    r#type: &'static str,
    socket: &'a SocketInfo,
    reason: &'a str,
    connected_seconds: f64,
}

impl Webhooks {
    /// Queues a notification that `socket` disconnected for `reason` after
    /// `connected_for`; a full queue drops it, counted and logged.
    pub fn notify_disconnect(
        self: &Arc<Self>,
        socket: &SocketInfo,
        reason: &str,
        connected_for: Duration,
    ) {
        let Some(queue) = &self.disconnect else {
            return;
        };
        if queue.pending.fetch_add(1, Ordering::AcqRel) >= queue.capacity {
            queue.pending.fetch_sub(1, Ordering::AcqRel);
            self.metrics.dropped(Dropped::QueueFull, 1);
            tracing::warn!(sid = %socket.id, capacity = queue.capacity, "webhook queue full; dropping a disconnect notification");
            return;
        }
        self.metrics.queue_depth.inc();
        let body = DisconnectBody {
            r#type: Hook::Disconnect.name(),
            socket,
            reason,
            connected_seconds: (connected_for.as_secs_f64() * 1000.0).round() / 1000.0,
        };
        let body = serde_json::to_vec(&body);
        let hooks = self.clone();
        let sid = socket.id.clone();
        tokio::spawn(async move {
            match body {
                Ok(body) => hooks.deliver_disconnect(&sid, &body).await,
                Err(error) => {
                    tracing::error!(%error, "cannot encode a disconnect webhook");
                    hooks.metrics.dropped(Dropped::RetriesExhausted, 1);
                }
            }
            hooks.settle_one();
        });
    }

    /// Sends one notification until it is delivered or its retry time is up;
    /// every attempt carries the same delivery id.
    async fn deliver_disconnect(&self, sid: &str, body: &[u8]) {
        let Some(queue) = &self.disconnect else {
            return;
        };
        let delivery = sign::delivery_id();
        let give_up_at = Instant::now() + queue.retry_for;
        let mut backoff = FIRST_BACKOFF;
        loop {
            match self.post(Hook::Disconnect, &delivery, body).await {
                Ok(_) => {
                    self.metrics.request(Hook::Disconnect, Outcome::Ok);
                    return;
                }
                Err(failure) => {
                    self.metrics.request(Hook::Disconnect, failure.outcome());
                    if Instant::now() + backoff > give_up_at {
                        self.metrics.dropped(Dropped::RetriesExhausted, 1);
                        tracing::warn!(sid, %delivery, %failure, "giving up a disconnect notification");
                        return;
                    }
                    tracing::info!(sid, %delivery, %failure, retry_in_ms = backoff.as_millis() as u64, "disconnect notification failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(LONGEST_BACKOFF);
                    self.metrics.retried();
                }
            }
        }
    }

    fn settle_one(&self) {
        if let Some(queue) = &self.disconnect {
            queue.pending.fetch_sub(1, Ordering::AcqRel);
            self.metrics.queue_depth.dec();
            queue.settled.notify_waiters();
        }
    }

    /// Waits until every queued disconnect notification is delivered or given
    /// up, for at most two request timeouts: time for one attempt and one
    /// retry. A backend that is down must not make every deploy wait for the
    /// whole drain timeout; what is left is counted by [`Webhooks::abandon`].
    pub async fn flush(&self) {
        let Some(queue) = &self.disconnect else {
            return;
        };
        let wait = async {
            loop {
                let settled = queue.settled.notified();
                if queue.pending() == 0 {
                    return;
                }
                settled.await;
            }
        };
        if tokio::time::timeout(self.timeout * 2, wait).await.is_err() {
            tracing::warn!(
                left = queue.pending(),
                "disconnect notifications still undelivered at shutdown"
            );
        }
    }

    /// Counts the notifications still queued when ecos stops as dropped.
    pub fn abandon(&self) {
        let Some(queue) = &self.disconnect else {
            return;
        };
        let left = queue.pending();
        if left > 0 {
            self.metrics.dropped(Dropped::Shutdown, left as u64);
            tracing::warn!(left, "stopping with disconnect notifications undelivered");
        }
    }
}
