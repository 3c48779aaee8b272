//! A minimal Socket.IO v5 / Engine.IO v4 client for the integration tests.
//!
//! It deliberately implements the wire protocol by hand instead of using a
//! Socket.IO client crate, so the tests observe exactly what the server puts on
//! the wire and can also send malformed input. One client is bound to exactly
//! one namespace on one Engine.IO session; WebSocket connects directly to the
//! websocket transport and polling never upgrades, so each test knows which
//! transport it exercises.
//!
//! Each client owns two background tasks (reader and writer). The reader
//! answers Engine.IO pings, reassembles binary packets and forwards events and
//! acks; the writer serialises all outgoing frames so that a binary packet's
//! attachments are never interleaved with other packets.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use base64::Engine as _;
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Instant, timeout, timeout_at};
use tokio_tungstenite::tungstenite::Message;

/// Upper bound for connecting, acks, `expect_event` and each write, so a broken server fails a test instead of hanging it.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

const RECORD_SEPARATOR: char = '\x1e';

/// Which Engine.IO transport a client speaks for its whole life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Direct `transport=websocket` connection, no polling handshake or upgrade.
    WebSocket,
    /// HTTP long-polling only (GET to receive, POST to send), never upgraded.
    Polling,
}

/// One received Socket.IO EVENT or BINARY_EVENT.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The event name (first element of the packet's JSON array).
    pub name: String,
    /// The remaining elements of the packet's JSON array, placeholders kept so tests can see where each attachment sat.
    pub args: Vec<Value>,
    /// Attachment `i` is what `{"_placeholder":true,"num":i}` stands for; empty for plain EVENT packets.
    pub binaries: Vec<Vec<u8>>,
    /// Set when the server expects an acknowledgement (reply with [`SioClient::ack`]).
    pub ack_id: Option<u64>,
}

/// The payload of an ACK or BINARY_ACK the server sent back.
#[derive(Debug, Clone, PartialEq)]
pub struct AckReply {
    /// The ack's JSON array elements (placeholders kept for binary acks).
    pub args: Vec<Value>,
    /// Binary attachments in placeholder order; empty for plain ACK packets.
    pub binaries: Vec<Vec<u8>>,
}

/// Why `connect_ns` failed: tests need to tell a deliberate refusal from a broken transport.
#[derive(Debug)]
pub enum ConnectError {
    /// The server answered with CONNECT_ERROR; holds its `message` (or the raw JSON if there is none).
    Refused(String),
    /// Anything else: network failure, protocol violation or timeout.
    Transport(anyhow::Error),
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectError::Refused(msg) => write!(f, "connection refused by server: {msg}"),
            ConnectError::Transport(e) => write!(f, "transport error while connecting: {e:#}"),
        }
    }
}

impl std::error::Error for ConnectError {}

impl From<anyhow::Error> for ConnectError {
    fn from(e: anyhow::Error) -> Self {
        ConnectError::Transport(e)
    }
}

/// A connected Socket.IO client bound to one namespace.
pub struct SioClient {
    transport: Transport,
    ns: String,
    sid: String,
    handshake: Value,
    out: mpsc::UnboundedSender<Cmd>,
    inbound: mpsc::UnboundedReceiver<Inbound>,
    /// Events put back by `assert_no_event`, delivered before new ones.
    stash: VecDeque<Event>,
    acks: AckWaiters,
    next_ack_id: AtomicU64,
    shared: Arc<Shared>,
    closed_rx: watch::Receiver<bool>,
    writer_done: Option<oneshot::Receiver<()>>,
}

impl SioClient {
    /// EIO handshake + Socket.IO CONNECT to namespace "/" with no auth; returns once the server's CONNECT packet arrived.
    pub async fn connect(addr: SocketAddr, transport: Transport) -> anyhow::Result<Self> {
        Ok(Self::connect_ns(addr, transport, "/", None).await?)
    }

    /// Same for any namespace and optional auth payload; a CONNECT_ERROR (`44{"message":...}`) becomes Err(ConnectError::Refused(message)).
    pub async fn connect_ns(
        addr: SocketAddr,
        transport: Transport,
        ns: &str,
        auth: Option<Value>,
    ) -> Result<Self, ConnectError> {
        let ns = normalize_ns(ns);
        match timeout(
            DEFAULT_TIMEOUT,
            Self::connect_inner(addr, transport, ns.clone(), auth),
        )
        .await
        {
            Ok(res) => res,
            Err(_) => Err(ConnectError::Transport(anyhow!(
                "timed out after {DEFAULT_TIMEOUT:?} connecting to {addr} ({transport:?}, namespace {ns})"
            ))),
        }
    }

