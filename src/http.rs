//! HTTP routes and middleware around the Socket.IO service.
//!
//! | route | purpose |
//! |---|---|
//! | `GET /` | the demo page |
//! | `GET /healthz` | liveness: 200 while the process runs |
//! | `GET /readyz` | readiness: 200 when ready for traffic, 503 while starting or draining |
//! | `GET /metrics` | Prometheus text format |
//! | `GET /socket.io/socket.io.min.js` | the browser client, only when a local copy is configured |
//! | `/socket.io/*` | Engine.IO / Socket.IO (handled by socketioxide) |

use std::{sync::Arc, time::Instant};

use axum::{
    Json, Router,
    body::{Body, Bytes},
    extract::{OriginalUri, Request, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    middleware::{self, Next},
    response::{Html, IntoResponse, Response},
    routing::get,
};
use serde_json::json;
use socketioxide::{adapter::Adapter, layer::SocketIoLayer};
use tower_http::cors::{AllowOrigin, CorsLayer};
use tracing::Instrument;

use crate::{config::CorsPolicy, metrics::Metrics, shutdown::Lifecycle};

/// The browser client the demo page loads from the official CDN, pinned with its
/// subresource-integrity hash so a tampered file is refused by the browser.
pub const CDN_CLIENT_SCRIPT: &str = r#"<script src="https://cdn.socket.io/4.8.3/socket.io.min.js" integrity="sha384-kzavj5fiMwLKzzD1f8S7TeoVIEi7uKHvbTA3ueZkrzYq75pNQUiUi6Dy98Q3fxb0" crossorigin="anonymous"></script>"#;

/// Where the page finds a locally served client when one is configured.
pub const LOCAL_CLIENT_PATH: &str = "/socket.io/socket.io.min.js";

const PAGE_TEMPLATE: &str = include_str!("../static/index.html");
const SCRIPT_PLACEHOLDER: &str = "<!--ECOS_CLIENT_SCRIPT-->";

/// State shared by the HTTP routes and middleware.
pub struct HttpState {
    /// Drain and readiness state.
    pub lifecycle: Arc<Lifecycle>,
    /// Metrics to render and to update per request.
    pub metrics: Metrics,
    /// Readiness of the cluster adapter; always ready for the in-memory one.
    pub adapter: Arc<dyn AdapterHealth>,
    /// The rendered demo page.
    pub page: Bytes,
    /// A local `socket.io.min.js`, served when configured.
    pub client_script: Option<Arc<[u8]>>,
    /// Engine.IO request path, for the drain guard and metrics labels.
    pub engine_path: &'static str,
    /// This instance's id, reported by `/readyz`.
    pub instance_id: Arc<str>,
}

/// What `/readyz` asks the adapter.
pub trait AdapterHealth: Send + Sync {
    /// Short name of the adapter (`memory`, `redis`).
    fn name(&self) -> &'static str;
    /// `Ok` when the adapter can deliver to the whole cluster, else the reason it cannot.
    fn ready(&self) -> Result<(), String>;
    /// Cluster-wide totals, when the adapter keeps them.
    fn cluster(&self) -> Option<serde_json::Value> {
        None
    }
}

/// The in-memory adapter is ready as soon as the process is.
pub struct MemoryAdapterHealth;

impl AdapterHealth for MemoryAdapterHealth {
    fn name(&self) -> &'static str {
        "memory"
    }
    fn ready(&self) -> Result<(), String> {
        Ok(())
    }
}

/// Renders the demo page with the CDN script tag, or the local one when a copy is served.
pub fn render_page(local_client: bool) -> String {
    let tag = if local_client {
        format!(r#"<script src="{LOCAL_CLIENT_PATH}"></script>"#)
    } else {
        CDN_CLIENT_SCRIPT.to_owned()
    };
    PAGE_TEMPLATE.replace(SCRIPT_PLACEHOLDER, &tag)
}

/// The platform routes, with the Socket.IO service (`socketio`) in front of
/// the fallback and the platform middleware around everything.
pub fn router<A: Adapter>(
    socketio: SocketIoLayer<A>,
    state: HttpState,
    cors: &CorsPolicy,
) -> Router {
    router_with(socketio, state, cors, |routes| routes)
}

/// [`router`], with `mount` applied to the routes before the Socket.IO layer:
/// whatever it adds (another service, e.g. the conformance mode's Engine.IO
/// echo) sits behind every platform middleware, like Socket.IO itself.
pub fn router_with<A: Adapter>(
    socketio: SocketIoLayer<A>,
    state: HttpState,
    cors: &CorsPolicy,
    mount: impl FnOnce(Router) -> Router,
) -> Router {
    // Every middleware takes its own copy of the state per request: one
    // reference count to bump rather than a dozen.
    let state = Arc::new(state);
    let routes = Router::new()
        .route("/", get(page))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state.clone());
    mount(routes)
        .layer(socketio)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            compact_engine_request_head,
        ))
        // Layers added later run first: metrics see everything, CORS answers
        // preflights before the drain guard, which runs before socketioxide.
        .layer(middleware::from_fn_with_state(
            state.clone(),
            local_client_script,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            refuse_new_sessions_while_draining,
        ))
        .layer(cors_layer(cors))
        .layer(middleware::from_fn_with_state(state, observe))
}

