//! Request bodies and query strings: their OpenAPI shapes, and the parsers
//! that check them field by field.
//!
//! Bodies are read as plain JSON and checked by hand rather than through
//! serde derive, so a bad body gets a message that names the field, the
//! position in a list, and what was expected there (`rooms[2]: room must not
//! be empty`); serde's own messages name neither. The `*Request` types
//! describe the same fields for the OpenAPI document (their `Deserialize` is
//! only there for the `flatten` attribute the schema reads); a test checks
//! that each parser accepts exactly the fields its type declares.

use std::collections::BTreeSet;

use rmpv::Value as Msg;
use serde::Deserialize;
use serde_json::{Map, Value};
use socketioxide::socket::Sid;
use utoipa::{IntoParams, ToSchema};

use super::response::ApiError;
use crate::{
    hub::Selector,
    realtime::{
        MAX_USER_CHARS, USER_ROOM_PREFIX,
        args::{self, Args},
        events::RESERVED_EVENTS,
        room_name, user_room,
    },
};

/// Most entries in each of `rooms`, `except`, `users` and `sockets`.
pub const MAX_SELECTOR_ENTRIES: usize = 1000;

/// Longest event name, in characters.
pub const MAX_EVENT_CHARS: usize = 128;

/// Selects sockets: the members of `rooms`, the sockets of `users`, and the
/// sockets named in `sockets` (on any instance), minus the members of
/// `except`. Naming none of `rooms`, `users` and `sockets` selects every socket.
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)]
pub struct SelectorFields {
    /// Rooms whose members are selected; each 1 to 128 characters.
    #[schema(max_items = 1000)]
    pub rooms: Option<Vec<String>>,
    /// Users whose sockets are selected: the members of the room `user:<id>`;
    /// each id 1 to 123 characters.
    #[schema(max_items = 1000)]
    pub users: Option<Vec<String>>,
    /// Socket ids (the client's `socket.id`, 16 characters), on any instance.
    #[schema(max_items = 1000)]
    pub sockets: Option<Vec<String>>,
    /// Rooms whose members are left out, even when selected otherwise.
    #[schema(max_items = 1000)]
    pub except: Option<Vec<String>>,
}

/// `POST /api/v1/emit`: an event with its arguments, to the selected sockets.
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)]
pub struct EmitRequest {
    /// The event name the clients listen to (1 to 128 characters; not one of
    /// Socket.IO's reserved names such as `connect` or `disconnect`).
    #[schema(min_length = 1, max_length = 128, example = "order:shipped")]
    pub event: String,
    /// The event's arguments, each one a separate Socket.IO argument (a
    /// client handler `(a, b) => ...` gets `args[0]` and `args[1]`). Any JSON
    /// value; an object `{ "$base64": "..." }`, at any depth, arrives as
    /// binary (a Buffer or ArrayBuffer in JavaScript, bytes in Python).
    #[schema(value_type = Option<Vec<Value>>)]
    pub args: Option<Vec<Value>>,
    /// Which sockets.
    #[serde(flatten)]
    pub selector: SelectorFields,
}

/// `POST /api/v1/join` and `POST /api/v1/leave`: the selected sockets join or leave `room`.
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)]
pub struct RoomRequest {
    /// The room to join or leave (1 to 128 characters; `user:` rooms too).
    #[schema(min_length = 1, max_length = 128, example = "order:17")]
    pub room: String,
    /// Which sockets.
    #[serde(flatten)]
    pub selector: SelectorFields,
}

/// `POST /api/v1/disconnect`: the selected sockets are disconnected. It must
/// name `rooms`, `users` or `sockets`, or say `"all": true`: an empty body
/// never disconnects everyone by accident.
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)]
pub struct DisconnectRequest {
    /// `true` selects every socket (minus `except`); not with `rooms`, `users` or `sockets`.
    pub all: Option<bool>,
    /// Which sockets.
    #[serde(flatten)]
    pub selector: SelectorFields,
}