    async fn connect_inner(
        addr: SocketAddr,
        transport: Transport,
        ns: String,
        auth: Option<Value>,
    ) -> Result<Self, ConnectError> {
        let (closed_tx, closed_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            closed_tx,
            reason: Mutex::new(None),
            auto_answer: Mutex::new(Vec::new()),
        });
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        let (in_tx, in_rx) = mpsc::unbounded_channel();
        let (writer_done_tx, writer_done_rx) = oneshot::channel();
        let acks: AckWaiters = Arc::default();
        let reader = Reader {
            ns: ns.clone(),
            shared: shared.clone(),
            out: out_tx.clone(),
            inbound: in_tx,
            acks: acks.clone(),
            pending: None,
        };

        let handshake = match transport {
            Transport::WebSocket => {
                let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
                let (ws, _resp) = tokio_tungstenite::connect_async(url.as_str())
                    .await
                    .with_context(|| format!("websocket connect to {url}"))?;
                let (sink, mut stream) = ws.split();
                // The server speaks first on a direct websocket connection.
                let open = loop {
                    match stream.next().await {
                        Some(Ok(Message::Text(t))) => break t.to_string(),
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                        Some(Ok(other)) => {
                            return Err(anyhow!("expected OPEN packet, got {other:?}").into());
                        }
                        Some(Err(e)) => {
                            return Err(anyhow!("websocket error before OPEN: {e}").into());
                        }
                        None => return Err(anyhow!("websocket closed before OPEN packet").into()),
                    }
                };
                let handshake = parse_open(&open)?;
                tokio::spawn(ws_reader(stream, reader, closed_rx.clone()));
                tokio::spawn(ws_writer(
                    sink,
                    out_rx,
                    shared.clone(),
                    closed_rx.clone(),
                    writer_done_tx,
                ));
                handshake
            }
            Transport::Polling => {
                ecos::app::install_crypto_provider();
                let http = reqwest::Client::builder()
                    .no_proxy()
                    .build()
                    .context("building HTTP client")?;
                let url = format!("http://{addr}/socket.io/?EIO=4&transport=polling");
                let resp = http
                    .get(&url)
                    .timeout(DEFAULT_TIMEOUT)
                    .send()
                    .await
                    .with_context(|| format!("polling handshake GET {url}"))?;
                let status = resp.status();
                let body = resp.text().await.context("reading handshake body")?;
                if !status.is_success() {
                    return Err(anyhow!("polling handshake returned {status}: {body}").into());
                }
                let open = body.split(RECORD_SEPARATOR).next().unwrap_or_default();
                let handshake = parse_open(open)?;
                let sid = handshake["sid"].as_str().unwrap_or_default();
                let session_url = format!("{url}&sid={sid}");
                // A GET is held open for up to pingInterval, so its timeout must exceed it.
                let poll_timeout = Duration::from_millis(
                    handshake["pingInterval"].as_u64().unwrap_or(25_000)
                        + handshake["pingTimeout"].as_u64().unwrap_or(20_000),
                ) + DEFAULT_TIMEOUT;
                tokio::spawn(polling_reader(
                    http.clone(),
                    session_url.clone(),
                    poll_timeout,
                    reader,
                    closed_rx.clone(),
                ));
                tokio::spawn(polling_writer(
                    http,
                    session_url,
                    out_rx,
                    shared.clone(),
                    closed_rx.clone(),
                    writer_done_tx,
                ));
                handshake
            }
        };
        if !handshake["sid"].is_string() {
            return Err(anyhow!("OPEN packet has no string sid: {handshake}").into());
        }

        let mut client = SioClient {
            transport,
            ns,
            sid: String::new(),
            handshake,
            out: out_tx,
            inbound: in_rx,
            stash: VecDeque::new(),
            acks,
            next_ack_id: AtomicU64::new(0),
            shared,
            closed_rx,
            writer_done: Some(writer_done_rx),
        };

