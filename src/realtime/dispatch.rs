//! The one path every client event takes: counted, then handed to its family.
//!
//! socketioxide calls [`dispatch`] for every event (it is the socket's only
//! handler), so what must apply to all events (metrics today; limits and
//! permissions as they come) is written here once.

use socketioxide::{
    adapter::Adapter,
    extract::{AckSender, Event, SocketRef, State, TryData},
};

use super::{Realtime, ask, args::Args, events::ClientEvent, messages, rooms};

/// Handles one client event.
pub async fn dispatch<A: Adapter>(
    socket: SocketRef<A>,
    Event(name): Event,
    TryData(args): TryData<Args>,
    ack: AckSender<A>,
    State(rt): State<Realtime>,
) {
    let Some(event) = ClientEvent::from_name(&name) else {
        rt.metrics.unknown_event_received();
        // Truncate: the name is client input and may be huge.
        let shown: String = name.chars().take(64).collect();
        tracing::debug!(sid = %socket.id, event = %shown, "ignoring unknown event");
        return;
    };
    rt.metrics.event_received(event);
    // Arguments that do not decode are treated as missing; each handler then
    // answers with the form it expected.
    let args = args.unwrap_or_else(|error| {
        tracing::debug!(sid = %socket.id, %error, event = event.name(), "undecodable arguments");
        Args::default()
    });
    match event {
        ClientEvent::Message => messages::message(socket, args, ack, &rt).await,
        ClientEvent::RoomMessage => messages::room_message(socket, args, ack, &rt).await,
        ClientEvent::Join => rooms::join(socket, args, ack),
        ClientEvent::Leave => rooms::leave(socket, args, ack),
        ClientEvent::Rooms => rooms::rooms(socket, ack).await,
        ClientEvent::RoomMembers => rooms::members(socket, args, ack).await,
        ClientEvent::RoomAsk => ask::room_ask(socket, args, ack, &rt).await,
        ClientEvent::Latency => ask::latency(socket, ack, &rt).await,
    }
}
