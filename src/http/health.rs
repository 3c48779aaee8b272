//! Liveness and readiness, for the platform's router and orchestrator.
//!
//! Readiness answers one question: should the load balancer send this
//! instance new clients? Starting and draining say no. A Redis outage, by
//! default, does not: Redis is shared, so a readiness that followed it would
//! take every instance out of rotation at once, although each one still
//! serves its own clients. `/readyz` then stays 200 and reports
//! `"redis": "down"` with the reason; `readiness.require_redis` makes it 503
//! (`degraded`) instead.

use std::sync::Arc;

use axum::{
    Json,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde_json::json;

use super::HttpState;

/// `GET /healthz`: 200 while the process runs.
pub async fn healthz() -> impl IntoResponse {
    (StatusCode::OK, Json(json!({ "status": "alive" })))
}

/// `GET /readyz`: 200 when ready for traffic; 503 while starting or draining,
/// and while Redis is down if `readiness.require_redis` is set.
pub async fn readyz(State(state): State<Arc<HttpState>>) -> Response {
    let adapter = state.hub.status();
    // Only the Redis adapter has a link to report; the in-memory one has none.
    let redis_down = match (adapter.name, adapter.link) {
        ("redis", Err(reason)) => Some(reason),
        _ => None,
    };
    let not_ready = if state.lifecycle.is_draining() {
        Some((
            "draining",
            "shutting down; reconnect to another instance".to_owned(),
        ))
    } else if !state.lifecycle.is_serving() {
        Some(("starting", "the server is not serving yet".to_owned()))
    } else if state.require_redis {
        redis_down.clone().map(|reason| ("degraded", reason))
    } else {
        None
    };
    let mut body = json!({ "instance": &*state.instance_id, "adapter": adapter.name });
    if adapter.name == "redis" {
        body["redis"] = json!(if redis_down.is_some() { "down" } else { "up" });
    }
    if let Some(cluster) = adapter.cluster {
        body["cluster"] = json!(cluster);
    }
    let code = match not_ready {
        None => {
            body["status"] = json!("ready");
            // Ready, but serving local clients only: say why.
            if let Some(reason) = redis_down {
                body["reason"] = json!(reason);
            }
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
