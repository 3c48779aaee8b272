//! Answering a client: acks and their error form.

use serde::Serialize;
use serde_json::json;
use socketioxide::{adapter::Adapter, extract::AckSender, extract::SocketRef};

/// The ack of a request that failed: `{ ok: false, error }`.
pub fn failure(error: &str) -> serde_json::Value {
    json!({ "ok": false, "error": error })
}

/// Sends an ack if the client asked for one; a client that left meanwhile is not an error.
pub fn reply<A: Adapter, T: Serialize>(ack: AckSender<A>, socket: &SocketRef<A>, body: T) {
    if let Err(error) = ack.send(&body) {
        tracing::debug!(sid = %socket.id, %error, "could not send ack");
    }
}
