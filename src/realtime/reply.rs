//! Answering a client: acks, their error form, and closing a socket with a
//! reason when an answer cannot be delivered.

use std::sync::Arc;

use serde::Serialize;
use serde_json::json;
use socketioxide::{
    SendError, SocketError,
    adapter::Adapter,
    extract::{AckSender, SocketRef},
};

use super::limits::SocketState;

/// The disconnect label of a socket closed because an ack found its queue full.
pub const QUEUE_FULL: &str = "queue_full";

/// The ack of a request that failed: `{ ok: false, error }`.
pub fn failure(error: &str) -> serde_json::Value {
    json!({ "ok": false, "error": error })
}

/// Sends an ack if the client asked for one.
///
/// A client that left meanwhile is not an error. A full queue is: the client
/// is not reading its answers, and dropping one would leave it waiting
/// forever, so the socket is closed and counted instead.
pub fn reply<A: Adapter, T: Serialize>(ack: AckSender<A>, socket: &SocketRef<A>, body: T) {
    match ack.send(&body) {
        Ok(()) => {}
        Err(SendError::Socket(SocketError::InternalChannelFull)) => {
            tracing::warn!(sid = %socket.id, "an ack found the queue full; closing the socket");
            close(socket, QUEUE_FULL);
        }
        Err(error) => tracing::debug!(sid = %socket.id, %error, "could not send ack"),
    }
}

/// Closes `socket` because of `reason`, which its disconnect is counted under.
///
/// A polite DISCONNECT packet needs room in the socket's queue; when there is
/// none, the connection itself is closed (the client sees a transport close
/// and reconnects).
pub fn close<A: Adapter>(socket: &SocketRef<A>, reason: &'static str) {
    if let Some(state) = socket.extensions.get::<Arc<SocketState>>() {
        state.set_close_reason(reason);
    }
    if let Err(SocketError::InternalChannelFull) = socket.clone().disconnect()
        && !crate::net::close_connection(&socket.req_parts().extensions)
    {
        tracing::warn!(sid = %socket.id, reason, "cannot close the socket: no connection to close");
    }
}
