//! `GET /metrics`: the Prometheus text format, behind a bearer token when
//! `metrics.token` is set (for platforms whose router makes every route public).

use std::sync::Arc;

use axum::{
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};

use super::HttpState;
use crate::api::response::ApiError;

/// Renders every metric of this instance.
pub async fn metrics(State(state): State<Arc<HttpState>>, headers: HeaderMap) -> Response {
    if !state.metrics_token.is_empty() && state.metrics_token.check(&headers).is_err() {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "/metrics needs `Authorization: Bearer <token>` with the token of `metrics.token`",
        )
        .into_response();
    }
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
