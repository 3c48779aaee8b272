//! The Socket.IO event contract on namespace `/`.
//!
//! | client sends | server does |
//! |---|---|
//! | (connects) | emits `welcome` `{id, instance}` to that socket |
//! | `message` (data, ack?) | emits `message` (data) to every other socket; acks `{ok: true}` |
//! | `join` / `leave` (room, ack?) | joins / leaves; acks `{ok: true, room}` or `{ok: false, error}` |
//! | `room:message` (room, data, ack?) | emits `room:message` (room, data) to the other sockets in the room |
//! | `rooms` (ack) | acks `{ok, count, rooms}`: every room in the namespace, cluster-wide |
//! | `room:members` (room, ack) | acks `{ok, room, count, members}`: socket ids in the room, cluster-wide |
//! | `room:ask` (room, data, ack) | emits `room:ask` (room, data) *with an ack* to the other sockets in the room, cluster-wide; acks `{ok, answers, missed}` |
//! | `latency` (ack) | emits `latency` to that socket *with an ack*, times the answer, acks `{ok: true, rtt_ms}` |
//! | anything else | ignored, logged at debug |
//!
//! Payloads are taken as [`rmpv::Value`], which keeps binary attachments as
//! binary; `serde_json::Value` would turn them into arrays of numbers.
//!
//! Every handler is generic over the adapter, so the same code serves a single
//! instance (in-memory adapter) and a cluster (Redis adapter).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use futures_util::StreamExt;

use rmpv::Value;
use serde::Serialize;
use serde_json::json;
use socketioxide::{
    AckError, BroadcastError, ParserError, SocketError,
    adapter::Adapter,
    extract::{AckSender, Event, SocketRef, State, TryData},
    socket::DisconnectReason,
};

use crate::{backpressure::SlowConsumers, metrics::Metrics};

/// Longest room name accepted, in characters.
pub const MAX_ROOM_CHARS: usize = 128;

/// What the handlers share: who this instance is and where to count things.
#[derive(Clone)]
pub struct Realtime {
    /// Instance id sent in `welcome`.
    pub instance_id: Arc<str>,
    /// Metrics the handlers update.
    pub metrics: Metrics,
    /// How long `room:ask` waits for the members' answers.
    pub ack_timeout: Duration,
    /// Closes the connections of clients that stopped reading.
    pub slow_consumers: SlowConsumers,
}

/// Extra time `room:ask` allows after the ack timeout for the adapter's own timeouts to report.
const ASK_MARGIN: Duration = Duration::from_millis(250);

/// Most rooms listed by `rooms` (the count is always exact).
pub const MAX_LISTED_ROOMS: usize = 1000;

/// Most socket ids listed by `room:members` (the count is always exact).
pub const MAX_LISTED_MEMBERS: usize = 1000;

/// One member's answer to `room:ask`.
#[derive(Debug, Serialize)]
pub struct Answer {
    /// The answering socket's id.
    pub id: String,
    /// What it passed to its ack callback (first argument).
    pub answer: Value,
}

/// The ack of `room:ask`.
#[derive(Debug, Serialize)]
pub struct AskReply {
    /// Always true: a bad room is answered with an error instead.
    pub ok: bool,
    /// Answers that arrived in time, in arrival order.
    pub answers: Vec<Answer>,
    /// Members that did not answer in time.
    pub missed: usize,
}

/// Payload of the `welcome` event.
#[derive(Debug, Serialize)]
pub struct Welcome<'a> {
    /// The socket's id, as the client sees it in `socket.id`.
    pub id: &'a str,
    /// The instance that holds this connection.
    pub instance: &'a str,
}

/// Connect handler for namespace `/`: greets the socket and registers the contract's events.
pub async fn on_connect<A: Adapter>(socket: SocketRef<A>, State(rt): State<Realtime>) {
    rt.metrics.connections_total.inc();
    rt.metrics.connected_sockets.inc();
    tracing::info!(sid = %socket.id, transport = ?socket.transport_type(), "socket connected");

    let welcome = Welcome {
        id: socket.id.as_str(),
        instance: &rt.instance_id,
    };
    if let Err(error) = socket.emit("welcome", &welcome) {
        tracing::debug!(sid = %socket.id, %error, "could not send welcome");
    }

    socket.on("message", on_message::<A>);
    socket.on("join", on_join::<A>);
    socket.on("leave", on_leave::<A>);
    socket.on("room:message", on_room_message::<A>);
    socket.on("rooms", on_rooms::<A>);
    socket.on("room:members", on_room_members::<A>);
    socket.on("room:ask", on_room_ask::<A>);
    socket.on("latency", on_latency::<A>);
    socket.on_fallback(on_unknown::<A>);
    socket.on_disconnect(on_disconnect::<A>);
}

