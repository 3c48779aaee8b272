//! The HTTP server API: how a backend reaches connected clients.
//!
//! | route | does | file |
//! |---|---|---|
//! | `POST /api/v1/emit` | emits an event to the selected sockets, cluster-wide | [`handlers`] |
//! | `POST /api/v1/join`, `POST /api/v1/leave` | the selected sockets join or leave a room | [`handlers`] |
//! | `POST /api/v1/disconnect` | disconnects the selected sockets | [`handlers`] |
//! | `GET /api/v1/rooms` | every room, bounded | [`handlers`] |
//! | `GET /api/v1/sockets?room=` or `?user=` | socket ids, bounded | [`handlers`] |
//! | `GET /api/v1/openapi.json` | the OpenAPI 3.1 document | [`openapi`] |
//!
//! - [`auth`]: bearer secrets compared in constant time (also used for `metrics.token`);
//! - [`request`]: the bodies and queries, checked field by field;
//! - [`response`]: the answers, the cluster state, the JSON error;
//! - [`metrics`]: `ecos_api_requests_total` and `ecos_api_request_duration_seconds`.
//!
//! The API is served only when `api.keys` holds a key; otherwise every
//! `/api/` path is a plain 404. Either way these routes sit outside the CORS
//! layer (see [`crate::http::router`]): the API is for servers, and a browser
//! is granted nothing, not even a preflight answer. Every call goes through
//! the [`Hub`], whose operations the adapter carries to every instance, so
//! whichever instance receives the call, the whole cluster acts on it.

pub mod auth;
pub mod handlers;
pub mod metrics;
pub mod openapi;
pub mod request;
pub mod response;

use std::{sync::Arc, time::Instant};

use axum::{
    Router,
    body::Bytes,
    extract::{DefaultBodyLimit, Request, State},
    http::StatusCode,
    middleware::{Next, from_fn_with_state},
    response::{IntoResponse, Response},
    routing::{any, get, post},
};

use crate::{config::ApiSettings, hub::Hub, metrics::Metrics};

pub use auth::{AuthError, Secrets};
pub use metrics::ApiMetrics;
use response::ApiError;

/// `POST`: emit an event.
pub const EMIT: &str = "/api/v1/emit";
/// `POST`: join a room.
pub const JOIN: &str = "/api/v1/join";
/// `POST`: leave a room.
pub const LEAVE: &str = "/api/v1/leave";
/// `POST`: disconnect sockets.
pub const DISCONNECT: &str = "/api/v1/disconnect";
/// `GET`: list rooms.
pub const ROOMS: &str = "/api/v1/rooms";
/// `GET`: list sockets.
pub const SOCKETS: &str = "/api/v1/sockets";
/// `GET`: the OpenAPI document.
pub const OPENAPI: &str = "/api/v1/openapi.json";

/// Every route: also the `route` label values of the API's metrics (and of
/// `ecos_http_*`), besides `unmatched`. Each is an exact path, so the path
/// of a request is its template.
pub const ROUTES: [&str; 7] = [EMIT, JOIN, LEAVE, DISCONNECT, ROOMS, SOCKETS, OPENAPI];

/// The label of requests that match no route.
pub const UNMATCHED: &str = "unmatched";

/// Where the API lives; every path under it belongs to the API.
pub const PREFIX: &str = "/api";

/// The metrics label of `path`: its route, or `unmatched`.
pub fn route_label(path: &str) -> &'static str {
    ROUTES
        .iter()
        .find(|route| **route == path)
        .copied()
        .unwrap_or(UNMATCHED)
}

/// What the API's handlers and middleware share.
pub struct ApiState {
    /// The Socket.IO server, cluster-wide.
    pub hub: Arc<dyn Hub>,
    /// The accepted keys.
    pub keys: Secrets,
    /// Per-call metrics.
    pub metrics: ApiMetrics,
    /// The OpenAPI document, rendered once.
    pub openapi: Bytes,
    /// `api.max_body_bytes`.
    pub max_body_bytes: usize,
}

/// The `/api` routes: the server API when `settings` has a key, else a
/// plain 404 for every path under `/api`. The API's metrics are registered in
/// `metrics` only when it is on.
pub fn router(
    settings: &ApiSettings,
    hub: Arc<dyn Hub>,
    metrics: &Metrics,
) -> Result<Router, crate::metrics::MetricsError> {
    if !settings.enabled() {
        let off = |body: axum::body::Body| async move {
            let drained = handlers::drain(body).await;
            handlers::closing_unless(drained, StatusCode::NOT_FOUND.into_response())
        };
        return Ok(Router::new()
            .route(PREFIX, any(off))
            .route("/api/", any(off))
            .route("/api/{*rest}", any(off)));
    }
    let state = Arc::new(ApiState {
        hub,
        keys: Secrets::new(settings.keys.iter().cloned()),
        metrics: ApiMetrics::new(metrics)?,
        openapi: Bytes::from(openapi::document()),
        max_body_bytes: settings.max_body_bytes,
    });
    let short_keys = settings
        .keys
        .iter()
        .filter(|key| key.expose().len() < 16)
        .count();
    if short_keys > 0 {
        tracing::warn!(
            short_keys,
            "some api.keys are shorter than 16 characters; use long random keys (openssl rand -hex 32)"
        );
    }
    tracing::info!(
        keys = settings.keys.len(),
        "server API enabled under /api/v1"
    );
    Ok(Router::new()
        .route(EMIT, post(handlers::emit))
        .route(JOIN, post(handlers::join))
        .route(LEAVE, post(handlers::leave))
        .route(DISCONNECT, post(handlers::disconnect))
        .route(ROOMS, get(handlers::rooms))
        .route(SOCKETS, get(handlers::sockets))
        .route(OPENAPI, get(handlers::openapi))
        .route(PREFIX, any(handlers::not_found))
        .route("/api/", any(handlers::not_found))
        .route("/api/{*rest}", any(handlers::not_found))
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .layer(DefaultBodyLimit::max(settings.max_body_bytes))
        // Layers added later run first: every call is counted, refused ones too.
        .layer(from_fn_with_state(state.clone(), require_key))
        .layer(from_fn_with_state(state.clone(), observe))
        .with_state(state))
}

/// Refuses a call without a valid key, before anything else is looked at.
async fn require_key(State(api): State<Arc<ApiState>>, request: Request, next: Next) -> Response {
    match api.keys.check(request.headers()) {
        Ok(()) => next.run(request).await,
        Err(error) => {
            let drained = handlers::drain(request.into_body()).await;
            handlers::closing_unless(
                drained,
                ApiError::new(StatusCode::UNAUTHORIZED, error.to_string()).into_response(),
            )
        }
    }
}

/// Counts and times every call by route and status. The request's log line
/// (with its `X-Request-ID`) is written once, by the HTTP layer around this.
async fn observe(State(api): State<Arc<ApiState>>, request: Request, next: Next) -> Response {
    let route = route_label(request.uri().path());
    let started = Instant::now();
    let response = next.run(request).await;
    api.metrics
        .observe(route, response.status(), started.elapsed());
    response
}
