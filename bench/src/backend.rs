//! `ecos-bench --webhook-backend ADDR`: a stand-in webhooks backend for the
//! `webhooks` scenario of bench/run (docs/webhooks.md, docs/performance.md).
//!
//! It answers every `POST` at once, on the keep-alive connection it came in
//! on: `{"allow":true}` to a connect hook (`X-Ecos-Event: connect`) and
//! `{"ok":true}` to anything else. It checks no signature and parses no JSON:
//! it stands for a backend whose own time is next to nothing, so what the
//! scenario measures is what ecos adds (its HTTP client, the slot, the
//! signing, the ack). It prints `listening <port>` on stdout once bound, and
//! runs until killed.

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Largest request accepted (webhook bodies in the benchmark are tiny).
const MAX_REQUEST: usize = 1 << 20;

const ALLOW: &str = "{\"allow\":true}";
const OK: &str = "{\"ok\":true}";

/// Binds `addr` (`127.0.0.1:0` for any port) and serves until the process ends.
pub async fn serve(addr: &str) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr).await.with_context(|| format!("bind {addr}"))?;
    println!("listening {}", listener.local_addr()?.port());
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        tokio::spawn(async move {
            if let Err(e) = connection(stream).await {
                eprintln!("webhook backend: {e:#}");
            }
        });
    }
}

/// Serves one keep-alive connection: every complete request in the buffer
/// is answered, in order, with one write per read.
async fn connection(mut stream: TcpStream) -> anyhow::Result<()> {
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut out: Vec<u8> = Vec::with_capacity(512);
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        let mut used = 0;
        while let Some(at) = buf[used..].windows(4).position(|w| w == b"\r\n\r\n") {
            let head_end = used + at + 4;
            let head = std::str::from_utf8(&buf[used..head_end]).context("request head is not UTF-8")?;
            let (length, connect) = inspect(head)?;
            if buf.len() < head_end + length {
                break;
            }
            let body = if connect { ALLOW } else { OK };
            out.extend_from_slice(
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            );
            used = head_end + length;
        }
        buf.drain(..used);
        if !out.is_empty() {
            stream.write_all(&out).await?;
            out.clear();
        }
        if buf.len() > MAX_REQUEST {
            bail!("request over {MAX_REQUEST} bytes");
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The body length of a request head, and whether it is a connect hook.
fn inspect(head: &str) -> anyhow::Result<(usize, bool)> {
    let (mut length, mut connect) = (0, false);
    for line in head.lines().skip(1) {
        let Some((name, value)) = line.split_once(':') else { continue };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = value.parse().with_context(|| format!("Content-Length {value:?}"))?;
        } else if name.eq_ignore_ascii_case("x-ecos-event") {
            connect = value == "connect";
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            bail!("Transfer-Encoding {value} is not supported by this stand-in backend");
        }
    }
    Ok((length, connect))
}
