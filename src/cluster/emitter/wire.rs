//! socket.io's Redis wire format, as `@socket.io/redis-emitter` 5.x publishes it
//! and `@socket.io/redis-adapter` 8.x reads it.
//!
//! - Broadcasts go to `<prefix>#/#` (or `<prefix>#/#<room>#` when exactly one
//!   room is targeted) as msgpack `[uid, packet, opts]`: `packet` is
//!   `{ type: 2, data: [event, ...args], nsp: "/" }`, `opts` is
//!   `{ rooms: [...], except: [...], flags: {...} }`. The room in the channel
//!   name only lets servers skip rooms they do not hold; `opts` is the truth.
//! - Requests go to `<prefix>-request#/#` as JSON (msgpack is accepted too, as
//!   the adapter does when the first byte is not `{`):
//!   `{ type: 2 | 3, opts: { rooms, except }, rooms: [...] }` (socketsJoin,
//!   socketsLeave) and `{ type: 4, opts: { rooms, except }, close }`
//!   (disconnectSockets).
//!
//! Other emitters vary the channel names: the Python `socket-io-redis-emitter`
//! drops the trailing `#` (`<prefix>#/` for everyone, `<prefix>#/#<room>` and
//! `<prefix>-request#/#<room>` per room). Every channel of namespace `/` under
//! the prefix is accepted; the message says what to do.

use rmpv::Value;

/// Why a message could not be decoded. The text goes to the log as is.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// The payload is not one msgpack (or JSON) value.
    #[error("not valid {format}: {reason}")]
    Syntax {
        /// `msgpack` or `JSON`.
        format: &'static str,
        /// What the decoder said.
        reason: String,
    },
    /// The value decoded but does not have the expected shape.
    #[error("{0}")]
    Shape(String),
}

fn shape(message: impl Into<String>) -> DecodeError {
    DecodeError::Shape(message.into())
}

/// Which of the emitter's channels a message came on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelKind {
    /// A broadcast of namespace `/`.
    Broadcast,
    /// A request (join, leave, disconnect, or one ecos does not serve) of namespace `/`.
    Request,
    /// Another namespace: ecos serves only `/`.
    OtherNamespace,
}

/// The channel names and patterns for one prefix.
#[derive(Debug, Clone)]
pub struct Channels {
    /// `<prefix>#/`: every broadcast channel of namespace `/` starts so.
    broadcast: Vec<u8>,
    /// `<prefix>-request#/`.
    request: Vec<u8>,
    /// The two glob patterns to PSUBSCRIBE to.
    patterns: [String; 2],
}

impl Channels {
    /// The channels of the emitter's `key` option `prefix`.
    pub fn new(prefix: &str) -> Self {
        let broadcast = format!("{prefix}#/");
        let request = format!("{prefix}-request#/");
        let patterns = [
            format!("{}*", glob_escape(&broadcast)),
            format!("{}*", glob_escape(&request)),
        ];
        Self {
            broadcast: broadcast.into_bytes(),
            request: request.into_bytes(),
            patterns,
        }
    }

    /// The patterns that cover every channel of this prefix.
    pub fn patterns(&self) -> &[String; 2] {
        &self.patterns
    }

    /// What a message on `channel` is, or `None` if it is not one of ours.
    pub fn classify(&self, channel: &[u8]) -> Option<ChannelKind> {
        // Namespace `/` ends right after the slash or continues with `#`;
        // `<prefix>#/admin#` is namespace `/admin`.
        let kind = |rest: &[u8], ours| {
            if rest.is_empty() || rest[0] == b'#' {
                ours
            } else {
                ChannelKind::OtherNamespace
            }
        };
        if let Some(rest) = channel.strip_prefix(self.request.as_slice()) {
            Some(kind(rest, ChannelKind::Request))
        } else {
            channel
                .strip_prefix(self.broadcast.as_slice())
                .map(|rest| kind(rest, ChannelKind::Broadcast))
        }
    }
}

/// Escapes Redis glob characters, so a prefix is matched literally.
fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Which sockets a message applies to: those in any of `rooms` (everyone when
/// empty), minus those in any of `except`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Target {
    /// Rooms whose sockets are selected; empty selects every socket.
    pub rooms: Vec<String>,
    /// Rooms whose sockets are left out.
    pub except: Vec<String>,
}

