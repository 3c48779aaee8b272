//! The accept loop and the HTTP/1 connections, with the limits that keep
//! slow, idle and surplus connections from holding the server.
//!
//! - A connection must send a complete request head within
//!   `limits.header_read_timeout_secs`; an idle keep-alive connection is kept
//!   `limits.keep_alive_idle_secs` between requests
//!   ([`RequestCycle`](super::request_cycle) has the phases);
//!   WebSockets, once upgraded, have no such deadline.
//! - A head larger than `limits.max_header_bytes` gets `431` (hyper answers it).
//! - At most [`ConnLimits::max_connections`] connections are served. Over
//!   that, up to [`HEALTH_RESERVE`] more are accepted for `/healthz` and
//!   `/readyz` only (anything else gets `503` and the connection closes); a
//!   newer one evicts the oldest, so a flood of idle connections cannot keep
//!   a health check out. While evicted ones are still closing, a burst past
//!   twice the reserve is closed at once.
//! - When `accept` fails for lack of file descriptors, the loop pauses for
//!   [`ACCEPT_BACKOFF`] rather than spin.
//!
//! Draining: the loop stops accepting when `stop` resolves, tells every
//! connection to finish (hyper closes idle ones at once, busy ones after
//! their response) and returns when all have ended.

use std::{
    collections::VecDeque,
    convert::Infallible,
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use axum::{
    Router,
    body::Body,
    extract::ConnectInfo,
    http::{Request, Response, StatusCode, header},
    response::IntoResponse,
};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use prometheus::IntGauge;
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{Notify, watch},
    task::JoinSet,
    time::Instant,
};
use tower_service::Service;

use super::{
    listener::GuardedStream,
    request_cycle::{Phase, RequestCycle},
    slow_consumers::{ConnState, SlowConsumers, TIMED_OUT_408, TIMED_OUT_SILENT},
};
use crate::{
    config::Limits,
    metrics::{Metrics, REFUSED_MAX_CONNECTIONS},
};

/// Connections accepted over the cap, for health checks only.
pub const HEALTH_RESERVE: usize = 16;

/// Connections over the cap still open, evicted ones not yet closed
/// included, past which a new one is closed at once: evicted connections
/// close a moment later, and a burst must not run the process out of
/// descriptors meanwhile.
const OVER_CAP_OPEN: usize = 2 * HEALTH_RESERVE;

/// Longest the accept loop waits for an evicted connection to close.
const OVER_CAP_WAIT: Duration = Duration::from_millis(50);

/// File descriptors kept out of the connection cap: Redis links, the
/// listener, the runtime's own, logs, and the connections over the cap
/// (at most twice the [`HEALTH_RESERVE`]).
pub const FD_RESERVE: u64 = 64;

/// Time a connection over the cap has to send its head (a health check
/// sends it at once), when the header timeout is longer.
const OVER_CAP_HEAD_TIMEOUT: Duration = Duration::from_secs(2);

/// Pause after `accept` failed for lack of resources (file descriptors,
/// memory), so the loop does not spin at full CPU while they last.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// How long a timed-out connection has to end after it was told to.
const END_GRACE: Duration = Duration::from_secs(1);

/// Failed accepts are logged at most this often.
const ACCEPT_ERROR_LOG_EVERY: Duration = Duration::from_secs(10);

/// The connection limits in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// Time allowed for a complete request head.
    pub header_read_timeout: Duration,
    /// Time an idle keep-alive connection is kept between requests.
    pub keep_alive_idle: Duration,
    /// Connections served at once: the setting, lowered to what the
    /// open-file limit allows.
    pub max_connections: usize,
    /// Largest request head, in bytes.
    pub max_header_bytes: usize,
}

impl ConnLimits {
    /// The limits of `limits`, with the cap lowered to fit an open-file soft
    /// limit of `nofile` (keeping [`FD_RESERVE`] descriptors aside).
    pub fn new(limits: &Limits, nofile: Option<u64>) -> Self {
        // `u64::MAX`: unlimited.
        let by_fds = nofile
            .filter(|&soft| soft != u64::MAX)
            .map_or(usize::MAX, |soft| {
                // A tiny limit still leaves half of it to connections.
                let usable = soft.saturating_sub(FD_RESERVE).max(soft / 2).max(1);
                usize::try_from(usable).unwrap_or(usize::MAX)
            });
        Self {
            header_read_timeout: limits.header_read_timeout,
            keep_alive_idle: limits.keep_alive_idle,
            max_connections: limits.max_connections.unwrap_or(usize::MAX).min(by_fds),
            max_header_bytes: limits.max_header_bytes,
        }
    }
}