/// The query of `GET /api/v1/sockets`: at most one of `room` and `user`;
/// neither lists every socket.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct SocketsQuery {
    /// List the members of this room.
    pub room: Option<String>,
    /// List the sockets of this user (the members of `user:<id>`).
    pub user: Option<String>,
}

/// The fields each body accepts (checked against the types above by a test).
pub const SELECTOR_FIELDS: [&str; 4] = ["rooms", "users", "sockets", "except"];
/// The fields of [`EmitRequest`].
pub const EMIT_FIELDS: [&str; 6] = ["event", "args", "rooms", "users", "sockets", "except"];
/// The fields of [`RoomRequest`].
pub const ROOM_FIELDS: [&str; 5] = ["room", "rooms", "users", "sockets", "except"];
/// The fields of [`DisconnectRequest`].
pub const DISCONNECT_FIELDS: [&str; 5] = ["all", "rooms", "users", "sockets", "except"];
/// The parameters of [`SocketsQuery`].
pub const SOCKETS_QUERY_FIELDS: [&str; 2] = ["room", "user"];

/// A checked emit.
#[derive(Debug)]
pub struct Emit {
    /// The event name.
    pub event: String,
    /// Its arguments, binary ones as `Binary`.
    pub args: Args,
    /// Who gets it.
    pub selector: Selector,
}

/// A checked join or leave.
#[derive(Debug)]
pub struct RoomChange {
    /// The room.
    pub room: String,
    /// Whose membership changes.
    pub selector: Selector,
}

/// A checked `GET /api/v1/sockets` query.
#[derive(Debug, PartialEq, Eq)]
pub enum SocketsFilter {
    /// Every socket.
    All,
    /// The members of a room.
    Room(String),
    /// The sockets of a user.
    User(String),
}

impl SocketsFilter {
    /// The selector that lists them.
    pub fn selector(&self) -> Selector {
        match self {
            SocketsFilter::All => Selector::default(),
            SocketsFilter::Room(room) => rooms_selector(room.clone()),
            SocketsFilter::User(user) => rooms_selector(user_room(user)),
        }
    }
}

fn rooms_selector(room: String) -> Selector {
    Selector {
        rooms: vec![room],
        ..Selector::default()
    }
}

/// Parses an emit body.
pub fn emit(body: &[u8]) -> Result<Emit, ApiError> {
    let mut fields = object(body, &EMIT_FIELDS)?;
    let event = required_string(&mut fields, "event")?;
    check_event(&event)?;
    let args = match fields.remove("args") {
        None | Some(Value::Null) => Args::default(),
        Some(Value::Array(items)) => Args(
            items
                .into_iter()
                .enumerate()
                .map(|(i, item)| to_msgpack(item, &format!("args[{i}]")))
                .collect::<Result<_, _>>()?,
        ),
        Some(other) => {
            return Err(bad(format!(
                "`args` must be an array of the event's arguments, not {}",
                kind(&other)
            )));
        }
    };
    let selector = selector(&mut fields)?;
    Ok(Emit {
        event,
        args,
        selector,
    })
}

/// Parses a join or leave body.
pub fn room_change(body: &[u8]) -> Result<RoomChange, ApiError> {
    let mut fields = object(body, &ROOM_FIELDS)?;
    let room = required_string(&mut fields, "room")?;
    let room = room_name(&Msg::from(room.as_str())).map_err(|e| bad(format!("`room`: {e}")))?;
    Ok(RoomChange {
        room,
        selector: selector(&mut fields)?,
    })
}

/// Parses a disconnect body.
pub fn disconnect(body: &[u8]) -> Result<Selector, ApiError> {
    let mut fields = object(body, &DISCONNECT_FIELDS)?;
    let all = match fields.remove("all") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(all)) => all,
        Some(other) => {
            return Err(bad(format!(
                "`all` must be true or false, not {}",
                kind(&other)
            )));
        }
    };
    let selector = selector(&mut fields)?;
    match (all, selector.is_everyone()) {
        (true, false) => Err(bad(
            "`all` cannot be combined with `rooms`, `users` or `sockets`; send one or the other",
        )),
        (false, true) => Err(bad(
            "name the sockets to disconnect with `rooms`, `users` or `sockets`, \
             or send `\"all\": true` to disconnect every socket",
        )),
        _ => Ok(selector),
    }
}

