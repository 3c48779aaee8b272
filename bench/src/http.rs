//! A minimal HTTP/1.1 keep-alive client for the server API's `POST /api/v1/emit`:
//! one request in flight per connection, the response read by its
//! `Content-Length`. Written out, like `wire`, so the generator's own cost
//! per request stays a few string operations.

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest response head or body accepted (API answers are tiny).
const MAX_RESPONSE: usize = 1 << 20;

/// One keep-alive connection to a server's API.
pub struct Http {
    stream: TcpStream,
    host: String,
    key: String,
    buf: Vec<u8>,
    out: Vec<u8>,
}

impl Http {
    /// Connects to `host` (`ip:port`); requests carry `Authorization: Bearer <key>`.
    pub async fn connect(host: &str, key: &str) -> anyhow::Result<Http> {
        let stream = TcpStream::connect(host).await.with_context(|| format!("connect {host}"))?;
        stream.set_nodelay(true)?;
        Ok(Http { stream, host: host.to_string(), key: key.to_string(), buf: Vec::with_capacity(1024), out: Vec::with_capacity(512) })
    }

    /// POSTs a JSON `body` to `path` and returns the response's status.
    pub async fn post(&mut self, path: &str, body: &str) -> anyhow::Result<u16> {
        self.out.clear();
        self.out.extend_from_slice(
            format!(
                "POST {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                self.host,
                self.key,
                body.len()
            )
            .as_bytes(),
        );
        self.out.extend_from_slice(body.as_bytes());
        self.stream.write_all(&self.out).await?;
        self.read_response().await
    }

    async fn read_response(&mut self) -> anyhow::Result<u16> {
        self.buf.clear();
        let head_end = loop {
            if let Some(at) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            if self.buf.len() > MAX_RESPONSE {
                bail!("response head too long");
            }
            self.fill().await?;
        };
        let head = std::str::from_utf8(&self.buf[..head_end]).context("response head is not UTF-8")?;
        let status: u16 = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("bad status line in {head:?}"))?;
        let length: usize = head
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("content-length").then(|| value.trim().parse().ok())?
            })
            .context("response without Content-Length")?;
        if length > MAX_RESPONSE {
            bail!("response body too long");
        }
        while self.buf.len() < head_end + length {
            self.fill().await?;
        }
        Ok(status)
    }

    async fn fill(&mut self) -> anyhow::Result<()> {
        let mut chunk = [0u8; 4096];
        let n = self.stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("connection closed by the server");
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}
