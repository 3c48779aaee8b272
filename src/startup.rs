//! Building and running the application: bind, serve, drain.
//!
//! [`Application::build`] binds the listener (port 0 in tests) and wires the
//! Socket.IO service, the handlers and the HTTP routes; [`Application::run_until_stopped`]
//! serves until the `shutdown` future resolves, then drains within the
//! configured time.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use axum::Router;
use axum::response::IntoResponse;
use socketioxide::{ParserConfig, SocketIo, adapter::LocalAdapter, layer::SocketIoLayer};
use tokio::net::{TcpListener, TcpSocket};

use crate::{
    backpressure::{GuardedListener, Peer, SlowConsumers},
    cluster::{Cluster, ClusterAdapter, ClusterError},
    config::{RuntimeSettings, Settings, SocketIoParser},
    http::{self, AdapterHealth, HttpState, MemoryAdapterHealth},
    metrics::{Metrics, MetricsError},
    realtime::{self, Realtime},
    shutdown::Lifecycle,
};

/// The crate version, reported in logs and `ecos_build_info`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// How long in-flight HTTP requests may run on after every session is closed.
pub const REQUEST_GRACE: Duration = Duration::from_secs(1);

/// The path Socket.IO clients use by default.
pub const ENGINE_PATH: &str = "/socket.io";

/// Why the application could not be built or run.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The listener could not be bound (port in use, no permission).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address from the settings.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The metrics could not be registered.
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    /// The configured local browser client could not be read.
    #[error("cannot read `demo.client_script_path` {path}: {source}")]
    ClientScript {
        /// The configured path.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The cluster adapter could not be set up.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// The HTTP server failed while serving.
    #[error("server error: {0}")]
    Serve(std::io::Error),
}

/// The Socket.IO server handle, whatever adapter it runs on.
enum Io {
    /// Single instance, state in memory.
    Memory(SocketIo<LocalAdapter>),
    /// One of several instances sharing a Redis.
    Redis(SocketIo<ClusterAdapter>, Cluster),
}

impl Io {
    /// Closes every session (clients see a transport close and reconnect),
    /// then leaves the cluster.
    async fn close(&self) {
        match self {
            Io::Memory(io) => io.close().await,
            Io::Redis(io, cluster) => {
                io.close().await;
                cluster.stop().await;
            }
        }
    }

    /// Sockets connected to this instance.
    fn local_socket_count(&self) -> usize {
        match self {
            Io::Memory(io) => io.local().sockets().len(),
            Io::Redis(io, _) => io.local().sockets().len(),
        }
    }
}

/// What an application serves besides the platform routes: its Socket.IO
/// namespaces, and any service mounted next to Socket.IO.
///
/// [`Application::build`] serves [`EcosContract`]; [`Application::build_with`]
/// takes another setup (the conformance mode in [`crate::conformance`]) and
/// keeps everything else: settings, adapters, middleware, limits, drain.
pub trait Setup: Send + Sync + 'static {
    /// Registers the namespaces and their handlers on `io`, and returns what
    /// each `io.ns` call returned, so that a cluster adapter can be awaited
    /// until it has subscribed.
    fn namespaces<A: NsAdapter>(&self, io: &SocketIo<A>) -> Vec<A::InitRes>;

    /// Adds services to the routes. They sit inside the platform middleware
    /// (request log, metrics, CORS, drain guard), in front of Socket.IO.
    fn mount(&self, routes: Router) -> Router {
        routes
    }
}

/// An adapter namespaces can be registered on: socketioxide's `Adapter` plus
/// the marker `SocketIo::ns` asks for. Both ecos adapters (in memory, Redis) are.
pub trait NsAdapter:
    socketioxide::adapter::Adapter + socketioxide_core::adapter::DefinedAdapter
{
}

impl<A> NsAdapter for A where
    A: socketioxide::adapter::Adapter + socketioxide_core::adapter::DefinedAdapter
{
}