async fn on_message<A: Adapter>(
    socket: SocketRef<A>,
    TryData(data): TryData<Value>,
    ack: AckSender<A>,
    State(rt): State<Realtime>,
) {
    rt.metrics.event_received("message");
    let data = match data {
        Ok(data) => data,
        Err(error) => {
            tracing::debug!(sid = %socket.id, %error, "message without usable data");
            return reply(ack, &socket, failure("`message` needs one data argument"));
        }
    };
    let result = socket.broadcast().emit("message", &data).await;
    count_broadcast(&rt, "message", result.as_ref().err());
    reply(ack, &socket, json!({ "ok": true }));
}

async fn on_join<A: Adapter>(
    socket: SocketRef<A>,
    TryData(room): TryData<Value>,
    ack: AckSender<A>,
    State(rt): State<Realtime>,
) {
    change_membership(Membership::Join, socket, room, ack, &rt);
}

async fn on_leave<A: Adapter>(
    socket: SocketRef<A>,
    TryData(room): TryData<Value>,
    ack: AckSender<A>,
    State(rt): State<Realtime>,
) {
    change_membership(Membership::Leave, socket, room, ack, &rt);
}

/// Which way `join` and `leave` change a socket's rooms.
#[derive(Debug, Clone, Copy)]
enum Membership {
    /// Add the socket to the room.
    Join,
    /// Remove the socket from the room.
    Leave,
}

/// `join` and `leave`: validate the room, apply the change, ack with the room or the reason.
fn change_membership<A: Adapter>(
    change: Membership,
    socket: SocketRef<A>,
    room: Result<Value, ParserError>,
    ack: AckSender<A>,
    rt: &Realtime,
) {
    let event = match change {
        Membership::Join => "join",
        Membership::Leave => "leave",
    };
    rt.metrics.event_received(event);
    match room.map_err(|_| ROOM_FORM).and_then(|r| room_name(&r)) {
        Ok(room) => {
            match change {
                Membership::Join => socket.join(room.clone()),
                Membership::Leave => socket.leave(room.clone()),
            }
            tracing::debug!(sid = %socket.id, %room, event, "room membership changed");
            reply(ack, &socket, json!({ "ok": true, "room": room }));
        }
        Err(error) => reply(ack, &socket, failure(error)),
    }
}

async fn on_room_message<A: Adapter>(
    socket: SocketRef<A>,
    TryData(args): TryData<(Value, Value)>,
    ack: AckSender<A>,
    State(rt): State<Realtime>,
) {
    rt.metrics.event_received("room:message");
    let (room, data) = match room_and_data("room:message", args) {
        Ok(args) => args,
        Err(error) => return reply(ack, &socket, failure(&error)),
    };
    let result = socket
        .to(room.clone())
        .emit("room:message", &(room.as_str(), &data))
        .await;
    count_broadcast(&rt, "room:message", result.as_ref().err());
    reply(ack, &socket, json!({ "ok": true }));
}

/// Lists every room of the namespace across every instance (the adapter's `rooms`).
async fn on_rooms<A: Adapter>(socket: SocketRef<A>, ack: AckSender<A>, State(rt): State<Realtime>) {
    rt.metrics.event_received("rooms");
    // From a socket, the adapter lists rooms relative to it: `broadcast()`
    // covers every other socket on every instance, and the caller's own
    // rooms are local.
    let others = socket.broadcast().rooms().await;
    match others.map(|mut rooms| {
        rooms.extend(socket.rooms());
        rooms
    }) {
        Ok(rooms) => {
            let mut rooms: Vec<String> = rooms.iter().map(|r| r.to_string()).collect();
            rooms.sort();
            rooms.dedup();
            let count = rooms.len();
            rooms.truncate(MAX_LISTED_ROOMS);
            reply(
                ack,
                &socket,
                json!({ "ok": true, "count": count, "rooms": rooms }),
            );
        }
        Err(error) => {
            tracing::warn!(%error, "listing rooms failed");
            reply(ack, &socket, failure("could not list the rooms; try again"));
        }
    }
}