/// What every connection's task shares.
struct Shared {
    /// The HTTP routes and the Socket.IO layer.
    router: Router,
    /// Registers each connection so stalled writers can be closed.
    consumers: SlowConsumers,
    /// The limits in force.
    limits: ConnLimits,
    /// Connection counters.
    metrics: Metrics,
    /// Connections under the cap, open now (upgraded ones included).
    open: Arc<AtomicUsize>,
    /// Connections over the cap, open now.
    over_cap: Arc<AtomicUsize>,
    /// Connections over the cap, oldest first, with what evicts each.
    reserve: Mutex<VecDeque<(u64, Arc<Notify>)>>,
    /// Names reserve entries.
    next_id: AtomicU64,
}

/// Accepts from `listener` and serves `router` on every connection until
/// `stop` resolves, then lets the connections finish and returns.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    consumers: SlowConsumers,
    limits: ConnLimits,
    metrics: Metrics,
    stop: impl Future<Output = ()>,
) -> io::Result<()> {
    let shared = Arc::new(Shared {
        router,
        consumers,
        limits,
        metrics,
        open: Arc::new(AtomicUsize::new(0)),
        over_cap: Arc::new(AtomicUsize::new(0)),
        reserve: Mutex::new(VecDeque::with_capacity(HEALTH_RESERVE + 1)),
        next_id: AtomicU64::new(0),
    });
    let (drain, draining) = watch::channel(());
    // Owned here, so aborting this future also ends every connection task.
    let mut conns = JoinSet::new();
    let mut backoff: Option<Instant> = None;
    let mut errors = AcceptErrors::default();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            () = sleep_until(backoff), if backoff.is_some() => backoff = None,
            accepted = listener.accept(), if backoff.is_none() => match accepted {
                Ok((stream, addr)) => {
                    // Decided here, by the one task that adds to `open`, so
                    // two accepts cannot both take the last place.
                    let slot = if shared.open.load(Ordering::Acquire) < limits.max_connections {
                        ConnSlot::new(&shared.open, true, &shared.metrics)
                    } else if over_cap_room(&shared.over_cap).await {
                        ConnSlot::new(&shared.over_cap, false, &shared.metrics)
                    } else {
                        drop(stream);
                        shared.metrics.tcp_connections_refused_total
                            .with_label_values(&[REFUSED_MAX_CONNECTIONS]).inc();
                        continue;
                    };
                    let conn = serve_connection(shared.clone(), stream, addr, slot, draining.clone());
                    conns.spawn(conn);
                }
                Err(error) => {
                    if let Some(pause) = errors.note(&error, &shared.metrics) {
                        backoff = Some(Instant::now() + pause);
                    }
                }
            },
        }
    }
    drop(listener);
    drain.send_replace(());
    while conns.join_next().await.is_some() {}
    Ok(())
}

