//! The stream every accepted connection is served through, and the [`Peer`]
//! every request carries.

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, atomic::Ordering},
    task::{Context, Poll},
    time::Instant,
};

use axum::extract::ConnectInfo;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};

use super::{
    request_cycle::RequestCycle,
    server::ConnSlot,
    slow_consumers::{ConnState, SlowConsumers, TIMED_OUT_408, stamp},
};

/// The error a closed slow consumer's reads and writes return.
const CLOSED_MESSAGE: &str = "slow consumer: the client stopped reading";

/// The error a timed-out connection's reads and writes return.
const TIMED_OUT_MESSAGE: &str = "connection timed out waiting for a request";

/// What a client whose request head did not arrive in time is told.
const RESPONSE_408: &[u8] =
    b"HTTP/1.1 408 Request Timeout\r\nconnection: close\r\ncontent-length: 0\r\n\r\n";

/// A TCP stream that records when its writes stall, reports the bytes it
/// reads to its [`RequestCycle`], and can be closed from outside.
#[derive(Debug)]
pub struct GuardedStream {
    inner: TcpStream,
    /// Shared with the slow-consumer sweeper and the requests' [`Peer`].
    state: Arc<ConnState>,
    /// Zero point of `state.stalled_since`.
    epoch: Instant,
    /// The connection's phase and deadline, moved on by the bytes read here.
    cycle: Arc<RequestCycle>,
    /// Counts this connection against the cap until the socket is closed
    /// (which, for a WebSocket, is long after hyper's connection ended).
    _slot: ConnSlot,
    /// Whether the `408` of a timed-out head was already written.
    answered_timeout: bool,
}

impl GuardedStream {
    /// Wraps an accepted `stream`, registering it with `consumers`.
    pub(super) fn new(
        stream: TcpStream,
        consumers: &SlowConsumers,
        cycle: Arc<RequestCycle>,
        slot: ConnSlot,
    ) -> Self {
        // Realtime messages are small and latency-bound: do not let Nagle's
        // algorithm hold them back waiting for the previous segment's ACK.
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
        let (state, epoch) = consumers.register();
        Self {
            inner: stream,
            state,
            epoch,
            cycle,
            _slot: slot,
            answered_timeout: false,
        }
    }

    /// The state a request's [`Peer`] leads back to.
    pub(super) fn peer(&self, addr: SocketAddr) -> Peer {
        Peer {
            addr,
            state: self.state.clone(),
        }
    }

    /// The connection's shared state, to end it from its task.
    pub(super) fn state(&self) -> Arc<ConnState> {
        self.state.clone()
    }

    /// The error to return instead of reading or writing, if the connection was ended.
    fn ended(&self) -> Option<io::Error> {
        if self.state.is_closed() {
            Some(io::Error::new(io::ErrorKind::TimedOut, CLOSED_MESSAGE))
        } else if self.state.timed_out() != 0 {
            Some(io::Error::new(io::ErrorKind::TimedOut, TIMED_OUT_MESSAGE))
        } else {
            None
        }
    }

    fn note_write<T>(&self, result: &Poll<io::Result<T>>, cx: &Context<'_>) {
        let caught_up = self.state.behind_since.load(Ordering::Relaxed) == 0;
        // One clock read, and only when a stamp is due: not per write while behind.
        let now = (caught_up || result.is_pending()).then(|| stamp(self.epoch));
        if caught_up && let Some(now) = now {
            self.state.behind_since.store(now, Ordering::Release);
        }
        match result {
            Poll::Pending => {
                self.state.write_waker.register(cx.waker());
                let now = now.unwrap_or_else(|| stamp(self.epoch));
                self.state.blocked(now);
                if self.state.stalled_since.load(Ordering::Relaxed) == 0 {
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
        if let Some(error) = self.ended() {
            if self.state.timed_out() == TIMED_OUT_408 && !self.answered_timeout {
                self.answered_timeout = true;
                // Best effort: the socket's send buffer is empty while a
                // head is awaited, so this goes out whole or not at all.
                let _ = self.inner.try_write(RESPONSE_408);
            }
            return Poll::Ready(Err(error));
        }
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        match &result {
            Poll::Ready(Ok(())) => self.cycle.bytes_read(buf.filled().len() - before),
            Poll::Ready(Err(_)) => {}
            Poll::Pending => {
                self.state.read_waker.register(cx.waker());
                // Ended between the check and the registration: do not sleep through it.
                if let Some(error) = self.ended() {
                    return Poll::Ready(Err(error));
                }
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
        if let Some(error) = self.ended() {
            return Poll::Ready(Err(error));
        }
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.note_write(&result, cx);
        if result.is_pending()
            && let Some(error) = self.ended()
        {
            return Poll::Ready(Err(error));
        }
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if let Some(error) = self.ended() {
            return Poll::Ready(Err(error));
        }
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.note_write(&result, cx);
        if result.is_pending()
            && let Some(error) = self.ended()
        {
            return Poll::Ready(Err(error));
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(error) = self.ended() {
            return Poll::Ready(Err(error));
        }
        let result = Pin::new(&mut self.inner).poll_flush(cx);
        match result {
            // engineioxide flushes a WebSocket once its queue is empty: caught up.
            Poll::Ready(Ok(())) if self.state.behind_since.load(Ordering::Relaxed) != 0 => {
                self.state.behind_since.store(0, Ordering::Release);
            }
            Poll::Pending => self.state.blocked(stamp(self.epoch)),
            _ => {}
        }
        result
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
    pub(super) state: Arc<ConnState>,
}

impl Peer {
    /// Whether this connection was closed as a slow consumer.
    pub fn closed_as_slow_consumer(&self) -> bool {
        self.state.is_closed()
    }
}

/// Closes the connection the request behind `extensions` came over; false
/// when the request carries no connection (an in-process test request).
///
/// For a socket this is the connection of its handshake: the WebSocket
/// itself when the client connected with WebSocket only.
pub fn close_connection(extensions: &axum::http::Extensions) -> bool {
    extensions
        .get::<ConnectInfo<Peer>>()
        .is_some_and(|info| info.0.state.close())
}

/// Whether the request behind `extensions` came over a connection closed as a slow consumer.
pub fn closed_as_slow_consumer(extensions: &axum::http::Extensions) -> bool {
    extensions
        .get::<ConnectInfo<Peer>>()
        .is_some_and(|info| info.0.closed_as_slow_consumer())
}
