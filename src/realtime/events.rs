//! The event table: every event name of the contract, in both directions.
//!
//! Handlers, metrics labels and the webhook checks take names from here, so a
//! name is spelled once.

/// An event a client sends that the contract handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientEvent {
    /// `message` (data, ack?): broadcast to every other socket.
    Message,
    /// `join` (room, ack?).
    Join,
    /// `leave` (room, ack?).
    Leave,
    /// `room:message` (room, data, ack?): to the other members of a room.
    RoomMessage,
    /// `rooms` (ack): every room, cluster-wide.
    Rooms,
    /// `room:members` (room, ack): the room's socket ids, cluster-wide.
    RoomMembers,
    /// `room:ask` (room, data, ack): ask the other members, gather their acks.
    RoomAsk,
    /// `latency` (ack): the server times an ack round trip to this client.
    Latency,
}

impl ClientEvent {
    /// Every client event, in the README's order.
    pub const ALL: [ClientEvent; 8] = [
        ClientEvent::Message,
        ClientEvent::Join,
        ClientEvent::Leave,
        ClientEvent::RoomMessage,
        ClientEvent::Rooms,
        ClientEvent::RoomMembers,
        ClientEvent::RoomAsk,
        ClientEvent::Latency,
    ];

    /// The name on the wire, which is also its metrics label.
    pub const fn name(self) -> &'static str {
        match self {
            ClientEvent::Message => "message",
            ClientEvent::Join => "join",
            ClientEvent::Leave => "leave",
            ClientEvent::RoomMessage => "room:message",
            ClientEvent::Rooms => "rooms",
            ClientEvent::RoomMembers => "room:members",
            ClientEvent::RoomAsk => "room:ask",
            ClientEvent::Latency => "latency",
        }
    }

    /// The event called `name`, if the contract has one.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.name() == name)
    }
}

/// The metrics label of every event the contract does not know, so a client
/// cannot create new label values.
pub const OTHER_EVENT_LABEL: &str = "other";

/// An event the server emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerEvent {
    /// `welcome` `{ id, instance }`, on connect.
    Welcome,
    /// `message` (data), relayed from another client.
    Message,
    /// `room:message` (room, data), relayed from another member.
    RoomMessage,
    /// `room:ask` (room, data), with an ack request.
    RoomAsk,
    /// `latency` `{ instance }`, with an ack request.
    Latency,
}

impl ServerEvent {
    /// Every server event.
    pub const ALL: [ServerEvent; 5] = [
        ServerEvent::Welcome,
        ServerEvent::Message,
        ServerEvent::RoomMessage,
        ServerEvent::RoomAsk,
        ServerEvent::Latency,
    ];

    /// The name on the wire.
    pub const fn name(self) -> &'static str {
        match self {
            ServerEvent::Welcome => "welcome",
            ServerEvent::Message => "message",
            ServerEvent::RoomMessage => "room:message",
            ServerEvent::RoomAsk => "room:ask",
            ServerEvent::Latency => "latency",
        }
    }
}

/// Event names Socket.IO clients keep for themselves; an emit of one would
/// fire the client's own connection handlers.
pub const RESERVED_EVENTS: [&str; 6] = [
    "connect",
    "connect_error",
    "disconnect",
    "disconnecting",
    "newListener",
    "removeListener",
];

/// The events a client could never use for its own purposes: the
/// contract's, in both directions, and the ones Socket.IO reserves.
pub fn is_taken(name: &str) -> bool {
    ClientEvent::from_name(name).is_some()
        || ServerEvent::ALL.iter().any(|e| e.name() == name)
        || RESERVED_EVENTS.contains(&name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for event in ClientEvent::ALL {
            assert_eq!(ClientEvent::from_name(event.name()), Some(event));
        }
        assert_eq!(ClientEvent::from_name("welcome"), None);
        assert_eq!(ClientEvent::from_name(OTHER_EVENT_LABEL), None);
        assert!(is_taken("welcome") && is_taken("room:ask") && is_taken("disconnect"));
        assert!(!is_taken("order:place"));
    }
}
