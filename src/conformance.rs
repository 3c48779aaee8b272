//! Conformance mode: what the official protocol test suites expect to find,
//! mounted on the real ecos application.
//!
//! The Socket.IO project publishes two mocha suites, one for Engine.IO v4 and
//! one for Socket.IO v5, that talk to `http://localhost:3000`. They need a
//! server that behaves in a fixed way, which is not the ecos event contract:
//!
//! | where | what the server does |
//! |---|---|
//! | `/engine.io/` | a bare Engine.IO server that sends every message back, text or binary |
//! | `/socket.io/`, namespaces `/` and `/custom` | on connect, emits `auth` with the handshake payload (`{}` when there is none) |
//! | same | `message` (any arguments) → emits `message-back` with all of them, binary included |
//! | same | `message-with-ack` (any arguments) → acks with all of them |
//!
//! with a 300 ms ping interval, a 200 ms ping timeout, a 1 MB payload limit
//! and a 1 s connect timeout ([`settings`]).
//!
//! [`Conformance`] is a [`Setup`] for [`Application::build_with`], so the
//! suites run through every production layer (request log and metrics, CORS,
//! the drain guard, the size limits). The `ecos-conformance` binary starts it;
//! `docs/conformance.md` says how to run the suites and what they report.
//!
//! [`Application::build_with`]: crate::app::Application::build_with

use std::{sync::Arc, time::Duration};

use axum::{Router, body::Bytes};
use engineioxide::{
    DisconnectReason as EngineDisconnectReason, Socket as EngineSocket, Str,
    config::EngineIoConfig, handler::EngineIoHandler, layer::EngineIoLayer,
};
use rmpv::Value;
use socketioxide::{
    SocketIo,
    adapter::Adapter,
    extract::{AckSender, Data, SocketRef, TryData},
};

use crate::{
    app::{NsAdapter, Setup},
    config::{Settings, SocketIoParser},
    realtime::args::Args,
};

/// Where the raw Engine.IO echo server listens (the Engine.IO suite's path).
pub const ENGINE_IO_PATH: &str = "/engine.io";

/// The Socket.IO namespaces the Socket.IO suite connects to.
pub const NAMESPACES: [&str; 2] = ["/", "/custom"];

/// Heartbeat interval both suites expect in the handshake.
pub const PING_INTERVAL: Duration = Duration::from_millis(300);

/// Heartbeat timeout both suites expect in the handshake.
pub const PING_TIMEOUT: Duration = Duration::from_millis(200);

/// `maxPayload` both suites expect in the handshake, in bytes.
pub const MAX_PAYLOAD: u64 = 1_000_000;

/// How long a client may take to connect to a namespace; the suite's
/// "no handshake" test waits for the close within mocha's 2 s timeout.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// The settings the suites expect, on top of `base` (port, log, CORS, Redis
/// and the rest stay as configured).
pub fn settings(mut base: Settings) -> Settings {
    base.socketio.ping_interval = PING_INTERVAL;
    base.socketio.ping_timeout = PING_TIMEOUT;
    base.socketio.connect_timeout = CONNECT_TIMEOUT;
    // The suites speak the default (JSON) encoding.
    base.socketio.parser = SocketIoParser::Default;
    base.limits.max_http_payload_bytes = MAX_PAYLOAD;
    base.limits.max_ws_message_bytes = MAX_PAYLOAD as usize;
    base
}

/// The conformance [`Setup`]: the suites' Socket.IO handlers on
/// [`NAMESPACES`], and the Engine.IO echo server at [`ENGINE_IO_PATH`].
#[derive(Debug, Clone)]
pub struct Conformance {
    /// Configuration of the Engine.IO echo server, taken from the settings.
    engine: EngineIoConfig,
}

