//! Rooms: `join`, `leave`, `rooms` and `room:members`, and the room-name rule.

use std::{
    future::Future,
    time::{Duration, Instant},
};

use rmpv::Value;
use serde_json::json;
use socketioxide::{
    adapter::Adapter,
    extract::{AckSender, SocketRef},
};

use super::{
    Realtime,
    args::Args,
    events::ClientEvent,
    reply::{failure, reply},
};
use crate::{auth::Grants, hub};

/// Prefix of the room every socket of a user is in (`user:<id>`); reserved:
/// only the server puts a socket in a user room.
pub const USER_ROOM_PREFIX: &str = "user:";

/// The room every socket of `user` is in.
pub fn user_room(user: &str) -> String {
    format!("{USER_ROOM_PREFIX}{user}")
}

/// Longest room name accepted, in characters.
pub const MAX_ROOM_CHARS: usize = 128;

/// Longest user id a backend may give (the server API, the connect hook):
/// its room `user:<id>` must be a valid room name.
pub const MAX_USER_CHARS: usize = MAX_ROOM_CHARS - USER_ROOM_PREFIX.len();

const ROOM_FORM: &str = "room must be a string of 1 to 128 characters";

/// `join` (room, ack?), up to the socket's room limit.
pub fn join<A: Adapter>(socket: SocketRef<A>, args: Args, ack: AckSender<A>, rt: &Realtime) {
    if let Some(Ok(room)) = args.get(0).map(room_name) {
        let rooms = socket.rooms();
        if rooms.len() >= rt.max_rooms_per_socket && !rooms.iter().any(|r| *r == room) {
            return reply(ack, &socket, failure(TOO_MANY_ROOMS));
        }
    }
    change_membership(Membership::Join, socket, args, ack);
}

/// The error a `join` beyond `limits.max_rooms_per_socket` gets.
pub const TOO_MANY_ROOMS: &str = "too many rooms";

/// `leave` (room, ack?).
pub fn leave<A: Adapter>(socket: SocketRef<A>, args: Args, ack: AckSender<A>) {
    change_membership(Membership::Leave, socket, args, ack);
}

/// Which way `join` and `leave` change a socket's rooms.
#[derive(Debug, Clone, Copy)]
enum Membership {
    /// Add the socket to the room.
    Join,
    /// Remove the socket from the room.
    Leave,
}

/// Validates the room, applies the change, acks with the room or the reason.
fn change_membership<A: Adapter>(
    change: Membership,
    socket: SocketRef<A>,
    args: Args,
    ack: AckSender<A>,
) {
    match args.get(0).map_or(Err(ROOM_FORM), room_name) {
        Ok(room) => {
            match change {
                Membership::Join => socket.join(room.clone()),
                Membership::Leave => socket.leave(room.clone()),
            }
            tracing::debug!(sid = %socket.id, %room, change = ?change, "room membership changed");
            reply(ack, &socket, json!({ "ok": true, "room": room }));
        }
        Err(error) => reply(ack, &socket, failure(error)),
    }
}

/// How long a large room listing is reused.
pub const LARGE_LISTING_TTL: Duration = Duration::from_secs(1);

/// The last `rooms` listing of this instance, reused for a moment when it is
/// large: walking 100,000 rooms costs tens of milliseconds of CPU, and the
/// rate limit alone would let every socket make ten such walks a second.
/// Listings of at most [`hub::MAX_LISTED_ROOMS`] rooms are always fresh.
#[derive(Debug, Default)]
pub struct RoomsCache(tokio::sync::Mutex<Option<(Instant, hub::Listing)>>);

impl RoomsCache {
    /// The cached listing if it is large and recent, else a fresh one from `list`.
    /// Callers queue behind one walk instead of each walking at once.
    async fn get_or_list(
        &self,
        list: impl Future<Output = Result<hub::Listing, hub::HubError>>,
    ) -> Result<hub::Listing, hub::HubError> {
        let mut cached = self.0.lock().await;
        if let Some((at, listing)) = cached.as_ref()
            && listing.count > hub::MAX_LISTED_ROOMS
            && at.elapsed() < LARGE_LISTING_TTL
        {
            return Ok(listing.clone());
        }
        let listing = list.await?;
        *cached = Some((Instant::now(), listing.clone()));
        Ok(listing)
    }
}