/// Parses the query of `GET /api/v1/sockets` (decoded pairs, in order).
pub fn sockets_query(pairs: &[(String, String)]) -> Result<SocketsFilter, ApiError> {
    let mut filter = SocketsFilter::All;
    for (name, value) in pairs {
        let parsed = match name.as_str() {
            "room" => SocketsFilter::Room(
                room_name(&Msg::from(value.as_str())).map_err(|e| bad(format!("`room`: {e}")))?,
            ),
            "user" => SocketsFilter::User(user_id(value).map_err(|e| bad(format!("`user`: {e}")))?),
            other => {
                return Err(bad(format!(
                    "unknown query parameter `{}`; expected `room` or `user`",
                    shorten(other)
                )));
            }
        };
        if filter != SocketsFilter::All {
            return Err(bad("give one `room` or one `user`, not several"));
        }
        filter = parsed;
    }
    Ok(filter)
}

/// Parses a query that takes no parameters (`GET /api/v1/rooms`).
pub fn no_query(pairs: &[(String, String)]) -> Result<(), ApiError> {
    match pairs.first() {
        None => Ok(()),
        Some((name, _)) => Err(bad(format!(
            "unknown query parameter `{}`; this route takes none",
            shorten(name)
        ))),
    }
}

/// A 400 with `message`.
fn bad(message: impl Into<std::borrow::Cow<'static, str>>) -> ApiError {
    ApiError::bad_request(message)
}

/// The body as a JSON object whose keys are all in `allowed`.
fn object(body: &[u8], allowed: &[&str]) -> Result<Map<String, Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(bad(format!(
            "the body is empty; send a JSON object with {}",
            list(allowed)
        )));
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| bad(format!("the body is not valid JSON: {e}")))?;
    let Value::Object(fields) = value else {
        return Err(bad(format!(
            "the body must be a JSON object with {}, not {}",
            list(allowed),
            kind(&value)
        )));
    };
    let unknown: BTreeSet<&str> = fields
        .keys()
        .map(String::as_str)
        .filter(|k| !allowed.contains(k))
        .collect();
    if let Some(first) = unknown.first() {
        return Err(bad(format!(
            "unknown field `{}`; expected {}",
            shorten(first),
            list(allowed)
        )));
    }
    Ok(fields)
}

fn list(fields: &[&str]) -> String {
    let quoted: Vec<String> = fields.iter().map(|f| format!("`{f}`")).collect();
    format!("fields among {}", quoted.join(", "))
}

/// At most 64 characters of something the client sent, for an error message.
fn shorten(text: &str) -> String {
    if text.chars().count() <= 64 {
        text.to_owned()
    } else {
        format!("{}...", text.chars().take(64).collect::<String>())
    }
}

/// A JSON type's name, for error messages.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn required_string(fields: &mut Map<String, Value>, name: &str) -> Result<String, ApiError> {
    match fields.remove(name) {
        Some(Value::String(s)) => Ok(s),
        None | Some(Value::Null) => Err(bad(format!("`{name}` is required: a string"))),
        Some(other) => Err(bad(format!(
            "`{name}` must be a string, not {}",
            kind(&other)
        ))),
    }
}

fn check_event(event: &str) -> Result<(), ApiError> {
    let chars = event.chars().count();
    if chars == 0 || chars > MAX_EVENT_CHARS {
        return Err(bad(format!(
            "`event` must be a string of 1 to {MAX_EVENT_CHARS} characters"
        )));
    }
    if RESERVED_EVENTS.contains(&event) {
        return Err(bad(format!(
            "`event` \"{event}\" is reserved by Socket.IO clients; choose another name"
        )));
    }
    Ok(())
}

