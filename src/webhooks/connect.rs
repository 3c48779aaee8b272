//! The connect hook: before a socket is connected, the backend says whether
//! it may, as which user, in which rooms.

use std::{net::IpAddr, sync::Arc};

use axum::http::HeaderMap;
use serde::Serialize;
use serde_json::{Map, Value};

use super::{Hook, Outcome, SocketInfo, Webhooks, sign};
use crate::realtime::MAX_USER_CHARS;

/// Longest reason from a denial that is passed on, in characters.
const MAX_REASON_CHARS: usize = 200;

/// What the connect hook let in.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Admission {
    /// The user id the backend gave, if any.
    pub user: Option<Arc<str>>,
    /// Rooms the socket joins as it connects.
    pub rooms: Vec<String>,
}

/// Why the connect hook kept a socket out. The client reads
/// `unauthorized: <reason>` in its `connect_error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denial {
    /// The backend said no, with its reason.
    #[error("unauthorized: {0}")]
    Denied(String),
    /// No answer in time, no connection, or a non-2xx status.
    #[error("unauthorized: backend unavailable")]
    Unavailable,
    /// A 2xx answer that is not `{ "allow": ... }` as documented.
    #[error("unauthorized: backend error")]
    BadAnswer,
}

/// The handshake a connect hook is asked about.
pub struct ConnectRequest<'a> {
    /// The socket being connected.
    pub socket: SocketInfo,
    /// The client's CONNECT payload.
    pub auth: Option<&'a Value>,
    /// The handshake request's headers.
    pub headers: &'a HeaderMap,
    /// The address the connection came from.
    pub peer: Option<IpAddr>,
}

/// The body of a connect call.
#[derive(Serialize)]
struct ConnectBody<'a> {
    r#type: &'static str,
    socket: &'a SocketInfo,
    auth: Value,
    headers: Map<String, Value>,
    address: Option<String>,
}

impl Webhooks {
    /// Asks the backend whether `request` may connect. With
    /// `webhooks.fail_open`, a backend that cannot answer lets it in with nothing.
    pub async fn ask_connect(&self, request: ConnectRequest<'_>) -> Result<Admission, Denial> {
        let body = ConnectBody {
            r#type: Hook::Connect.name(),
            socket: &request.socket,
            auth: without_token(request.auth),
            headers: self.forwarded_headers(request.headers),
            address: client_address(request.headers, request.peer),
        };
        let body = match serde_json::to_vec(&body) {
            Ok(body) => body,
            Err(error) => {
                tracing::error!(%error, "cannot encode a connect webhook");
                return Err(Denial::Unavailable);
            }
        };
        let answer = self.post(Hook::Connect, &sign::delivery_id(), &body).await;
        let verdict = match answer {
            Ok(answer) => parse_answer(&answer).map_err(|problem| {
                tracing::warn!(sid = %request.socket.id, problem, "the connect hook's answer is not usable");
                (Outcome::Error, Denial::BadAnswer)
            }),
            Err(failure) => {
                tracing::warn!(sid = %request.socket.id, %failure, "the connect hook did not answer");
                Err((failure.outcome(), Denial::Unavailable))
            }
        };
        match verdict {
            Ok(Ok(admission)) => {
                self.metrics.request(Hook::Connect, Outcome::Ok);
                Ok(admission)
            }
            Ok(Err(denial)) => {
                self.metrics.request(Hook::Connect, Outcome::Denied);
                Err(denial)
            }
            Err((outcome, denial)) => {
                self.metrics.request(Hook::Connect, outcome);
                if self.fail_open && denial == Denial::Unavailable {
                    tracing::warn!(sid = %request.socket.id, "webhooks.fail_open: letting the socket in without the backend's answer");
                    return Ok(Admission::default());
                }
                Err(denial)
            }
        }
    }

    /// The forwarded handshake headers that are present, by lowercase name;
    /// repeated headers are joined as HTTP joins them (`; ` for cookies).
    fn forwarded_headers(&self, headers: &HeaderMap) -> Map<String, Value> {
        let mut out = Map::new();
        for name in &self.forward_headers {
            let values: Vec<String> = headers
                .get_all(name)
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .collect();
            if values.is_empty() {
                continue;
            }
            let separator = if name == axum::http::header::COOKIE {
                "; "
            } else {
                ", "
            };
            out.insert(
                name.as_str().to_owned(),
                Value::String(values.join(separator)),
            );
        }
        out
    }
}

