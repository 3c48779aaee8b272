//! Answering a client: acks, their error form, and closing a socket with a
//! reason when an answer cannot be delivered.

use std::{sync::Arc, time::Duration};

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
/// A polite DISCONNECT packet needs room in the socket's queue. When there is
/// none, the session's transport is closed: its WebSocket connection, or,
/// on long-polling, the session itself (ended as its client would end it;
/// its further polls are refused). Either way the session ends at once, the
/// client sees its transport gone and reconnects, and the disconnect is
/// counted under `reason`. The DISCONNECT is still retried while the socket
/// lingers, for a socket whose transport ecos could not reach.
pub fn close<A: Adapter>(socket: &SocketRef<A>, reason: &'static str) {
    if let Some(state) = socket.extensions.get::<Arc<SocketState>>() {
        state.set_close_reason(reason);
    }
    if let Err(SocketError::InternalChannelFull) = socket.clone().disconnect() {
        // The session's own transport when it is watched: after an upgrade,
        // the handshake's connection is no longer the one it writes to.
        match socket.extensions.get::<Arc<crate::net::Session>>() {
            Some(session) => {
                session.close_transport();
            }
            None => {
                crate::net::close_connection(&socket.req_parts().extensions);
            }
        }
        let socket = socket.clone();
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + CLOSE_RETRY_FOR;
            while socket.connected() && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(CLOSE_RETRY_EVERY).await;
                if socket.clone().disconnect().is_ok() {
                    return;
                }
            }
            if socket.connected() {
                tracing::warn!(sid = %socket.id, reason, "could not close the socket: its queue stayed full");
            }
        });
    }
}

/// How often a DISCONNECT that found the queue full is tried again.
const CLOSE_RETRY_EVERY: Duration = Duration::from_millis(50);

/// How long it is tried; longer than any heartbeat, which ends a session whose
/// client stopped reading.
const CLOSE_RETRY_FOR: Duration = Duration::from_secs(120);
