//! The app's own events (`webhooks.events`): handed to the backend, whose
//! answer is the ack.

use std::sync::Arc;

use socketioxide::{
    adapter::Adapter,
    extract::{AckSender, SocketRef},
};

use super::{
    Realtime,
    args::Args,
    limits::SocketState,
    reply::{failure, reply},
};
use crate::webhooks::{SocketInfo, Webhooks};

/// Who `socket` is, as webhook bodies describe it.
pub fn socket_info<A: Adapter>(socket: &SocketRef<A>, rt: &Realtime) -> SocketInfo {
    let user = socket
        .extensions
        .get::<Arc<SocketState>>()
        .and_then(|state| state.identity.user.clone());
    SocketInfo {
        id: socket.id.to_string(),
        instance: rt.instance_id.clone(),
        user,
    }
}

/// Forwards `event` to the backend and acks with its answer, or with
/// `{ ok: false, error }` when there is none. Each event is its own task in
/// socketioxide, so waiting here holds up no other event.
pub async fn forward<A: Adapter>(
    socket: SocketRef<A>,
    event: &str,
    args: Args,
    ack: AckSender<A>,
    rt: &Realtime,
    hooks: &Webhooks,
) {
    let info = socket_info(&socket, rt);
    match hooks.forward_event(&info, event, &args).await {
        Ok(answer) => reply(ack, &socket, answer),
        Err(error) => reply(ack, &socket, failure(error)),
    }
}