/// `rooms` (ack): every room of the namespace on every instance.
pub async fn rooms<A: Adapter>(socket: SocketRef<A>, ack: AckSender<A>, rt: &Realtime) {
    // From a socket, the adapter lists rooms relative to it: `broadcast()`
    // covers every other socket on every instance; the caller's own rooms are local.
    let own: Vec<String> = socket.rooms().into_iter().map(|r| r.into_owned()).collect();
    let listing = rt
        .rooms_cache
        .get_or_list(hub::list_rooms(socket.broadcast(), own))
        .await;
    match listing {
        Ok(listing) => {
            let listing = visible_to(&socket, listing);
            reply(
                ack,
                &socket,
                json!({ "ok": true, "count": listing.count, "rooms": listing.names }),
            )
        }
        Err(error) => {
            tracing::warn!(%error, "listing rooms failed");
            reply(ack, &socket, failure("could not list the rooms; try again"));
        }
    }
}

/// `room:members` (room, ack): the room's socket ids on every instance and,
/// when sockets are authenticated, the users they belong to.
pub async fn members<A: Adapter>(
    socket: SocketRef<A>,
    args: Args,
    ack: AckSender<A>,
    rt: &Realtime,
) {
    let room = match args.get(0).map_or(Err(ROOM_FORM), room_name) {
        Ok(room) => room,
        Err(error) => return reply(ack, &socket, failure(error)),
    };
    let listing = match hub::list_sockets(socket.within(room.clone())).await {
        Ok(listing) => listing,
        Err(error) => return members_failed(ack, &socket, error),
    };
    let mut body =
        json!({ "ok": true, "room": room, "count": listing.count, "members": listing.names });
    if rt.sockets_have_users() {
        match members_users(&socket, &room).await {
            Ok(users) => body["users"] = json!(users.names),
            Err(error) => return members_failed(ack, &socket, error),
        }
    }
    reply(ack, &socket, body);
}

/// The ack of a `room:members` whose cluster request failed.
fn members_failed<A: Adapter>(ack: AckSender<A>, socket: &SocketRef<A>, error: hub::HubError) {
    tracing::warn!(%error, "fetching room members failed");
    reply(
        ack,
        socket,
        failure("could not list the room's members; try again"),
    );
}

/// The users whose sockets are in `room`: every member is in its `user:` room,
/// so the rooms of the members name them (one cluster request).
async fn members_users<A: Adapter>(
    socket: &SocketRef<A>,
    room: &str,
) -> Result<hub::Listing, hub::HubError> {
    let rooms = socket
        .within(room.to_owned())
        .rooms()
        .await
        .map_err(|e| hub::HubError::Adapter(e.to_string()))?;
    let users = rooms
        .iter()
        .filter_map(|r| r.strip_prefix(USER_ROOM_PREFIX).map(str::to_owned))
        .collect();
    // `bounded` sorts them.
    Ok(hub::Listing::bounded(users, hub::MAX_LISTED_SOCKETS))
}

/// A rooms listing as `socket` may see it: never the `user:` rooms (they name
/// users), and with restricted grants only the rooms the token allows.
fn visible_to<A: Adapter>(socket: &SocketRef<A>, listing: hub::Listing) -> hub::Listing {
    let state = socket
        .extensions
        .get::<std::sync::Arc<super::limits::SocketState>>();
    // `Grants::All` already refuses `user:` rooms.
    let grants = state.as_ref().map_or(&Grants::All, |s| &s.identity.grants);
    let allows = |room: &str| grants.allows_room(room);
    let before = listing.names.len();
    let names: Vec<String> = listing.names.into_iter().filter(|r| allows(r)).collect();
    let hidden = before - names.len();
    hub::Listing {
        count: listing.count.saturating_sub(hidden),
        names,
    }
}

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
pub(super) fn room_and_data(event: ClientEvent, args: &Args) -> Result<(String, &Value), String> {
    let (Some(room), Some(data)) = (args.get(0), args.get(1)) else {
        return Err(format!(
            "`{}` needs two arguments: room and data",
            event.name()
        ));
    };
    let room = room_name(room).map_err(str::to_owned)?;
    Ok((room, data))
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
