//! Slow consumers: clients that stop reading while the server still has
//! messages for them.
//!
//! Every message to a socket is queued in that socket's buffer (at most
//! `socketio.max_buffer_packets` packets), then written to its TCP connection.
//! A client that does not read lets the kernel's buffers fill, the writes
//! block, and its queue fills behind them. Other clients are not slowed: each
//! has its own queue and writer. The policy for the slow one is to close its
//! connection rather than drop messages in silence:
//!
//! - when its writes have been blocked for `socketio.slow_consumer_timeout_secs`
//!   (checked by a sweeper a few times per timeout), or
//! - at once, when a broadcast finds a full queue: every connection whose writes
//!   have been blocked for [`OVERFLOW_STALL`] (or the timeout, if shorter) is
//!   closed ([`SlowConsumers::close_stalled`]). A client that merely paused
//!   for a moment is not punished for another client's overflow.
//!
//! Every message a full queue refused is counted in
//! `ecos_messages_dropped_total`. With the default queue (1024 packets) a
//! queue only fills behind a client that stopped reading, which the rules
//! above then close; a much smaller queue can also overflow on a burst a
//! healthy client would have absorbed (docs/performance.md has the figures).
//!
//! The client sees its transport close and reconnects (Socket.IO clients do so
//! by themselves). The socket's disconnect is counted in
//! `ecos_disconnections_total{reason="slow_consumer"}`.
//!
//! To know which connection is blocked, ecos serves every connection through a
//! [`GuardedStream`](super::listener::GuardedStream), which records when a
//! write could not proceed, and hands each request a [`Peer`](super::Peer)
//! (as axum's `ConnectInfo`) that leads back to its connection.

use std::{
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use futures_util::task::AtomicWaker;

/// How long a connection's writes must have been blocked for a queue overflow to close it.
pub const OVERFLOW_STALL: Duration = Duration::from_millis(500);

/// Connection state shared by the stream, its requests and the sweeper.
#[derive(Debug, Default)]
pub(super) struct ConnState {
    /// Milliseconds since [`SlowConsumers`]' epoch at which a write first
    /// could not proceed, plus one; 0 while writes flow.
    pub(super) stalled_since: AtomicU64,
    /// Set once the connection has been closed as a slow consumer.
    closed: AtomicBool,
    /// Wakes a read pending on the socket when the connection is closed.
    pub(super) read_waker: AtomicWaker,
    /// Wakes a write pending on the socket when the connection is closed.
    pub(super) write_waker: AtomicWaker,
    /// Set when the connection layer ends the connection on a timeout
    /// ([`TIMED_OUT_408`] or [`TIMED_OUT_SILENT`]); 0 while it may run.
    timed_out: AtomicU8,
}

/// [`ConnState::time_out`]: answer `408 Request Timeout` before closing.
pub(super) const TIMED_OUT_408: u8 = 1;
/// [`ConnState::time_out`]: close without a word.
pub(super) const TIMED_OUT_SILENT: u8 = 2;

impl ConnState {
    /// Closes the connection; true for the call that closed it.
    pub(super) fn close(&self) -> bool {
        let first = !self.closed.swap(true, Ordering::AcqRel);
        self.read_waker.wake();
        self.write_waker.wake();
        first
    }

    pub(super) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Ends the connection on a timeout: its next read fails (after writing
    /// a `408` when `how` is [`TIMED_OUT_408`]), which ends hyper's connection.
    pub(super) fn time_out(&self, how: u8) {
        self.timed_out.store(how, Ordering::Release);
        self.read_waker.wake();
        self.write_waker.wake();
    }

    /// How the connection timed out ([`TIMED_OUT_408`], [`TIMED_OUT_SILENT`]), or 0.
    pub(super) fn timed_out(&self) -> u8 {
        self.timed_out.load(Ordering::Acquire)
    }
}

/// Finds and closes slow consumers; cheap to clone.
#[derive(Clone, Debug)]
pub struct SlowConsumers {
    inner: Arc<Registry>,
}

#[derive(Debug)]
struct Registry {
    /// Zero point of `stalled_since`.
    epoch: Instant,
    /// Every accepted connection; dead entries are pruned by the sweeper.
    conns: Mutex<Vec<Weak<ConnState>>>,
    /// How long writes may stay blocked; `None`: only overflow closes.
    timeout: Option<Duration>,
}

impl SlowConsumers {
    /// A registry closing connections blocked for longer than `timeout` (`None`: never by time).
    pub fn new(timeout: Option<Duration>) -> Self {
        Self {
            inner: Arc::new(Registry {
                epoch: Instant::now(),
                conns: Mutex::new(Vec::new()),
                timeout,
            }),
        }
    }

    /// Tracks a new connection's state; returns it with the epoch its stall times count from.
    pub(super) fn register(&self) -> (Arc<ConnState>, Instant) {
        let state = Arc::new(ConnState::default());
        if let Ok(mut conns) = self.inner.conns.lock() {
            conns.push(Arc::downgrade(&state));
        }
        (state, self.inner.epoch)
    }

    /// Closes every connection whose writes have been blocked for
    /// [`OVERFLOW_STALL`] (or the timeout, if shorter); returns how many.
    ///
    /// Called when a broadcast found a full queue: a queue only fills when its
    /// writer cannot write, so the blocked connections are the ones behind it.
    pub fn close_stalled(&self) -> usize {
        let min = self
            .inner
            .timeout
            .map_or(OVERFLOW_STALL, |t| t.min(OVERFLOW_STALL));
        self.close_where(|stalled_for| stalled_for.is_some_and(|d| d >= min))
    }

    /// Closes the connections blocked for at least the timeout; returns how many.
    fn sweep(&self) -> usize {
        let Some(timeout) = self.inner.timeout else {
            return 0;
        };
        self.close_where(|stalled_for| stalled_for.is_some_and(|d| d >= timeout))
    }

    fn close_where(&self, pick: impl Fn(Option<Duration>) -> bool) -> usize {
        let now = self.inner.epoch.elapsed();
        let mut closed = 0;
        let Ok(mut conns) = self.inner.conns.lock() else {
            return 0;
        };
        conns.retain(|weak| {
            let Some(state) = weak.upgrade() else {
                return false;
            };
            let since = state.stalled_since.load(Ordering::Acquire);
            let stalled_for =
                (since != 0).then(|| now.saturating_sub(Duration::from_millis(since - 1)));
            if !state.is_closed() && pick(stalled_for) && state.close() {
                closed += 1;
                tracing::warn!(
                    stalled_ms = stalled_for.map_or(0, |d| d.as_millis() as u64),
                    "closing a slow consumer: the client stopped reading"
                );
            }
            true
        });
        closed
    }

    /// Runs the sweeper until the returned guard is dropped; `None` without a timeout.
    pub fn spawn_sweeper(&self) -> Option<Sweeper> {
        let timeout = self.inner.timeout?;
        // A few checks per timeout: a stall is caught within 1/4 of it late.
        let period = (timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
        let this = self.clone();
        Some(Sweeper(tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                this.sweep();
            }
        })))
    }
}

/// The running sweeper; stops when dropped.
#[derive(Debug)]
pub struct Sweeper(tokio::task::JoinHandle<()>);

impl Drop for Sweeper {
    fn drop(&mut self) {
        self.0.abort();
    }
}