/// A broadcast, decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct Broadcast {
    /// The publisher's uid (`"emitter"` for the emitters).
    pub uid: String,
    /// The event name.
    pub event: String,
    /// The arguments, as msgpack values (see `values` for what clients get).
    pub args: Vec<Value>,
    /// Who receives it.
    pub target: Target,
}

/// What a decoded broadcast asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum BroadcastMessage {
    /// Deliver to namespace `/`.
    Deliver(Broadcast),
    /// A packet of another namespace (ecos serves only `/`).
    OtherNamespace,
}

/// A request, decoded.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// socketsJoin: the target's sockets join every room.
    Join(Target, Vec<String>),
    /// socketsLeave: the target's sockets leave every room.
    Leave(Target, Vec<String>),
    /// disconnectSockets; `close` asks to close the connection too.
    Disconnect(Target, bool),
    /// A request ecos does not serve: one server asking the others (fetchSockets,
    /// serverSideEmit, a join by socket id), which expects an answer.
    Ignored(i64),
}

/// The adapter's request type numbers (`RequestType` in both packages).
const REMOTE_JOIN: i64 = 2;
const REMOTE_LEAVE: i64 = 3;
const REMOTE_DISCONNECT: i64 = 4;

/// Socket.IO packet types a broadcast may carry: EVENT and BINARY_EVENT.
const EVENT: i64 = 2;
const BINARY_EVENT: i64 = 5;

/// Decodes a broadcast payload: msgpack `[uid, packet, opts]`.
pub fn decode_broadcast(payload: &[u8]) -> Result<BroadcastMessage, DecodeError> {
    let value = read_msgpack(payload)?;
    let Value::Array(parts) = value else {
        return Err(shape("a broadcast must be an array [uid, packet, opts]"));
    };
    let mut parts = parts.into_iter();
    let (Some(uid), Some(packet), Some(opts)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(shape("a broadcast must be an array [uid, packet, opts]"));
    };
    // The uid only lets a Node server skip its own messages; it is not checked.
    let uid = match uid {
        Value::String(s) => s.into_str().unwrap_or_default(),
        _ => String::new(),
    };
    let Value::Map(packet) = packet else {
        return Err(shape("the packet must be a map"));
    };
    let mut kind = None;
    let mut data = None;
    let mut nsp = None;
    for (key, value) in packet {
        match key.as_str() {
            Some("type") => kind = Some(value),
            Some("data") => data = Some(value),
            Some("nsp") => nsp = Some(value),
            _ => {}
        }
    }
    // A packet without `nsp` is for `/`, as the adapter reads it.
    match nsp {
        None => {}
        Some(Value::String(s)) if s.as_str() == Some("/") => {}
        Some(_) => return Ok(BroadcastMessage::OtherNamespace),
    }
    match kind.as_ref().and_then(Value::as_i64) {
        Some(EVENT | BINARY_EVENT) => {}
        _ => return Err(shape("packet.type must be 2 (EVENT)")),
    }
    let Some(Value::Array(data)) = data else {
        return Err(shape("packet.data must be an array [event, ...args]"));
    };
    let mut data = data.into_iter();
    let event = match data.next() {
        Some(Value::String(s)) => s
            .into_str()
            .ok_or_else(|| shape("the event name is not valid UTF-8"))?,
        _ => {
            return Err(shape(
                "packet.data must start with the event name, a string",
            ));
        }
    };
    let target = read_target(opts, "opts")?;
    Ok(BroadcastMessage::Deliver(Broadcast {
        uid,
        event,
        args: data.collect(),
        target,
    }))
}

