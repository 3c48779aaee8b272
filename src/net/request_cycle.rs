//! Where a connection is in its request cycle, and by when it must move on.
//!
//! hyper's own `header_read_timeout` also runs while a keep-alive connection
//! waits for its next request, so it would cut idle keep-alive connections at
//! the header timeout; a Heroku-style router reuses them for 90 s and fails
//! requests when the app closes first. ecos keeps its own deadlines instead:
//!
//! | phase | deadline | on expiry |
//! |---|---|---|
//! | [`Phase::Fresh`]: accepted, nothing received | accept + header timeout | close |
//! | [`Phase::Head`]: part of a head received | first byte + header timeout | `408`, close |
//! | [`Phase::Busy`]: a request is being served | none | |
//! | [`Phase::Idle`]: response sent, keep-alive | response + keep-alive idle | close |
//! | [`Phase::Upgraded`]: a WebSocket | none | |
//!
//! The stream reports bytes read, the service reports a request head and the
//! end of its response; the connection's task sleeps until the deadline.
//!
//! Known gap: bytes read while a request is busy (its body, or a pipelined
//! next head) cannot be told apart, so a next head that was pipelined
//! incompletely gets the keep-alive time rather than the header time.

use std::{
    sync::atomic::{AtomicU8, AtomicU64, Ordering},
    time::Duration,
};

use tokio::{sync::Notify, time::Instant};

/// A connection's place in its request cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    /// Accepted; not a byte received yet.
    Fresh = 0,
    /// Part of a request head received.
    Head = 1,
    /// A request head arrived; its response is not finished.
    Busy = 2,
    /// A response was sent; waiting for the next request (keep-alive).
    Idle = 3,
    /// Switched protocols (WebSocket): no HTTP deadlines any more.
    Upgraded = 4,
}

impl Phase {
    fn from_u8(v: u8) -> Self {
        match v {
            0 => Phase::Fresh,
            1 => Phase::Head,
            2 => Phase::Busy,
            3 => Phase::Idle,
            _ => Phase::Upgraded,
        }
    }
}

/// One connection's phase and deadline, shared by its stream, its service
/// and its task.
#[derive(Debug)]
pub struct RequestCycle {
    /// When the connection was accepted; deadlines count from here.
    start: Instant,
    /// The current [`Phase`].
    phase: AtomicU8,
    /// Milliseconds after `start` by which the phase must end; `u64::MAX`: none.
    deadline_ms: AtomicU64,
    /// Wakes the connection's task when the deadline moved later or appeared.
    changed: Notify,
    /// Time allowed for a complete request head.
    header_timeout: Duration,
    /// Time an idle keep-alive connection is kept.
    keep_alive_idle: Duration,
}

const NO_DEADLINE: u64 = u64::MAX;

impl RequestCycle {
    /// A fresh connection accepted now, which must send a head within `header_timeout`.
    pub fn new(header_timeout: Duration, keep_alive_idle: Duration) -> Self {
        let cycle = Self {
            start: Instant::now(),
            phase: AtomicU8::new(Phase::Fresh as u8),
            deadline_ms: AtomicU64::new(NO_DEADLINE),
            changed: Notify::new(),
            header_timeout,
            keep_alive_idle,
        };
        cycle.set_deadline(header_timeout);
        cycle
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Ordering::Acquire))
    }

    /// The stream read `n` bytes: a head has started (the header clock runs
    /// from its first byte after an idle pause).
    pub fn bytes_read(&self, n: usize) {
        if n == 0 {
            return;
        }
        let phase = self.phase.load(Ordering::Acquire);
        if phase == Phase::Fresh as u8 {
            // The deadline still counts from the accept.
            self.phase.store(Phase::Head as u8, Ordering::Release);
        } else if phase == Phase::Idle as u8 {
            self.phase.store(Phase::Head as u8, Ordering::Release);
            self.set_deadline(self.header_timeout);
        }
    }

    /// A complete request head arrived: no deadline until its response is done.
    pub fn request_started(&self) {
        self.phase.store(Phase::Busy as u8, Ordering::Release);
        self.deadline_ms.store(NO_DEADLINE, Ordering::Release);
    }

    /// The response is finished: the connection is idle (keep-alive) or, after
    /// `101 Switching Protocols`, upgraded.
    pub fn response_finished(&self, upgraded: bool) {
        if upgraded {
            self.phase.store(Phase::Upgraded as u8, Ordering::Release);
            self.deadline_ms.store(NO_DEADLINE, Ordering::Release);
        } else if self.phase() == Phase::Busy {
            self.phase.store(Phase::Idle as u8, Ordering::Release);
            self.set_deadline(self.keep_alive_idle);
        }
    }

    /// The deadline of the current phase, if it has one.
    pub fn deadline(&self) -> Option<Instant> {
        match self.deadline_ms.load(Ordering::Acquire) {
            NO_DEADLINE => None,
            ms => Some(self.start + Duration::from_millis(ms)),
        }
    }

    /// The phase whose deadline has passed, if any.
    pub fn expired(&self) -> Option<Phase> {
        let deadline = self.deadline()?;
        (Instant::now() >= deadline).then(|| self.phase())
    }

    /// Resolves when the deadline has changed since the last call.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    fn set_deadline(&self, after: Duration) {
        let ms = (self.start.elapsed() + after).as_millis();
        let ms = u64::try_from(ms).unwrap_or(NO_DEADLINE - 1);
        self.deadline_ms.store(ms, Ordering::Release);
        // A stored permit if the task is not waiting right now: it re-reads
        // the deadline on its next turn either way.
        self.changed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn phases_move_the_deadline() {
        let cycle = RequestCycle::new(Duration::from_secs(2), Duration::from_secs(100));
        assert_eq!(cycle.phase(), Phase::Fresh);
        let fresh = cycle.deadline().expect("a fresh connection has a deadline");
        cycle.bytes_read(1);
        assert_eq!(cycle.phase(), Phase::Head);
        assert_eq!(
            cycle.deadline(),
            Some(fresh),
            "the head counts from the accept"
        );
        cycle.request_started();
        assert_eq!((cycle.phase(), cycle.deadline()), (Phase::Busy, None));
        cycle.bytes_read(10);
        assert_eq!(cycle.phase(), Phase::Busy, "body bytes do not start a head");
        cycle.response_finished(false);
        assert_eq!(cycle.phase(), Phase::Idle);
        let idle = cycle.deadline().expect("idle has a deadline");
        assert!(idle >= fresh + Duration::from_secs(97));
        cycle.bytes_read(1);
        assert_eq!(cycle.phase(), Phase::Head);
        assert!(cycle.deadline().expect("head") < idle);
        cycle.request_started();
        cycle.response_finished(true);
        assert_eq!((cycle.phase(), cycle.deadline()), (Phase::Upgraded, None));
        cycle.bytes_read(5);
        assert_eq!(cycle.phase(), Phase::Upgraded);
        assert_eq!(cycle.expired(), None);
    }
}
