//! The little of RFC 6455 a load generator needs, written out so that reading
//! a message costs a buffer scan and no allocation: the generator has one
//! core and has to read ~150k messages a second without becoming the
//! bottleneck it is meant to measure.
//!
//! Client side only: an upgrade request, unmasked frames from the server read
//! from one growing buffer, masked frames to the server. Servers under test
//! (ecos, Node's `ws`) send each message as one frame; a fragmented message is
//! reported as an error rather than reassembled.

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest frame accepted from a server (benchmark messages are tiny).
const MAX_FRAME: usize = 16 << 20;

/// One frame from the server, borrowed from the read buffer.
pub enum Frame<'a> {
    /// A text message.
    Text(&'a str),
    /// A WebSocket ping, to be answered with this payload.
    Ping(&'a [u8]),
    /// A close frame.
    Close,
    /// Binary data or a pong: not used by the benchmark.
    Other,
}

/// A WebSocket client connection.
pub struct Ws {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Start of unconsumed bytes in `buf`.
    start: usize,
    /// State of the masking-key generator (xorshift; RFC 6455 wants keys a
    /// proxy cannot predict, which does not matter on loopback).
    mask_state: u32,
    out: Vec<u8>,
}

impl Ws {
    /// Connects and performs the HTTP upgrade for `path` on `host`.
    pub async fn connect(host: &str, path: &str, seed: u32) -> anyhow::Result<Ws> {
        let mut stream = TcpStream::connect(host).await.with_context(|| format!("connect {host}"))?;
        stream.set_nodelay(true)?;
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await?;
        let mut buf = Vec::with_capacity(4096);
        let head_end = loop {
            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            if buf.len() > 16 * 1024 {
                bail!("upgrade response head too long");
            }
            let mut chunk = [0u8; 1024];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                bail!("connection closed during the upgrade");
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]);
        if !head.starts_with("HTTP/1.1 101") {
            bail!("upgrade refused: {}", head.lines().next().unwrap_or_default());
        }
        Ok(Ws {
            stream,
            buf,
            start: head_end,
            mask_state: seed | 1,
            out: Vec::with_capacity(256),
        })
    }

    /// A connection that needs no upgrade: the kernel-floor mode's raw TCP
    /// stream, on which its writer sends WebSocket frames from the start.
    pub fn from_stream(stream: TcpStream) -> Ws {
        Ws {
            stream,
            buf: Vec::with_capacity(4096),
            start: 0,
            mask_state: 1,
            out: Vec::new(),
        }
    }

    /// Reads more bytes from the socket into the buffer; `Ok(0)` at end of stream.
    ///
    /// Cancel-safe: nothing is lost if the future is dropped before it completes.
    pub async fn fill(&mut self) -> anyhow::Result<usize> {
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > 0 && self.buf.len() + 16 * 1024 > self.buf.capacity() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        if self.buf.capacity() - self.buf.len() < 16 * 1024 {
            self.buf.reserve(64 * 1024);
        }
        Ok(self.stream.read_buf(&mut self.buf).await?)
    }

    /// The next complete frame already buffered, if any.
    pub fn next_frame(&mut self) -> anyhow::Result<Option<Frame<'_>>> {
        let avail = &self.buf[self.start..];
        if avail.len() < 2 {
            return Ok(None);
        }
        let (b0, b1) = (avail[0], avail[1]);
        if b1 & 0x80 != 0 {
            bail!("masked frame from the server");
        }
        let (len, header) = match b1 & 0x7f {
            126 if avail.len() >= 4 => (u16::from_be_bytes([avail[2], avail[3]]) as usize, 4),
            127 if avail.len() >= 10 => {
                let mut n = [0u8; 8];
                n.copy_from_slice(&avail[2..10]);
                (u64::from_be_bytes(n) as usize, 10)
            }
            126 | 127 => return Ok(None),
            n => (n as usize, 2),
        };
        if len > MAX_FRAME {
            bail!("frame of {len} bytes");
        }
        if avail.len() < header + len {
            return Ok(None);
        }
        let begin = self.start + header;
        self.start = begin + len;
        let payload = &self.buf[begin..begin + len];
        if b0 & 0x80 == 0 || b0 & 0x0f == 0 {
            bail!("fragmented message (not supported by the load generator)");
        }
        Ok(Some(match b0 & 0x0f {
            0x1 => Frame::Text(std::str::from_utf8(payload).context("text frame is not UTF-8")?),
            0x8 => Frame::Close,
            0x9 => Frame::Ping(payload),
            _ => Frame::Other,
        }))
    }

    fn next_mask(&mut self) -> [u8; 4] {
        let mut x = self.mask_state;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.mask_state = x;
        x.to_ne_bytes()
    }

    /// Appends a masked frame to the output buffer (sent by [`Ws::flush`]).
    pub fn queue(&mut self, opcode: u8, payload: &[u8]) {
        let mask = self.next_mask();
        self.out.push(0x80 | opcode);
        match payload.len() {
            n if n < 126 => self.out.push(0x80 | n as u8),
            n if n <= u16::MAX as usize => {
                self.out.push(0x80 | 126);
                self.out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                self.out.push(0x80 | 127);
                self.out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        self.out.extend_from_slice(&mask);
        self.out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    }

    /// Queues a text message.
    pub fn queue_text(&mut self, text: &str) {
        self.queue(0x1, text.as_bytes());
    }

    /// Writes everything queued.
    pub async fn flush(&mut self) -> anyhow::Result<()> {
        if !self.out.is_empty() {
            self.stream.write_all(&self.out).await?;
            self.out.clear();
        }
        Ok(())
    }
}