/// Decodes a request payload: JSON when it starts with `{`, else msgpack.
pub fn decode_request(payload: &[u8]) -> Result<Request, DecodeError> {
    let value = if payload.first() == Some(&b'{') {
        serde_json::from_slice::<Value>(payload).map_err(|e| DecodeError::Syntax {
            format: "JSON",
            reason: e.to_string(),
        })?
    } else {
        read_msgpack(payload)?
    };
    let Value::Map(fields) = value else {
        return Err(shape("a request must be an object"));
    };
    let mut kind = None;
    let mut opts = None;
    let mut rooms = None;
    let mut close = Value::Nil;
    for (key, value) in fields {
        match key.as_str() {
            Some("type") => kind = Some(value),
            Some("opts") => opts = Some(value),
            Some("rooms") => rooms = Some(value),
            Some("close") => close = value,
            _ => {}
        }
    }
    let kind = kind
        .as_ref()
        .and_then(number_as_i64)
        .ok_or_else(|| shape("request.type must be a number"))?;
    if !matches!(kind, REMOTE_JOIN | REMOTE_LEAVE | REMOTE_DISCONNECT) {
        return Ok(Request::Ignored(kind));
    }
    // Without `opts` the request names one socket by id and expects an answer:
    // that is one Node server asking another, not an emitter.
    let Some(opts) = opts else {
        return Ok(Request::Ignored(kind));
    };
    let target = read_target(opts, "request.opts")?;
    Ok(match kind {
        REMOTE_JOIN => Request::Join(target, read_rooms(rooms, "request.rooms")?),
        REMOTE_LEAVE => Request::Leave(target, read_rooms(rooms, "request.rooms")?),
        _ => Request::Disconnect(target, matches!(close, Value::Boolean(true))),
    })
}

/// One msgpack value, all of the payload, nested at most rmpv's default depth.
fn read_msgpack(payload: &[u8]) -> Result<Value, DecodeError> {
    let mut reader = payload;
    let value = rmpv::decode::read_value(&mut reader).map_err(|e| DecodeError::Syntax {
        format: "msgpack",
        reason: e.to_string(),
    })?;
    if !reader.is_empty() {
        return Err(DecodeError::Syntax {
            format: "msgpack",
            reason: format!("{} bytes after the value", reader.len()),
        });
    }
    Ok(value)
}

/// JSON numbers decode as integers or floats; a type may be either.
fn number_as_i64(value: &Value) -> Option<i64> {
    value.as_i64().or_else(|| {
        value
            .as_f64()
            .filter(|f| f.fract() == 0.0 && f.abs() < 1e15)
            .map(|f| f as i64)
    })
}

/// `{ rooms, except }`, each an array of rooms, absent or nil.
fn read_target(opts: Value, what: &str) -> Result<Target, DecodeError> {
    let fields = match opts {
        Value::Map(fields) => fields,
        Value::Nil => Vec::new(),
        _ => return Err(shape(format!("{what} must be a map"))),
    };
    let mut target = Target::default();
    for (key, value) in fields {
        match key.as_str() {
            Some("rooms") => target.rooms = read_rooms(Some(value), "rooms")?,
            Some("except") => target.except = read_rooms(Some(value), "except")?,
            _ => {}
        }
    }
    Ok(target)
}