        let connect = encode_sio(0, &client.ns, None, None, auth.as_ref());
        client
            .send_frames(vec![Frame::Text(format!("4{connect}"))])
            .await?;
        loop {
            match client.inbound.recv().await {
                Some(Inbound::Connected(sid)) => {
                    client.sid = sid;
                    return Ok(client);
                }
                Some(Inbound::ConnectError(msg)) => return Err(ConnectError::Refused(msg)),
                Some(_) => continue,
                None => {
                    return Err(anyhow!(
                        "session ended before the CONNECT reply: {}",
                        client.close_reason().unwrap_or_default()
                    )
                    .into());
                }
            }
        }
    }

    /// The Socket.IO socket id from the CONNECT packet.
    pub fn sid(&self) -> &str {
        &self.sid
    }

    /// The OPEN packet JSON (sid, upgrades, pingInterval, pingTimeout, maxPayload).
    pub fn handshake(&self) -> &Value {
        &self.handshake
    }

    /// Emits an EVENT without asking for an ack; resolves once the frame was written (WS) or POSTed (polling).
    pub async fn emit(&self, event: &str, args: Vec<Value>) -> anyhow::Result<()> {
        let data = event_array(event, args);
        let packet = encode_sio(2, &self.ns, None, None, Some(&data));
        self.send_frames(vec![Frame::Text(format!("4{packet}"))])
            .await
    }

    /// args may contain `{"_placeholder":true,"num":i}` objects; binaries are sent as attachments.
    pub async fn emit_binary(
        &self,
        event: &str,
        args: Vec<Value>,
        binaries: Vec<Vec<u8>>,
    ) -> anyhow::Result<()> {
        let data = event_array(event, args);
        self.send_frames(binary_frames(5, &self.ns, None, &data, binaries))
            .await
    }

    /// Emits with an ack id and waits (up to 5 s) for the matching ACK / BINARY_ACK; returns its args.
    pub async fn emit_with_ack(
        &mut self,
        event: &str,
        args: Vec<Value>,
    ) -> anyhow::Result<Vec<Value>> {
        Ok(self
            .emit_binary_with_ack(event, args, Vec::new())
            .await?
            .args)
    }

    /// Like `emit_with_ack`, through a shared reference, so several requests can wait at once.
    pub async fn request(&self, event: &str, args: Vec<Value>) -> anyhow::Result<Vec<Value>> {
        Ok(self.request_ack(event, args, Vec::new()).await?.args)
    }

    /// Like `emit_with_ack` but sends attachments (none = plain EVENT) and returns the ack's attachments too.
    pub async fn emit_binary_with_ack(
        &mut self,
        event: &str,
        args: Vec<Value>,
        binaries: Vec<Vec<u8>>,
    ) -> anyhow::Result<AckReply> {
        self.request_ack(event, args, binaries).await
    }

    /// Like `emit_with_ack`, but while waiting it acks (with `[null]`) every server event named `answer` that asks for one, since the server may only ack us after we acked it; those events are consumed, not delivered.
    pub async fn emit_with_ack_answering(
        &self,
        event: &str,
        args: Vec<Value>,
        answer: &str,
    ) -> anyhow::Result<Vec<Value>> {
        lock(&self.shared.auto_answer).push(answer.to_owned());
        // Removes the rule even if the caller drops this future midway.
        let _rule = AutoAnswerRule {
            shared: &self.shared,
            name: answer,
        };
        Ok(self.request_ack(event, args, Vec::new()).await?.args)
    }

    async fn request_ack(
        &self,
        event: &str,
        args: Vec<Value>,
        binaries: Vec<Vec<u8>>,
    ) -> anyhow::Result<AckReply> {
        let id = self.next_ack_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.acks).insert(id, tx);
        let data = event_array(event, args);
        let frames = if binaries.is_empty() {
            vec![Frame::Text(format!(
                "4{}",
                encode_sio(2, &self.ns, None, Some(id), Some(&data))
            ))]
        } else {
            binary_frames(5, &self.ns, Some(id), &data, binaries)
        };
        if let Err(e) = self.send_frames(frames).await {
            lock(&self.acks).remove(&id);
            return Err(e);
        }
        match timeout(DEFAULT_TIMEOUT, rx).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_)) => bail!(
                "session closed before the ack for `{event}` (id {id}) arrived: {}",
                self.close_reason().unwrap_or_default()
            ),
            Err(_) => {
                lock(&self.acks).remove(&id);
                bail!("no ack for `{event}` (id {id}) within {DEFAULT_TIMEOUT:?}")
            }
        }
    }

    /// Replies to an event the server emitted with an ack id.
    pub async fn ack(&self, ack_id: u64, args: Vec<Value>) -> anyhow::Result<()> {
        let packet = encode_sio(3, &self.ns, None, Some(ack_id), Some(&Value::Array(args)));
        self.send_frames(vec![Frame::Text(format!("4{packet}"))])
            .await
    }

    /// Replies with a BINARY_ACK; args may contain placeholders for `binaries`.
    pub async fn ack_binary(
        &self,
        ack_id: u64,
        args: Vec<Value>,
        binaries: Vec<Vec<u8>>,
    ) -> anyhow::Result<()> {
        let frames = binary_frames(6, &self.ns, Some(ack_id), &Value::Array(args), binaries);
        self.send_frames(frames).await
    }

    async fn recv_event_until(&mut self, deadline: Instant) -> Option<Event> {
        if let Some(ev) = self.stash.pop_front() {
            return Some(ev);
        }
        loop {
            match timeout_at(deadline, self.inbound.recv()).await {
                Ok(Some(Inbound::Event(ev))) => return Some(ev),
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => return None,
            }
        }
    }

    /// Waits up to 5 s for the next event named `name`, skipping (and discarding) others; panics with a clear message otherwise.
    pub async fn expect_event(&mut self, name: &str) -> Event {
        let deadline = Instant::now() + DEFAULT_TIMEOUT;
        let mut skipped = Vec::new();
        while let Some(ev) = self.recv_event_until(deadline).await {
            if ev.name == name {
                return ev;
            }
            skipped.push(ev.name);
        }
        panic!(
            "expected event `{name}` within {DEFAULT_TIMEOUT:?} on {} ({:?}, sid {}); skipped events: {skipped:?}; session open: {}; close reason: {:?}",
            self.ns,
            self.transport,
            self.sid,
            self.is_open(),
            self.close_reason()
        );
    }

    /// Panics if any event named `name` arrives within `within`; other events are kept for later `expect_event` calls.
    pub async fn assert_no_event(&mut self, name: &str, within: Duration) {
        let deadline = Instant::now() + within;
        let mut kept = std::mem::take(&mut self.stash);
        if let Some(ev) = kept.iter().find(|ev| ev.name == name) {
            panic!("unexpected event `{name}` (already received): {ev:?}");
        }
        loop {
            match timeout_at(deadline, self.inbound.recv()).await {
                Ok(Some(Inbound::Event(ev))) if ev.name == name => {
                    panic!("unexpected event `{name}` within {within:?}: {ev:?}")
                }
                Ok(Some(Inbound::Event(ev))) => kept.push_back(ev),
                Ok(Some(_)) => continue,
                Ok(None) => {
                    // Nothing more can arrive once the reader is gone; wait out the window anyway
                    // so callers get the same timing on both paths.
                    tokio::time::sleep_until(deadline).await;
                    break;
                }
                Err(_) => break,
            }
        }
        self.stash = kept;
    }

    /// Sends one raw Engine.IO text packet exactly as given (e.g. "4garbage"), for malformed-input tests; Ok even if the server rejects it (polling 4xx), so check `wait_closed`.
    pub async fn send_raw_text(&self, packet: &str) -> anyhow::Result<()> {
        self.write(vec![Frame::Text(packet.to_owned())], true).await
    }

    /// Resolves true once the server has ended this session (WS close / polling 400 or error / Socket.IO DISCONNECT `41` / EIO CLOSE) within `within`.
    pub async fn wait_closed(&mut self, within: Duration) -> bool {
        matches!(
            timeout(within, self.closed_rx.wait_for(|closed| *closed)).await,
            Ok(Ok(_))
        )
    }

    /// Whether the session is still open as far as the client knows.
    pub fn is_open(&self) -> bool {
        !*self.closed_rx.borrow()
    }

    /// Why the session ended (for assertion messages), or None while it is open.
    pub fn close_reason(&self) -> Option<String> {
        lock(&self.shared.reason).clone()
    }

    /// Sends Socket.IO DISCONNECT and closes the transport; a session the server already ended is not an error.
    pub async fn disconnect(mut self) -> anyhow::Result<()> {
        if !self.is_open() {
            return Ok(());
        }
        let packet = encode_sio(1, &self.ns, None, None, None);
        self.send_frames(vec![Frame::Text(format!("4{packet}"))])
            .await
            .context("sending DISCONNECT")?;
        let (tx, rx) = oneshot::channel();
        if self.out.send(Cmd::Close { done: tx }).is_ok() {
            let _ = timeout(DEFAULT_TIMEOUT, rx).await;
        }
        // Make sure the writer has released the transport before returning, so the server sees the close.
        if let Some(done) = self.writer_done.take() {
            let _ = timeout(DEFAULT_TIMEOUT, done).await;
        }
        Ok(())
    }

    async fn send_frames(&self, frames: Vec<Frame>) -> anyhow::Result<()> {
        self.write(frames, false).await
    }

    /// `raw` writes count as done once the server answered at all, so a polling POST the
    /// server rejects behaves like a WS frame it rejects: Ok, and the session ends.
    async fn write(&self, frames: Vec<Frame>, raw: bool) -> anyhow::Result<()> {
        if !self.is_open() {
            bail!(
                "session is closed: {}",
                self.close_reason().unwrap_or_default()
            );
        }
        let (tx, rx) = oneshot::channel();
        self.out
            .send(Cmd::Send {
                frames,
                raw,
                done: Some(tx),
            })
            .map_err(|_| anyhow!("session writer has stopped"))?;
        match timeout(DEFAULT_TIMEOUT, rx).await {
            Ok(Ok(res)) => res,
            Ok(Err(_)) => bail!(
                "session closed before the write completed: {}",
                self.close_reason().unwrap_or_default()
            ),
            Err(_) => bail!("write did not complete within {DEFAULT_TIMEOUT:?}"),
        }
    }
}

