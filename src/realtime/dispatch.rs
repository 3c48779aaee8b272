//! The one path every client event takes: counted, rate-limited, then handed
//! to its family, or to the backend when it is one of `webhooks.events`.
//!
//! socketioxide calls [`dispatch`] for every event (it is the socket's only
//! handler), so what must apply to all events (metrics, the rate limit, and
//! permissions) is written here once.

use std::{sync::Arc, time::Instant};

use socketioxide::{
    adapter::Adapter,
    extract::{AckSender, Event, SocketRef, State, TryData},
};

use crate::auth::Grants;

use super::{
    Realtime,
    args::Args,
    ask,
    events::ClientEvent,
    forward,
    limits::{Admission, SocketState},
    messages,
    reply::{close, failure, reply},
    rooms,
};

/// The disconnect label of a socket that stayed over its rate limit.
pub const RATE_LIMITED: &str = "rate_limited";

/// The ack error of an event the socket's grants do not allow.
pub const FORBIDDEN: &str = "forbidden";

/// Whether `grants` allow `event` with these arguments. A room argument that
/// is not a valid name is left to the handler, which says what it expected.
fn permitted(event: ClientEvent, args: &Args, grants: &Grants) -> bool {
    match event {
        ClientEvent::Message => grants.allows_broadcast(),
        ClientEvent::Join
        | ClientEvent::Leave
        | ClientEvent::RoomMessage
        | ClientEvent::RoomAsk
        | ClientEvent::RoomMembers => match args.get(0).map(rooms::room_name) {
            Some(Ok(room)) => grants.allows_room(&room),
            _ => true,
        },
        // `rooms` lists only what the grants allow; `latency` touches no one else.
        ClientEvent::Rooms | ClientEvent::Latency => true,
    }
}

/// What a listing (`rooms`, `room:members`) costs in events: it walks the
/// cluster's rooms or a room's members, where other events touch one socket.
pub const LISTING_COST: f64 = 10.0;

/// What `event` costs against the rate limit.
fn cost(event: Option<ClientEvent>) -> f64 {
    match event {
        Some(ClientEvent::Rooms | ClientEvent::RoomMembers) => LISTING_COST,
        _ => 1.0,
    }
}

/// Handles one client event: counts it, applies the rate limit, checks the
/// socket's grants, then hands it to its family.
pub async fn dispatch<A: Adapter>(
    socket: SocketRef<A>,
    Event(name): Event,
    TryData(args): TryData<Args>,
    ack: AckSender<A>,
    State(rt): State<Realtime>,
) {
    let known = ClientEvent::from_name(&name);
    // Counted as received whether or not the limit lets it through.
    rt.metrics.event_received(known);
    // Unknown events are limited too: a flood of them costs as much to parse.
    if let Some(state) = socket.extensions.get::<Arc<SocketState>>() {
        match state.admit(cost(known), Instant::now()) {
            Admission::Admitted => {}
            Admission::Refused => {
                rt.metrics.rate_limited(known);
                return reply(ack, &socket, failure("rate limited"));
            }
            Admission::Disconnect => {
                rt.metrics.rate_limited(known);
                tracing::warn!(sid = %socket.id, "over the rate limit for too long; disconnecting");
                return close(&socket, RATE_LIMITED);
            }
        }
    }
    let Some(event) = known else {
        if let Some(hooks) = rt.webhooks.as_ref().filter(|hooks| hooks.forwards(&name)) {
            let args = args.unwrap_or_else(|error| {
                tracing::debug!(sid = %socket.id, %error, "undecodable arguments; forwarding none");
                Args::default()
            });
            return forward::forward(socket, &name, args, ack, &rt, hooks).await;
        }
        // Truncate: the name is client input and may be huge.
        let shown: String = name.chars().take(64).collect();
        tracing::debug!(sid = %socket.id, event = %shown, "ignoring unknown event");
        return;
    };
    // Arguments that do not decode are treated as missing; each handler then
    // answers with the form it expected.
    let args = args.unwrap_or_else(|error| {
        tracing::debug!(sid = %socket.id, %error, event = event.name(), "undecodable arguments");
        Args::default()
    });
    if let Some(state) = socket.extensions.get::<Arc<SocketState>>()
        && !permitted(event, &args, &state.identity.grants)
    {
        rt.metrics.forbidden(event);
        tracing::debug!(sid = %socket.id, event = event.name(), "forbidden");
        return reply(ack, &socket, failure(FORBIDDEN));
    }
    match event {
        ClientEvent::Message => messages::message(socket, args, ack, &rt).await,
        ClientEvent::RoomMessage => messages::room_message(socket, args, ack, &rt).await,
        ClientEvent::Join => rooms::join(socket, args, ack, &rt),
        ClientEvent::Leave => rooms::leave(socket, args, ack),
        ClientEvent::Rooms => rooms::rooms(socket, ack, &rt).await,
        ClientEvent::RoomMembers => rooms::members(socket, args, ack, &rt).await,
        ClientEvent::RoomAsk => ask::room_ask(socket, args, ack, &rt).await,
        ClientEvent::Latency => ask::latency(socket, ack, &rt).await,
    }
}
