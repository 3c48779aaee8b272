//! Engine.IO sessions as the connection layer sees them: which connection a
//! session that upgraded to WebSocket writes to, and whether a long-polling
//! session is still polling.
//!
//! A session's queue is drained by its transport. Over WebSocket, the
//! connection's writer drains it, and [`GuardedStream`](super::GuardedStream)
//! sees that writer fall behind. Over long-polling it is drained only by the
//! client's next `GET`: a client that stops polling has no connection that
//! could stall, so the HTTP middleware reports each poll here
//! ([`Session::poll`]), and a session whose queue is not being taken is as
//! far behind as the time since its last poll returned.
//!
//! A session is watched from its socket's connect to its disconnect; the
//! socket id is the Engine.IO session id (`?sid=` on every request of it).

use std::{
    fmt,
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use axum::extract::ConnectInfo;

use super::{
    Peer,
    slow_consumers::{ConnState, stamp},
};

/// What ecos does to a session it closes as a slow consumer: takes the
/// socket out of its rooms and says why (supplied by the realtime layer,
/// which owns the socket).
pub type Evict = Box<dyn Fn() + Send + Sync>;

/// Ends a long-polling session at once: the app sends Engine.IO its own
/// close packet for it (`POST` of `1` with the session id and Engine.IO
/// version given), as a client leaving would. A full queue cannot take a
/// DISCONNECT, and the session would otherwise linger until its heartbeat
/// times out, still counted among the recipients of every broadcast.
pub type CloseSession = Arc<dyn Fn(&str, u8) + Send + Sync>;

/// Marks the app's own close request for a session, which the session
/// watch lets through although it refuses the client's.
#[derive(Clone, Copy, Debug)]
pub struct ClosingRequest;

/// One Engine.IO session.
pub struct Session {
    /// The Engine.IO session id.
    sid: String,
    /// Its Engine.IO protocol version (3 or 4).
    eio: u8,
    /// How to end it while it is on long-polling, once the app has one.
    closer: Arc<Mutex<Option<CloseSession>>>,
    /// Zero point of `polled_at`.
    epoch: Instant,
    /// Polls (`GET`s) waiting for their answer: while one waits, the queue is taken as it fills.
    polls_waiting: AtomicU32,
    /// Milliseconds since `epoch` at which the last poll was answered, plus one.
    polled_at: AtomicU64,
    /// The connection of the WebSocket the session upgraded to.
    websocket: OnceLock<Arc<ConnState>>,
    /// Whether the session started on long-polling (and so is watched by its polls until it upgrades).
    polling: bool,
    /// Set when ecos ended the session (see [`Session::is_evicted`]).
    evicted: AtomicBool,
    evict: Evict,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("polls_waiting", &self.polls_waiting)
            .field("polling", &self.polling)
            .field("evicted", &self.evicted)
            .finish_non_exhaustive()
    }
}

impl Session {
    pub(super) fn new(
        sid: String,
        eio: u8,
        closer: Arc<Mutex<Option<CloseSession>>>,
        epoch: Instant,
        polling: bool,
        evict: Evict,
    ) -> Self {
        Self {
            sid,
            eio,
            closer,
            polled_at: AtomicU64::new(stamp(epoch)),
            epoch,
            polls_waiting: AtomicU32::new(0),
            websocket: OnceLock::new(),
            polling,
            evicted: AtomicBool::new(false),
            evict,
        }
    }

    /// Marks a poll of this session as begun; the guard marks it answered when dropped.
    pub fn poll(self: &Arc<Self>) -> PollGuard {
        self.polls_waiting.fetch_add(1, Ordering::AcqRel);
        PollGuard(self.clone())
    }