struct AutoAnswerRule<'a> {
    shared: &'a Shared,
    name: &'a str,
}

impl Drop for AutoAnswerRule<'_> {
    fn drop(&mut self) {
        let mut rules = lock(&self.shared.auto_answer);
        if let Some(i) = rules.iter().position(|n| n == self.name) {
            rules.remove(i);
        }
    }
}

impl Drop for SioClient {
    fn drop(&mut self) {
        // Stops both background tasks, which drops the transport; the server notices via
        // the closed socket (WS) or the heartbeat timeout (polling).
        self.shared.mark_closed("client dropped");
    }
}

// ---------------------------------------------------------------------------
// Background tasks
// ---------------------------------------------------------------------------

type AckWaiters = Arc<Mutex<HashMap<u64, oneshot::Sender<AckReply>>>>;

/// State both background tasks and the handle see, so either side can end the session.
struct Shared {
    closed_tx: watch::Sender<bool>,
    reason: Mutex<Option<String>>,
    /// Event names the reader acks by itself (with `[null]`) instead of delivering them.
    auto_answer: Mutex<Vec<String>>,
}

impl Shared {
    fn mark_closed(&self, reason: impl Into<String>) {
        {
            let mut r = lock(&self.reason);
            if r.is_none() {
                *r = Some(reason.into());
            }
        }
        self.closed_tx.send_replace(true);
    }
}

