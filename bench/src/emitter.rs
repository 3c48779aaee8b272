//! Broadcasts that enter through Redis the way `@socket.io/redis-emitter`
//! publishes them: msgpack `["emitter", {type: 2, data: ["message", {t, seq}],
//! nsp: "/"}, {rooms: [], except: [], flags: {}}]` on `<prefix>#/#`.
//!
//! The load generator speaks just enough RESP (PUBLISH, pipelined, replies
//! drained by a task of their own) and msgpack to do that without a Redis or
//! msgpack dependency. Every client receives every broadcast: there is no
//! sender among them.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::{Shared, now_ns};

/// A pipelined PUBLISH connection to one Redis.
pub struct Publisher {
    /// The write half; replies are read and dropped by a task.
    writer: tokio::net::tcp::OwnedWriteHalf,
    /// `<prefix>#/#`.
    channel: String,
}

impl Publisher {
    /// Connects to `url` (`redis://host:port[/db]`, no password) for `prefix`.
    pub async fn connect(url: &str, prefix: &str) -> anyhow::Result<Self> {
        let Some(rest) = url.strip_prefix("redis://") else {
            bail!("--emitter-redis must be a redis:// URL without TLS, got {url}");
        };
        let host = rest.split('/').next().unwrap_or(rest);
        let stream = TcpStream::connect(host)
            .await
            .with_context(|| format!("connecting to Redis at {host}"))?;
        stream.set_nodelay(true)?;
        let (mut reader, writer) = stream.into_split();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            while matches!(reader.read(&mut buf).await, Ok(n) if n > 0) {}
        });
        Ok(Self {
            writer,
            channel: format!("{prefix}#/#"),
        })
    }

    /// Publishes `count` broadcasts at `rate` per second (0: as fast as
    /// possible), each stamped when it is written; counts them in `shared.sent`.
    pub async fn run(mut self, rate: f64, count: u64, padding: Arc<str>, shared: Arc<Shared>) -> anyhow::Result<()> {
        let mut ticker = (rate > 0.0).then(|| {
            let mut t = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            t
        });
        let mut batch = Vec::new();
        for seq in 0..count {
            if let Some(t) = ticker.as_mut() {
                t.tick().await;
            }
            publish_command(&mut batch, &self.channel, &message(now_ns(), seq, &padding));
            shared.sent.fetch_add(1, Ordering::Relaxed);
            // Flat out, write in batches of 16 like the client senders do.
            if ticker.is_some() || seq % 16 == 15 || seq + 1 == count {
                self.writer.write_all(&batch).await?;
                batch.clear();
            }
        }
        Ok(())
    }
}

/// `PUBLISH channel payload` in RESP.
fn publish_command(out: &mut Vec<u8>, channel: &str, payload: &[u8]) {
    out.extend_from_slice(b"*3\r\n$7\r\nPUBLISH\r\n");
    for part in [channel.as_bytes(), payload] {
        out.extend_from_slice(format!("${}\r\n", part.len()).as_bytes());
        out.extend_from_slice(part);
        out.extend_from_slice(b"\r\n");
    }
}

/// The emitter's message for `emit("message", {t, seq[, p]})`.
fn message(t: u64, seq: u64, padding: &str) -> Vec<u8> {
    let mut m = Vec::with_capacity(96 + padding.len());
    m.push(0x93);
    str(&mut m, "emitter");
    m.push(0x83);
    str(&mut m, "type");
    m.push(0x02);
    str(&mut m, "data");
    m.push(0x92);
    str(&mut m, "message");
    m.push(if padding.is_empty() { 0x82 } else { 0x83 });
    str(&mut m, "t");
    m.push(0xcf);
    m.extend_from_slice(&t.to_be_bytes());
    str(&mut m, "seq");
    m.push(0xcf);
    m.extend_from_slice(&seq.to_be_bytes());
    if !padding.is_empty() {
        str(&mut m, "p");
        str(&mut m, padding);
    }
    str(&mut m, "nsp");
    str(&mut m, "/");
    m.push(0x83);
    str(&mut m, "rooms");
    m.push(0x90);
    str(&mut m, "except");
    m.push(0x90);
    str(&mut m, "flags");
    m.push(0x80);
    m
}

/// A msgpack string (str 32 covers any padding).
fn str(out: &mut Vec<u8>, s: &str) {
    let len = s.len();
    if len < 32 {
        out.push(0xa0 | len as u8);
    } else {
        out.push(0xdb);
        out.extend_from_slice(&(len as u32).to_be_bytes());
    }
    out.extend_from_slice(s.as_bytes());
}
