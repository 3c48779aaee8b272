//! `message` and `room:message`: relaying a client's data to the others.

use serde_json::json;
use socketioxide::{
    BroadcastError, SocketError,
    adapter::Adapter,
    extract::{AckSender, SocketRef},
};

use super::{
    Realtime,
    args::Args,
    events::{ClientEvent, ServerEvent},
    pressure::OVERLOADED,
    reply::{failure, reply},
    rooms::room_and_data,
};

/// Whether to refuse `event` because the instance sheds load; counts it if so.
fn shedding(rt: &Realtime, event: ClientEvent) -> bool {
    let refuse = rt.pressure.shedding();
    if refuse {
        rt.metrics.overloaded(event);
    }
    refuse
}

/// `message` (data, ack?): to every other socket in the namespace, cluster-wide.
pub async fn message<A: Adapter>(
    socket: SocketRef<A>,
    args: Args,
    ack: AckSender<A>,
    rt: &Realtime,
) {
    let Some(data) = args.get(0) else {
        tracing::debug!(sid = %socket.id, "message without data");
        return reply(ack, &socket, failure("`message` needs one data argument"));
    };
    if shedding(rt, ClientEvent::Message) {
        return reply(ack, &socket, failure(OVERLOADED));
    }
    let result = socket
        .broadcast()
        .emit(ServerEvent::Message.name(), data)
        .await;
    settle_broadcast(rt, ClientEvent::Message, result.err());
    reply(ack, &socket, json!({ "ok": true }));
}

/// `room:message` (room, data, ack?): to the other members of the room, cluster-wide.
pub async fn room_message<A: Adapter>(
    socket: SocketRef<A>,
    args: Args,
    ack: AckSender<A>,
    rt: &Realtime,
) {
    let (room, data) = match room_and_data(ClientEvent::RoomMessage, &args) {
        Ok(args) => args,
        Err(error) => return reply(ack, &socket, failure(&error)),
    };
    if shedding(rt, ClientEvent::RoomMessage) {
        return reply(ack, &socket, failure(OVERLOADED));
    }
    let result = socket
        .to(room.clone())
        .emit(ServerEvent::RoomMessage.name(), &(room.as_str(), data))
        .await;
    settle_broadcast(rt, ClientEvent::RoomMessage, result.err());
    reply(ack, &socket, json!({ "ok": true }));
}

/// Counts a broadcast and what went wrong with it; closes the slow consumers
/// whose full queues refused it, so their clients reconnect rather than miss
/// messages without knowing, and opens a load-shedding window
/// ([`Pressure`](super::pressure::Pressure)).
pub(super) fn settle_broadcast(rt: &Realtime, event: ClientEvent, error: Option<BroadcastError>) {
    rt.metrics.broadcast_sent(event);
    match error {
        None => {}
        Some(BroadcastError::Socket(errors)) => {
            // `Closed`: the socket left while the broadcast ran; nothing was lost.
            let full = errors
                .iter()
                .filter(|e| matches!(e, SocketError::InternalChannelFull))
                .count();
            if full > 0 {
                // Further broadcasts would overflow the same queues: shed them for a moment.
                rt.pressure.overflowed();
                rt.metrics.messages_dropped(event, full);
                let closed = rt.slow_consumers.on_overflow(full);
                tracing::warn!(
                    event = event.name(),
                    full,
                    closed,
                    "buffers full; closed the slow consumers"
                );
            }
        }
        Some(error) => broadcast_failed(rt, event, &error),
    }
}

/// Counts and logs a broadcast that could not be sent at all.
pub(super) fn broadcast_failed(rt: &Realtime, event: ClientEvent, error: &dyn std::fmt::Display) {
    rt.metrics.broadcast_failed(event);
    tracing::warn!(event = event.name(), %error, "broadcast failed");
}