/// One Engine.IO packet as it travels on the transport.
#[derive(Debug)]
enum Frame {
    Text(String),
    Binary(Vec<u8>),
}

enum Cmd {
    /// Frames written back to back; `done` reports the write result.
    Send {
        frames: Vec<Frame>,
        raw: bool,
        done: Option<oneshot::Sender<anyhow::Result<()>>>,
    },
    /// Close the transport politely and end the session.
    Close { done: oneshot::Sender<()> },
}

enum Inbound {
    Connected(String),
    ConnectError(String),
    Event(Event),
}

/// What a binary packet's header promised, while its attachments are still arriving.
struct PendingBinary {
    ty: u8,
    id: Option<u64>,
    data: Value,
    expected: usize,
    binaries: Vec<Vec<u8>>,
}

/// Transport-independent decoding of received Engine.IO frames.
struct Reader {
    ns: String,
    shared: Arc<Shared>,
    out: mpsc::UnboundedSender<Cmd>,
    inbound: mpsc::UnboundedSender<Inbound>,
    acks: AckWaiters,
    pending: Option<PendingBinary>,
}

impl Reader {
    /// Err(reason) means the session is over and the reader must stop.
    fn handle(&mut self, frame: Frame) -> Result<(), String> {
        match frame {
            Frame::Binary(bin) => {
                let Some(pending) = self.pending.as_mut() else {
                    eprintln!("[sio-client] binary frame without a pending binary packet ignored");
                    return Ok(());
                };
                pending.binaries.push(bin);
                if pending.binaries.len() >= pending.expected
                    && let Some(done) = self.pending.take()
                {
                    self.dispatch(done.ty, done.id, done.data, done.binaries);
                }
                Ok(())
            }
            Frame::Text(text) => {
                let mut chars = text.chars();
                match chars.next() {
                    Some('1') => Err("server sent Engine.IO CLOSE (1)".into()),
                    Some('2') => {
                        let probe = chars.as_str().to_owned();
                        let _ = self.out.send(Cmd::Send {
                            frames: vec![Frame::Text(format!("3{probe}"))],
                            raw: false,
                            done: None,
                        });
                        Ok(())
                    }
                    Some('4') => self.handle_sio(chars.as_str()),
                    Some('0' | '3' | '5' | '6') => Ok(()),
                    _ => {
                        eprintln!("[sio-client] unknown Engine.IO packet ignored: {text:?}");
                        Ok(())
                    }
                }
            }
        }
    }

