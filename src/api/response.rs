//! Answers: the success shapes, the cluster state every answer carries, and
//! the JSON error every failure gets.

use std::borrow::Cow;

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;
use utoipa::ToSchema;

use crate::{http::middleware::LogDetail, hub::AdapterStatus};

/// Whether the call reached the whole cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ClusterState {
    /// Redis is up: every instance got the call.
    Up,
    /// Redis is unreachable: the call was applied to this instance's sockets
    /// only (and listings cover this instance only); `warning` says so.
    Down,
    /// No Redis configured: a single instance, which is the whole cluster.
    None,
}

/// The cluster state of an answer, and the warning that goes with `down`.
pub struct Reach {
    /// The state.
    pub cluster: ClusterState,
    /// Why the answer may not cover every instance.
    pub reason: Option<String>,
}

impl Reach {
    /// From the adapter's status, read after the call.
    pub fn of(status: &AdapterStatus) -> Self {
        match (&status.link, status.name) {
            (_, "memory") => Self {
                cluster: ClusterState::None,
                reason: None,
            },
            (Ok(()), _) => Self {
                cluster: ClusterState::Up,
                reason: None,
            },
            (Err(reason), _) => Self {
                cluster: ClusterState::Down,
                reason: Some(reason.clone()),
            },
        }
    }

    /// The warning of an action (emit, join, leave, disconnect).
    pub fn action_warning(&self) -> Option<String> {
        self.reason.as_ref().map(|reason| {
            format!(
                "the cluster is unreachable ({reason}): applied to the sockets of this instance only; \
                 the other instances did not get it"
            )
        })
    }

    /// The warning of a listing.
    pub fn listing_warning(&self) -> Option<String> {
        self.reason.as_ref().map(|reason| {
            format!("the cluster is unreachable ({reason}): this listing covers this instance only")
        })
    }
}

/// The answer of emit, join, leave and disconnect.
#[derive(Debug, Serialize, ToSchema)]
pub struct Done {
    /// Always `true`: the call was applied.
    pub ok: bool,
    /// `up`: on every instance; `down`: Redis is unreachable, on this instance
    /// only; `none`: a single instance without Redis.
    pub cluster: ClusterState,
    /// The room joined or left (join and leave only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    /// Set when the call may have missed sockets on other instances.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

/// The answer of `GET /api/v1/rooms`.
#[derive(Debug, Serialize, ToSchema)]
pub struct RoomsListing {
    /// Always `true`.
    pub ok: bool,
    /// As in every answer; `down` means this instance's rooms only.
    pub cluster: ClusterState,
    /// How many rooms there are in all (exact).
    pub count: usize,
    /// The first 1000 room names, sorted.
    pub rooms: Vec<String>,
    /// Set when the listing may miss other instances.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

/// The answer of `GET /api/v1/sockets`.
#[derive(Debug, Serialize, ToSchema)]
pub struct SocketsListing {
    /// Always `true`.
    pub ok: bool,
    /// As in every answer; `down` means this instance's sockets only.
    pub cluster: ClusterState,
    /// The room asked for, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    /// The user asked for, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// How many sockets there are in all (exact).
    pub count: usize,
    /// The first 1000 socket ids, sorted.
    pub sockets: Vec<String>,
    /// Set when the listing may miss other instances.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

/// Every failure's body.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Always `false`.
    pub ok: bool,
    /// What went wrong and, for a bad request, which field and what was expected.
    pub error: String,
}

/// A failed call: a status and a message.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: Cow<'static, str>,
}

impl ApiError {
    /// Any status with a message.
    pub fn new(status: StatusCode, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    /// 400: the request is malformed; `message` names the field.
    pub fn bad_request(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The status.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let detail = LogDetail(self.message.to_string());
        let mut response = (
            self.status,
            Json(ErrorBody {
                ok: false,
                error: self.message.into_owned(),
            }),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"ecos\""),
            );
        }
        if self.status == StatusCode::PAYLOAD_TOO_LARGE {
            // The rest of the body stays unread, so hyper closes the
            // connection after this answer: say so, or a client may send its
            // next request on a connection that is going away.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response.extensions_mut().insert(detail);
        response
    }
}
