//! Slow consumers: clients that stop reading while the server still has
//! messages for them.
//!
//! Every message to a socket is queued in that socket's buffer (at most
//! `socketio.max_buffer_packets` packets), then written to its transport. A
//! client that does not read lets the kernel's buffers fill, the writes
//! block, and its queue fills behind them. Other clients are not slowed: each
//! has its own queue and writer. The policy for the slow one is to close its
//! connection rather than drop messages in silence:
//!
//! - when its writes have been blocked for `socketio.slow_consumer_timeout_secs`
//!   (checked by a sweeper a few times per timeout), or
//! - at once, when a broadcast finds full queues ([`SlowConsumers::on_overflow`]):
//!   every transport that has been behind for [`OVERFLOW_STALL`] is closed,
//!   and when fewer were closed than queues overflowed, the ones furthest
//!   behind (at least [`OVERFLOW_FLOOR`]) as well. A transport is *behind*
//!   from the moment its writer has more to write until it has written
//!   everything queued (engineioxide flushes a WebSocket only when its queue
//!   is empty), or, on long-polling, from the moment a poll was answered until
//!   the next one arrives ([`sessions`](super::sessions)). A client that
//!   keeps up is never behind for long, so another client's overflow does
//!   not close it.
//!
//! Socketioxide reports how many queues a broadcast found full, not whose,
//! and the queues are out of ecos's reach; how far behind each transport is
//! is the best witness ecos has (docs/hardening.md). Every message a full
//! queue refused is counted in `ecos_messages_dropped_total`.
//!
//! The client sees its transport close (or, on long-polling, its session
//! end) and reconnects (Socket.IO clients do so by themselves). The socket's
//! disconnect is counted in `ecos_disconnections_total{reason="slow_consumer"}`.
//!
//! To know which connection is behind, ecos serves every connection through a
//! [`GuardedStream`](super::listener::GuardedStream), which records when a
//! write could not proceed and when its writer last caught up, and hands each
//! request a [`Peer`](super::Peer) (as axum's `ConnectInfo`) that leads back
//! to its connection.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use futures_util::task::AtomicWaker;

use super::sessions::{CloseSession, Evict, Lag, Session};

/// How long a transport must have been behind for a queue overflow to close it.
pub const OVERFLOW_STALL: Duration = Duration::from_millis(500);

/// Blocked writes closer together than this belong to one run of
/// congestion: a client that reads, but too slowly, unblocks its writer a
/// little at a time and blocks it again.
pub const CONGESTION_GAP: Duration = Duration::from_millis(250);

/// The least a transport must have been behind to be closed in place of a
/// full queue no transport behind for [`OVERFLOW_STALL`] accounts for.
pub const OVERFLOW_FLOOR: Duration = Duration::from_millis(50);