/// `rooms`, `users`, `sockets` and `except`, checked, as a hub selector.
fn selector(fields: &mut Map<String, Value>) -> Result<Selector, ApiError> {
    let room = |value: &str| room_name(&Msg::from(value)).map_err(str::to_owned);
    let mut rooms = string_list(fields, "rooms", room)?;
    let users = string_list(fields, "users", |v| user_id(v).map(|id| user_room(&id)))?;
    let sockets = string_list(fields, "sockets", socket_id)?;
    let except = string_list(fields, "except", room)?;
    rooms.extend(users);
    rooms.sort_unstable();
    rooms.dedup();
    Ok(Selector {
        rooms,
        except,
        sockets,
    })
}

/// An optional list of strings, each checked by `check`, without duplicates.
fn string_list(
    fields: &mut Map<String, Value>,
    name: &str,
    check: impl Fn(&str) -> Result<String, String>,
) -> Result<Vec<String>, ApiError> {
    let items = match fields.remove(name) {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(other) => {
            return Err(bad(format!(
                "`{name}` must be an array of strings, not {}",
                kind(&other)
            )));
        }
    };
    if items.len() > MAX_SELECTOR_ENTRIES {
        return Err(bad(format!(
            "`{name}` has {} entries; at most {MAX_SELECTOR_ENTRIES} are allowed",
            items.len()
        )));
    }
    let mut checked = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let Value::String(text) = item else {
            return Err(bad(format!(
                "`{name}[{i}]` must be a string, not {}",
                kind(item)
            )));
        };
        checked.push(check(text).map_err(|e| bad(format!("`{name}[{i}]`: {e}")))?);
    }
    checked.sort_unstable();
    checked.dedup();
    Ok(checked)
}

fn user_id(value: &str) -> Result<String, String> {
    match value.chars().count() {
        0 => Err("a user id must not be empty".to_owned()),
        n if n > MAX_USER_CHARS => Err(format!(
            "a user id must be at most {MAX_USER_CHARS} characters (its room is `{USER_ROOM_PREFIX}<id>`)"
        )),
        _ => Ok(value.to_owned()),
    }
}

fn socket_id(value: &str) -> Result<String, String> {
    value
        .parse::<Sid>()
        .map(|sid| sid.to_string())
        .map_err(|_| {
            "a socket id is 16 characters from A-Z a-z 0-9 - _ (the client's `socket.id`)"
                .to_owned()
        })
}

