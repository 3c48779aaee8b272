//! Load shedding at admission: while outgoing queues are backing up, new
//! broadcasts are refused with the ack `{ ok: false, error: "overloaded" }`
//! before they fan out.
//!
//! The signal is "a broadcast of this instance found a full outgoing queue
//! within the last `limits.overload_shed_secs`". It is the one state of a
//! queue ecos can see: engineioxide keeps each socket's queue private and
//! only reports that it is full. A full queue means its writer cannot keep
//! up (the client stopped reading, or the instance has more to write than
//! CPU or network allow), and every further broadcast would overflow it
//! again. Refusing new broadcasts for a moment lets the queues drain and the
//! slow-consumer policy close the stalled connections, and tells senders
//! that their message was refused instead of acking what is then dropped.
//! Checking it costs one atomic load per broadcast (and a clock read while
//! a window is open), not per delivery.
//!
//! The signal reacts to an overflow and cannot tell whose queue was full, so
//! it is off by default: a long-polling client that stops polling keeps its
//! queue full until its heartbeat ends it, and would keep the instance
//! shedding (docs/hardening.md, "Shedding load at admission").

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

/// The ack error of a broadcast refused while the instance sheds load.
pub const OVERLOADED: &str = "overloaded";

/// Whether this instance refuses new broadcasts right now; shared by every socket.
#[derive(Debug)]
pub struct Pressure {
    /// Zero point of `shed_until_ms`.
    epoch: Instant,
    /// Milliseconds since `epoch` until which broadcasts are refused; 0:
    /// no window is open, so the common case reads no clock.
    shed_until_ms: AtomicU64,
    /// How long one overflow opens the window; `None`: never shed.
    window: Option<Duration>,
}

impl Pressure {
    /// Sheds load for `window` after each overflow; `None` turns shedding off.
    pub fn new(window: Option<Duration>) -> Self {
        Self {
            epoch: Instant::now(),
            shed_until_ms: AtomicU64::new(0),
            window,
        }
    }

    fn now_ms(&self) -> u64 {
        // +1 keeps 0 free to mean "no window", even in the first millisecond.
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX - 1) + 1
    }

    /// Records that a broadcast found a full queue: opens (or extends) the window.
    pub fn overflowed(&self) {
        let Some(window) = self.window else {
            return;
        };
        let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX / 2);
        let until = self.now_ms().saturating_add(window_ms);
        self.shed_until_ms.fetch_max(until, Ordering::Relaxed);
    }

    /// Whether a new broadcast should be refused now.
    pub fn shedding(&self) -> bool {
        let until = self.shed_until_ms.load(Ordering::Relaxed);
        if until == 0 {
            return false;
        }
        if self.now_ms() < until {
            return true;
        }
        // The window is over: back to the clock-free fast path, unless
        // another overflow has just opened a new window.
        let _ = self
            .shed_until_ms
            .compare_exchange(until, 0, Ordering::Relaxed, Ordering::Relaxed);
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_overflow_opens_a_window_unless_shedding_is_off() {
        let off = Pressure::new(None);
        off.overflowed();
        assert!(!off.shedding());

        let on = Pressure::new(Some(Duration::from_secs(3600)));
        assert!(!on.shedding());
        on.overflowed();
        assert!(on.shedding());
    }

    #[test]
    fn a_window_that_is_over_no_longer_sheds() {
        let p = Pressure::new(Some(Duration::ZERO));
        p.overflowed();
        assert!(!p.shedding());
        assert_eq!(p.shed_until_ms.load(Ordering::Relaxed), 0);
    }
}
