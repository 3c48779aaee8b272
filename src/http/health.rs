//! Liveness and readiness, for the platform's router and orchestrator.

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

/// `GET /readyz`: 200 when ready for traffic; 503 while starting, draining or degraded.
pub async fn readyz(State(state): State<Arc<HttpState>>) -> Response {
    let adapter = state.hub.status();
    let not_ready = if state.lifecycle.is_draining() {
        Some((
            "draining",
            "shutting down; reconnect to another instance".to_owned(),
        ))
    } else if !state.lifecycle.is_serving() {
        Some(("starting", "the server is not serving yet".to_owned()))
    } else {
        adapter.link.err().map(|reason| ("degraded", reason))
    };
    let mut body = json!({ "instance": &*state.instance_id, "adapter": adapter.name });
    if let Some(cluster) = adapter.cluster {
        body["cluster"] = json!(cluster);
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