/// The ecos event contract ([`realtime`]) on namespace `/`.
#[derive(Debug, Clone, Copy, Default)]
pub struct EcosContract;

impl Setup for EcosContract {
    fn namespaces<A: NsAdapter>(&self, io: &SocketIo<A>) -> Vec<A::InitRes> {
        vec![io.ns("/", realtime::on_connect::<A>)]
    }
}

/// A built application, bound and ready to run.
pub struct Application {
    /// The bound listener; binding happens in `build` so the port is known before running.
    listener: TcpListener,
    /// Finds and closes clients that stopped reading.
    slow_consumers: SlowConsumers,
    /// The full router: HTTP routes plus the Socket.IO layer.
    router: Router,
    /// Socket.IO handle used to close sessions on drain.
    io: Io,
    /// Shared readiness and drain state.
    lifecycle: Arc<Lifecycle>,
    /// The settings the app was built with.
    settings: Settings,
    /// Metrics, kept so tests and the drain can read them.
    metrics: Metrics,
    /// Name of the adapter in use, for the start-up line.
    adapter: &'static str,
}

impl Application {
    /// Binds the listener and wires every component from `settings`, serving
    /// the ecos event contract.
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        Self::build_with(settings, EcosContract).await
    }

    /// Like [`Application::build`], with the namespaces and mounted services of `setup`.
    pub async fn build_with(settings: Settings, setup: impl Setup) -> Result<Self, StartupError> {
        let addr = SocketAddr::new(settings.bind_address, settings.port);
        let listener = bind(addr, settings.listen_backlog)
            .map_err(|source| StartupError::Bind { addr, source })?;

        let metrics = Metrics::new(&settings.instance_id, VERSION)?;
        let lifecycle = Arc::new(Lifecycle::new());
        let instance_id: Arc<str> = Arc::from(settings.instance_id.as_str());
        let slow_consumers = SlowConsumers::new(settings.socketio.slow_consumer_timeout);
        let realtime = Realtime {
            instance_id: instance_id.clone(),
            metrics: metrics.clone(),
            ack_timeout: settings.socketio.ack_timeout,
            slow_consumers: slow_consumers.clone(),
        };

        let client_script = match &settings.demo.client_script_path {
            Some(path) => Some(Arc::<[u8]>::from(tokio::fs::read(path).await.map_err(
                |source| StartupError::ClientScript {
                    path: path.display().to_string(),
                    source,
                },
            )?)),
            None => None,
        };

        let builder = socketio_builder(&settings).with_state(realtime);
        // The same handlers serve both adapters; only the type parameter differs.
        let (router_layer, io, adapter): (_, Io, Arc<dyn AdapterHealth>) = match &settings.redis.url
        {
            None => {
                let (layer, io) = builder.build_layer();
                // The in-memory adapter is ready at once: nothing to wait for.
                let _ready = setup.namespaces(&io);
                (
                    SocketIoLayers::Memory(layer),
                    Io::Memory(io),
                    Arc::new(MemoryAdapterHealth),
                )
            }
            Some(url) => {
                let gauge = metrics.connected_sockets.clone();
                let cluster = Cluster::start(
                    &settings.redis,
                    url,
                    &settings.instance_id,
                    &metrics,
                    move || gauge.get().max(0) as u64,
                )?;
                let (layer, io) = builder
                    .with_adapter::<ClusterAdapter>(cluster.adapter_state())
                    .build_layer();
                // Subscribing never waits for an unreachable Redis (the driver
                // resubscribes when it connects), so this returns promptly.
                for init in setup.namespaces(&io) {
                    if let Err(error) = init.await {
                        tracing::error!(%error, "cannot register a namespace on Redis");
                    }
                }
                let health = cluster.health();
                (SocketIoLayers::Redis(layer), Io::Redis(io, cluster), health)
            }
        };

        let state = HttpState {
            lifecycle: lifecycle.clone(),
            metrics: metrics.clone(),
            adapter: adapter.clone(),
            page: http::render_page(client_script.is_some()).into(),
            client_script,
            engine_path: ENGINE_PATH,
            instance_id,
        };
        let router = match router_layer {
            SocketIoLayers::Memory(layer) => {
                http::router_with(layer, state, &settings.cors, |r| setup.mount(r))
            }
            SocketIoLayers::Redis(layer) => {
                http::router_with(layer, state, &settings.cors, |r| setup.mount(r))
            }
        };
        let router = eio3_guard(router, &settings);

        Ok(Self {
            listener,
            slow_consumers,
            router,
            io,
            lifecycle,
            settings,
            metrics,
            adapter: adapter.name(),
        })
    }

    /// The address actually bound (with the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        // A bound TcpListener always has a local address; fall back to the
        // configured one rather than panic on an exotic platform.
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::new(self.settings.bind_address, self.settings.port))
    }

    /// The port actually bound.
    pub fn port(&self) -> u16 {
        self.local_addr().port()
    }

    /// The shared lifecycle, so callers can watch readiness and drains.
    pub fn lifecycle(&self) -> Arc<Lifecycle> {
        self.lifecycle.clone()
    }

    /// The app's metrics.
    pub fn metrics(&self) -> Metrics {
        self.metrics.clone()
    }

    /// Serves until `shutdown` resolves, then drains: `/readyz` turns 503, new
    /// sessions are refused, every session is closed so clients reconnect
    /// elsewhere, in-flight requests finish, all within the drain timeout.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartupError> {
        let addr = self.local_addr();
        let Application {
            listener,
            slow_consumers,
            router,
            io,
            lifecycle,
            settings,
            adapter,
            ..
        } = self;

        let stop_accepting = Arc::new(tokio::sync::Notify::new());
        let server = {
            let stop_accepting = stop_accepting.clone();
            let listener = GuardedListener::new(listener, slow_consumers.clone());
            axum::serve(
                listener,
                router.into_make_service_with_connect_info::<Peer>(),
            )
            .with_graceful_shutdown(async move { stop_accepting.notified().await })
            .into_future()
        };
        let mut server = tokio::spawn(server);
        let _sweeper = slow_consumers.spawn_sweeper();

        lifecycle.set_serving();
        tracing::info!(
            addr = %addr,
            version = VERSION,
            instance = %settings.instance_id,
            adapter,
            workers = tokio::runtime::Handle::current().metrics().num_workers(),
            listen_backlog = settings.listen_backlog,
            "ecos started"
        );

        tokio::select! {
            _ = shutdown => {}
            _ = lifecycle.drain_started() => {}
            result = &mut server => {
                // The server only ends by itself on an I/O error.
                return match result {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(StartupError::Serve(e)),
                    Err(e) => Err(StartupError::Serve(std::io::Error::other(e))),
                };
            }
        }

        lifecycle.start_drain();
        let timeout = settings.shutdown.drain_timeout;
        tracing::info!(
            sockets = io.local_socket_count(),
            timeout_secs = timeout.as_secs_f64(),
            "draining"
        );
        let drain = async {
            // Keep serving existing sessions while the load balancer notices /readyz.
            tokio::time::sleep(settings.shutdown.delay).await;
            io.close().await;
            stop_accepting.notify_one();
            // Sessions are closed; ordinary requests finish in milliseconds.
            // A long-poll of an Engine.IO session that never joined a
            // namespace is invisible to io.close() and would hold the server
            // until its next ping, so in-flight requests get a short grace.
            if tokio::time::timeout(REQUEST_GRACE, &mut server)
                .await
                .is_err()
            {
                tracing::info!(
                    grace_secs = REQUEST_GRACE.as_secs_f64(),
                    "closing requests still open after the grace"
                );
            }
        };
        match tokio::time::timeout(timeout, drain).await {
            Ok(()) => tracing::info!("drained; exiting"),
            Err(_) => {
                tracing::warn!(
                    sockets = io.local_socket_count(),
                    "drain timeout reached; exiting with sessions still open"
                );
            }
        }
        // Whatever is left (requests past the grace, or the drain timeout)
        // is cut here rather than left running after the app has stopped.
        server.abort();
        Ok(())
    }
}

