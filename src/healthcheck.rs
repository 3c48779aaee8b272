//! `ecos healthcheck`: asks a running ecos for `/healthz`, for container
//! health checks in images that have no shell, curl or wget.

use std::{net::SocketAddr, time::Duration};

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
