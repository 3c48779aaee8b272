//! What one socket may ask of ecos: its event rate, and how many `room:ask`
//! requests it may have in flight. The state lives with the socket's handlers.

use crate::auth::Identity;

use std::{
    sync::{
        Mutex, OnceLock,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

/// How long a client may stay over its rate limit before it is disconnected.
pub const RATE_LIMIT_GRACE: Duration = Duration::from_secs(5);

/// A rejection streak ends when the client has not been refused for this long.
const STREAK_GAP: Duration = Duration::from_secs(1);

/// Most `room:ask` requests one socket may have waiting for answers.
pub const MAX_ASKS_IN_FLIGHT: usize = 4;

/// The event budget of a socket: a token bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Tokens added per second; `0` turns the limit off.
    pub per_second: f64,
    /// Most tokens the bucket holds: the burst a client may send at once.
    pub burst: f64,
}

/// What the limiter decided for one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Within the budget: handle it.
    Admitted,
    /// Over the budget: refuse it.
    Refused,
    /// Over the budget for longer than [`RATE_LIMIT_GRACE`]: disconnect the client.
    Disconnect,
}

/// Token bucket plus the start of the current rejection streak.
#[derive(Debug)]
struct Bucket {
    /// Tokens available now.
    tokens: f64,
    /// When `tokens` was last brought up to date.
    updated: Instant,
    /// First refusal of the current streak.
    refused_since: Option<Instant>,
    /// Latest refusal.
    last_refused: Option<Instant>,
}

/// Everything ecos tracks per socket on top of socketioxide.
#[derive(Debug)]
pub struct SocketState {
    /// Who the socket is and what it may do.
    pub identity: Identity,
    /// The timer that disconnects the socket when its token expires.
    expiry: Mutex<Option<tokio::task::AbortHandle>>,
    /// The socket's rate limit.
    limit: RateLimit,
    /// Its bucket.
    bucket: Mutex<Bucket>,
    /// `room:ask` requests waiting for answers.
    asks_in_flight: AtomicUsize,
    /// Why ecos closed this socket, when it did: the disconnect is counted under it.
    close_reason: OnceLock<&'static str>,
    /// When the socket was accepted, for the disconnect webhook's `connected_seconds`.
    pub connected_at: Instant,
    /// Whether its departure was accounted for (counted, logged, notified).
    departed: std::sync::atomic::AtomicBool,
}

impl SocketState {
    /// A fresh state with a full bucket.
    pub fn new(limit: RateLimit, identity: Identity) -> Self {
        Self {
            identity,
            expiry: Mutex::new(None),
            limit,
            bucket: Mutex::new(Bucket {
                tokens: limit.burst,
                updated: Instant::now(),
                refused_since: None,
                last_refused: None,
            }),
            asks_in_flight: AtomicUsize::new(0),
            close_reason: OnceLock::new(),
            connected_at: Instant::now(),
            departed: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Marks the socket as gone; true only the first time, so a departure
    /// seen both by the drain and by socketioxide is accounted for once.
    pub fn depart(&self) -> bool {
        !self
            .departed
            .swap(true, std::sync::atomic::Ordering::AcqRel)
    }

    /// Takes `cost` tokens for an event arriving at `now`.
    pub fn admit(&self, cost: f64, now: Instant) -> Admission {
        if self.limit.per_second <= 0.0 {
            return Admission::Admitted;
        }
        let mut bucket = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.limit.per_second).min(self.limit.burst);
        bucket.updated = now;
        if bucket
            .last_refused
            .is_some_and(|last| now.saturating_duration_since(last) >= STREAK_GAP)
        {
            bucket.refused_since = None;
        }
        if bucket.tokens >= cost {
            bucket.tokens -= cost;
            return Admission::Admitted;
        }
        bucket.last_refused = Some(now);
        let since = *bucket.refused_since.get_or_insert(now);
        if now.saturating_duration_since(since) >= RATE_LIMIT_GRACE {
            Admission::Disconnect
        } else {
            Admission::Refused
        }
    }

    /// Reserves a `room:ask` slot; `None` when [`MAX_ASKS_IN_FLIGHT`] are taken.
    pub fn start_ask(&self) -> Option<AskSlot<'_>> {
        let taken = self.asks_in_flight.fetch_add(1, Ordering::AcqRel);
        if taken >= MAX_ASKS_IN_FLIGHT {
            self.asks_in_flight.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(AskSlot(self))
    }

    /// Records why ecos is closing this socket (the first reason wins).
    pub fn set_close_reason(&self, reason: &'static str) {
        let _ = self.close_reason.set(reason);
    }

    /// Keeps the expiry timer, so the disconnect can cancel it.
    pub fn set_expiry(&self, timer: tokio::task::AbortHandle) {
        *self.expiry.lock().unwrap_or_else(|p| p.into_inner()) = Some(timer);
    }

    /// Cancels the expiry timer, if there is one.
    pub fn cancel_expiry(&self) {
        if let Some(timer) = self.expiry.lock().unwrap_or_else(|p| p.into_inner()).take() {
            timer.abort();
        }
    }

    /// Why ecos closed this socket, if it did.
    pub fn close_reason(&self) -> Option<&'static str> {
        self.close_reason.get().copied()
    }
}

