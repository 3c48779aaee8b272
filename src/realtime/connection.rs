//! A socket's arrival and departure: handlers registered before the client
//! can send anything, `welcome`, and the disconnect count.

use std::sync::Arc;

use serde::Serialize;
use socketioxide::{
    adapter::Adapter,
    extract::{SocketRef, State},
    socket::DisconnectReason,
};

use super::{Realtime, dispatch, events::ServerEvent, limits::SocketState};

/// Payload of the `welcome` event.
#[derive(Debug, Serialize)]
pub struct Welcome<'a> {
    /// The socket's id, as the client sees it in `socket.id`.
    pub id: &'a str,
    /// The instance that holds this connection.
    pub instance: &'a str,
}

/// Runs before socketioxide sends the CONNECT acknowledgement.
///
/// The connect handler runs only after CONNECT has gone out, so a client that
/// emits the moment it is connected could reach a socket with no handlers yet
/// and its event would be dropped. Registering here closes that window.
pub async fn prepare<A: Adapter>(
    socket: SocketRef<A>,
    State(rt): State<Realtime>,
) -> Result<(), std::convert::Infallible> {
    socket
        .extensions
        .insert(Arc::new(SocketState::new(rt.rate_limit)));
    socket.on_fallback(dispatch::dispatch::<A>);
    socket.on_disconnect(on_disconnect::<A>);
    Ok(())
}

/// Connect handler for namespace `/`: counts the socket and greets it.
pub async fn on_connect<A: Adapter>(socket: SocketRef<A>, State(rt): State<Realtime>) {
    rt.metrics.connections_total.inc();
    rt.metrics.connected_sockets.inc();
    tracing::info!(sid = %socket.id, transport = ?socket.transport_type(), "socket connected");
    let welcome = Welcome {
        id: socket.id.as_str(),
        instance: &rt.instance_id,
    };
    if let Err(error) = socket.emit(ServerEvent::Welcome.name(), &welcome) {
        tracing::debug!(sid = %socket.id, %error, "could not send welcome");
    }
}

async fn on_disconnect<A: Adapter>(
    socket: SocketRef<A>,
    reason: DisconnectReason,
    State(rt): State<Realtime>,
) {
    rt.metrics.connected_sockets.dec();
    // A socket ecos closed on purpose is counted under why; the transport
    // error a slow consumer's closed connection causes is reported as what it is.
    let closed_by_ecos = socket
        .extensions
        .get::<Arc<SocketState>>()
        .and_then(|state| state.close_reason());
    let label = if let Some(reason) = closed_by_ecos {
        reason
    } else if crate::net::closed_as_slow_consumer(&socket.req_parts().extensions) {
        SLOW_CONSUMER
    } else {
        reason_label(reason)
    };
    rt.metrics
        .disconnections_total
        .with_label_values(&[label])
        .inc();
    tracing::info!(sid = %socket.id, reason = label, detail = %reason, "socket disconnected");
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
