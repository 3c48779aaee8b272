//! A socket's arrival and departure: handlers registered before the client
//! can send anything, `welcome`, and the disconnect count.

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use serde::Serialize;
use socketioxide::{
    SocketIo, TransportType,
    adapter::Adapter,
    extract::{SocketRef, State, TryData},
    socket::DisconnectReason,
};

use super::{Realtime, dispatch, events::ServerEvent, forward, limits::SocketState, reply, rooms};
use crate::{
    auth::{self, Refusal},
    webhooks::{Denial, connect::ConnectRequest},
};

/// Why a connection was refused; the client reads the message in its
/// `connect_error` as `unauthorized: <reason>`.
#[derive(Debug, thiserror::Error)]
pub enum Unauthorized {
    /// The token was missing or not valid (`auth.mode = jwt`).
    #[error("{0}")]
    Token(Refusal),
    /// The connect hook said no, or could not answer.
    #[error("{0}")]
    Backend(Denial),
}

impl From<Refusal> for Unauthorized {
    fn from(refusal: Refusal) -> Self {
        Unauthorized::Token(refusal)
    }
}

impl From<Denial> for Unauthorized {
    fn from(denial: Denial) -> Self {
        Unauthorized::Backend(denial)
    }
}

/// Payload of the `welcome` event.
#[derive(Debug, Serialize)]
pub struct Welcome<'a> {
    /// The socket's id, as the client sees it in `socket.id`.
    pub id: &'a str,
    /// The instance that holds this connection.
    pub instance: &'a str,
    /// The authenticated user id; `null` when `auth.mode = none`.
    pub user: Option<&'a str>,
}

/// The disconnect label of a socket whose token expired.
pub const TOKEN_EXPIRED: &str = "token_expired";

/// Expiry timers are not set further ahead than this: a token valid for
/// longer is treated as not expiring while connected (tokio timers and
/// `Instant` arithmetic are not meant for decades).
const LONGEST_EXPIRY_TIMER: Duration = Duration::from_secs(366 * 86_400);

/// Runs before socketioxide sends the CONNECT acknowledgement.
///
/// The connect handler runs only after CONNECT has gone out, so a client that
/// emits the moment it is connected could reach a socket with no handlers yet
/// and its event would be dropped. Registering here closes that window.
///
/// It also authenticates the connection (the JWT, then the connect hook): a
/// refusal becomes CONNECT_ERROR with the message `unauthorized: <reason>`.
/// A socket with a user joins its user room here, and the rooms the connect
/// hook named, so it is reachable from the moment it is connected.
pub async fn prepare<A: Adapter>(
    socket: SocketRef<A>,
    TryData(payload): TryData<serde_json::Value>,
    State(rt): State<Realtime>,
) -> Result<(), Unauthorized> {
    let payload = payload.ok();
    let token = auth::presented_token(payload.as_ref(), &socket.req_parts().headers);
    let mut identity = rt
        .auth
        .authenticate(token.as_deref())
        .await
        .inspect_err(|refusal| {
            // The reason only: the token is a credential.
            tracing::info!(sid = %socket.id, reason = refusal.reason(), "connection refused");
        })?;
    let mut rooms = Vec::new();
    if let Some(hooks) = rt.webhooks.as_ref().filter(|hooks| hooks.asks_on_connect()) {
        let parts = socket.req_parts();
        let peer = parts
            .extensions
            .get::<axum::extract::ConnectInfo<crate::net::Peer>>()
            .map(|info| info.0.addr.ip());
        let mut info = forward::socket_info(&socket, &rt);
        info.user = identity.user.clone();
        let admission = hooks
            .ask_connect(ConnectRequest {
                socket: info,
                auth: payload.as_ref(),
                headers: &parts.headers,
                peer,
            })
            .await
            .inspect_err(|denial| {
                tracing::info!(sid = %socket.id, %denial, "connection refused by the connect hook");
            })?;
        // A verified token names the user; the backend's answer cannot change it.
        if identity.user.is_none() {
            identity.user = admission.user;
        }
        rooms = admission.rooms;
    }
    if let Some(user) = &identity.user {
        socket.join(rooms::user_room(user));
    }
    if !rooms.is_empty() {
        socket.join(rooms);
    }
    let expires_at = identity.expires_at;
    let state = Arc::new(SocketState::new(rt.rate_limit, identity));
    if let Some(at) = expires_at {
        schedule_expiry(&socket, &state, at);
    }
    socket.extensions.insert(state);
    socket.on_fallback(dispatch::dispatch::<A>);
    socket.on_disconnect(on_disconnect::<A>);
    Ok(())
}

/// Disconnects `socket` when its token expires (reason `token_expired`); a
/// client with an `auth` callback reconnects with a fresh token.
fn schedule_expiry<A: Adapter>(socket: &SocketRef<A>, state: &Arc<SocketState>, at: SystemTime) {
    let remaining = at
        .duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO);
    if remaining > LONGEST_EXPIRY_TIMER {
        return;
    }
    let socket = socket.clone();
    let timer = tokio::spawn(async move {
        tokio::time::sleep(remaining).await;
        tracing::info!(sid = %socket.id, "token expired; disconnecting");
        reply::close(&socket, TOKEN_EXPIRED);
    });
    state.set_expiry(timer.abort_handle());
}

