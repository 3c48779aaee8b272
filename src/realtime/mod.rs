//! The Socket.IO event contract on namespace `/`.
//!
//! | client sends | server does |
//! |---|---|
//! | (connects) | authenticates (`auth.mode`), joins `user:<id>`, emits `welcome` `{id, instance, user}` to that socket |
//! | `message` (data, ack?) | emits `message` (data) to every other socket; acks `{ok: true}` |
//! | `join` / `leave` (room, ack?) | joins / leaves; acks `{ok: true, room}` or `{ok: false, error}` |
//! | `room:message` (room, data, ack?) | emits `room:message` (room, data) to the other sockets in the room |
//! | `rooms` (ack) | acks `{ok, count, rooms}`: every room in the namespace, cluster-wide |
//! | `room:members` (room, ack) | acks `{ok, room, count, members}`: socket ids in the room, cluster-wide |
//! | `room:ask` (room, data, ack) | emits `room:ask` (room, data) *with an ack* to the other sockets in the room, cluster-wide; acks `{ok, answers, missed}` |
//! | `latency` (ack) | emits `latency` to that socket *with an ack*, times the answer, acks `{ok: true, rtt_ms}` |
//! | an event in `webhooks.events` (args, ack?) | POSTs it to the backend; acks with the backend's answer |
//! | anything else | ignored, logged at debug |
//!
//! - [`events`]: the names, in one table;
//! - [`connection`]: connect (handlers registered before CONNECT is sent, `welcome`) and disconnect;
//! - `dispatch`: the single entry point of every client event;
//! - `messages`, `rooms`, `ask`: one file per event family;
//! - `forward`: the app's own events, handed to the backend's webhook;
//! - [`args`]: every argument of an event, binary included;
//! - [`limits`]: per-socket state: the rate limit, asks in flight, why ecos closed it;
//! - [`pressure`]: instance-wide load shedding (`overloaded`) while outgoing queues back up.
//!
//! Every handler is generic over the adapter, so the same code serves a single
//! instance (in-memory adapter) and a cluster (Redis adapter).

pub mod args;
mod ask;
pub mod connection;
mod dispatch;
pub mod events;
mod forward;
pub mod limits;
mod messages;
pub mod pressure;
mod reply;
pub mod rooms;

use std::{sync::Arc, time::Duration};

use socketioxide::{SocketIo, handler::ConnectHandler};

use crate::{
    app::NsAdapter, auth::Authenticator, metrics::Metrics, net::SlowConsumers, webhooks::Webhooks,
};

use limits::RateLimit;

pub use ask::{Answer, AskReply};
pub use connection::{SLOW_CONSUMER, Welcome, reason_label};
pub use rooms::{MAX_ROOM_CHARS, MAX_USER_CHARS, USER_ROOM_PREFIX, room_name, user_room};

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
    /// Each socket's event budget.
    pub rate_limit: RateLimit,
    /// Refuses new broadcasts while outgoing queues back up.
    pub pressure: Arc<pressure::Pressure>,
    /// Rooms one socket may join.
    pub max_rooms_per_socket: usize,
    /// The last large `rooms` listing, shared by every socket of the instance.
    pub rooms_cache: Arc<rooms::RoomsCache>,
    /// Who may connect, and what each socket may do.
    pub auth: Arc<Authenticator>,
    /// The backend's webhooks, when `webhooks.url` is set.
    pub webhooks: Option<Arc<Webhooks>>,
}

impl Realtime {
    /// Whether sockets carry user ids: from a token, or from the connect hook.
    pub fn sockets_have_users(&self) -> bool {
        self.auth.required() || self.webhooks.as_ref().is_some_and(|h| h.asks_on_connect())
    }
}

/// Registers the contract on namespace `/` of `io`.
pub fn register<A: NsAdapter>(io: &SocketIo<A>) -> A::InitRes {
    io.ns(
        "/",
        connection::on_connect::<A>.with(connection::prepare::<A>),
    )
}
