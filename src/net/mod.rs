//! The network edge: binding the listener, serving every connection under
//! the connection limits, and watching each one so slow consumers can be
//! found and closed.
//!
//! - [`server`]: the accept loop and the HTTP/1 connections, with the
//!   header-read and keep-alive deadlines, the connection cap and its health reserve;
//! - [`request_cycle`]: a connection's phase (waiting for a head, busy, idle,
//!   upgraded) and the deadline that goes with it;
//! - [`listener`]: the stream every connection is served through, and the [`Peer`] every request carries;
//! - [`slow_consumers`]: the policy that closes clients that stopped reading;
//! - [`sessions`]: each Engine.IO session's transport: its WebSocket, or whether it still polls;
//! - [`nofile`]: raising the open-file limit at start-up.

pub mod listener;
pub mod nofile;
pub mod request_cycle;
pub mod server;
pub mod sessions;
pub mod slow_consumers;

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpSocket};

pub use listener::{GuardedStream, Peer, close_connection, closed_as_slow_consumer};
pub use nofile::{NofileLimit, raise_nofile_limit};
pub use server::{ConnLimits, serve};
pub use sessions::Session;
pub use slow_consumers::{OVERFLOW_FLOOR, OVERFLOW_STALL, SlowConsumers, Sweeper};

/// Binds `addr` with a listen queue of `backlog` connections.
///
/// `TcpListener::bind` asks for 128, which a reconnect storm (every client of
/// a restarted instance coming back at once) overflows: the kernel then drops
/// SYNs and each of those clients waits a 1 s retransmission, 3 s for the next.
pub fn bind(addr: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // As `TcpListener::bind` does: a restarted server can bind while old
    // connections linger in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}