/// Whether a connection over the cap may be served. Evicted connections
/// close a moment after the accept that evicted them, so at the limit the
/// loop waits briefly for one to go rather than close the newest, which in a
/// flood of idle connections is likely the health check.
async fn over_cap_room(over_cap: &AtomicUsize) -> bool {
    let deadline = Instant::now() + OVER_CAP_WAIT;
    while over_cap.load(Ordering::Acquire) >= OVER_CAP_OPEN {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    true
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Classifies failed accepts, counts them and logs them now and then.
#[derive(Default)]
struct AcceptErrors {
    /// When the last one was logged.
    logged: Option<Instant>,
    /// How many were not logged since.
    unlogged: u64,
}

impl AcceptErrors {
    /// Notes a failed accept; returns how long to pause before the next.
    fn note(&mut self, error: &io::Error, metrics: &Metrics) -> Option<Duration> {
        // The client gave up before it was accepted: nothing wrong here.
        if matches!(
            error.kind(),
            io::ErrorKind::ConnectionAborted
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionRefused
        ) {
            return None;
        }
        let fd_limit = matches!(error.raw_os_error(), Some(libc::EMFILE | libc::ENFILE));
        let reason = if fd_limit { "fd_limit" } else { "other" };
        metrics
            .tcp_accept_errors_total
            .with_label_values(&[reason])
            .inc();
        let now = Instant::now();
        if self
            .logged
            .is_none_or(|at| now.duration_since(at) >= ACCEPT_ERROR_LOG_EVERY)
        {
            tracing::warn!(
                %error,
                reason,
                since_last_logged = self.unlogged,
                "cannot accept a connection; pausing accepts"
            );
            self.logged = Some(now);
            self.unlogged = 0;
        } else {
            self.unlogged += 1;
        }
        Some(ACCEPT_BACKOFF)
    }
}

/// Serves one accepted connection, under the cap or in the health reserve.
async fn serve_connection(
    shared: Arc<Shared>,
    stream: TcpStream,
    addr: SocketAddr,
    slot: ConnSlot,
    draining: watch::Receiver<()>,
) {
    let limits = shared.limits;
    if slot.under_cap() {
        let cycle = Arc::new(RequestCycle::new(
            limits.header_read_timeout,
            limits.keep_alive_idle,
        ));
        let io = GuardedStream::new(stream, &shared.consumers, cycle.clone(), slot);
        let peer = io.peer(addr);
        let state = io.state();
        let router = shared.router.clone();
        let service_cycle = cycle.clone();
        let service = service_fn(move |mut request: Request<Incoming>| {
            service_cycle.request_started();
            request.extensions_mut().insert(ConnectInfo(peer.clone()));
            let response = router.clone().call(request);
            let cycle = service_cycle.clone();
            async move {
                let Ok(response) = response.await;
                Ok::<_, Infallible>(tracked(response, cycle))
            }
        });
        let conn = builder(&limits)
            .serve_connection(TokioIo::new(io), service)
            .with_upgrades();
        drive(
            conn,
            |c| c.graceful_shutdown(),
            &cycle,
            &state,
            draining,
            &shared,
        )
        .await;
    } else {
        serve_over_cap(&shared, stream, addr, slot, draining).await;
    }
}

/// Serves a connection over the cap: health routes only, one request, and
/// evicted by newer ones when the reserve is full.
async fn serve_over_cap(
    shared: &Arc<Shared>,
    stream: TcpStream,
    addr: SocketAddr,
    slot: ConnSlot,
    draining: watch::Receiver<()>,
) {
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let evicted = Arc::new(Notify::new());
    if let Ok(mut reserve) = shared.reserve.lock() {
        if reserve.len() >= HEALTH_RESERVE
            && let Some((_, oldest)) = reserve.pop_front()
        {
            // A stored permit: the oldest ends even if not waiting yet.
            oldest.notify_one();
        }
        reserve.push_back((id, evicted.clone()));
    }

    let limits = shared.limits;
    let cycle = Arc::new(RequestCycle::new(
        limits.header_read_timeout.min(OVER_CAP_HEAD_TIMEOUT),
        limits.keep_alive_idle,
    ));
    let io = GuardedStream::new(stream, &shared.consumers, cycle.clone(), slot);
    let peer = io.peer(addr);
    let state = io.state();
    let router = shared.router.clone();
    let answered = Arc::new(AtomicBool::new(false));
    let service_cycle = cycle.clone();
    let service_answered = answered.clone();
    let service = service_fn(move |mut request: Request<Incoming>| {
        service_cycle.request_started();
        let health = matches!(request.uri().path(), "/healthz" | "/readyz");
        service_answered.store(health, Ordering::Relaxed);
        request.extensions_mut().insert(ConnectInfo(peer.clone()));
        let response = health.then(|| router.clone().call(request));
        let cycle = service_cycle.clone();
        async move {
            let response = match response {
                Some(response) => {
                    let Ok(response) = response.await;
                    response
                }
                None => too_many_connections(),
            };
            Ok::<_, Infallible>(tracked(response, cycle))
        }
    });
    let mut builder = builder(&limits);
    // One request, then close: the slot is for the next health check.
    builder.keep_alive(false);
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::select! {
        () = drive(conn, |c| c.graceful_shutdown(), &cycle, &state, draining, shared) => {}
        () = evicted.notified() => {}
    }

    if let Ok(mut reserve) = shared.reserve.lock() {
        reserve.retain(|(entry, _)| *entry != id);
    }
    if !answered.load(Ordering::Relaxed) {
        shared
            .metrics
            .tcp_connections_refused_total
            .with_label_values(&[REFUSED_MAX_CONNECTIONS])
            .inc();
    }
}

/// The answer over the cap: `503`, try again shortly, and close.
fn too_many_connections() -> Response<Body> {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [
            (header::CONNECTION, "close"),
            (header::RETRY_AFTER, "1"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        "too many connections\n",
    )
        .into_response()
}

/// The HTTP/1 settings every connection is served with.
fn builder(limits: &ConnLimits) -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder
        // hyper's own header timeout also runs between keep-alive requests,
        // which would cut idle connections early: `drive` keeps the deadlines.
        .header_read_timeout(None)
        .max_header_size(limits.max_header_bytes);
    builder
}

/// Runs `conn` to its end, closing it when its phase's deadline passes and
/// shutting it down gracefully when the server drains.
async fn drive<C>(
    conn: C,
    graceful_shutdown: impl FnOnce(Pin<&mut C>),
    cycle: &RequestCycle,
    state: &ConnState,
    mut draining: watch::Receiver<()>,
    shared: &Shared,
) where
    C: Future<Output = hyper::Result<()>>,
{
    tokio::pin!(conn);
    let mut graceful_shutdown = Some(graceful_shutdown);
    let expired = loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(error) = result {
                    if error.is_parse_too_large() {
                        shared.metrics.tcp_connections_closed_total
                            .with_label_values(&["header_too_large"]).inc();
                    }
                    tracing::debug!(%error, "connection ended with an error");
                }
                return;
            }
            () = sleep_until(cycle.deadline()) => {
                if let Some(phase) = cycle.expired() {
                    break phase;
                }
            }
            () = cycle.changed() => {}
            _ = draining.changed(), if graceful_shutdown.is_some() => {
                if let Some(shutdown) = graceful_shutdown.take() {
                    shutdown(conn.as_mut());
                }
            }
        }
    };
    let (how, reason) = match expired {
        Phase::Head => (TIMED_OUT_408, "header_timeout"),
        Phase::Idle => (TIMED_OUT_SILENT, "keep_alive_timeout"),
        _ => (TIMED_OUT_SILENT, "header_timeout"),
    };
    tracing::debug!(reason, "closing a connection that timed out");
    shared
        .metrics
        .tcp_connections_closed_total
        .with_label_values(&[reason])
        .inc();
    state.time_out(how);
    // The stream now fails its reads, which ends hyper's connection; if it
    // does not within the grace, dropping it closes the socket anyway.
    let _ = tokio::time::timeout(END_GRACE, conn).await;
}