async fn page(State(state): State<Arc<HttpState>>) -> Html<Bytes> {
    Html(state.page.clone())
}

async fn healthz() -> impl IntoResponse {
    (StatusCode::OK, Json(json!({ "status": "alive" })))
}

async fn readyz(State(state): State<Arc<HttpState>>) -> Response {
    let adapter = state.adapter.name();
    let not_ready = if state.lifecycle.is_draining() {
        Some((
            "draining",
            "shutting down; reconnect to another instance".to_owned(),
        ))
    } else if !state.lifecycle.is_serving() {
        Some(("starting", "the server is not serving yet".to_owned()))
    } else {
        state
            .adapter
            .ready()
            .err()
            .map(|reason| ("degraded", reason))
    };
    let mut body = json!({ "instance": &*state.instance_id, "adapter": adapter });
    if let Some(cluster) = state.adapter.cluster() {
        body["cluster"] = cluster;
    }
    let code = match not_ready {
        None => {
            body["status"] = json!("ready");
            StatusCode::OK
        }
        Some((status, reason)) => {
            body["status"] = json!(status);
            body["reason"] = json!(reason);
            StatusCode::SERVICE_UNAVAILABLE
        }
    };
    (code, Json(body)).into_response()
}

async fn metrics(State(state): State<Arc<HttpState>>) -> Response {
    match state.metrics.render() {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(error) => {
            tracing::error!(%error, "cannot render metrics");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// Serves the configured local browser client before socketioxide claims the path.
async fn local_client_script(
    State(state): State<Arc<HttpState>>,
    request: Request,
    next: Next,
) -> Response {
    match (&state.client_script, request.uri().path()) {
        (Some(script), LOCAL_CLIENT_PATH) if request.method() == Method::GET => (
            [
                (
                    header::CONTENT_TYPE,
                    "application/javascript; charset=utf-8",
                ),
                (header::CACHE_CONTROL, "public, max-age=3600"),
            ],
            Body::from(script.to_vec()),
        )
            .into_response(),
        _ => next.run(request).await,
    }
}

/// While draining, a request that would open a new Engine.IO session gets 503,
/// so the client retries and the router sends it to another instance; requests
/// of existing sessions pass until those sessions are closed.
async fn refuse_new_sessions_while_draining(
    State(state): State<Arc<HttpState>>,
    request: Request,
    next: Next,
) -> Response {
    let opens_session = request.uri().path().starts_with(state.engine_path)
        && !request
            .uri()
            .query()
            .is_some_and(|q| q.split('&').any(|pair| pair.starts_with("sid=")));
    if state.lifecycle.is_draining() && opens_session {
        state.metrics.refused_connections_total.inc();
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, HeaderValue::from_static("1"))],
            Json(json!({ "code": 503, "message": "server is shutting down; retry on another instance" })),
        )
            .into_response();
    }
    next.run(request).await
}

/// Gives an Engine.IO request's URI and header values their own small
/// allocations before socketioxide sees it.
///
/// hyper parses a request head without copying: the URI and every header value
/// point into the connection's read buffer (16 KiB once grown). Engine.IO keeps
/// the handshake's request parts, extensions included, for the whole session
/// (`Socket::req_parts`), and the WebSocket task keeps its upgrade request's parts, so each open
/// session would pin that buffer. Copying the few hundred bytes that matter lets
/// it go: about 16 KiB less per idle connection (docs/performance.md).
async fn compact_engine_request_head(
    State(state): State<Arc<HttpState>>,
    mut request: Request,
    next: Next,
) -> Response {
    if request.uri().path().starts_with(state.engine_path) {
        if let Ok(uri) = axum::http::Uri::try_from(request.uri().to_string()) {
            // axum keeps a copy of the URI in the extensions, which engineioxide keeps too.
            if let Some(original) = request.extensions_mut().get_mut::<OriginalUri>() {
                original.0 = uri.clone();
            }
            *request.uri_mut() = uri;
        }
        let shared = std::mem::take(request.headers_mut());
        let mut owned = HeaderMap::with_capacity(shared.len());
        for (name, value) in &shared {
            let copy = HeaderValue::from_bytes(value.as_bytes()).map(|mut copy| {
                copy.set_sensitive(value.is_sensitive());
                copy
            });
            owned.append(name.clone(), copy.unwrap_or_else(|_| value.clone()));
        }
        *request.headers_mut() = owned;
    }
    next.run(request).await
}

