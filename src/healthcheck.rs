//! `ecos healthcheck`: asks a running ecos for `/healthz`, for container
//! health checks in images that have no shell, curl or wget.
//!
//! It reads the same settings as the server and probes the address the server
//! binds. Docker reserves exit code 2, so the subcommand exits only 0
//! (healthy) or 1 (anything else, a bad setting included).

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// Why the health check failed.
#[derive(Debug, thiserror::Error)]
pub enum HealthcheckError {
    /// Nothing answered in time.
    #[error("no answer from {0} within {1:?}")]
    Timeout(SocketAddr, Duration),
    /// The connection failed.
    #[error("cannot reach {0}: {1}")]
    Io(SocketAddr, std::io::Error),
    /// The server answered, but not with 200.
    #[error("{0}/healthz answered {1:?}")]
    Unhealthy(SocketAddr, String),
}

/// Where to reach a server that binds `bind_address:port` from the same host:
/// the address itself, or loopback of the same family when it is the
/// unspecified address (`0.0.0.0` → `127.0.0.1`, `::` → `::1`).
pub fn probe_addr(bind_address: IpAddr, port: u16) -> SocketAddr {
    let ip = match bind_address {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, port)
}

/// GETs `/healthz` on `addr` and succeeds on a 200 answer.
pub async fn check(addr: SocketAddr, timeout: Duration) -> Result<(), HealthcheckError> {
    match tokio::time::timeout(timeout, request(addr)).await {
        Ok(result) => result,
        Err(_) => Err(HealthcheckError::Timeout(addr, timeout)),
    }
}

async fn request(addr: SocketAddr) -> Result<(), HealthcheckError> {
    let io = |e| HealthcheckError::Io(addr, e);
    let mut stream = TcpStream::connect(addr).await.map_err(io)?;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .map_err(io)?;
    // The status line is all we need; the body is tiny anyway.
    let mut head = [0u8; 64];
    let n = stream.read(&mut head).await.map_err(io)?;
    let status_line = String::from_utf8_lossy(&head[..n])
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned();
    if status_line.starts_with("HTTP/1.1 200") || status_line.starts_with("HTTP/1.0 200") {
        Ok(())
    } else {
        Err(HealthcheckError::Unhealthy(addr, status_line))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_goes_to_the_bound_address_or_loopback_for_unspecified() {
        let at = |ip: &str| probe_addr(ip.parse().unwrap(), 3000).to_string();
        assert_eq!(at("0.0.0.0"), "127.0.0.1:3000");
        assert_eq!(at("::"), "[::1]:3000");
        assert_eq!(at("127.0.0.2"), "127.0.0.2:3000");
        assert_eq!(at("10.1.2.3"), "10.1.2.3:3000");
        assert_eq!(at("::1"), "[::1]:3000");
        assert_eq!(at("fd00::5"), "[fd00::5]:3000");
    }
}
