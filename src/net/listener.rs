//! Accepting connections so that each one can be watched and closed: the
//! listener, its streams, and the [`Peer`] every request carries.

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, atomic::Ordering},
    task::{Context, Poll},
    time::Instant,
};

use axum::{
    extract::{ConnectInfo, connect_info::Connected},
    serve::{IncomingStream, Listener},
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
};

use super::slow_consumers::{ConnState, SlowConsumers};

/// The error a closed slow consumer's reads and writes return.
const CLOSED_MESSAGE: &str = "slow consumer: the client stopped reading";

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
        let (state, epoch) = self.consumers.register();
        let stream = GuardedStream {
            inner: stream,
            state,
            epoch,
        };
        (stream, addr)
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