/// Connect handler for namespace `/`: counts the socket, watches its
/// session for the slow-consumer policy, and greets it.
pub async fn on_connect<A: Adapter>(
    socket: SocketRef<A>,
    io: SocketIo<A>,
    State(rt): State<Realtime>,
) {
    rt.metrics.connections_total.inc();
    rt.metrics.connected_sockets.inc();
    watch_session(&socket, io, &rt);
    let state = socket.extensions.get::<Arc<SocketState>>();
    let user = state.as_ref().and_then(|s| s.identity.user.clone());
    tracing::info!(sid = %socket.id, user = user.as_deref(), transport = ?socket.transport_type(), "socket connected");
    let welcome = Welcome {
        id: socket.id.as_str(),
        instance: &rt.instance_id,
        user: user.as_deref(),
    };
    if let Err(error) = socket.emit(ServerEvent::Welcome.name(), &welcome) {
        tracing::debug!(sid = %socket.id, %error, "could not send welcome");
    }
}

/// Hands the socket's session to the slow-consumer policy, which closes it
/// when it falls behind; the socket keeps it to find its transport.
fn watch_session<A: Adapter>(socket: &SocketRef<A>, io: SocketIo<A>, rt: &Realtime) {
    let sid = socket.id;
    let polling = socket.transport_type() == TransportType::Polling;
    // By id through `io`, not a `SocketRef`: the socket keeps the session,
    // which must not keep the socket.
    let evict = Box::new(move || {
        if let Some(socket) = io.get_socket(sid) {
            if let Some(state) = socket.extensions.get::<Arc<SocketState>>() {
                state.set_close_reason(SLOW_CONSUMER);
            }
            // No room broadcast reaches it while its session is being ended.
            socket.leave_all();
        }
    });
    let eio = match socket.protocol() {
        socketioxide::ProtocolVersion::V4 => 3,
        _ => 4,
    };
    let session = rt.slow_consumers.watch_session(
        sid.to_string(),
        eio,
        polling,
        &socket.req_parts().extensions,
        evict,
    );
    socket.extensions.insert(session);
    if !socket.connected() {
        // It left before this ran, and its departure found nothing to forget.
        rt.slow_consumers.forget_session(&sid.to_string());
    }
}

async fn on_disconnect<A: Adapter>(
    socket: SocketRef<A>,
    reason: DisconnectReason,
    State(rt): State<Realtime>,
) {
    let state = socket.extensions.get::<Arc<SocketState>>();
    // A socket ecos closed on purpose is counted under why; the transport
    // error a slow consumer's closed connection causes is reported as what it is.
    let closed_by_ecos = state.as_ref().and_then(|state| state.close_reason());
    let label = if let Some(reason) = closed_by_ecos {
        reason
    } else if closed_as_slow_consumer(&socket) {
        SLOW_CONSUMER
    } else {
        reason_label(reason)
    };
    depart(&socket, &rt, label, &reason);
}

/// Whether ecos closed the socket's transport as a slow consumer: its
/// watched session's (which follows an upgrade), else its handshake's
/// connection (a socket that left before its session was watched).
fn closed_as_slow_consumer<A: Adapter>(socket: &SocketRef<A>) -> bool {
    match socket.extensions.get::<Arc<crate::net::Session>>() {
        Some(session) => session.closed_as_slow_consumer(),
        None => crate::net::closed_as_slow_consumer(&socket.req_parts().extensions),
    }
}

/// The departure of every socket the server's close takes away, counted as
/// `server_shutdown` (see [`crate::hub::Farewell`]).
pub fn farewell<A: Adapter>(rt: Realtime) -> crate::hub::Farewell<A> {
    let label = reason_label(DisconnectReason::ClosingServer);
    Box::new(move |socket| {
        // Only the contract's sockets: another setup's have nothing to account for.
        if socket.extensions.get::<Arc<SocketState>>().is_some() {
            depart(socket, &rt, label, &"server is closing");
        }
    })
}

/// Accounts for a socket leaving, once: the gauge, the count by reason, the
/// log line and the disconnect webhook.
fn depart<A: Adapter>(
    socket: &SocketRef<A>,
    rt: &Realtime,
    label: &'static str,
    detail: &dyn std::fmt::Display,
) {
    let state = socket.extensions.get::<Arc<SocketState>>();
    if let Some(state) = &state {
        if !state.depart() {
            return;
        }
        state.cancel_expiry();
    }
    rt.slow_consumers.forget_session(&socket.id.to_string());
    rt.metrics.connected_sockets.dec();
    rt.metrics
        .disconnections_total
        .with_label_values(&[label])
        .inc();
    let user = state.as_ref().and_then(|s| s.identity.user.as_deref());
    tracing::info!(sid = %socket.id, user, reason = label, detail = %detail, "socket disconnected");
    if let Some(hooks) = rt
        .webhooks
        .as_ref()
        .filter(|hooks| hooks.notifies_disconnect())
    {
        let connected_for = state
            .as_ref()
            .map_or(Duration::ZERO, |s| s.connected_at.elapsed());
        hooks.notify_disconnect(&forward::socket_info(socket, rt), label, connected_for);
    }
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
