//! Client events listed in `webhooks.events`: forwarded to the backend, whose
//! answer becomes the client's ack.

use serde::Serialize;

use super::{Failure, Hook, Outcome, SocketInfo, Webhooks, sign};
use crate::realtime::args::{self, Args};

/// The ack error when the backend did not answer in time or could not be reached.
pub const BACKEND_UNAVAILABLE: &str = "backend unavailable";

/// The ack error when the backend answered with an error or an unusable body.
pub const BACKEND_ERROR: &str = "backend error";

/// The body of an event call.
#[derive(Serialize)]
struct EventBody<'a> {
    r#type: &'static str,
    socket: &'a SocketInfo,
    event: &'a str,
    args: Vec<serde_json::Value>,
}

impl Webhooks {
    /// Forwards `event` with its arguments and returns what the client's ack
    /// carries: the backend's JSON answer (binary where it holds
    /// `{ "$base64": ... }`; `null` for an empty body), or the error to ack.
    pub async fn forward_event(
        &self,
        socket: &SocketInfo,
        event: &str,
        args: &Args,
    ) -> Result<rmpv::Value, &'static str> {
        let body = EventBody {
            r#type: Hook::Event.name(),
            socket,
            event,
            args: args.0.iter().map(args::to_json).collect(),
        };
        let body = match serde_json::to_vec(&body) {
            Ok(body) => body,
            Err(error) => {
                tracing::error!(%error, "cannot encode an event webhook");
                return Err(BACKEND_ERROR);
            }
        };
        let (outcome, result) = match self.post(Hook::Event, &sign::delivery_id(), &body).await {
            Ok(answer) => match read_answer(&answer) {
                Ok(value) => (Outcome::Ok, Ok(value)),
                Err(problem) => {
                    tracing::warn!(sid = %socket.id, event, problem, "the backend's answer to an event is not usable");
                    (Outcome::Error, Err(BACKEND_ERROR))
                }
            },
            Err(failure) => {
                tracing::warn!(sid = %socket.id, event, %failure, "the backend did not handle an event");
                let error = match failure {
                    Failure::Status(_) | Failure::TooLarge => BACKEND_ERROR,
                    Failure::Timeout | Failure::Unavailable(_) => BACKEND_UNAVAILABLE,
                };
                (failure.outcome(), Err(error))
            }
        };
        self.metrics.request(Hook::Event, outcome);
        result
    }
}

/// The ack value of a 2xx answer body.
fn read_answer(answer: &[u8]) -> Result<rmpv::Value, String> {
    if answer.iter().all(u8::is_ascii_whitespace) {
        return Ok(rmpv::Value::Nil);
    }
    let json: serde_json::Value =
        serde_json::from_slice(answer).map_err(|e| format!("not JSON: {e}"))?;
    args::from_json(json, "answer")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_is_json_with_binary_and_an_empty_one_is_null() {
        assert_eq!(read_answer(b""), Ok(rmpv::Value::Nil));
        assert_eq!(
            read_answer(br#"{"ok":true,"blob":{"$base64":"AQI="}}"#),
            Ok(rmpv::Value::Map(vec![
                (rmpv::Value::from("blob"), rmpv::Value::Binary(vec![1, 2])),
                (rmpv::Value::from("ok"), rmpv::Value::Boolean(true)),
            ]))
        );
        assert!(read_answer(b"<html>").is_err());
    }
}