/// `response`, whose body tells `cycle` when it has been sent.
fn tracked(response: Response<Body>, cycle: Arc<RequestCycle>) -> Response<TrackedBody> {
    let upgraded = response.status() == StatusCode::SWITCHING_PROTOCOLS;
    response.map(|inner| TrackedBody {
        inner,
        cycle,
        upgraded,
    })
}

/// A response body that marks the end of its response when hyper drops it
/// (after its last frame, or when the connection ends).
pub struct TrackedBody {
    inner: Body,
    cycle: Arc<RequestCycle>,
    /// A `101 Switching Protocols` response: the connection becomes a WebSocket.
    upgraded: bool,
}

impl Drop for TrackedBody {
    fn drop(&mut self) {
        self.cycle.response_finished(self.upgraded);
    }
}

impl HttpBody for TrackedBody {
    type Data = <Body as HttpBody>::Data;
    type Error = <Body as HttpBody>::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A connection's place in the count of open connections, given back when
/// the socket is closed.
pub(super) struct ConnSlot {
    /// The count this connection is part of: under the cap, or over it.
    count: Arc<AtomicUsize>,
    /// Whether `count` is the under-cap one.
    under_cap: bool,
    /// `ecos_tcp_connections_open`.
    gauge: IntGauge,
}

impl ConnSlot {
    fn new(count: &Arc<AtomicUsize>, under_cap: bool, metrics: &Metrics) -> Self {
        count.fetch_add(1, Ordering::AcqRel);
        metrics.tcp_connections_open.inc();
        Self {
            count: count.clone(),
            under_cap,
            gauge: metrics.tcp_connections_open.clone(),
        }
    }

    /// Whether this connection counts against the cap (rather than the health reserve).
    fn under_cap(&self) -> bool {
        self.under_cap
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::AcqRel);
        self.gauge.dec();
    }
}

impl std::fmt::Debug for ConnSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnSlot")
            .field("under_cap", &self.under_cap)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_connections: Option<usize>) -> Limits {
        Limits {
            max_connections,
            header_read_timeout: Duration::from_secs(30),
            keep_alive_idle: Duration::from_secs(100),
            max_header_bytes: 16384,
            ..Limits::default()
        }
    }

    #[test]
    fn the_cap_fits_the_open_file_limit() {
        let cap = |max, nofile| ConnLimits::new(&limits(max), nofile).max_connections;
        assert_eq!(cap(Some(10_000), Some(1024)), 1024 - FD_RESERVE as usize);
        assert_eq!(cap(Some(100), Some(1024)), 100);
        assert_eq!(cap(None, Some(u64::MAX)), usize::MAX);
        assert_eq!(cap(Some(10_000), None), 10_000);
        assert_eq!(cap(Some(10_000), Some(40)), 20, "a tiny limit keeps half");
    }

    #[test]
    fn running_out_of_descriptors_pauses_accepting() {
        let metrics = Metrics::new("test", "0").expect("metrics");
        let mut errors = AcceptErrors::default();
        let emfile = io::Error::from_raw_os_error(libc::EMFILE);
        assert_eq!(errors.note(&emfile, &metrics), Some(ACCEPT_BACKOFF));
        assert_eq!(errors.note(&emfile, &metrics), Some(ACCEPT_BACKOFF));
        let aborted = io::Error::from(io::ErrorKind::ConnectionAborted);
        assert_eq!(errors.note(&aborted, &metrics), None, "the client's doing");
        let fd_limit = metrics
            .tcp_accept_errors_total
            .with_label_values(&["fd_limit"]);
        assert_eq!(fd_limit.get(), 2);
        assert_eq!(errors.unlogged, 1, "logged once");
    }
}