/// Lists the room's sockets across every instance (the adapter's `fetch_sockets`).
async fn on_room_members<A: Adapter>(
    socket: SocketRef<A>,
    TryData(room): TryData<Value>,
    ack: AckSender<A>,
    State(rt): State<Realtime>,
) {
    rt.metrics.event_received("room:members");
    let room = match room.map_err(|_| ROOM_FORM).and_then(|r| room_name(&r)) {
        Ok(room) => room,
        Err(error) => return reply(ack, &socket, failure(error)),
    };
    match socket.within(room.clone()).fetch_sockets().await {
        Ok(sockets) => {
            let mut members: Vec<String> =
                sockets.iter().map(|s| s.data().id.to_string()).collect();
            members.sort();
            let count = members.len();
            members.truncate(MAX_LISTED_MEMBERS);
            reply(
                ack,
                &socket,
                json!({ "ok": true, "room": room, "count": count, "members": members }),
            );
        }
        Err(error) => {
            tracing::warn!(%error, "fetching room members failed");
            reply(
                ack,
                &socket,
                failure("could not list the room's members; try again"),
            );
        }
    }
}

/// Asks every other member of a room, on any instance, and gathers their acks.
async fn on_room_ask<A: Adapter>(
    socket: SocketRef<A>,
    TryData(args): TryData<(Value, Value)>,
    ack: AckSender<A>,
    State(rt): State<Realtime>,
) {
    rt.metrics.event_received("room:ask");
    let (room, data) = match room_and_data("room:ask", args) {
        Ok(args) => args,
        Err(error) => return reply(ack, &socket, failure(&error)),
    };
    let sent = socket
        .to(room.clone())
        .timeout(rt.ack_timeout)
        .emit_with_ack::<_, Value>("room:ask", &(room.as_str(), &data))
        .await;
    count_broadcast(&rt, "room:ask", None);
    if let Err(error) = &sent {
        count_failure(&rt, "room:ask", error);
    }
    let Ok(stream) = sent else {
        return reply(ack, &socket, failure("could not ask the room; try again"));
    };
    // The adapter's own per-socket timeouts normally end the stream, and
    // count who missed it. When nobody at all is in the room, the Redis
    // adapter waits for its request timeout on top; this bound keeps the
    // answer within the ack timeout (plus a margin for the adapter's own).
    let bound = rt.ack_timeout + ASK_MARGIN;
    let results: Vec<_> = tokio::time::timeout(bound, stream.collect::<Vec<_>>())
        .await
        .unwrap_or_default();
    let mut answers = Vec::new();
    let mut missed = 0;
    for (id, result) in results {
        match result {
            Ok(answer) => answers.push(Answer {
                id: id.to_string(),
                answer,
            }),
            // An empty ack (`callback()`) is an answer without a value.
            Err(AckError::Decode(_)) => answers.push(Answer {
                id: id.to_string(),
                answer: Value::Nil,
            }),
            Err(_) => missed += 1,
        }
    }
    let body = AskReply {
        ok: true,
        answers,
        missed,
    };
    reply(ack, &socket, body);
}

/// Server-to-client acknowledgement: ask the client to ack, report the round trip.
async fn on_latency<A: Adapter>(
    socket: SocketRef<A>,
    ack: AckSender<A>,
    State(rt): State<Realtime>,
) {
    rt.metrics.event_received("latency");
    let started = Instant::now();
    let answer = match socket
        .emit_with_ack::<_, Value>("latency", &json!({ "instance": &*rt.instance_id }))
    {
        // An ack that arrived but cannot be decoded (e.g. `callback()` with no
        // arguments) still answers the question: the client is there.
        Ok(pending) => match pending.await {
            Ok(_) | Err(AckError::Decode(_)) => Ok(()),
            Err(e) => Err(e.to_string()),
        },
        Err(e) => Err(e.to_string()),
    };
    let body = match answer {
        Ok(_) => json!({ "ok": true, "rtt_ms": started.elapsed().as_secs_f64() * 1000.0 }),
        Err(error) => {
            tracing::debug!(sid = %socket.id, %error, "client did not ack `latency`");
            json!({ "ok": false, "error": format!("the client did not acknowledge `latency`: {error}") })
        }
    };
    reply(ack, &socket, body);
}

async fn on_unknown<A: Adapter>(
    socket: SocketRef<A>,
    Event(event): Event,
    State(rt): State<Realtime>,
) {
    rt.metrics.event_received(&event);
    // Truncate: the name is client input and may be huge.
    let shown: String = event.chars().take(64).collect();
    tracing::debug!(sid = %socket.id, event = %shown, "ignoring unknown event");
}