/// Counts and times every request by route template and logs it with the
/// router's `X-Request-ID`, so a line here can be matched to the router's log.
async fn observe(State(state): State<Arc<HttpState>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = route_label(&request, state.engine_path);
    let request_id = request_id(request.headers());
    let span = tracing::info_span!("http", %method, route, request_id = request_id.as_deref().unwrap_or("-"));

    let response = next.run(request).instrument(span.clone()).await;

    let elapsed = started.elapsed().as_secs_f64();
    let status = response.status();
    state
        .metrics
        .http_requests_total
        .with_label_values(&[route, method.as_str(), status.as_str()])
        .inc();
    state
        .metrics
        .http_request_duration_seconds
        .with_label_values(&[route, method.as_str()])
        .observe(elapsed);
    span.in_scope(|| {
        tracing::info!(
            status = status.as_u16(),
            duration_ms = elapsed * 1000.0,
            "request"
        );
    });
    response
}

/// A bounded route label: one of the fixed routes, the Engine.IO path, or `unmatched`.
fn route_label(request: &Request, engine_path: &'static str) -> &'static str {
    // Every route is an exact path, so the path itself is the template.
    const KNOWN: &[&str] = &["/", "/healthz", "/readyz", "/metrics"];
    let path = request.uri().path();
    if path.starts_with(engine_path) {
        engine_path
    } else {
        KNOWN
            .iter()
            .find(|k| **k == path)
            .copied()
            .unwrap_or("unmatched")
    }
}

/// The router's request id, if it is a sane header value (Heroku keeps 20 to 200 characters).
fn request_id(headers: &HeaderMap) -> Option<String> {
    let value = headers.get("x-request-id")?.to_str().ok()?;
    (!value.is_empty() && value.len() <= 200).then(|| value.to_owned())
}

fn cors_layer(policy: &CorsPolicy) -> CorsLayer {
    let origins = match policy {
        CorsPolicy::Any => AllowOrigin::mirror_request(),
        CorsPolicy::List(list) => {
            AllowOrigin::list(list.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
        }
        CorsPolicy::LocalhostOnly => {
            AllowOrigin::predicate(|origin, _| is_localhost_origin(origin))
        }
    };
    // Credentials are allowed so that a sticky-session cookie set by a load
    // balancer travels with cross-origin long-polling requests.
    CorsLayer::new()
        .allow_origin(origins)
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers([header::CONTENT_TYPE])
        .allow_credentials(true)
}

fn is_localhost_origin(origin: &HeaderValue) -> bool {
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let Some(rest) = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
    else {
        return false;
    };
    let host = if let Some(v6) = rest.strip_prefix('[') {
        v6.split(']').next().map(|h| format!("[{h}]"))
    } else {
        rest.split(':').next().map(str::to_owned)
    };
    matches!(host.as_deref(), Some("localhost" | "127.0.0.1" | "[::1]"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn localhost_origins_are_recognised() {
        for ok in [
            "http://localhost:3000",
            "http://127.0.0.1",
            "https://localhost",
            "http://[::1]:8080",
        ] {
            assert!(is_localhost_origin(&HeaderValue::from_static(ok)), "{ok}");
        }
        for bad in [
            "http://localhost.evil.com",
            "https://example.com",
            "null",
            "http://127.0.0.2",
        ] {
            assert!(
                !is_localhost_origin(&HeaderValue::from_static(bad)),
                "{bad}"
            );
        }
    }

    #[test]
    fn page_uses_the_cdn_or_the_local_client() {
        let cdn = render_page(false);
        assert!(cdn.contains("integrity=\"sha384-"));
        assert!(!cdn.contains(SCRIPT_PLACEHOLDER));
        let local = render_page(true);
        assert!(local.contains(LOCAL_CLIENT_PATH));
        assert!(!local.contains("cdn.socket.io"));
    }
}