/// A list of rooms: an array (or one room alone), absent or nil for none.
/// A room is a string; an integer stands for its decimal form, because
/// ecos's rooms are strings (a Node app may have joined the number `17`).
fn read_rooms(value: Option<Value>, what: &str) -> Result<Vec<String>, DecodeError> {
    let items = match value {
        None | Some(Value::Nil) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(single) => vec![single],
    };
    items
        .into_iter()
        .map(|item| match item {
            Value::String(s) => s
                .into_str()
                .ok_or_else(|| shape(format!("a room in {what} is not valid UTF-8"))),
            Value::Integer(n) => Ok(n.to_string()),
            Value::F64(f) if f.fract() == 0.0 && f.abs() < 1e15 => Ok((f as i64).to_string()),
            _ => Err(shape(format!("{what} must hold strings"))),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msgpack(value: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        rmpv::encode::write_value(&mut out, value).expect("encode");
        out
    }

    fn map(pairs: Vec<(&str, Value)>) -> Value {
        Value::Map(
            pairs
                .into_iter()
                .map(|(k, v)| (Value::from(k), v))
                .collect(),
        )
    }

    #[test]
    fn channels_of_namespace_slash_are_ours_whatever_the_emitter() {
        let c = Channels::new("socket.io");
        assert_eq!(c.patterns()[0], "socket.io#/*");
        assert_eq!(c.patterns()[1], "socket.io-request#/*");
        for ch in [
            "socket.io#/#",
            "socket.io#/#room#",
            "socket.io#/",
            "socket.io#/#r",
        ] {
            assert_eq!(
                c.classify(ch.as_bytes()),
                Some(ChannelKind::Broadcast),
                "{ch}"
            );
        }
        for ch in [
            "socket.io-request#/#",
            "socket.io-request#/",
            "socket.io-request#/#r",
        ] {
            assert_eq!(
                c.classify(ch.as_bytes()),
                Some(ChannelKind::Request),
                "{ch}"
            );
        }
        assert_eq!(
            c.classify(b"socket.io#/admin#"),
            Some(ChannelKind::OtherNamespace)
        );
        assert_eq!(c.classify(b"other#/#"), None);
        assert_eq!(Channels::new("a*b").patterns()[0], "a\\*b#/*");
    }

    #[test]
    fn the_emitters_broadcast_decodes() {
        let payload = msgpack(&Value::Array(vec![
            Value::from("emitter"),
            map(vec![
                ("type", Value::from(2)),
                (
                    "data",
                    Value::Array(vec![Value::from("news"), Value::from(1), Value::Nil]),
                ),
                ("nsp", Value::from("/")),
            ]),
            map(vec![
                ("rooms", Value::Array(vec![Value::from("a")])),
                ("flags", map(vec![])),
                ("except", Value::Array(vec![Value::from("b")])),
            ]),
        ]));
        let BroadcastMessage::Deliver(b) = decode_broadcast(&payload).expect("decodes") else {
            panic!("for namespace /")
        };
        assert_eq!(b.uid, "emitter");
        assert_eq!(b.event, "news");
        assert_eq!(b.args, vec![Value::from(1), Value::Nil]);
        assert_eq!(b.target.rooms, vec!["a"]);
        assert_eq!(b.target.except, vec!["b"]);
    }

    #[test]
    fn requests_decode_from_json_and_msgpack() {
        let join = br#"{"type":2,"opts":{"rooms":["a"],"except":[]},"rooms":["x","y"]}"#;
        assert_eq!(
            decode_request(join),
            Ok(Request::Join(
                Target {
                    rooms: vec!["a".into()],
                    except: vec![]
                },
                vec!["x".into(), "y".into()]
            ))
        );
        let python = br#"{"type":3,"rooms":["x"],"opts":{"rooms":null,"except":null}}"#;
        assert_eq!(
            decode_request(python),
            Ok(Request::Leave(Target::default(), vec!["x".into()]))
        );
        let close = msgpack(&map(vec![
            ("type", Value::from(4)),
            ("opts", map(vec![])),
            ("close", Value::from(true)),
        ]));
        assert_eq!(
            decode_request(&close),
            Ok(Request::Disconnect(Target::default(), true))
        );
        let by_sid = br#"{"type":2,"sid":"abc","room":"x","requestId":"1"}"#;
        assert_eq!(decode_request(by_sid), Ok(Request::Ignored(2)));
        assert_eq!(
            decode_request(br#"{"type":6,"data":[]}"#),
            Ok(Request::Ignored(6))
        );
    }

    #[test]
    fn malformed_messages_are_errors_not_panics() {
        for payload in [
            &b""[..],
            b"\xc1",
            b"\x93\xa1a",
            b"{not json",
            b"\x91\xa1a",
            b"\xc0",
        ] {
            assert!(decode_broadcast(payload).is_err(), "{payload:?}");
            assert!(decode_request(payload).is_err(), "{payload:?}");
        }
        let no_event = msgpack(&Value::Array(vec![
            Value::from("emitter"),
            map(vec![
                ("type", Value::from(2)),
                ("data", Value::Array(vec![])),
            ]),
            map(vec![]),
        ]));
        assert!(decode_broadcast(&no_event).is_err());
        assert!(decode_request(br#"{"type":"x"}"#).is_err());
        assert!(decode_request(br#"{"type":2,"opts":{"rooms":[{}]},"rooms":[]}"#).is_err());
    }
}