/// The CONNECT payload as the backend sees it: without `token`, which is a
/// credential for ecos, not for the backend's logs.
fn without_token(auth: Option<&Value>) -> Value {
    match auth {
        Some(Value::Object(fields)) => {
            let mut fields = fields.clone();
            fields.remove("token");
            Value::Object(fields)
        }
        Some(other) => other.clone(),
        None => Value::Null,
    }
}

/// The client's address: the last `X-Forwarded-For` entry, the one the
/// nearest proxy (the platform's router) added, else the connection's peer.
/// Earlier entries are whatever the client sent and prove nothing.
fn client_address(headers: &HeaderMap, peer: Option<IpAddr>) -> Option<String> {
    let forwarded = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .rfind(|v| !v.is_empty())
        .and_then(|v| v.parse::<IpAddr>().ok());
    forwarded.or(peer).map(|ip| ip.to_string())
}

/// Reads the backend's answer: `{ "allow": true, "user"?, "rooms"? }` or
/// `{ "allow": false, "reason"? }`. The outer error is an unusable answer.
fn parse_answer(answer: &[u8]) -> Result<Result<Admission, Denial>, &'static str> {
    let Ok(Value::Object(mut fields)) = serde_json::from_slice::<Value>(answer) else {
        return Err("not a JSON object");
    };
    match fields.get("allow") {
        Some(Value::Bool(true)) => {}
        Some(Value::Bool(false)) => {
            let reason = match fields.get("reason") {
                Some(Value::String(reason)) => clean_reason(reason),
                _ => String::new(),
            };
            let reason = if reason.is_empty() {
                "denied".to_owned()
            } else {
                reason
            };
            return Ok(Err(Denial::Denied(reason)));
        }
        _ => return Err("`allow` must be true or false"),
    }
    let user = match fields.remove("user") {
        None | Some(Value::Null) => None,
        Some(Value::String(user)) => {
            let chars = user.chars().count();
            if chars == 0 || chars > MAX_USER_CHARS || user.chars().any(char::is_control) {
                return Err("`user` must be 1 to 123 characters without control characters");
            }
            Some(Arc::from(user))
        }
        Some(Value::Number(n)) if n.is_u64() || n.is_i64() => Some(Arc::from(n.to_string())),
        Some(_) => return Err("`user` must be a string"),
    };
    let rooms = match fields.remove("rooms") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| {
                crate::realtime::room_name(&rmpv::Value::from(item.as_str().unwrap_or(""))).ok()
            })
            .collect::<Option<Vec<String>>>()
            .ok_or("`rooms` must be an array of valid room names")?,
        Some(_) => return Err("`rooms` must be an array of room names"),
    };
    Ok(Ok(Admission { user, rooms }))
}

/// A denial reason as the client may see it: one line, bounded.
fn clean_reason(reason: &str) -> String {
    reason
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_REASON_CHARS)
        .collect::<String>()
        .trim()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read_as_documented() {
        let admit = parse_answer(br#"{"allow":true,"user":"alice","rooms":["team:42"]}"#);
        assert_eq!(
            admit,
            Ok(Ok(Admission {
                user: Some(Arc::from("alice")),
                rooms: vec!["team:42".to_owned()],
            }))
        );
        assert_eq!(
            parse_answer(br#"{"allow":true}"#),
            Ok(Ok(Admission::default()))
        );
        assert_eq!(
            parse_answer(br#"{"allow":false,"reason":"no session"}"#),
            Ok(Err(Denial::Denied("no session".to_owned())))
        );
        assert_eq!(
            parse_answer(br#"{"allow":false}"#).map(|v| v.map_err(|d| d.to_string())),
            Ok(Err("unauthorized: denied".to_owned()))
        );
        for bad in [
            &b"yes"[..],
            br#"{}"#,
            br#"{"allow":"true"}"#,
            br#"{"allow":true,"rooms":[""]}"#,
            br#"{"allow":true,"user":""}"#,
        ] {
            assert!(
                parse_answer(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn the_address_is_the_routers_entry_else_the_peer() {
        let mut headers = HeaderMap::new();
        let peer = Some("10.0.0.1".parse().unwrap());
        assert_eq!(client_address(&headers, peer).as_deref(), Some("10.0.0.1"));
        headers.insert("x-forwarded-for", "6.6.6.6, 203.0.113.7".parse().unwrap());
        assert_eq!(
            client_address(&headers, peer).as_deref(),
            Some("203.0.113.7")
        );
        assert_eq!(
            without_token(Some(&serde_json::json!({"token": "t", "room": "a"}))),
            serde_json::json!({"room": "a"})
        );
    }
}