    fn handle_sio(&mut self, raw: &str) -> Result<(), String> {
        let packet = match decode_sio(raw) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("[sio-client] undecodable Socket.IO packet {raw:?} ignored: {e}");
                return Ok(());
            }
        };
        if packet.ns != self.ns {
            return Ok(());
        }
        match packet.ty {
            0 => {
                let sid = packet
                    .data
                    .as_ref()
                    .and_then(|d| d["sid"].as_str())
                    .unwrap_or_default()
                    .to_owned();
                let _ = self.inbound.send(Inbound::Connected(sid));
            }
            1 => return Err("server sent Socket.IO DISCONNECT (41)".into()),
            2 | 3 => {
                let data = packet.data.unwrap_or(Value::Null);
                self.dispatch(packet.ty, packet.id, data, Vec::new());
            }
            4 => {
                let msg = match &packet.data {
                    Some(Value::Object(o)) => match o.get("message") {
                        Some(Value::String(s)) => s.clone(),
                        _ => Value::Object(o.clone()).to_string(),
                    },
                    Some(other) => other.to_string(),
                    None => String::new(),
                };
                let _ = self.inbound.send(Inbound::ConnectError(msg));
            }
            5 | 6 => {
                let data = packet.data.unwrap_or(Value::Null);
                if packet.attachments == 0 {
                    self.dispatch(packet.ty, packet.id, data, Vec::new());
                } else {
                    self.pending = Some(PendingBinary {
                        ty: packet.ty,
                        id: packet.id,
                        data,
                        expected: packet.attachments,
                        binaries: Vec::new(),
                    });
                }
            }
            _ => eprintln!("[sio-client] unknown Socket.IO packet type ignored: {raw:?}"),
        }
        Ok(())
    }

    fn dispatch(&mut self, ty: u8, id: Option<u64>, data: Value, binaries: Vec<Vec<u8>>) {
        let mut items = match data {
            Value::Array(items) => items,
            other => {
                eprintln!("[sio-client] packet data is not an array, ignored: {other}");
                return;
            }
        };
        match ty {
            2 | 5 => {
                if items.is_empty() {
                    eprintln!("[sio-client] event without a name ignored");
                    return;
                }
                let name = match items.remove(0) {
                    Value::String(s) => s,
                    other => {
                        eprintln!("[sio-client] event name is not a string, ignored: {other}");
                        return;
                    }
                };
                if let Some(ack_id) = id
                    && lock(&self.shared.auto_answer).contains(&name)
                {
                    // `[null]` rather than `[]`: socketioxide fails to decode an empty ack into any non-tuple type.
                    let ack = encode_sio(
                        3,
                        &self.ns,
                        None,
                        Some(ack_id),
                        Some(&Value::Array(vec![Value::Null])),
                    );
                    let _ = self.out.send(Cmd::Send {
                        frames: vec![Frame::Text(format!("4{ack}"))],
                        raw: false,
                        done: None,
                    });
                    return;
                }
                let _ = self.inbound.send(Inbound::Event(Event {
                    name,
                    args: items,
                    binaries,
                    ack_id: id,
                }));
            }
            _ => {
                let Some(id) = id else {
                    eprintln!("[sio-client] ack without id ignored");
                    return;
                };
                // A late ack (after emit_with_ack timed out) has no waiter any more.
                if let Some(tx) = lock(&self.acks).remove(&id) {
                    let _ = tx.send(AckReply {
                        args: items,
                        binaries,
                    });
                }
            }
        }
    }

    fn finish(self) {
        // Dropping the waiters makes pending emit_with_ack calls fail fast instead of timing out.
        lock(&self.acks).clear();
    }
}