impl Conformance {
    /// A setup whose Engine.IO echo server uses the heartbeat and the limits
    /// of `settings` (pass them through [`settings`] first).
    pub fn new(settings: &Settings) -> Self {
        let s = &settings.socketio;
        let limits = &settings.limits;
        let engine = EngineIoConfig::builder()
            .req_path(ENGINE_IO_PATH)
            .ping_interval(s.ping_interval)
            .ping_timeout(s.ping_timeout)
            .max_buffer_size(s.max_buffer_packets)
            .max_payload(limits.max_http_payload_bytes)
            .ws_max_message_size(limits.max_ws_message_bytes)
            .ws_max_frame_size(limits.max_ws_message_bytes)
            .build();
        Self { engine }
    }
}

impl Setup for Conformance {
    fn namespaces<A: NsAdapter>(&self, io: &SocketIo<A>) -> Vec<A::InitRes> {
        NAMESPACES
            .iter()
            .map(|ns| io.ns(*ns, on_connect::<A>))
            .collect()
    }

    fn mount(&self, routes: Router) -> Router {
        routes.layer(EngineIoLayer::from_config(
            Arc::new(EngineEcho),
            self.engine.clone(),
        ))
    }
}

/// Connect handler of both namespaces: report the handshake's auth payload,
/// then echo events.
async fn on_connect<A: Adapter>(socket: SocketRef<A>, TryData(auth): TryData<Value>) {
    // A CONNECT without a payload is reported as `{}`, like the reference server does.
    let auth = match auth {
        Ok(Value::Nil) | Err(_) => Value::Map(Vec::new()),
        Ok(auth) => auth,
    };
    if let Err(error) = socket.emit("auth", &auth) {
        tracing::debug!(sid = %socket.id, %error, "could not send auth");
    }
    socket.on("message", on_message::<A>);
    socket.on("message-with-ack", on_message_with_ack::<A>);
}

/// `message` → `message-back` with the same arguments.
async fn on_message<A: Adapter>(socket: SocketRef<A>, Data(args): Data<Args>) {
    if let Err(error) = socket.emit("message-back", &args) {
        tracing::debug!(sid = %socket.id, %error, "could not send message-back");
    }
}

/// `message-with-ack` → an ack carrying the same arguments.
async fn on_message_with_ack<A: Adapter>(
    socket: SocketRef<A>,
    Data(args): Data<Args>,
    ack: AckSender<A>,
) {
    if let Err(error) = ack.send(&args) {
        tracing::debug!(sid = %socket.id, %error, "could not send ack");
    }
}

/// The raw Engine.IO server of the Engine.IO suite: every message goes back
/// to its sender unchanged, text as text and binary as binary.
#[derive(Debug, Clone, Copy, Default)]
pub struct EngineEcho;

impl EngineIoHandler for EngineEcho {
    type Data = ();

    fn on_connect(self: Arc<Self>, socket: Arc<EngineSocket<()>>) {
        tracing::debug!(sid = %socket.id, "engine.io echo: connected");
    }

    fn on_disconnect(&self, socket: Arc<EngineSocket<()>>, reason: EngineDisconnectReason) {
        tracing::debug!(sid = %socket.id, ?reason, "engine.io echo: disconnected");
    }

    fn on_message(self: &Arc<Self>, msg: Str, socket: Arc<EngineSocket<()>>) {
        if let Err(error) = socket.emit(msg) {
            tracing::debug!(sid = %socket.id, %error, "engine.io echo: could not send");
        }
    }

    fn on_binary(self: &Arc<Self>, data: Bytes, socket: Arc<EngineSocket<()>>) {
        if let Err(error) = socket.emit_binary(data) {
            tracing::debug!(sid = %socket.id, %error, "engine.io echo: could not send");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conformance_settings_match_what_the_suites_expect() {
        let mut base = Settings::default();
        base.socketio.parser = SocketIoParser::Msgpack;
        let s = settings(base);
        assert_eq!(s.socketio.ping_interval, Duration::from_millis(300));
        assert_eq!(s.socketio.ping_timeout, Duration::from_millis(200));
        assert_eq!(s.socketio.connect_timeout, Duration::from_secs(1));
        assert_eq!(s.socketio.parser, SocketIoParser::Default);
        assert_eq!(s.limits.max_http_payload_bytes, 1_000_000);
    }
}
