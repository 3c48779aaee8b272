//! Middleware around every request: request log and metrics, CORS, the
//! origin guard, the drain guard, the Engine.IO 3 guard, and request-head compaction.

use std::{sync::Arc, time::Instant};

use axum::{
    Json,
    extract::{OriginalUri, Request, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use serde_json::json;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tracing::Instrument;

use super::HttpState;
use crate::config::CorsPolicy;

/// While draining, a request that would open a new Engine.IO session gets 503,
/// so the client retries and the router sends it to another instance; requests
/// of existing sessions pass until those sessions are closed.
pub async fn refuse_new_sessions_while_draining(
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

/// Reports each request of a watched Engine.IO session to the slow-consumer
/// policy ([`crate::net::sessions`]): a poll while it waits for its answer, the
/// upgrade to WebSocket with its connection. A session ecos closed as a slow
/// consumer gets Engine.IO's own answer for a session that is gone
/// (`400 {"code":1,"message":"Session ID unknown"}`), so its client reconnects.
pub async fn watch_engine_sessions(
    State(state): State<Arc<HttpState>>,
    request: Request,
    next: Next,
) -> Response {
    let session = request
        .uri()
        .path()
        .starts_with(state.engine_path)
        .then(|| query_value(request.uri().query()?, "sid"))
        .flatten()
        .and_then(|sid| state.slow_consumers.session(sid));
    let Some(session) = session else {
        return next.run(request).await;
    };
    if session.is_evicted()
        && request
            .extensions()
            .get::<crate::net::sessions::ClosingRequest>()
            .is_none()
    {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({ "code": 1, "message": "Session ID unknown" })),
        )
            .into_response();
    }
    let transport = request
        .uri()
        .query()
        .and_then(|q| query_value(q, "transport"));
    // Held across the request: a poll counts as waiting until it is answered.
    let _poll = if transport == Some("websocket") {
        session.on_websocket(request.extensions());
        None
    } else {
        (request.method() == Method::GET).then(|| session.poll())
    };
    next.run(request).await
}

/// The value of `key` in a URI query, as written.
fn query_value<'q>(query: &'q str, key: &str) -> Option<&'q str> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == key).then_some(v)
    })
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
pub async fn compact_engine_request_head(
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
pub async fn observe(
    State(state): State<Arc<HttpState>>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = route_label(&request, state.engine_path);
    let request_id = request_id(request.headers());
    let span = tracing::info_span!("http", %method, route, request_id = request_id.as_deref().unwrap_or("-"));

    let response = next.run(request).instrument(span.clone()).await;

    let elapsed = started.elapsed().as_secs_f64();
    let status = response.status();
    let detail = response.extensions().get::<LogDetail>();
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
    span.in_scope(|| match detail {
        None => tracing::info!(
            status = status.as_u16(),
            duration_ms = elapsed * 1000.0,
            "request"
        ),
        Some(LogDetail(detail)) => tracing::info!(
            status = status.as_u16(),
            duration_ms = elapsed * 1000.0,
            detail = detail.as_str(),
            "request"
        ),
    });
    response
}

/// What a handler adds to its request's one log line, e.g. why the request
/// was refused; put in the response's extensions. Never a secret.
#[derive(Debug, Clone)]
pub struct LogDetail(pub String);

/// A bounded route label: one of the fixed routes (the server API's
/// included), the Engine.IO path, or `unmatched`.
fn route_label(request: &Request, engine_path: &'static str) -> &'static str {
    // Every route is an exact path, so the path itself is the template.
    const KNOWN: &[&str] = &["/", "/favicon.ico", "/healthz", "/readyz", "/metrics"];
    let path = request.uri().path();
    if path.starts_with(engine_path) {
        engine_path
    } else {
        KNOWN
            .iter()
            .find(|k| **k == path)
            .copied()
            .unwrap_or_else(|| crate::api::route_label(path))
    }
}

/// The router's request id, if it is a sane header value (Heroku keeps 20 to 200 characters).
fn request_id(headers: &HeaderMap) -> Option<String> {
    let value = headers.get("x-request-id")?.to_str().ok()?;
    (!value.is_empty() && value.len() <= 200).then(|| value.to_owned())
}

pub fn cors_layer(policy: &CorsPolicy) -> CorsLayer {
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

/// Refuses (403) Engine.IO requests, WebSocket upgrades included, whose
/// `Origin` the `cors.allowed_origins` policy does not allow.
///
/// CORS alone does not protect WebSockets (browsers apply no preflight to
/// them) nor a long-poll's effects, so a page on another site could open a
/// session with the user's cookies: cross-site WebSocket hijacking. Requests
/// without `Origin` (Node, Python, mobile clients) and same-origin pages pass.
pub async fn refuse_foreign_origins(
    State(state): State<Arc<HttpState>>,
    req: Request,
    next: Next,
) -> Response {
    if req.uri().path().starts_with(state.engine_path)
        && let Some(origin) = req.headers().get(header::ORIGIN)
        && !origin_allowed(&state.origins, origin, req.headers().get(header::HOST))
    {
        tracing::info!(origin = ?origin, "refused an Engine.IO request from an origin cors.allowed_origins does not allow");
        return (
            StatusCode::FORBIDDEN,
            [(header::CONTENT_TYPE, "application/json")],
            r#"{"code":4,"message":"Forbidden: origin not allowed"}"#,
        )
            .into_response();
    }
    next.run(req).await
}

/// Whether a browser page at `origin` may talk to ecos, reached as `host`.
pub fn origin_allowed(
    policy: &CorsPolicy,
    origin: &HeaderValue,
    host: Option<&HeaderValue>,
) -> bool {
    let same_origin = match (origin.to_str(), host.and_then(|h| h.to_str().ok())) {
        (Ok(origin), Some(host)) => origin
            .split_once("://")
            .is_some_and(|(_, authority)| authority.eq_ignore_ascii_case(host)),
        _ => false,
    };
    same_origin
        || match policy {
            CorsPolicy::Any => true,
            CorsPolicy::List(list) => list.iter().any(|o| o.as_bytes() == origin.as_bytes()),
            CorsPolicy::LocalhostOnly => is_localhost_origin(origin),
        }
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

/// Refuses Engine.IO v3 handshakes (`EIO=3`, i.e. Socket.IO v2 clients) unless
/// `socketio.allow_eio3` is set, with the answer socketioxide gives when built
/// without v3 support: 400 `{"code":"5","message":"Unsupported protocol version"}`.
///
/// socketioxide's `v4` feature makes engineioxide accept `EIO=3` whenever it is
/// compiled in (`RequestInfo::parse` in engineioxide's `service/parser.rs`), so
/// the setting is enforced here, in front of the Socket.IO service.
pub async fn refuse_eio3(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let is_engine = req.uri().path().starts_with(crate::app::ENGINE_PATH);
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
}