type WsStream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn ws_reader(
    mut stream: futures_util::stream::SplitStream<WsStream>,
    mut reader: Reader,
    mut closed_rx: watch::Receiver<bool>,
) {
    loop {
        let msg = tokio::select! {
            _ = closed_rx.wait_for(|c| *c) => break,
            msg = stream.next() => msg,
        };
        let frame = match msg {
            Some(Ok(Message::Text(t))) => Frame::Text(t.to_string()),
            Some(Ok(Message::Binary(b))) => Frame::Binary(b.to_vec()),
            Some(Ok(Message::Close(frame))) => {
                reader
                    .shared
                    .mark_closed(format!("websocket closed by server: {frame:?}"));
                break;
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => {
                reader.shared.mark_closed(format!("websocket error: {e}"));
                break;
            }
            None => {
                reader.shared.mark_closed("websocket stream ended");
                break;
            }
        };
        if let Err(reason) = reader.handle(frame) {
            reader.shared.mark_closed(reason);
            break;
        }
    }
    reader.finish();
}

/// The next command for a writer, or None once the session is closed or the client dropped.
async fn next_command(
    out_rx: &mut mpsc::UnboundedReceiver<Cmd>,
    closed_rx: &mut watch::Receiver<bool>,
) -> Option<Cmd> {
    tokio::select! {
        biased;
        cmd = out_rx.recv() => cmd,
        _ = closed_rx.wait_for(|c| *c) => None,
    }
}

async fn ws_writer(
    mut sink: futures_util::stream::SplitSink<WsStream, Message>,
    mut out_rx: mpsc::UnboundedReceiver<Cmd>,
    shared: Arc<Shared>,
    mut closed_rx: watch::Receiver<bool>,
    done_tx: oneshot::Sender<()>,
) {
    while let Some(cmd) = next_command(&mut out_rx, &mut closed_rx).await {
        match cmd {
            Cmd::Send { frames, done, .. } => {
                let mut res = Ok(());
                for frame in frames {
                    let msg = match frame {
                        Frame::Text(t) => Message::text(t),
                        Frame::Binary(b) => Message::binary(b),
                    };
                    if let Err(e) = sink.feed(msg).await {
                        res = Err(e);
                        break;
                    }
                }
                if res.is_ok() {
                    res = sink.flush().await;
                }
                let failed = res.is_err();
                let res = res.map_err(|e| anyhow!("websocket write failed: {e}"));
                if let Err(e) = &res {
                    shared.mark_closed(format!("{e:#}"));
                }
                if let Some(done) = done {
                    let _ = done.send(res);
                }
                if failed {
                    break;
                }
            }
            Cmd::Close { done } => {
                let _ = timeout(DEFAULT_TIMEOUT, sink.send(Message::Close(None))).await;
                shared.mark_closed("closed by client");
                let _ = done.send(());
                break;
            }
        }
    }
    let _ = timeout(Duration::from_secs(1), sink.close()).await;
    drop(sink);
    let _ = done_tx.send(());
}

async fn polling_reader(
    http: reqwest::Client,
    url: String,
    poll_timeout: Duration,
    mut reader: Reader,
    mut closed_rx: watch::Receiver<bool>,
) {
    'outer: loop {
        let res = tokio::select! {
            _ = closed_rx.wait_for(|c| *c) => break,
            res = poll_once(&http, &url, poll_timeout) => res,
        };
        let body = match res {
            Ok(body) => body,
            Err(reason) => {
                reader.shared.mark_closed(reason);
                break;
            }
        };
        for packet in body.split(RECORD_SEPARATOR).filter(|p| !p.is_empty()) {
            let frame = match packet.strip_prefix('b') {
                Some(b64) => match base64::engine::general_purpose::STANDARD.decode(b64) {
                    Ok(bin) => Frame::Binary(bin),
                    Err(e) => {
                        reader
                            .shared
                            .mark_closed(format!("invalid base64 in polling payload: {e}"));
                        break 'outer;
                    }
                },
                None => Frame::Text(packet.to_owned()),
            };
            if let Err(reason) = reader.handle(frame) {
                reader.shared.mark_closed(reason);
                break 'outer;
            }
        }
    }
    reader.finish();
}

/// One long-poll GET; Err carries the close reason.
async fn poll_once(
    http: &reqwest::Client,
    url: &str,
    poll_timeout: Duration,
) -> Result<String, String> {
    let resp = http
        .get(url)
        .timeout(poll_timeout)
        .send()
        .await
        .map_err(|e| format!("polling GET failed: {}", e.without_url()))?;
    let status = resp.status();
    let body = resp
        .text()
        .await
        .map_err(|e| format!("reading polling GET body failed: {}", e.without_url()))?;
    if !status.is_success() {
        return Err(format!("polling GET returned {status}: {body}"));
    }
    Ok(body)
}

async fn polling_writer(
    http: reqwest::Client,
    url: String,
    mut out_rx: mpsc::UnboundedReceiver<Cmd>,
    shared: Arc<Shared>,
    mut closed_rx: watch::Receiver<bool>,
    done_tx: oneshot::Sender<()>,
) {
    while let Some(cmd) = next_command(&mut out_rx, &mut closed_rx).await {
        match cmd {
            Cmd::Send { frames, raw, done } => {
                let (res, failed) = match post(&http, &url, encode_payload(frames)).await {
                    Ok(()) => (Ok(()), false),
                    // The server may reject a POST yet keep the session (e.g. a client-sent OPEN),
                    // so only the reader, via the next GET, decides whether the session ended.
                    Err(PostError::Rejected(_)) if raw => (Ok(()), false),
                    Err(PostError::Rejected(msg)) => (Err(anyhow!(msg)), false),
                    Err(PostError::Failed(msg)) => {
                        shared.mark_closed(msg.clone());
                        (Err(anyhow!(msg)), true)
                    }
                };
                if let Some(done) = done {
                    let _ = done.send(res);
                }
                if failed {
                    break;
                }
            }
            Cmd::Close { done } => {
                let _ = post(&http, &url, "1".to_owned()).await;
                shared.mark_closed("closed by client");
                let _ = done.send(());
                break;
            }
        }
    }
    let _ = done_tx.send(());
}

