//! HTTP routes and middleware around the Socket.IO service.
//!
//! | route | purpose | file |
//! |---|---|---|
//! | `GET /` | the demo page | [`page`] |
//! | `GET /favicon.ico` | 204, so a browser's automatic request is no 404 | [`page`] |
//! | `GET /socket.io/socket.io.min.js` | the browser client, only when a local copy is configured | [`page`] |
//! | `GET /healthz` | liveness: 200 while the process runs | [`health`] |
//! | `GET /readyz` | readiness: 200 when ready for traffic, 503 while starting or draining; reports the Redis link | [`health`] |
//! | `GET /metrics` | Prometheus text format; `401` without the bearer token when `metrics.token` is set | [`metrics`] |
//! | `/socket.io/*` | Engine.IO / Socket.IO (socketioxide) | |
//! | `/api/*` | the server API ([`crate::api`]), outside the CORS layer | |
//!
//! [`middleware`] holds what wraps every request: request log and metrics,
//! CORS, the drain guard, the Engine.IO 3 guard, request-head compaction.

pub mod health;
pub mod metrics;
pub mod middleware;
pub mod page;

use std::sync::Arc;

use axum::{Router, body::Bytes, middleware::from_fn_with_state, routing::get};

use crate::{api::Secrets, app::Lifecycle, config::Settings, hub::Hub, metrics::Metrics};

pub use page::render_page;

/// State shared by the HTTP routes and middleware.
pub struct HttpState {
    /// Drain and readiness state.
    pub lifecycle: Arc<Lifecycle>,
    /// Metrics to render and to update per request.
    pub metrics: Metrics,
    /// The Socket.IO server, for readiness (adapter health, cluster totals).
    pub hub: Arc<dyn Hub>,
    /// The rendered demo page.
    pub page: Bytes,
    /// A local `socket.io.min.js`, served when configured.
    pub client_script: Option<Arc<[u8]>>,
    /// Engine.IO request path, for the drain guard and metrics labels.
    pub engine_path: &'static str,
    /// This instance's id, reported by `/readyz`.
    pub instance_id: Arc<str>,
    /// Which browser origins may open Engine.IO sessions (`cors.allowed_origins`).
    pub origins: crate::config::CorsPolicy,
    /// Whether `/readyz` answers 503 while the Redis link is down
    /// (`readiness.require_redis`); otherwise it only reports it.
    pub require_redis: bool,
    /// `metrics.token`: when set, `/metrics` needs it as a bearer token.
    pub metrics_token: Secrets,
    /// The slow-consumer policy, told about each Engine.IO session's polls and upgrade.
    pub slow_consumers: crate::net::SlowConsumers,
}

/// The platform routes, with `inner` applied to them (it adds the Socket.IO
/// layer, and whatever a setup mounts) and the platform middleware around
/// everything, so Socket.IO requests are logged, counted and guarded like the rest.
///
/// `api` holds every `/api` route (the server API, or its 404s when it is
/// off). It is merged after the CORS layer, so that layer never sees an API
/// request: no CORS header, no preflight answer, whatever `cors.allowed_origins` says.
pub fn router(
    state: HttpState,
    settings: &Settings,
    api: Router,
    inner: impl FnOnce(Router) -> Router,
) -> Router {
    // Every middleware takes its own copy of the state per request: one
    // reference count to bump rather than a dozen.
    let state = Arc::new(state);
    let routes = Router::new()
        .route("/", get(page::page))
        .route("/favicon.ico", get(page::favicon))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(metrics::metrics))
        .with_state(state.clone());
    let platform = inner(routes)
        .layer(from_fn_with_state(
            state.clone(),
            middleware::compact_engine_request_head,
        ))
        .layer(from_fn_with_state(
            state.clone(),
            middleware::watch_engine_sessions,
        ))
        // Layers added later run first: metrics see everything, CORS answers
        // preflights before the drain guard, which runs before socketioxide.
        .layer(from_fn_with_state(state.clone(), page::local_client_script))
        .layer(from_fn_with_state(
            state.clone(),
            middleware::refuse_new_sessions_while_draining,
        ))
        .layer(from_fn_with_state(
            state.clone(),
            middleware::refuse_foreign_origins,
        ))
        .layer(middleware::cors_layer(&settings.cors));
    // `api` is merged INTO, not into `platform`: when neither router has a
    // fallback of its own, axum's merge keeps the fallback of the router
    // merged in, and `platform`'s fallback is where the Socket.IO layer and
    // CORS live (Engine.IO paths match no route). The API's own layers never
    // see a request outside `/api`.
    let router = api
        .merge(platform)
        .layer(from_fn_with_state(state, middleware::observe));
    if settings.socketio.allow_eio3 {
        router
    } else {
        router.layer(axum::middleware::from_fn(middleware::refuse_eio3))
    }
}
