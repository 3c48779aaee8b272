//! The routes of the server API. Each handler checks its input
//! ([`super::request`]), acts through the hub (cluster-wide), and answers
//! with the cluster state read afterwards ([`super::response`]).
//!
//! The `#[utoipa::path]` annotations are the OpenAPI description of each
//! route; [`super::openapi`] collects them.

use std::sync::Arc;

use axum::{
    Json,
    body::{Body, Bytes},
    extract::{Query, State, rejection::BytesRejection, rejection::QueryRejection},
    http::{Method, StatusCode, Uri, header},
    response::{IntoResponse, Response},
};

use super::{
    ApiState,
    request::{self, DisconnectRequest, EmitRequest, RoomRequest, SocketsFilter, SocketsQuery},
    response::{ApiError, Done, ErrorBody, Reach, RoomsListing, SocketsListing},
};
use crate::hub::HubError;

/// The decoded query string.
type Pairs = Result<Query<Vec<(String, String)>>, QueryRejection>;

/// Emits an event to the selected sockets, on every instance.
///
/// Each element of `args` is a separate Socket.IO argument. Binary arguments
/// are written `{ "$base64": "..." }`, at any depth, and arrive as binary.
/// Without `rooms`, `users` and `sockets`, every socket gets it (minus `except`).
#[utoipa::path(
    post,
    path = "/api/v1/emit",
    tag = "server API",
    request_body(content = EmitRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Emitted; `cluster` says whether every instance got it", body = Done),
        (status = 400, description = "The body is malformed; `error` names the field", body = ErrorBody),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 413, description = "The body is over `api.max_body_bytes`", body = ErrorBody),
        (status = 503, description = "The cluster could not complete the call; retry", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn emit(
    State(api): State<Arc<ApiState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Done>, ApiError> {
    let emit = request::emit(&read_body(body, api.max_body_bytes)?)?;
    api.hub
        .emit(&emit.selector, &emit.event, &emit.args)
        .await
        .map_err(hub_error)?;
    Ok(done(&api, None))
}

/// Makes the selected sockets, on every instance, join `room`.
///
/// The server may put sockets in `user:` rooms, which clients cannot join themselves.
#[utoipa::path(
    post,
    path = "/api/v1/join",
    tag = "server API",
    request_body(content = RoomRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Joined; `cluster` says whether every instance applied it", body = Done),
        (status = 400, description = "The body is malformed; `error` names the field", body = ErrorBody),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 413, description = "The body is over `api.max_body_bytes`", body = ErrorBody),
        (status = 503, description = "The cluster could not complete the call; retry", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn join(
    State(api): State<Arc<ApiState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Done>, ApiError> {
    let change = request::room_change(&read_body(body, api.max_body_bytes)?)?;
    api.hub
        .join(&change.selector, &change.room)
        .await
        .map_err(hub_error)?;
    Ok(done(&api, Some(change.room)))
}

/// Makes the selected sockets, on every instance, leave `room`.
#[utoipa::path(
    post,
    path = "/api/v1/leave",
    tag = "server API",
    request_body(content = RoomRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Left; `cluster` says whether every instance applied it", body = Done),
        (status = 400, description = "The body is malformed; `error` names the field", body = ErrorBody),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 413, description = "The body is over `api.max_body_bytes`", body = ErrorBody),
        (status = 503, description = "The cluster could not complete the call; retry", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn leave(
    State(api): State<Arc<ApiState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Done>, ApiError> {
    let change = request::room_change(&read_body(body, api.max_body_bytes)?)?;
    api.hub
        .leave(&change.selector, &change.room)
        .await
        .map_err(hub_error)?;
    Ok(done(&api, Some(change.room)))
}

/// Disconnects the selected sockets, on every instance.
///
/// Their clients see a server-side disconnect (`io server disconnect`) and,
/// by Socket.IO's rules, do not reconnect by themselves.
#[utoipa::path(
    post,
    path = "/api/v1/disconnect",
    tag = "server API",
    request_body(content = DisconnectRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Disconnected; `cluster` says whether every instance applied it", body = Done),
        (status = 400, description = "The body is malformed or selects nobody explicitly; `error` says why", body = ErrorBody),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 413, description = "The body is over `api.max_body_bytes`", body = ErrorBody),
        (status = 503, description = "The cluster could not complete the call; retry", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn disconnect(
    State(api): State<Arc<ApiState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Done>, ApiError> {
    let selector = request::disconnect(&read_body(body, api.max_body_bytes)?)?;
    api.hub.disconnect(&selector).await.map_err(hub_error)?;
    Ok(done(&api, None))
}

/// Every room, on every instance: the exact count and the first 1000 names, sorted.
#[utoipa::path(
    get,
    path = "/api/v1/rooms",
    tag = "server API",
    responses(
        (status = 200, description = "The rooms; `cluster` says whether every instance answered", body = RoomsListing),
        (status = 400, description = "An unknown query parameter", body = ErrorBody),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 503, description = "The cluster could not complete the call; retry", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn rooms(
    State(api): State<Arc<ApiState>>,
    query: Pairs,
) -> Result<Json<RoomsListing>, ApiError> {
    request::no_query(&pairs(query)?)?;
    let listing = api.hub.rooms().await.map_err(hub_error)?;
    let reach = Reach::of(&api.hub.status());
    Ok(Json(RoomsListing {
        ok: true,
        cluster: reach.cluster,
        count: listing.count,
        rooms: listing.names,
        warning: reach.listing_warning(),
    }))
}

/// The ids of the sockets of a room, of a user, or of everyone, on every
/// instance: the exact count and the first 1000 ids, sorted.
#[utoipa::path(
    get,
    path = "/api/v1/sockets",
    tag = "server API",
    params(SocketsQuery),
    responses(
        (status = 200, description = "The socket ids; `cluster` says whether every instance answered", body = SocketsListing),
        (status = 400, description = "A bad or unknown query parameter", body = ErrorBody),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 503, description = "The cluster could not complete the call; retry", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn sockets(
    State(api): State<Arc<ApiState>>,
    query: Pairs,
) -> Result<Json<SocketsListing>, ApiError> {
    let filter = request::sockets_query(&pairs(query)?)?;
    let listing = api
        .hub
        .sockets(&filter.selector())
        .await
        .map_err(hub_error)?;
    let reach = Reach::of(&api.hub.status());
    let (room, user) = match filter {
        SocketsFilter::All => (None, None),
        SocketsFilter::Room(room) => (Some(room), None),
        SocketsFilter::User(user) => (None, Some(user)),
    };
    Ok(Json(SocketsListing {
        ok: true,
        cluster: reach.cluster,
        room,
        user,
        count: listing.count,
        sockets: listing.names,
        warning: reach.listing_warning(),
    }))
}

/// This description of the API (OpenAPI 3.1), generated from the code.
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = "server API",
    responses(
        (status = 200, description = "The OpenAPI document", content_type = "application/json", body = Object),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn openapi(State(api): State<Arc<ApiState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        api.openapi.clone(),
    )
        .into_response()
}

/// A path under `/api/` that is no route.
pub async fn not_found(uri: Uri, body: Body) -> Response {
    let drained = drain(body).await;
    let error = ApiError::new(
        StatusCode::NOT_FOUND,
        format!(
            "no route {}; the routes are listed by GET /api/v1/openapi.json",
            shorten_path(uri.path())
        ),
    );
    closing_unless(drained, error.into_response())
}

/// Largest request body an answer that does not need it still reads.
const DRAINED_BODY_BYTES: usize = 64 * 1024;

/// Reads and discards a request body the answer does not use; false when it
/// was too large (or broken) to read.
///
/// hyper closes a keep-alive connection whose request body was left unread,
/// without saying so in the answer; a client that sends its next request on
/// that connection before it notices gets "server disconnected" (httpx did,
/// in CI, on the 404 of a POST).
pub async fn drain(body: Body) -> bool {
    axum::body::to_bytes(body, DRAINED_BODY_BYTES).await.is_ok()
}

/// `response`, with `Connection: close` when the body was left unread, so
/// the client opens a new connection for its next request.
pub fn closing_unless(drained: bool, mut response: Response) -> Response {
    if !drained {
        response.headers_mut().insert(
            header::CONNECTION,
            header::HeaderValue::from_static("close"),
        );
    }
    response
}

/// A route asked with a method it does not take.
pub async fn method_not_allowed(method: Method, uri: Uri, body: Body) -> Response {
    let drained = drain(body).await;
    let error = ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "{method} is not allowed on {}; see GET /api/v1/openapi.json",
            shorten_path(uri.path())
        ),
    );
    closing_unless(drained, error.into_response())
}

fn shorten_path(path: &str) -> String {
    if path.len() <= 128 {
        path.to_owned()
    } else {
        format!("{}...", path.chars().take(128).collect::<String>())
    }
}

/// The body, or 413 when it is over the limit.
fn read_body(body: Result<Bytes, BytesRejection>, limit: usize) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body is over {limit} bytes (`api.max_body_bytes`)"),
            )
        } else {
            ApiError::bad_request(format!(
                "could not read the body: {}",
                rejection.body_text()
            ))
        }
    })
}

/// The query's pairs, or 400 when it cannot be decoded.
fn pairs(query: Pairs) -> Result<Vec<(String, String)>, ApiError> {
    query.map(|Query(pairs)| pairs).map_err(|e| {
        ApiError::bad_request(format!(
            "the query string cannot be decoded: {}",
            e.body_text()
        ))
    })
}

/// A hub failure as an answer: the cluster did not complete the call.
fn hub_error(error: HubError) -> ApiError {
    match error {
        HubError::Adapter(reason) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the cluster could not complete the call ({reason}); retry"),
        ),
        HubError::Encode(reason) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the arguments could not be encoded for Socket.IO: {reason}"),
        ),
    }
}

/// The answer of an action, with the cluster state read after it.
fn done(api: &ApiState, room: Option<String>) -> Json<Done> {
    let reach = Reach::of(&api.hub.status());
    Json(Done {
        ok: true,
        cluster: reach.cluster,
        room,
        warning: reach.action_warning(),
    })
}
