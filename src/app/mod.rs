//! Building and running the application: bind, wire, serve, drain.
//!
//! [`Application::build`] binds the listener (port 0 in tests) and wires the
//! Socket.IO service, the handlers and the HTTP routes;
//! [`Application::run_until_stopped`] serves until the `shutdown` future
//! resolves, then drains within the configured time.
//!
//! The adapter is chosen here, once: everything after `build` holds a
//! [`Hub`](crate::hub::Hub) and does not know which adapter runs.

pub mod lifecycle;
pub mod setup;

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use axum::Router;
use socketioxide::{
    ParserConfig, SocketIo, SocketIoBuilder, adapter::Adapter, layer::SocketIoLayer,
};
use tokio::net::TcpListener;

use crate::{
    api::{self, Secrets},
    auth::Authenticator,
    cluster::{Cluster, ClusterAdapter, ClusterError},
    config::{RuntimeSettings, Settings, SocketIoParser},
    http::{self, HttpState},
    hub::{Hub, SocketIoHub},
    metrics::{Metrics, MetricsError},
    net::{self, ConnLimits, SlowConsumers},
    realtime::{self, Realtime, limits::RateLimit},
    webhooks::Webhooks,
};

pub use lifecycle::{Lifecycle, signal};
pub use setup::{EcosContract, NsAdapter, Setup};

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
    /// Authentication could not be set up.
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthError),
    /// The webhook client could not be set up.
    #[error(transparent)]
    Webhooks(#[from] crate::webhooks::WebhookError),
    /// The HTTP server failed while serving.
    #[error("server error: {0}")]
    Serve(std::io::Error),
}

/// Installs rustls's process-wide crypto provider (ring), which Redis TLS and
/// the HTTPS clients (JWKS) need; a second call is harmless.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A built application, bound and ready to run.
pub struct Application {
    /// The bound listener; binding happens in `build` so the port is known before running.
    listener: TcpListener,
    /// Finds and closes clients that stopped reading.
    slow_consumers: SlowConsumers,
    /// The full router: HTTP routes plus the Socket.IO layer.
    router: Router,
    /// The Socket.IO server, whatever its adapter; closes sessions on drain.
    hub: Arc<dyn Hub>,
    /// Shared readiness and drain state.
    lifecycle: Arc<Lifecycle>,
    /// The connection limits, with the cap fitted to the open-file limit.
    conn_limits: ConnLimits,
    /// The app's metrics, for the connection counters.
    metrics: Metrics,
    /// The backend's webhooks, whose disconnect notifications the drain waits for.
    webhooks: Option<Arc<Webhooks>>,
    /// The settings the app was built with.
    settings: Settings,
}