    /// Records the connection of the session's WebSocket (from the
    /// `extensions` of the request that opened it: the handshake of a
    /// WebSocket-only session, or the upgrade); from then on that connection
    /// is the one that falls behind, and the one closed.
    pub fn on_websocket(&self, extensions: &axum::http::Extensions) {
        if let Some(info) = extensions.get::<ConnectInfo<Peer>>() {
            let _ = self.websocket.set(info.0.state.clone());
        }
    }

    /// Whether ecos ended this session (as a slow consumer, or because an
    /// answer found its queue full); its requests are then refused.
    pub fn is_evicted(&self) -> bool {
        self.evicted.load(Ordering::Acquire)
    }

    /// Whether ecos ended the session or closed its WebSocket; the socket's
    /// own close reason, when it has one, says why.
    pub fn closed_as_slow_consumer(&self) -> bool {
        self.is_evicted() || self.websocket.get().is_some_and(|ws| ws.is_closed())
    }

    /// Closes the session's transport: its WebSocket connection, or, on
    /// long-polling, ends the session and refuses its further requests (the
    /// client sees its session end and reconnects). True when it was open;
    /// false also for a WebSocket session whose connection ecos cannot reach
    /// (a request made in-process, without one).
    pub fn close_transport(&self) -> bool {
        // A long-polling session is ended once; its polls are refused from now on.
        if self.websocket.get().is_none()
            && self.polling
            && self.evicted.swap(true, Ordering::AcqRel)
        {
            return false;
        }
        self.shut()
    }

    /// Closes the transport itself: the WebSocket's connection, or the
    /// long-polling session; false when there is neither to reach.
    fn shut(&self) -> bool {
        match self.websocket.get() {
            Some(ws) => ws.close(),
            None if self.polling => {
                self.end_polling();
                true
            }
            None => false,
        }
    }

    /// Has the app end the long-polling session (see [`CloseSession`]).
    fn end_polling(&self) {
        let closer = self.closer.lock().ok().and_then(|c| c.clone());
        if let Some(close) = closer {
            close(&self.sid, self.eio);
        }
    }

    /// How far behind the session's transport is, at `now` since the epoch.
    pub(super) fn lag(&self, now: Duration) -> Lag {
        if self.is_evicted() {
            return Lag::Closing;
        }
        if let Some(ws) = self.websocket.get() {
            if ws.is_closed() {
                return Lag::Closing;
            }
            return ws.behind_for(now).map_or(Lag::CaughtUp, Lag::Behind);
        }
        if !self.polling || self.polls_waiting.load(Ordering::Acquire) > 0 {
            return Lag::CaughtUp;
        }
        let at = self.polled_at.load(Ordering::Acquire).saturating_sub(1);
        Lag::Behind(now.saturating_sub(Duration::from_millis(at)))
    }

    /// The transport, for the log.
    pub(super) fn transport(&self) -> &'static str {
        if self.websocket.get().is_some() {
            "websocket"
        } else {
            "polling"
        }
    }

    /// Closes a session that fell behind: the realtime layer's eviction
    /// (out of its rooms, `slow_consumer` as the reason), then its transport.
    /// True for the call that did it.
    pub(super) fn evict(&self) -> bool {
        if self.evicted.swap(true, Ordering::AcqRel) {
            return false;
        }
        (self.evict)();
        self.shut();
        true
    }
}

/// How far behind a session's transport is.
pub(super) enum Lag {
    /// Nothing waits to be written, or a poll is waiting to take it.
    CaughtUp,
    /// Behind for this long.
    Behind(Duration),
    /// Already being closed.
    Closing,
}

/// A poll being answered; marks it answered when dropped, which the
/// middleware does as soon as the answer is made: from then until the next
/// poll arrives (writing the answer included) the queue is not being taken.
#[derive(Debug)]
pub struct PollGuard(Arc<Session>);

impl Drop for PollGuard {
    fn drop(&mut self) {
        self.0
            .polled_at
            .store(stamp(self.0.epoch), Ordering::Release);
        self.0.polls_waiting.fetch_sub(1, Ordering::AcqRel);
    }
}
