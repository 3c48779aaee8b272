//! The network edge: binding the listener, and watching every accepted
//! connection so slow consumers can be found and closed.
//!
//! - [`listener`]: the listener, its streams, and the [`Peer`] every request carries;
//! - [`slow_consumers`]: the policy that closes clients that stopped reading.

pub mod listener;
pub mod slow_consumers;

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpSocket};

pub use listener::{GuardedListener, Peer, close_connection, closed_as_slow_consumer};
pub use slow_consumers::{OVERFLOW_STALL, SlowConsumers, Sweeper};

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