impl Application {
    /// Binds the listener and wires every component from `settings`, serving
    /// the ecos event contract.
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        Self::build_with(settings, EcosContract).await
    }

    /// Like [`Application::build`], with the namespaces and mounted services of `setup`.
    pub async fn build_with(settings: Settings, setup: impl Setup) -> Result<Self, StartupError> {
        // Every connection is a file descriptor: raise the soft limit to the
        // hard one before serving, and fit the connection cap to it.
        let nofile = match net::raise_nofile_limit() {
            Ok(limit) => {
                tracing::info!(
                    soft = limit.soft,
                    hard = limit.hard,
                    was = limit.was,
                    "open-file limit (nofile)"
                );
                Some(limit.soft)
            }
            Err(error) => {
                tracing::warn!(%error, "cannot read the open-file limit");
                None
            }
        };
        let conn_limits = ConnLimits::new(&settings.limits, nofile);

        let addr = SocketAddr::new(settings.bind_address, settings.port);
        let listener = net::bind(addr, settings.listen_backlog)
            .map_err(|source| StartupError::Bind { addr, source })?;

        let metrics = Metrics::new(&settings.instance_id, VERSION)?;
        install_crypto_provider();
        let auth = Authenticator::new(&settings.auth, &metrics)?;
        if !auth.required() && !addr.ip().is_loopback() {
            tracing::warn!(
                %addr,
                "auth.mode is `none`: anyone who reaches this address can connect, join any room and broadcast; set auth.mode = jwt (docs/auth.md)"
            );
        }
        let webhooks = Webhooks::new(&settings.webhooks, &metrics)?;
        let lifecycle = Arc::new(Lifecycle::new());
        let instance_id: Arc<str> = Arc::from(settings.instance_id.as_str());
        let slow_consumers = SlowConsumers::new(settings.socketio.slow_consumer_timeout);
        let realtime = Realtime {
            instance_id: instance_id.clone(),
            metrics: metrics.clone(),
            ack_timeout: settings.socketio.ack_timeout,
            slow_consumers: slow_consumers.clone(),
            rate_limit: RateLimit {
                per_second: settings.limits.events_per_second,
                burst: settings.limits.events_burst,
            },
            max_rooms_per_socket: settings.limits.max_rooms_per_socket,
            pressure: Arc::new(crate::realtime::pressure::Pressure::new(
                settings.limits.overload_shed,
            )),
            rooms_cache: Arc::default(),
            auth,
            webhooks: webhooks.clone(),
        };
        let client_script = read_client_script(&settings).await?;
        let builder = socketio_builder(&settings).with_state(realtime.clone());

        // The one place the adapter is chosen; the same handlers serve both.
        let wired = match &settings.redis.url {
            None => {
                let (layer, io) = builder.build_layer();
                // The in-memory adapter is ready at once: nothing to wait for.
                let _ready = setup.namespaces(&io);
                Wired::new(layer, io, None, realtime)
            }
            Some(url) => {
                let gauge = metrics.connected_sockets.clone();
                let mut cluster = Cluster::start(
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
                cluster.watch_overflows(
                    io.config().server_id.to_string(),
                    slow_consumers.clone(),
                    &metrics,
                );
                if settings.emitter.active(true) {
                    cluster.listen_to_emitter(
                        &settings.emitter.prefix,
                        io.clone(),
                        settings.socketio.parser,
                        slow_consumers.clone(),
                        &metrics,
                    )?;
                }
                Wired::new(layer, io, Some(cluster), realtime)
            }
        };

        let state = HttpState {
            lifecycle: lifecycle.clone(),
            metrics: metrics.clone(),
            hub: wired.hub.clone(),
            page: http::render_page(client_script.is_some()).into(),
            client_script,
            engine_path: ENGINE_PATH,
            instance_id,
            origins: settings.cors.clone(),
            require_redis: settings.readiness.require_redis,
            metrics_token: Secrets::new(settings.metrics.token.clone()),
            slow_consumers: slow_consumers.clone(),
        };
        let api = api::router(&settings.api, wired.hub.clone(), &metrics)?;
        let mount_socketio = wired.mount;
        let router = http::router(state, &settings, api, |routes| {
            mount_socketio(setup.mount(routes))
        });
        slow_consumers.set_session_closer(Some(session_closer(router.clone())));

        Ok(Self {
            listener,
            slow_consumers,
            router,
            hub: wired.hub,
            lifecycle,
            conn_limits,
            metrics,
            webhooks,
            settings,
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

    /// The handle on the Socket.IO server, for code outside the handlers
    /// (a server API, tests) that acts on sockets whatever the adapter.
    pub fn hub(&self) -> Arc<dyn Hub> {
        self.hub.clone()
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
            hub,
            lifecycle,
            conn_limits,
            metrics,
            webhooks,
            settings,
        } = self;

        let stop_accepting = Arc::new(tokio::sync::Notify::new());
        let server = {
            let stop_accepting = stop_accepting.clone();
            net::serve(
                listener,
                router,
                slow_consumers.clone(),
                conn_limits,
                metrics,
                async move { stop_accepting.notified().await },
            )
        };
        let mut server = tokio::spawn(server);
        let _sweeper = slow_consumers.spawn_sweeper();

        lifecycle.set_serving();
        tracing::info!(
            addr = %addr,
            version = VERSION,
            instance = %settings.instance_id,
            adapter = hub.status().name,
            workers = tokio::runtime::Handle::current().metrics().num_workers(),
            listen_backlog = settings.listen_backlog,
            max_connections = conn_limits.max_connections,
            header_read_timeout_secs = conn_limits.header_read_timeout.as_secs_f64(),
            keep_alive_idle_secs = conn_limits.keep_alive_idle.as_secs_f64(),
            "ecos started"
        );

        tokio::select! {
            _ = shutdown => {}
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
            sockets = hub.local_socket_count(),
            timeout_secs = timeout.as_secs_f64(),
            "draining"
        );
        let drain = async {
            // Keep serving existing sessions while the load balancer notices /readyz.
            tokio::time::sleep(settings.shutdown.delay).await;
            hub.close().await;
            stop_accepting.notify_one();
            // Sessions are closed; ordinary requests finish in milliseconds.
            // A long-poll of an Engine.IO session that never joined a
            // namespace is invisible to the hub's close and would hold the
            // server until its next ping, so in-flight requests get a short grace.
            if tokio::time::timeout(REQUEST_GRACE, &mut server)
                .await
                .is_err()
            {
                tracing::info!(
                    grace_secs = REQUEST_GRACE.as_secs_f64(),
                    "closing requests still open after the grace"
                );
            }
            // Closing the sessions queued a disconnect notification each
            // (the hub's farewell runs before the close): deliver them.
            if let Some(hooks) = &webhooks {
                hooks.flush().await;
            }
        };
        match tokio::time::timeout(timeout, drain).await {
            Ok(()) => tracing::info!("drained; exiting"),
            Err(_) => {
                tracing::warn!(
                    sockets = hub.local_socket_count(),
                    "drain timeout reached; exiting with sessions still open"
                );
            }
        }
        // Whatever is left (requests past the grace, or the drain timeout)
        // is cut here rather than left running after the app has stopped.
        server.abort();
        if let Some(hooks) = &webhooks {
            hooks.abandon();
        }
        // The closer holds the router, which holds the closer.
        slow_consumers.set_session_closer(None);
        Ok(())
    }
}

/// Ends a long-polling session the way its client would: a `POST` of
/// Engine.IO's close packet, through the app's own router (the Engine.IO
/// server holding the session is the one behind it).
fn session_closer(router: Router) -> crate::net::sessions::CloseSession {
    Arc::new(move |sid: &str, eio: u8| {
        // Engine.IO 3 frames each packet of a payload with its length.
        let body = if eio == 3 { "1:1" } else { "1" };
        let request = axum::http::Request::post(format!(
            "{ENGINE_PATH}/?EIO={eio}&transport=polling&sid={sid}"
        ))
        .header(axum::http::header::CONTENT_TYPE, "text/plain;charset=UTF-8")
        .extension(crate::net::sessions::ClosingRequest)
        .body(axum::body::Body::from(body));
        let Ok(request) = request else {
            return;
        };
        let mut router = router.clone();
        tokio::spawn(async move {
            use tower_service::Service;
            match router.call(request).await {
                Ok(response) if response.status().is_success() => {}
                Ok(response) => {
                    tracing::debug!(status = %response.status(), "closing a polling session: not closed");
                }
                Err(never) => match never {},
            }
        });
    })
}

/// The Socket.IO server of one adapter type, reduced to what the app keeps:
/// its hub, and a way to put its layer on the routes.
struct Wired {
    /// The type-erased handle.
    hub: Arc<dyn Hub>,
    /// Adds the Socket.IO layer (typed by adapter) to a router.
    mount: Box<dyn FnOnce(Router) -> Router>,
}

impl Wired {
    fn new<A: Adapter>(
        layer: SocketIoLayer<A>,
        io: SocketIo<A>,
        cluster: Option<Cluster>,
        realtime: Realtime,
    ) -> Self {
        Self {
            hub: SocketIoHub::new(io, cluster, Some(realtime::connection::farewell(realtime))),
            mount: Box::new(move |router| router.layer(layer)),
        }
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

/// Reads the configured local browser client, if any.
async fn read_client_script(settings: &Settings) -> Result<Option<Arc<[u8]>>, StartupError> {
    let Some(path) = &settings.demo.client_script_path else {
        return Ok(None);
    };
    let bytes = tokio::fs::read(path)
        .await
        .map_err(|source| StartupError::ClientScript {
            path: path.display().to_string(),
            source,
        })?;
    Ok(Some(Arc::from(bytes)))
}

/// A Socket.IO builder carrying the protocol settings and limits.
fn socketio_builder(settings: &Settings) -> SocketIoBuilder {
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
    // feature) and has no run-time switch there; `http::middleware` refuses it
    // unless `socketio.allow_eio3` is set.
    match s.parser {
        SocketIoParser::Default => builder,
        SocketIoParser::Msgpack => builder.with_parser(ParserConfig::msgpack()),
    }
}