async fn on_disconnect<A: Adapter>(
    socket: SocketRef<A>,
    reason: DisconnectReason,
    State(rt): State<Realtime>,
) {
    rt.metrics.connected_sockets.dec();
    // The transport error a slow consumer's closed connection causes is reported as what it is.
    let label = if crate::backpressure::closed_as_slow_consumer(&socket.req_parts().extensions) {
        SLOW_CONSUMER
    } else {
        reason_label(reason)
    };
    rt.metrics
        .disconnections_total
        .with_label_values(&[label])
        .inc();
    tracing::info!(sid = %socket.id, reason = label, detail = %reason, "socket disconnected");
}

/// The disconnect label of a socket whose connection was closed because the client stopped reading.
pub const SLOW_CONSUMER: &str = "slow_consumer";

/// A stable, bounded metrics label for a disconnect reason.
pub fn reason_label(reason: DisconnectReason) -> &'static str {
    use DisconnectReason::*;
    match reason {
        TransportClose => "transport_close",
        MultipleHttpPollingError => "multiple_http_polling",
        PacketParsingError => "packet_parsing_error",
        TransportError => "transport_error",
        HeartbeatTimeout => "heartbeat_timeout",
        ClientNSDisconnect => "client_disconnect",
        ServerNSDisconnect => "server_disconnect",
        ClosingServer => "server_shutdown",
    }
}

const ROOM_FORM: &str = "room must be a string of 1 to 128 characters";

/// Validates a room argument: a string of 1 to [`MAX_ROOM_CHARS`] characters.
pub fn room_name(value: &Value) -> Result<String, &'static str> {
    let Value::String(s) = value else {
        return Err(ROOM_FORM);
    };
    let Some(s) = s.as_str() else {
        return Err("room must be valid UTF-8");
    };
    match s.chars().count() {
        0 => Err("room must not be empty"),
        n if n > MAX_ROOM_CHARS => Err("room must be at most 128 characters"),
        _ => Ok(s.to_owned()),
    }
}

/// The (room, data) arguments of `room:message` and `room:ask`, with the room validated.
fn room_and_data(
    event: &str,
    args: Result<(Value, Value), ParserError>,
) -> Result<(String, Value), String> {
    let (room, data) = args.map_err(|_| format!("`{event}` needs two arguments: room and data"))?;
    let room = room_name(&room).map_err(str::to_owned)?;
    Ok((room, data))
}

fn failure(error: &str) -> serde_json::Value {
    json!({ "ok": false, "error": error })
}

/// Sends an ack if the client asked for one; a client that left meanwhile is not an error.
fn reply<A: Adapter, T: Serialize>(ack: AckSender<A>, socket: &SocketRef<A>, body: T) {
    if let Err(error) = ack.send(&body) {
        tracing::debug!(sid = %socket.id, %error, "could not send ack");
    }
}

fn count_broadcast(rt: &Realtime, event: &'static str, error: Option<&BroadcastError>) {
    rt.metrics
        .broadcasts_total
        .with_label_values(&[event])
        .inc();
    match error {
        None => {}
        Some(BroadcastError::Socket(errors)) => {
            // `Closed`: the socket left while the broadcast ran; nothing was lost.
            let full = errors
                .iter()
                .filter(|e| matches!(e, SocketError::InternalChannelFull))
                .count();
            if full > 0 {
                rt.metrics
                    .messages_dropped_total
                    .with_label_values(&[event])
                    .inc_by(full as u64);
                let closed = rt.slow_consumers.close_stalled();
                tracing::warn!(
                    event,
                    full,
                    closed,
                    "buffers full; closed the slow consumers"
                );
            }
        }
        Some(error) => count_failure(rt, event, error),
    }
}

fn count_failure(rt: &Realtime, event: &'static str, error: &dyn std::fmt::Display) {
    rt.metrics
        .broadcast_failures_total
        .with_label_values(&[event])
        .inc();
    tracing::warn!(event, %error, "broadcast failed");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_names_are_checked_for_type_and_length() {
        assert_eq!(room_name(&Value::from("lobby")), Ok("lobby".to_owned()));
        assert_eq!(
            room_name(&Value::from("é".repeat(128))),
            Ok("é".repeat(128))
        );
        assert_eq!(room_name(&Value::from("")), Err("room must not be empty"));
        assert_eq!(
            room_name(&Value::from("x".repeat(129))),
            Err("room must be at most 128 characters")
        );
        assert_eq!(room_name(&Value::from(42)), Err(ROOM_FORM));
        assert_eq!(room_name(&Value::Nil), Err(ROOM_FORM));
    }
}
