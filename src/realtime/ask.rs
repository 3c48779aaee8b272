//! Server-to-client acknowledgements: `room:ask` gathers the members' acks,
//! `latency` times one.

use std::{
    pin::Pin,
    sync::Arc,
    task::Poll,
    time::{Duration, Instant},
};

use futures_util::stream::{FusedStream, Stream};
use rmpv::Value;
use serde::Serialize;
use serde_json::json;
use socketioxide::{
    AckError,
    adapter::Adapter,
    extract::{AckSender, SocketRef},
};

use super::{
    Realtime,
    args::Args,
    events::{ClientEvent, ServerEvent},
    limits::SocketState,
    messages::{broadcast_failed, settle_broadcast},
    reply::{failure, reply},
    rooms::room_and_data,
};

/// The error of a `room:ask` beyond [`MAX_ASKS_IN_FLIGHT`](super::limits::MAX_ASKS_IN_FLIGHT).
pub const TOO_MANY_ASKS: &str = "too many asks in flight; wait for an answer";

/// Extra time `room:ask` allows after the ack timeout for the adapter's own timeouts to report.
const ASK_MARGIN: Duration = Duration::from_millis(250);

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

/// `room:ask` (room, data, ack): asks every other member of a room, on any
/// instance, and acks with their answers.
pub async fn room_ask<A: Adapter>(
    socket: SocketRef<A>,
    args: Args,
    ack: AckSender<A>,
    rt: &Realtime,
) {
    let (room, data) = match room_and_data(ClientEvent::RoomAsk, &args) {
        Ok(args) => args,
        Err(error) => return reply(ack, &socket, failure(&error)),
    };
    let Some(state) = socket.extensions.get::<Arc<SocketState>>() else {
        return reply(ack, &socket, failure("could not ask the room; try again"));
    };
    // Each ask holds every member's pending ack until the timeout: a few at a time.
    let Some(_slot) = state.start_ask() else {
        return reply(ack, &socket, failure(TOO_MANY_ASKS));
    };
    let sent = socket
        .to(room.clone())
        .timeout(rt.ack_timeout)
        .emit_with_ack::<_, Value>(ServerEvent::RoomAsk.name(), &(room.as_str(), data))
        .await;
    settle_broadcast(rt, ClientEvent::RoomAsk, None);
    let stream = match sent {
        Ok(stream) => stream,
        Err(error) => {
            broadcast_failed(rt, ClientEvent::RoomAsk, &error);
            return reply(ack, &socket, failure("could not ask the room; try again"));
        }
    };
    // The adapter's own per-socket timeouts normally end the stream, and
    // count who missed it. This bound is a safety net: it keeps the answer
    // within the ack timeout (plus a margin for the adapter's own) should an
    // instance that was counted never report. Answers are kept as they
    // arrive, so a stream cut by the bound still reports every answer it had.
    let deadline = tokio::time::Instant::now() + rt.ack_timeout + ASK_MARGIN;
    let mut stream = std::pin::pin!(stream);
    let mut results = Vec::new();
    while let Ok(Some(item)) = tokio::time::timeout_at(deadline, next_answer(stream.as_mut())).await
    {
        results.push(item);
    }
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

/// The next item of an ask's ack stream, or `None` as soon as the stream
/// knows it is complete.
///
/// The Redis adapter's stream (socketioxide-core 0.20, `AckStream`) counts
/// what it waits for: a `BroadcastAckCount` from every other instance, then
/// that many acks. It checks whether it is complete only when it is polled
/// afresh; after taking in a count it goes back to waiting for the next
/// message. When the last message is a count (an instance with no member in
/// the room reports `0`, or reports after its members' acks were taken in),
/// no further message comes to wake it, and it ran until its own timeout
/// (`redis.request_timeout_secs` plus the ack timeout). Asking the stream
/// itself (`is_terminated`, the same test it applies on entry) after each
/// poll ends the ask the moment the last count or answer is in, with the
/// adapter's own tally, so `missed` is what it always was.
async fn next_answer<S: Stream + FusedStream>(mut stream: Pin<&mut S>) -> Option<S::Item> {
    std::future::poll_fn(|cx| {
        if stream.is_terminated() {
            return Poll::Ready(None);
        }
        match stream.as_mut().poll_next(cx) {
            Poll::Pending if stream.is_terminated() => Poll::Ready(None),
            polled => polled,
        }
    })
    .await
}

/// `latency` (ack): asks the client to ack, reports the round trip.
pub async fn latency<A: Adapter>(socket: SocketRef<A>, ack: AckSender<A>, rt: &Realtime) {
    let started = Instant::now();
    let answer = match socket.emit_with_ack::<_, Value>(
        ServerEvent::Latency.name(),
        &json!({ "instance": &*rt.instance_id }),
    ) {
        // An ack that arrived but cannot be decoded (e.g. `callback()` with no
        // arguments) still answers the question: the client is there.
        Ok(pending) => match pending.await {
            Ok(_) | Err(AckError::Decode(_)) => Ok(()),
            Err(e) => Err(e.to_string()),
        },
        Err(e) => Err(e.to_string()),
    };
    let body = match answer {
        Ok(()) => json!({ "ok": true, "rtt_ms": started.elapsed().as_secs_f64() * 1000.0 }),
        Err(error) => {
            tracing::debug!(sid = %socket.id, %error, "client did not ack `latency`");
            json!({ "ok": false, "error": format!("the client did not acknowledge `latency`: {error}") })
        }
    };
    reply(ack, &socket, body);
}