/// A JSON value as a Socket.IO argument (`{ "$base64": "..." }` becomes binary).
fn to_msgpack(value: Value, at: &str) -> Result<Msg, ApiError> {
    args::from_json(value, at).map_err(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(result: Result<impl std::fmt::Debug, ApiError>) -> String {
        result.expect_err("should be refused").message().to_owned()
    }

    #[test]
    fn an_emit_keeps_every_argument_and_turns_base64_into_binary() {
        let emit = emit(
            br#"{"event":"e","args":[1,-2,1.5,"s",null,{"$base64":"AAEC"},{"deep":[{"$base64":"/w"}]}],
                 "rooms":["b","a"],"users":["alice"],"sockets":["AAAAAAAAAAAAAAAA"],"except":["x"]}"#,
        )
        .unwrap();
        assert_eq!(emit.event, "e");
        assert_eq!(
            emit.args.0,
            vec![
                Msg::from(1u64),
                Msg::from(-2i64),
                Msg::F64(1.5),
                Msg::from("s"),
                Msg::Nil,
                Msg::Binary(vec![0, 1, 2]),
                Msg::Map(vec![(
                    Msg::from("deep"),
                    Msg::Array(vec![Msg::Binary(vec![255])])
                )]),
            ]
        );
        assert_eq!(emit.selector.rooms, vec!["a", "b", "user:alice"]);
        assert_eq!(emit.selector.sockets, vec!["AAAAAAAAAAAAAAAA"]);
        assert_eq!(emit.selector.except, vec!["x"]);
    }

    #[test]
    fn bad_bodies_name_the_field_and_what_was_expected() {
        let cases: &[(&[u8], &str)] = &[
            (b"", "the body is empty"),
            (b"{", "the body is not valid JSON"),
            (b"[]", "the body must be a JSON object"),
            (br#"{"args":[]}"#, "`event` is required: a string"),
            (br#"{"event":5}"#, "`event` must be a string, not a number"),
            (br#"{"event":""}"#, "`event` must be a string of 1 to 128"),
            (br#"{"event":"connect"}"#, "reserved"),
            (br#"{"event":"e","args":"x"}"#, "`args` must be an array"),
            (
                br#"{"event":"e","rooms":"r"}"#,
                "`rooms` must be an array of strings, not a string",
            ),
            (
                br#"{"event":"e","rooms":["a",3]}"#,
                "`rooms[1]` must be a string, not a number",
            ),
            (
                br#"{"event":"e","rooms":[""]}"#,
                "`rooms[0]`: room must not be empty",
            ),
            (
                br#"{"event":"e","users":[""]}"#,
                "`users[0]`: a user id must not be empty",
            ),
            (
                br#"{"event":"e","sockets":["nope"]}"#,
                "`sockets[0]`: a socket id is 16 characters",
            ),
            (br#"{"event":"e","to":["x"]}"#, "unknown field `to`"),
            (
                br#"{"event":"e","args":[{"$base64":"**"}]}"#,
                "`args[0].$base64` is not standard base64",
            ),
            (
                br#"{"event":"e","args":[{"a":{"$base64":1}}]}"#,
                "`args[0].a.$base64` must be a string",
            ),
            (
                br#"{"event":"e","args":[{"$base64":"","x":1}]}"#,
                "must have no other key",
            ),
        ];
        for (body, expected) in cases {
            let message = error(emit(body));
            assert!(
                message.contains(expected),
                "{}: {message:?} should contain {expected:?}",
                String::from_utf8_lossy(body)
            );
        }
        let long = format!(r#"{{"event":"e","rooms":["{}"]}}"#, "x".repeat(129));
        assert!(error(emit(long.as_bytes())).contains("at most 128 characters"));
        let many = format!(
            r#"{{"event":"e","except":[{}]}}"#,
            vec!["\"r\""; 1001].join(",")
        );
        assert!(error(emit(many.as_bytes())).contains("at most 1000"));
    }

    #[test]
    fn disconnect_needs_a_selector_or_all() {
        assert!(error(disconnect(b"{}")).contains("\"all\": true"));
        assert!(error(disconnect(br#"{"all":true,"rooms":["a"]}"#)).contains("cannot be combined"));
        assert!(error(disconnect(br#"{"all":"yes"}"#)).contains("`all` must be true or false"));
        assert!(
            disconnect(br#"{"all":true,"except":["a"]}"#)
                .unwrap()
                .is_everyone()
        );
        assert_eq!(
            disconnect(br#"{"users":["bob"]}"#).unwrap().rooms,
            vec!["user:bob"]
        );
    }

    #[test]
    fn the_sockets_query_takes_one_room_or_one_user() {
        let q = |pairs: &[(&str, &str)]| {
            let owned: Vec<(String, String)> = pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            sockets_query(&owned)
        };
        assert_eq!(q(&[]).unwrap(), SocketsFilter::All);
        assert_eq!(
            q(&[("room", "r")]).unwrap(),
            SocketsFilter::Room("r".into())
        );
        assert_eq!(
            q(&[("user", "alice")]).unwrap().selector().rooms,
            vec!["user:alice"]
        );
        assert!(error(q(&[("room", "a"), ("user", "b")])).contains("not several"));
        assert!(error(q(&[("room", "")])).contains("`room`: room must not be empty"));
        assert!(error(q(&[("limit", "1")])).contains("unknown query parameter `limit`"));
    }
}