/// Connection state shared by the stream, its requests and the sweeper.
#[derive(Debug, Default)]
pub(super) struct ConnState {
    /// Milliseconds since [`SlowConsumers`]' epoch at which a write first
    /// could not proceed, plus one; 0 while writes flow.
    pub(super) stalled_since: AtomicU64,
    /// Milliseconds since the epoch, plus one, at which the writer started
    /// writing without having caught up (flushed) since; 0 when caught up.
    pub(super) behind_since: AtomicU64,
    /// Milliseconds since the epoch, plus one, of the first blocked write of
    /// the current run of blocked writes (no two further apart than [`CONGESTION_GAP`]).
    pub(super) congested_since: AtomicU64,
    /// Milliseconds since the epoch, plus one, of the last blocked write or flush.
    pub(super) last_blocked: AtomicU64,
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

/// Now, as the connection and session stamps store it: milliseconds since
/// `epoch`, plus one, so that 0 can mean "not set".
pub(super) fn stamp(epoch: Instant) -> u64 {
    epoch.elapsed().as_millis() as u64 + 1
}

/// The time from a [`stamp`] (0: not set) to `now`, both counted from the epoch.
fn since(at: &AtomicU64, now: Duration) -> Option<Duration> {
    let at = at.load(Ordering::Acquire);
    (at != 0).then(|| now.saturating_sub(Duration::from_millis(at - 1)))
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

    /// How long its writes have been blocked, at `now` since the epoch.
    fn stalled_for(&self, now: Duration) -> Option<Duration> {
        since(&self.stalled_since, now)
    }

    /// How long its writer has been behind, at `now` since the epoch: since
    /// it last caught up (its queue emptied and it flushed), or since the
    /// start of its current run of blocked writes, whichever is longer.
    ///
    /// Both, because tokio-tungstenite also flushes whenever a blocked write
    /// unblocks, which says nothing of the queue behind it.
    pub(super) fn behind_for(&self, now: Duration) -> Option<Duration> {
        let unflushed = since(&self.behind_since, now);
        let congested = since(&self.last_blocked, now)
            .filter(|quiet| *quiet <= CONGESTION_GAP)
            .and_then(|_| since(&self.congested_since, now));
        unflushed.max(congested)
    }

    /// Records a write or flush that could not proceed, at `now_ms` (a [`stamp`]).
    pub(super) fn blocked(&self, now_ms: u64) {
        let last = self.last_blocked.swap(now_ms, Ordering::AcqRel);
        if last == 0 || now_ms.saturating_sub(last) > CONGESTION_GAP.as_millis() as u64 {
            self.congested_since.store(now_ms, Ordering::Release);
        }
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

struct Registry {
    /// Zero point of `stalled_since`.
    epoch: Instant,
    /// Every accepted connection; dead entries are pruned by the sweeper.
    conns: Mutex<Vec<Weak<ConnState>>>,
    /// Every connected socket's Engine.IO session, by session id.
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    /// Ends a long-polling session; set once the app is built.
    closer: Arc<Mutex<Option<CloseSession>>>,
    /// How long writes may stay blocked; `None`: only overflow closes.
    timeout: Option<Duration>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl SlowConsumers {
    /// A registry closing connections blocked for longer than `timeout` (`None`: never by time).
    pub fn new(timeout: Option<Duration>) -> Self {
        Self {
            inner: Arc::new(Registry {
                epoch: Instant::now(),
                conns: Mutex::new(Vec::new()),
                sessions: Mutex::new(HashMap::new()),
                closer: Arc::default(),
                timeout,
            }),
        }
    }

    /// Tracks a new connection's state; returns it with the epoch its stall times count from.
    pub(super) fn register(&self) -> (Arc<ConnState>, Instant) {
        let state = Arc::new(ConnState::default());
        if let Ok(mut conns) = self.inner.conns.lock() {
            // Without a sweeper nothing else prunes the closed ones: do it
            // whenever the list has doubled since the last time.
            if conns.len() == conns.capacity() {
                conns.retain(|weak| weak.strong_count() > 0);
            }
            conns.push(Arc::downgrade(&state));
        }
        (state, self.inner.epoch)
    }

    /// Sets (or, with `None`, drops) how a long-polling session is ended.
    pub fn set_session_closer(&self, closer: Option<CloseSession>) {
        if let Ok(mut slot) = self.inner.closer.lock() {
            *slot = closer;
        }
    }

    /// Watches the session of a socket that just connected (`eio`: its
    /// Engine.IO version; `polling`: it started on long-polling, else
    /// `handshake`, the extensions of its WebSocket's request, lead to its
    /// connection); `evict` takes it out of its rooms when ecos closes it as
    /// a slow consumer. Returns the session, which the socket keeps.
    pub fn watch_session(
        &self,
        sid: String,
        eio: u8,
        polling: bool,
        handshake: &axum::http::Extensions,
        evict: Evict,
    ) -> Arc<Session> {
        let session = Arc::new(Session::new(
            sid.clone(),
            eio,
            self.inner.closer.clone(),
            self.inner.epoch,
            polling,
            evict,
        ));
        if !polling {
            session.on_websocket(handshake);
        }
        if let Ok(mut sessions) = self.inner.sessions.lock() {
            sessions.insert(sid, session.clone());
        }
        session
    }

    /// Stops watching a session (its socket disconnected).
    pub fn forget_session(&self, sid: &str) {
        if let Ok(mut sessions) = self.inner.sessions.lock() {
            sessions.remove(sid);
        }
    }

    /// The watched session `sid`, for the HTTP layer to report its polls and upgrade.
    pub fn session(&self, sid: &str) -> Option<Arc<Session>> {
        self.inner.sessions.lock().ok()?.get(sid).cloned()
    }

    /// Called when broadcasts found `full` queues full: closes every
    /// transport behind for [`OVERFLOW_STALL`] (or the timeout, if shorter),
    /// then, while fewer transports are closing than queues overflowed, the
    /// ones furthest behind, down to [`OVERFLOW_FLOOR`]. Returns how many it closed.
    pub fn on_overflow(&self, full: usize) -> usize {
        let stall = self
            .inner
            .timeout
            .map_or(OVERFLOW_STALL, |t| t.min(OVERFLOW_STALL));
        let now = self.inner.epoch.elapsed();
        // Sessions being closed whose sockets have not left yet can still
        // refuse a broadcast: they account for `full` too.
        let mut accounted = 0;
        let mut candidates: Vec<(Duration, Arc<Session>)> = Vec::new();
        if let Ok(sessions) = self.inner.sessions.lock() {
            for session in sessions.values() {
                match session.lag(now) {
                    Lag::Closing => accounted += 1,
                    Lag::Behind(lag) => candidates.push((lag, session.clone())),
                    Lag::CaughtUp => {}
                }
            }
        }
        candidates.sort_by_key(|c| std::cmp::Reverse(c.0));
        let mut closed = 0;
        for (lag, session) in candidates {
            let needed = accounted + closed < full;
            if lag < stall && !(needed && lag >= OVERFLOW_FLOOR) {
                break;
            }
            if session.evict() {
                closed += 1;
                tracing::warn!(
                    behind_ms = lag.as_millis() as u64,
                    transport = session.transport(),
                    "closing a slow consumer: its queue overflowed while it was behind"
                );
            }
        }
        closed
    }

    /// Closes the connections blocked for at least the timeout; returns how many.
    fn sweep(&self) -> usize {
        let Some(timeout) = self.inner.timeout else {
            return 0;
        };
        let now = self.inner.epoch.elapsed();
        let mut closed = 0;
        let Ok(mut conns) = self.inner.conns.lock() else {
            return 0;
        };
        conns.retain(|weak| {
            let Some(state) = weak.upgrade() else {
                return false;
            };
            let stalled_for = state.stalled_for(now);
            if !state.is_closed() && stalled_for.is_some_and(|d| d >= timeout) && state.close() {
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