enum PostError {
    /// The server answered with an error status.
    Rejected(String),
    /// No answer at all: the transport is gone.
    Failed(String),
}

async fn post(http: &reqwest::Client, url: &str, body: String) -> Result<(), PostError> {
    let resp = http
        .post(url)
        .header("content-type", "text/plain;charset=UTF-8")
        .body(body)
        .timeout(DEFAULT_TIMEOUT)
        .send()
        .await
        .map_err(|e| PostError::Failed(format!("polling POST failed: {}", e.without_url())))?;
    let status = resp.status();
    if !status.is_success() {
        let body = resp.text().await.unwrap_or_default();
        return Err(PostError::Rejected(format!(
            "polling POST returned {status}: {body}"
        )));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Encoding / decoding
// ---------------------------------------------------------------------------

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panicking test thread must not turn every later lock into a second panic.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn normalize_ns(ns: &str) -> String {
    if ns.starts_with('/') {
        ns.to_owned()
    } else {
        format!("/{ns}")
    }
}

fn parse_open(packet: &str) -> anyhow::Result<Value> {
    let json = packet
        .strip_prefix('0')
        .ok_or_else(|| anyhow!("expected Engine.IO OPEN packet, got {packet:?}"))?;
    serde_json::from_str(json).with_context(|| format!("OPEN packet is not JSON: {packet:?}"))
}

fn event_array(event: &str, args: Vec<Value>) -> Value {
    let mut items = Vec::with_capacity(args.len() + 1);
    items.push(Value::String(event.to_owned()));
    items.extend(args);
    Value::Array(items)
}

/// Header text frame followed by one binary frame per attachment, so they travel as one writer command.
fn binary_frames(
    ty: u8,
    ns: &str,
    id: Option<u64>,
    data: &Value,
    binaries: Vec<Vec<u8>>,
) -> Vec<Frame> {
    let header = encode_sio(ty, ns, Some(binaries.len()), id, Some(data));
    let mut frames = vec![Frame::Text(format!("4{header}"))];
    frames.extend(binaries.into_iter().map(Frame::Binary));
    frames
}

/// Socket.IO v5 packet text (without the Engine.IO `4` prefix).
fn encode_sio(
    ty: u8,
    ns: &str,
    attachments: Option<usize>,
    id: Option<u64>,
    data: Option<&Value>,
) -> String {
    let mut s = ty.to_string();
    if let Some(n) = attachments {
        s.push_str(&format!("{n}-"));
    }
    if ns != "/" {
        s.push_str(ns);
        s.push(',');
    }
    if let Some(id) = id {
        s.push_str(&id.to_string());
    }
    if let Some(data) = data {
        s.push_str(&data.to_string());
    }
    s
}

/// Engine.IO v4 polling payload: packets joined by the record separator, binaries as `b<base64>`.
fn encode_payload(frames: Vec<Frame>) -> String {
    frames
        .into_iter()
        .map(|f| match f {
            Frame::Text(t) => t,
            Frame::Binary(b) => format!("b{}", base64::engine::general_purpose::STANDARD.encode(b)),
        })
        .collect::<Vec<_>>()
        .join(&RECORD_SEPARATOR.to_string())
}

struct SioPacket {
    ty: u8,
    attachments: usize,
    ns: String,
    id: Option<u64>,
    data: Option<Value>,
}

fn decode_sio(raw: &str) -> Result<SioPacket, String> {
    let mut rest = raw;
    let ty = rest
        .chars()
        .next()
        .and_then(|c| c.to_digit(10))
        .ok_or("missing packet type")? as u8;
    rest = &rest[1..];

    let mut attachments = 0;
    if ty == 5 || ty == 6 {
        let dash = rest
            .find('-')
            .ok_or("binary packet without attachment count")?;
        attachments = rest[..dash]
            .parse()
            .map_err(|e| format!("bad attachment count: {e}"))?;
        rest = &rest[dash + 1..];
    }

    let mut ns = "/".to_owned();
    if rest.starts_with('/') {
        match rest.find(',') {
            Some(comma) => {
                ns = rest[..comma].to_owned();
                rest = &rest[comma + 1..];
            }
            None => {
                ns = rest.to_owned();
                rest = "";
            }
        }
    }

    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let id = if digits > 0 {
        Some(
            rest[..digits]
                .parse()
                .map_err(|e| format!("bad ack id: {e}"))?,
        )
    } else {
        None
    };
    rest = &rest[digits..];

    let data = if rest.trim().is_empty() {
        None
    } else {
        Some(serde_json::from_str(rest).map_err(|e| format!("bad JSON payload: {e}"))?)
    };
    Ok(SioPacket {
        ty,
        attachments,
        ns,
        id,
        data,
    })
}