/// A `room:ask` in flight; frees its slot when dropped.
#[derive(Debug)]
pub struct AskSlot<'a>(&'a SocketState);

impl Drop for AskSlot<'_> {
    fn drop(&mut self) {
        self.0.asks_in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: RateLimit = RateLimit {
        per_second: 10.0,
        burst: 5.0,
    };

    #[test]
    fn a_burst_passes_then_the_rate_refills() {
        let state = SocketState::new(LIMIT, Identity::anonymous());
        let t0 = Instant::now();
        for _ in 0..5 {
            assert_eq!(state.admit(1.0, t0), Admission::Admitted);
        }
        assert_eq!(state.admit(1.0, t0), Admission::Refused);
        // 10 per second: one token back after 100 ms.
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(state.admit(1.0, t1), Admission::Admitted);
        assert_eq!(state.admit(1.0, t1), Admission::Refused);
    }

    #[test]
    fn staying_over_the_limit_past_the_grace_disconnects() {
        let state = SocketState::new(LIMIT, Identity::anonymous());
        let t0 = Instant::now();
        let mut now = t0;
        let mut outcome = Admission::Admitted;
        // Twice the allowed rate: every other event is refused, the streak never ends.
        while now < t0 + RATE_LIMIT_GRACE + Duration::from_secs(1) {
            outcome = state.admit(1.0, now);
            if outcome == Admission::Disconnect {
                break;
            }
            now += Duration::from_millis(50);
        }
        assert_eq!(outcome, Admission::Disconnect);
        assert!(now >= t0 + RATE_LIMIT_GRACE);
    }

    #[test]
    fn slowing_down_ends_the_streak() {
        let state = SocketState::new(LIMIT, Identity::anonymous());
        let t0 = Instant::now();
        for _ in 0..6 {
            state.admit(1.0, t0);
        }
        // A pause longer than the streak gap: the client behaved, start over.
        let later = t0 + RATE_LIMIT_GRACE;
        assert_eq!(state.admit(1.0, later), Admission::Admitted);
        for _ in 0..5 {
            state.admit(1.0, later);
        }
        assert_eq!(state.admit(1.0, later), Admission::Refused);
    }

    #[test]
    fn zero_rate_turns_the_limit_off() {
        let state = SocketState::new(
            RateLimit {
                per_second: 0.0,
                burst: 1.0,
            },
            Identity::anonymous(),
        );
        let now = Instant::now();
        for _ in 0..10_000 {
            assert_eq!(state.admit(1.0, now), Admission::Admitted);
        }
    }

    #[test]
    fn asks_in_flight_are_capped_and_freed() {
        let state = SocketState::new(LIMIT, Identity::anonymous());
        let slots: Vec<_> = (0..MAX_ASKS_IN_FLIGHT)
            .map(|_| state.start_ask().expect("slot"))
            .collect();
        assert!(state.start_ask().is_none());
        drop(slots);
        assert!(state.start_ask().is_some());
    }
}
