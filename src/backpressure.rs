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
//! To know which connection is blocked, ecos accepts connections through
//! [`GuardedListener`], whose streams record when a write could not proceed,
//! and hands each request a [`Peer`] (as axum's `ConnectInfo`) that leads back
//! to its connection.

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use axum::{
    extract::{ConnectInfo, connect_info::Connected},
    serve::{IncomingStream, Listener},
};
use futures_util::task::AtomicWaker;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
};

/// How long a connection's writes must have been blocked for a queue overflow to close it.
pub const OVERFLOW_STALL: Duration = Duration::from_millis(500);

/// The error a closed slow consumer's reads and writes return.
const CLOSED_MESSAGE: &str = "slow consumer: the client stopped reading";

/// Connection state shared by the stream, its requests and the sweeper.
#[derive(Debug, Default)]
struct ConnState {
    /// Milliseconds since [`SlowConsumers`]' epoch at which a write first
    /// could not proceed, plus one; 0 while writes flow.
    stalled_since: AtomicU64,
    /// Set once the connection has been closed as a slow consumer.
    closed: AtomicBool,
    /// Wakes a read pending on the socket when the connection is closed.
    read_waker: AtomicWaker,
    /// Wakes a write pending on the socket when the connection is closed.
    write_waker: AtomicWaker,
}

impl ConnState {
    fn close(&self) -> bool {
        let first = !self.closed.swap(true, Ordering::AcqRel);
        self.read_waker.wake();
        self.write_waker.wake();
        first
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
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

    /// Wraps an accepted connection so its stalls are seen.
    fn register(&self, stream: TcpStream) -> GuardedStream {
        let state = Arc::new(ConnState::default());
        if let Ok(mut conns) = self.inner.conns.lock() {
            conns.push(Arc::downgrade(&state));
        }
        GuardedStream {
            inner: stream,
            state,
            epoch: self.inner.epoch,
        }
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

    /// Connections accepted and still open.
    pub fn open_connections(&self) -> usize {
        self.inner
            .conns
            .lock()
            .map(|conns| conns.iter().filter(|w| w.strong_count() > 0).count())
            .unwrap_or(0)
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

/// A TCP listener whose connections report when they stall.
pub struct GuardedListener {
    inner: TcpListener,
    consumers: SlowConsumers,
}

impl GuardedListener {
    /// Accepts from `inner`, registering every connection with `consumers`.
    pub fn new(inner: TcpListener, consumers: SlowConsumers) -> Self {
        Self { inner, consumers }
    }
}

impl Listener for GuardedListener {
    type Io = GuardedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        // axum's own accept loop already retries and logs accept errors.
        let (stream, addr) = Listener::accept(&mut self.inner).await;
        // Realtime messages are small and latency-bound: do not let Nagle's
        // algorithm hold them back waiting for the previous segment's ACK.
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
        (self.consumers.register(stream), addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// A TCP stream that records when its writes stall and can be closed from outside.
#[derive(Debug)]
pub struct GuardedStream {
    inner: TcpStream,
    state: Arc<ConnState>,
    epoch: Instant,
}

impl GuardedStream {
    fn closed_error() -> io::Error {
        io::Error::new(io::ErrorKind::TimedOut, CLOSED_MESSAGE)
    }

    fn note_write<T>(&self, result: &Poll<io::Result<T>>, cx: &Context<'_>) {
        match result {
            Poll::Pending => {
                self.state.write_waker.register(cx.waker());
                if self.state.stalled_since.load(Ordering::Relaxed) == 0 {
                    let now = self.epoch.elapsed().as_millis() as u64 + 1;
                    self.state.stalled_since.store(now, Ordering::Release);
                }
            }
            Poll::Ready(_) => {
                if self.state.stalled_since.load(Ordering::Relaxed) != 0 {
                    self.state.stalled_since.store(0, Ordering::Release);
                }
            }
        }
    }
}

impl AsyncRead for GuardedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.state.is_closed() {
            return Poll::Ready(Err(Self::closed_error()));
        }
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if result.is_pending() {
            self.state.read_waker.register(cx.waker());
            // Closed between the check and the registration: do not sleep through it.
            if self.state.is_closed() {
                return Poll::Ready(Err(Self::closed_error()));
            }
        }
        result
    }
}

impl AsyncWrite for GuardedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.state.is_closed() {
            return Poll::Ready(Err(Self::closed_error()));
        }
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.note_write(&result, cx);
        if result.is_pending() && self.state.is_closed() {
            return Poll::Ready(Err(Self::closed_error()));
        }
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.state.is_closed() {
            return Poll::Ready(Err(Self::closed_error()));
        }
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.note_write(&result, cx);
        if result.is_pending() && self.state.is_closed() {
            return Poll::Ready(Err(Self::closed_error()));
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.state.is_closed() {
            return Poll::Ready(Err(Self::closed_error()));
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Who is on the other end of a request's connection; axum puts it in every
/// request's extensions as `ConnectInfo<Peer>`, and Engine.IO keeps the
/// handshake's extensions with the session.
#[derive(Clone, Debug)]
pub struct Peer {
    /// The client's address (the router's, behind a proxy).
    pub addr: SocketAddr,
    /// The connection, to tell whether it was closed as a slow consumer.
    state: Arc<ConnState>,
}

impl Peer {
    /// Whether this connection was closed as a slow consumer.
    pub fn closed_as_slow_consumer(&self) -> bool {
        self.state.is_closed()
    }
}

impl Connected<IncomingStream<'_, GuardedListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, GuardedListener>) -> Self {
        Peer {
            addr: *stream.remote_addr(),
            state: stream.io().state.clone(),
        }
    }
}

/// Whether the request behind `extensions` came over a connection closed as a slow consumer.
pub fn closed_as_slow_consumer(extensions: &axum::http::Extensions) -> bool {
    extensions
        .get::<ConnectInfo<Peer>>()
        .is_some_and(|info| info.0.closed_as_slow_consumer())
}