/// The async runtime ecos runs on, with `settings.worker_threads` workers
/// (one per usable CPU when 0).
pub fn runtime(settings: &RuntimeSettings) -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(settings.effective_worker_threads())
        .enable_all()
        .build()
}

/// Binds `addr` with a listen queue of `backlog` connections.
///
/// `TcpListener::bind` asks for 128, which a reconnect storm (every client of
/// a restarted instance coming back at once) overflows: the kernel then drops
/// SYNs and each of those clients waits a 1 s retransmission, 3 s for the next.
fn bind(addr: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // As `TcpListener::bind` does: a restarted server can bind while old
    // connections linger in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// The Socket.IO layer for either adapter, until it is mounted.
enum SocketIoLayers {
    /// In-memory adapter.
    Memory(SocketIoLayer<LocalAdapter>),
    /// Redis adapter.
    Redis(SocketIoLayer<ClusterAdapter>),
}

/// A Socket.IO builder carrying the protocol settings and limits.
fn socketio_builder(settings: &Settings) -> socketioxide::SocketIoBuilder {
    let s = &settings.socketio;
    let limits = &settings.limits;
    let builder = SocketIo::builder()
        .req_path(ENGINE_PATH)
        .ping_interval(s.ping_interval)
        .ping_timeout(s.ping_timeout)
        .connect_timeout(s.connect_timeout)
        .ack_timeout(s.ack_timeout)
        .max_buffer_size(s.max_buffer_packets)
        .max_payload(limits.max_http_payload_bytes)
        .ws_read_buffer_size(limits.ws_read_buffer_bytes)
        .ws_max_message_size(limits.max_ws_message_bytes)
        // A single frame can never be larger than a whole message.
        .ws_max_frame_size(limits.max_ws_message_bytes);
    // Engine.IO v3 (Socket.IO v2 clients) is compiled in (socketioxide's `v4`
    // feature) and has no run-time switch there; `eio3_guard` refuses it unless
    // `socketio.allow_eio3` is set.
    match s.parser {
        SocketIoParser::Default => builder,
        SocketIoParser::Msgpack => builder.with_parser(ParserConfig::msgpack()),
    }
}

/// Refuses Engine.IO v3 handshakes (`EIO=3`, i.e. Socket.IO v2 clients) unless
/// `socketio.allow_eio3` is set, with the answer socketioxide gives when built
/// without v3 support: 400 `{"code":"5","message":"Unsupported protocol version"}`.
///
/// socketioxide's `v4` feature makes engineioxide accept `EIO=3` whenever it is
/// compiled in (`RequestInfo::parse` in engineioxide's `service/parser.rs`), so
/// the setting is enforced here, in front of the Socket.IO service.
fn eio3_guard(router: Router, settings: &Settings) -> Router {
    if settings.socketio.allow_eio3 {
        return router;
    }
    router.layer(axum::middleware::from_fn(refuse_eio3))
}

async fn refuse_eio3(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let is_engine = req.uri().path().starts_with(ENGINE_PATH);
    let eio3 = req
        .uri()
        .query()
        .is_some_and(|q| q.split('&').any(|pair| pair == "EIO=3"));
    if is_engine && eio3 {
        tracing::debug!(uri = %req.uri(), "refused an Engine.IO v3 client (socketio.allow_eio3 is off)");
        return (
            axum::http::StatusCode::BAD_REQUEST,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            r#"{"code":"5","message":"Unsupported protocol version"}"#,
        )
            .into_response();
    }
    next.run(req).await
}
