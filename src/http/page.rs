//! The demo page, and the local copy of the browser client when one is configured.

use std::sync::Arc;

use axum::{
    body::{Body, Bytes},
    extract::{Request, State},
    http::{Method, StatusCode, header},
    middleware::Next,
    response::{Html, IntoResponse, Response},
};

use super::HttpState;

/// The browser client the demo page loads from the official CDN, pinned with its
/// subresource-integrity hash so a tampered file is refused by the browser.
pub const CDN_CLIENT_SCRIPT: &str = r#"<script src="https://cdn.socket.io/4.8.3/socket.io.min.js" integrity="sha384-kzavj5fiMwLKzzD1f8S7TeoVIEi7uKHvbTA3ueZkrzYq75pNQUiUi6Dy98Q3fxb0" crossorigin="anonymous"></script>"#;

/// Where the page finds a locally served client when one is configured.
pub const LOCAL_CLIENT_PATH: &str = "/socket.io/socket.io.min.js";

const PAGE_TEMPLATE: &str = include_str!("../../static/index.html");
const SCRIPT_PLACEHOLDER: &str = "<!--ECOS_CLIENT_SCRIPT-->";

/// Renders the demo page with the CDN script tag, or the local one when a copy is served.
pub fn render_page(local_client: bool) -> String {
    let tag = if local_client {
        format!(r#"<script src="{LOCAL_CLIENT_PATH}"></script>"#)
    } else {
        CDN_CLIENT_SCRIPT.to_owned()
    };
    PAGE_TEMPLATE.replace(SCRIPT_PLACEHOLDER, &tag)
}

/// `GET /`.
pub async fn page(State(state): State<Arc<HttpState>>) -> Html<Bytes> {
    Html(state.page.clone())
}

/// `GET /favicon.ico`: there is no icon, but browsers ask for one on every
/// page they open, here or at `/healthz`; an empty answer they may cache for a
/// day keeps those requests out of the logs and metrics as 404s.
pub async fn favicon() -> impl IntoResponse {
    (
        StatusCode::NO_CONTENT,
        [(header::CACHE_CONTROL, "public, max-age=86400")],
    )
}

/// Serves the configured local browser client before socketioxide claims the path.
pub async fn local_client_script(
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

#[cfg(test)]
mod tests {
    use super::*;

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
