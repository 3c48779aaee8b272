//! `ecos-bench`: a load generator for ecos and any Socket.IO v5 server with the
//! same `welcome` / `message` contract (see README.md and docs/performance.md).
//!
//! It speaks raw Engine.IO 4 / Socket.IO 5 over WebSocket (framing in `wire`), one tokio task per
//! connection, and parses only what it needs: the open packet, the namespace
//! connect, `welcome`, pings, `message` events and acks. N clients connect
//! (round robin over the given URLs); once every client has its `welcome`, a
//! few designated senders emit `message` with `{"t": <ns since a shared
//! instant>, "seq": n}` at a fixed aggregate rate (open loop, driven by a
//! ticker) or as fast as possible. Every client records `now - t` of each
//! `message` it receives in an HDR histogram and counts the deliveries.
//!
//! With `--emitter-redis`, the broadcasts enter through Redis instead, as
//! `@socket.io/redis-emitter` publishes them (`emitter`), and every client
//! receives every one.
//!
//! With `--ack-event`, the senders emit that event instead of `message` and
//! the figures are the acks' round trips and rate (the `webhooks` scenario:
//! a forwarded event against `join`); `--webhook-backend` runs the stand-in
//! backend that scenario points ecos at (`backend`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use hdrhistogram::Histogram;
use tokio::sync::{Notify, Semaphore, mpsc};

mod backend;
mod emitter;
mod floor;
mod http;
mod wire;
use http::Http;
use wire::{Frame, Ws};

/// Latency histograms are sharded so connection tasks rarely share a lock.
const SHARDS: usize = 32;
/// Highest latency the histograms hold, in microseconds (60 s); above is clamped.
const MAX_LATENCY_US: u64 = 60_000_000;

#[derive(Parser, Debug)]
#[command(
    name = "ecos-bench",
    about = "Socket.IO load generator: N WebSocket clients, a few senders broadcasting `message`, latency and delivery figures."
)]
struct Args {
    /// Server base URL, e.g. http://127.0.0.1:3000. Repeat it for several
    /// instances: clients are spread over them round robin.
    #[arg(long = "url", required_unless_present_any = ["floor", "webhook_backend"])]
    urls: Vec<String>,
    /// Measure the kernel floor instead of a server: a thread of this process
    /// writes the same frames to --clients raw loopback connections, one
    /// write per connection per broadcast, and the clients read them as
    /// usual. Its CPU is reported as the server's (docs/performance.md).
    #[arg(long, conflicts_with = "urls")]
    floor: bool,
    /// CPU to pin the floor's writer thread to (where the server would run).
    #[arg(long, requires = "floor")]
    floor_cpu: Option<usize>,
    /// Number of clients to connect.
    #[arg(long, default_value_t = 1000)]
    clients: usize,
    /// How many of the clients send (the first ones, so they are spread over the URLs too).
    #[arg(long, default_value_t = 2)]
    senders: usize,
    /// Aggregate broadcasts per second over all senders; 0 = as fast as possible.
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// Number of broadcasts to send (0 = none: connect, measure memory, leave).
    #[arg(long, conflicts_with = "duration")]
    count: Option<u64>,
    /// Sending time in seconds (count = rate x duration). Default: 10 s.
    #[arg(long)]
    duration: Option<f64>,
    /// Extra bytes of padding in each message's payload.
    #[arg(long, default_value_t = 0)]
    payload_bytes: usize,
    /// Server process(es) to sample for RSS (VmRSS) and CPU time (utime+stime).
    #[arg(long = "server-pid")]
    server_pids: Vec<u32>,
    /// Connection attempts in flight at once (a slot is held until `welcome`).
    #[arg(long, default_value_t = 100)]
    connect_concurrency: usize,
    /// Longest wait for all clients to connect, in seconds.
    #[arg(long, default_value_t = 120.0)]
    connect_timeout: f64,
    /// Pause after all clients are connected, before memory is sampled and sending starts, in seconds.
    #[arg(long, default_value_t = 1.0)]
    settle: f64,
    /// After the last send, stop waiting for deliveries once none arrived for this many seconds.
    #[arg(long, default_value_t = 3.0)]
    drain: f64,
    /// Print one JSON line on stdout (the human summary goes to stderr).
    #[arg(long)]
    json: bool,
    /// Free-form label copied into the output.
    #[arg(long, default_value = "")]
    label: String,
    /// JSON auth payload sent with the namespace CONNECT (`{"token":"..."}`
    /// for a server in `auth.mode = jwt`).
    #[arg(long)]
    connect_payload: Option<String>,
    /// Publish the broadcasts to this Redis (redis://host:port) in
    /// `@socket.io/redis-emitter`'s format instead of having clients send
    /// them; no client sends, every client receives.
    #[arg(long, conflicts_with = "floor")]
    emitter_redis: Option<String>,
    /// The emitter's `key` option (channel prefix) with --emitter-redis.
    #[arg(long, default_value = "socket.io", requires = "emitter_redis")]
    emitter_prefix: String,
    /// Where the broadcasts enter: `socket` (the first --senders clients emit
    /// `message`) or `api` (--senders keep-alive HTTP connections POST
    /// `/api/v1/emit` to everyone, round robin over the URLs).
    #[arg(long, value_enum, default_value_t = Via::Socket)]
    via: Via,
    /// The server API key, for `--via api` and `--api-flood`.
    #[arg(long, default_value = "")]
    api_key: String,
    /// Measure the server API's request rate: for this many seconds,
    /// --api-connections keep-alive connections each POST `/api/v1/emit` (to
    /// everyone) again as soon as the answer is back.
    #[arg(long, conflicts_with_all = ["count", "duration", "floor"])]
    api_flood: Option<f64>,
    /// Keep-alive connections of --api-flood (a backend's connection pool).
    #[arg(long, default_value_t = 64)]
    api_connections: usize,
    /// The senders emit this event with an ack request instead of
    /// `message`, and the latency figures are the acks' round trips (send
    /// to ack). For `join` (the contract's own ack) or an event ecos
    /// forwards to a webhooks backend.
    #[arg(long, conflicts_with_all = ["floor", "emitter_redis", "api_flood"])]
    ack_event: Option<String>,
    /// The argument of every --ack-event emit, as JSON.
    #[arg(long, default_value = "\"bench\"", requires = "ack_event")]
    ack_arg: String,
    /// With --ack-event: for this many seconds each sender keeps
    /// --ack-window emits waiting for their acks, sending the next as soon
    /// as one is acked (closed loop: the acks/s the server sustains).
    #[arg(long, requires = "ack_event", conflicts_with_all = ["count", "duration"])]
    ack_flood: Option<f64>,
    /// Emits each sender keeps in flight during --ack-flood.
    #[arg(long, default_value_t = 1)]
    ack_window: usize,
    /// Run the stand-in webhooks backend on this address (`127.0.0.1:0`:
    /// any port; prints `listening <port>`) instead of generating load.
    #[arg(long, exclusive = true)]
    webhook_backend: Option<String>,
}

/// Where broadcasts enter the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Via {
    /// A client emits `message`; the server relays it to every other client.
    Socket,
    /// `POST /api/v1/emit` to every client.
    Api,
}

/// The server API route the generator calls.
const API_EMIT: &str = "/api/v1/emit";

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Nanoseconds since the process-wide epoch shared by every connection.
fn now_ns() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

struct Shared {
    delivered: AtomicU64,
    sent: AtomicU64,
    acked_ok: AtomicU64,
    acked_other: AtomicU64,
    welcomed: AtomicUsize,
    failed: AtomicUsize,
    dropped: AtomicUsize,
    last_welcome_ns: AtomicU64,
    last_delivery_ns: AtomicU64,
    last_ack_ns: AtomicU64,
    settled: Notify,
    hist: Vec<Mutex<Histogram<u64>>>,
}

impl Shared {
    fn new() -> Self {
        let hist = (0..SHARDS)
            .map(|_| Mutex::new(Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("histogram bounds")))
            .collect();
        Shared {
            delivered: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            acked_ok: AtomicU64::new(0),
            acked_other: AtomicU64::new(0),
            welcomed: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            dropped: AtomicUsize::new(0),
            last_welcome_ns: AtomicU64::new(0),
            last_delivery_ns: AtomicU64::new(0),
            last_ack_ns: AtomicU64::new(0),
            settled: Notify::new(),
            hist,
        }
    }
}

/// What the main task asks a sender to do.
enum Cmd {
    /// Emit one message now.
    One(u64),
    /// Emit this many messages back to back, sequence numbers from the first.
    Burst { first: u64, n: u64 },
    /// `--ack-flood`: keep `window` emits in flight until `until` (ns, `now_ns`).
    Flood { until: u64, window: usize },
}

/// A sender's state in `--ack-event` mode: its emits waiting for their ack.
struct Acks {
    /// `"<event>",<arg>`: what goes between the brackets of every emit.
    args: Arc<str>,
    /// Ack id -> when the emit was queued (`now_ns`).
    pending: HashMap<u64, u64>,
    /// Ids of the flood's emits (the ticker's come from the main task).
    next_id: u64,
    /// While flooding: no new emit from this instant on.
    flood_until: Option<u64>,
    /// Emits to queue before the next read (one per ack while flooding).
    due: usize,
}

impl Acks {
    fn new(args: Arc<str>) -> Self {
        Acks { args, pending: HashMap::new(), next_id: 1 << 40, flood_until: None, due: 0 }
    }
}

/// Queues one emit with ack id `seq`: `message` (stamped), or the ack event.
fn queue_emit(ws: &mut Ws, seq: u64, padding: &str, acks: Option<&mut Acks>, shared: &Shared) {
    match acks {
        Some(a) => {
            ws.queue_text(&format!("42{seq}[{}]", a.args));
            a.pending.insert(seq, now_ns());
        }
        None => ws.queue_text(&message_packet(seq, padding)),
    }
    shared.sent.fetch_add(1, Ordering::Relaxed);
}

/// `http://host:port[/...]` or `ws://host:port` -> (`host:port`, Engine.IO WebSocket path).
fn endpoint(url: &str) -> anyhow::Result<(String, String)> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("ws://"))
        .with_context(|| format!("{url}: only http:// or ws:// URLs (loopback, no TLS)"))?;
    let host = rest.split('/').next().unwrap_or_default().to_string();
    if host.is_empty() {
        bail!("{url}: no host");
    }
    Ok((host, "/socket.io/?EIO=4&transport=websocket".to_string()))
}

/// What a frame from the server means to a client.
enum Kind {
    /// Engine.IO open packet.
    Open,
    /// Engine.IO ping: answer with a pong.
    EioPing,
    /// The namespace refused the connection.
    Refused(String),
    /// The `welcome` event: connected.
    Welcome,
    /// A `message` event, with its send stamp when it has one.
    Message(Option<u64>),
    /// An ack to one of our emits: whether it said `ok: true`, and its id.
    Ack(bool, Option<u64>),
    /// The server ended the session.
    End,
    /// A WebSocket ping, to be answered with its payload.
    WsPing(Vec<u8>),
    /// Anything else.
    Nothing,
}

fn classify(frame: Frame<'_>) -> Kind {
    match frame {
        Frame::Text(t) => {
            if t.starts_with("42[\"message\"") {
                Kind::Message(stamp_of(t))
            } else if t == "2" {
                Kind::EioPing
            } else if let Some(rest) = t.strip_prefix("43") {
                let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
                Kind::Ack(t.contains("\"ok\":true"), rest[..digits].parse().ok())
            } else if t.starts_with("42[\"welcome\"") {
                Kind::Welcome
            } else if t.starts_with("44") {
                Kind::Refused(t.chars().take(120).collect())
            } else if t.starts_with('0') {
                Kind::Open
            } else if t.starts_with('1') || t.starts_with("41") {
                Kind::End
            } else {
                Kind::Nothing
            }
        }
        Frame::Ping(p) => Kind::WsPing(p.to_vec()),
        Frame::Close => Kind::End,
        Frame::Other => Kind::Nothing,
    }
}

/// Opens the WebSocket, joins namespace `/` and waits for `welcome`.
async fn handshake(host: &str, path: &str, seed: u32, connect: &str) -> anyhow::Result<Ws> {
    let mut ws = Ws::connect(host, path, seed).await?;
    let mut opened = false;
    loop {
        while let Some(frame) = ws.next_frame()? {
            match classify(frame) {
                Kind::Open if !opened => {
                    opened = true;
                    ws.queue_text(connect);
                }
                _ if !opened => bail!("expected an Engine.IO open packet first"),
                Kind::EioPing => ws.queue_text("3"),
                Kind::WsPing(p) => ws.queue(0xA, &p),
                Kind::Refused(t) => bail!("namespace refused: {t}"),
                Kind::End => bail!("connection closed"),
                Kind::Welcome => {
                    ws.flush().await?;
                    return Ok(ws);
                }
                _ => {}
            }
        }
        ws.flush().await?;
        if ws.fill().await? == 0 {
            bail!("connection closed");
        }
    }
}

/// Reads the `"t":<digits>` field of a `message` event without a JSON parser.
fn stamp_of(text: &str) -> Option<u64> {
    let at = text.find("\"t\":")? + 4;
    let digits = &text[at..];
    let end = digits.find(|c: char| !c.is_ascii_digit()).unwrap_or(digits.len());
    digits[..end].parse().ok()
}

/// The arguments of a `message` event, `["message",{"t":..,"seq":..}]`, stamped `t`.
fn message_args(t: u64, seq: u64, padding: &str) -> String {
    if padding.is_empty() {
        format!("[\"message\",{{\"t\":{t},\"seq\":{seq}}}]")
    } else {
        format!("[\"message\",{{\"t\":{t},\"seq\":{seq},\"p\":\"{padding}\"}}]")
    }
}

/// A client's `message` emit, stamped now, asking for ack `seq`.
fn message_packet(seq: u64, padding: &str) -> String {
    format!("42{seq}{}", message_args(now_ns(), seq, padding))
}

/// The server API body of the same broadcast, stamped `t`: every client gets
/// `["message",{"t":..,"seq":..}]`.
fn api_emit_body(t: u64, seq: u64, padding: &str) -> String {
    if padding.is_empty() {
        format!("{{\"event\":\"message\",\"args\":[{{\"t\":{t},\"seq\":{seq}}}]}}")
    } else {
        format!("{{\"event\":\"message\",\"args\":[{{\"t\":{t},\"seq\":{seq},\"p\":\"{padding}\"}}]}}")
    }
}

/// POSTs one stamped emit and counts it like a client's acked broadcast.
async fn api_send(http: &mut Http, seq: u64, padding: &str, shared: &Shared) -> anyhow::Result<u16> {
    let body = api_emit_body(now_ns(), seq, padding);
    shared.sent.fetch_add(1, Ordering::Relaxed);
    let status = http.post(API_EMIT, &body).await?;
    if status == 200 {
        shared.acked_ok.fetch_add(1, Ordering::Relaxed);
    } else {
        shared.acked_other.fetch_add(1, Ordering::Relaxed);
    }
    Ok(status)
}

/// A `--via api` sender: one keep-alive connection, one emit per command.
async fn api_sender(host: String, key: String, mut cmds: mpsc::UnboundedReceiver<Cmd>, padding: Arc<str>, shared: Arc<Shared>) {
    let result: anyhow::Result<()> = async {
        let mut http = Http::connect(&host, &key).await?;
        while let Some(cmd) = cmds.recv().await {
            let (first, n) = match cmd {
                Cmd::One(seq) => (seq, 1),
                Cmd::Burst { first, n } => (first, n),
                // Only socket senders flood (run refuses --ack-event with --via api).
                Cmd::Flood { .. } => continue,
            };
            for seq in first..first + n {
                let status = api_send(&mut http, seq, &padding, &shared).await?;
                if status != 200 {
                    bail!("{API_EMIT} answered {status}");
                }
            }
        }
        Ok(())
    }
    .await;
    if let Err(e) = result {
        eprintln!("api sender {host}: {e:#}");
    }
}

/// What `--api-flood` measured.
struct Flood {
    /// Emits answered 200.
    ok: u64,
    /// Emits answered otherwise.
    errors: u64,
    /// Wall time of the flood, in seconds.
    secs: f64,
    /// Request round trips, in microseconds.
    hist: Histogram<u64>,
}

/// `--api-flood`: `conns` keep-alive connections POST emits back to back for `secs` seconds.
async fn api_flood(
    endpoints: &[(String, String)],
    key: &str,
    conns: usize,
    secs: f64,
    padding: Arc<str>,
    shared: Arc<Shared>,
) -> anyhow::Result<Flood> {
    let seq = Arc::new(AtomicU64::new(0));
    let mut https = Vec::with_capacity(conns);
    for i in 0..conns.max(1) {
        https.push(Http::connect(&endpoints[i % endpoints.len()].0, key).await?);
    }
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(secs);
    let tasks: Vec<_> = https
        .into_iter()
        .map(|mut http| {
            let (seq, padding, shared) = (seq.clone(), padding.clone(), shared.clone());
            tokio::spawn(async move {
                let mut hist = Histogram::<u64>::new_with_bounds(1, MAX_LATENCY_US, 3)?;
                let (mut ok, mut errors) = (0u64, 0u64);
                while Instant::now() < deadline {
                    let at = now_ns();
                    match api_send(&mut http, seq.fetch_add(1, Ordering::Relaxed), &padding, &shared).await? {
                        200 => ok += 1,
                        _ => errors += 1,
                    }
                    hist.saturating_record(((now_ns() - at) / 1_000).max(1));
                }
                Ok::<_, anyhow::Error>((ok, errors, hist))
            })
        })
        .collect();
    let mut flood = Flood { ok: 0, errors: 0, secs: 0.0, hist: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)? };
    for task in tasks {
        let (ok, errors, hist) = task.await??;
        flood.ok += ok;
        flood.errors += errors;
        flood.hist.add(&hist)?;
    }
    flood.secs = started.elapsed().as_secs_f64();
    Ok(flood)
}

/// Handles every frame already read; `Ok(false)` means the server ended the session.
fn on_frames(ws: &mut Ws, shared: &Shared, shard: usize, mut acks: Option<&mut Acks>) -> anyhow::Result<bool> {
    while let Some(frame) = ws.next_frame()? {
        match classify(frame) {
            Kind::Message(stamp) => {
                let now = now_ns();
                if let Some(t) = stamp {
                    let us = (now.saturating_sub(t) / 1_000).max(1);
                    shared.hist[shard].lock().unwrap().saturating_record(us);
                }
                shared.delivered.fetch_add(1, Ordering::Relaxed);
                shared.last_delivery_ns.fetch_max(now, Ordering::Relaxed);
            }
            Kind::EioPing => ws.queue_text("3"),
            Kind::WsPing(p) => ws.queue(0xA, &p),
            Kind::Ack(ok, id) => {
                let counter = if ok { &shared.acked_ok } else { &shared.acked_other };
                counter.fetch_add(1, Ordering::Relaxed);
                if let Some(a) = acks.as_deref_mut() {
                    let now = now_ns();
                    if let Some(sent) = id.and_then(|id| a.pending.remove(&id)) {
                        let us = (now.saturating_sub(sent) / 1_000).max(1);
                        shared.hist[shard].lock().unwrap().saturating_record(us);
                    }
                    shared.last_ack_ns.fetch_max(now, Ordering::Relaxed);
                    if a.flood_until.is_some_and(|until| now < until) {
                        a.due += 1;
                    }
                }
            }
            Kind::End => return Ok(false),
            _ => {}
        }
    }
    Ok(true)
}

/// What woke a client up.
enum Wake {
    Read(anyhow::Result<usize>),
    Cmd(Option<Cmd>),
}

#[allow(clippy::too_many_arguments)]
async fn client(
    idx: usize,
    host: String,
    path: String,
    shared: Arc<Shared>,
    slots: Arc<Semaphore>,
    mut cmds: Option<mpsc::UnboundedReceiver<Cmd>>,
    padding: Arc<str>,
    total: usize,
    connect_timeout: Duration,
    connect: Arc<str>,
    mut acks: Option<Acks>,
) {
    let permit = slots.acquire_owned().await.expect("semaphore open");
    let mut ws = match tokio::time::timeout(connect_timeout, handshake(&host, &path, idx as u32 + 1, &connect)).await {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => {
            eprintln!("client {idx}: {e:#}");
            shared.failed.fetch_add(1, Ordering::Relaxed);
            shared.settled.notify_one();
            return;
        }
        Err(_) => {
            shared.failed.fetch_add(1, Ordering::Relaxed);
            shared.settled.notify_one();
            return;
        }
    };
    drop(permit);
    shared.last_welcome_ns.fetch_max(now_ns(), Ordering::Relaxed);
    let done = shared.welcomed.fetch_add(1, Ordering::Relaxed) + 1;
    if done + shared.failed.load(Ordering::Relaxed) >= total {
        shared.settled.notify_one();
    }
    let shard = idx % SHARDS;
    let result: anyhow::Result<()> = async {
        loop {
            if !on_frames(&mut ws, &shared, shard, acks.as_mut())? {
                bail!("session ended by the server");
            }
            if let Some(a) = acks.as_mut() {
                while a.due > 0 {
                    a.due -= 1;
                    let id = a.next_id;
                    a.next_id += 1;
                    queue_emit(&mut ws, id, &padding, Some(a), &shared);
                }
            }
            ws.flush().await?;
            let wake = tokio::select! {
                n = ws.fill() => Wake::Read(n),
                cmd = async {
                    match cmds.as_mut() {
                        Some(rx) => rx.recv().await,
                        None => std::future::pending().await,
                    }
                } => Wake::Cmd(cmd),
            };
            match wake {
                Wake::Read(n) => {
                    if n? == 0 {
                        bail!("connection closed");
                    }
                }
                Wake::Cmd(None) => cmds = None,
                Wake::Cmd(Some(Cmd::One(seq))) => {
                    queue_emit(&mut ws, seq, &padding, acks.as_mut(), &shared);
                    ws.flush().await?;
                }
                Wake::Cmd(Some(Cmd::Burst { first, n })) => burst(&mut ws, first, n, &padding, acks.as_mut(), &shared).await?,
                Wake::Cmd(Some(Cmd::Flood { until, window })) => {
                    if let Some(a) = acks.as_mut() {
                        a.flood_until = Some(until);
                        a.due += window;
                    }
                }
            }
        }
    }
    .await;
    if let Err(e) = result {
        if !e.to_string().starts_with("session ended") {
            eprintln!("client {idx}: {e:#}");
        }
        shared.dropped.fetch_add(1, Ordering::Relaxed);
    }
}

async fn burst(ws: &mut Ws, first: u64, n: u64, padding: &str, mut acks: Option<&mut Acks>, shared: &Shared) -> anyhow::Result<()> {
    for seq in first..first + n {
        queue_emit(ws, seq, padding, acks.as_deref_mut(), shared);
        if (seq - first) % 16 == 15 {
            ws.flush().await?;
        }
    }
    ws.flush().await
}

/// VmRSS of a process in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// utime + stime of a process in seconds ("self" for this one).
fn cpu_secs(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some((utime + stime) as f64 / ticks)
}

fn sum_rss(pids: &[u32]) -> Option<u64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|p| rss_kib(*p)).sum()
}

fn sum_cpu(pids: &[u32]) -> Option<f64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|p| cpu_secs(&p.to_string())).sum()
}

/// Raises the soft open-files limit to the hard one (10k clients need 10k fds).
fn raise_fd_limit() -> u64 {
    unsafe {
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        }
        lim.rlim_cur
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(addr) = &args.webhook_backend {
        // One thread: bench/run pins it beside the generator.
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        return rt.block_on(backend::serve(addr));
    }
    let _ = now_ns();
    let fds = raise_fd_limit();
    if (fds as usize) < args.clients + 64 {
        eprintln!("warning: open-files limit is {fds}, below {} clients", args.clients);
    }
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    // On one core (the usual `taskset -c 1` run) a single-threaded runtime
    // skips the work-stealing machinery, which is pure overhead there.
    let rt = if threads == 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()?
    };
    let code = rt.block_on(run(args, threads))?;
    // Exit without waiting for thousands of connection tasks to wind down.
    std::process::exit(code);
}

fn pct(x: f64) -> String {
    format!("{:.4}", x)
}

async fn run(args: Args, threads: usize) -> anyhow::Result<i32> {
    if args.clients < 2 {
        bail!("--clients must be at least 2");
    }
    let through_emitter = args.emitter_redis.is_some();
    // Through the emitter no client sends; through the API the senders are HTTP connections.
    let senders = match args.via {
        _ if through_emitter => 0,
        Via::Socket => args.senders.clamp(1, args.clients),
        Via::Api => args.senders.max(1),
    };
    if args.ack_event.is_some() && args.via == Via::Api {
        bail!("--ack-event needs socket senders, not --via api");
    }
    let ack_args: Option<Arc<str>> = match &args.ack_event {
        Some(event) => {
            let arg: serde_json::Value = serde_json::from_str(&args.ack_arg).context("--ack-arg is not JSON")?;
            Some(format!("{},{arg}", serde_json::Value::from(event.as_str())).into())
        }
        None => None,
    };
    let mut count = match (args.count, args.duration) {
        _ if args.api_flood.is_some() || args.ack_flood.is_some() => 0,
        (Some(c), _) => c,
        (None, d) => {
            if args.rate <= 0.0 {
                bail!("--rate 0 (as fast as possible) needs --count");
            }
            (args.rate * d.unwrap_or(10.0)).round() as u64
        }
    };
    let endpoints: Vec<(String, String)> = args.urls.iter().map(|u| endpoint(u)).collect::<Result<_, _>>()?;
    let padding: Arc<str> = "x".repeat(args.payload_bytes).into();
    let shared = Arc::new(Shared::new());
    let slots = Arc::new(Semaphore::new(args.connect_concurrency.max(1)));
    let connect_timeout = Duration::from_secs_f64(args.connect_timeout);

    let rss_before = sum_rss(&args.server_pids);

    // Connect everybody.
    let connect_cpu0 = (sum_cpu(&args.server_pids), cpu_secs("self"));
    let connect_start = now_ns();
    let mut txs = Vec::with_capacity(senders);
    let floor_conns = if args.floor {
        Some(floor::connect(args.clients, &shared).await?)
    } else {
        None
    };
    // The floor's clients are already connected; the others are spawned here.
    let to_spawn = if args.floor { 0 } else { args.clients };
    let connect: Arc<str> = match &args.connect_payload {
        Some(payload) => format!("40{payload}").into(),
        None => "40".into(),
    };
    for idx in 0..to_spawn {
        let (host, url) = endpoints[idx % endpoints.len()].clone();
        let rx = if idx < senders && args.via == Via::Socket {
            let (tx, rx) = mpsc::unbounded_channel();
            txs.push(tx);
            Some(rx)
        } else {
            None
        };
        tokio::spawn(client(
            idx,
            host,
            url,
            shared.clone(),
            slots.clone(),
            rx,
            padding.clone(),
            args.clients,
            connect_timeout,
            connect.clone(),
            ack_args.clone().filter(|_| idx < senders && args.via == Via::Socket).map(Acks::new),
        ));
    }
    if args.via == Via::Api && !args.floor {
        for i in 0..senders {
            let (tx, rx) = mpsc::unbounded_channel();
            txs.push(tx);
            let host = endpoints[i % endpoints.len()].0.clone();
            tokio::spawn(api_sender(host, args.api_key.clone(), rx, padding.clone(), shared.clone()));
        }
    }
    let deadline = Instant::now() + connect_timeout + Duration::from_secs(5);
    loop {
        let settled = shared.welcomed.load(Ordering::Relaxed) + shared.failed.load(Ordering::Relaxed);
        if settled >= args.clients || Instant::now() >= deadline {
            break;
        }
        let _ = tokio::time::timeout(Duration::from_millis(100), shared.settled.notified()).await;
    }
    let connected = shared.welcomed.load(Ordering::Relaxed);
    let failed = shared.failed.load(Ordering::Relaxed);
    let connect_secs = (shared.last_welcome_ns.load(Ordering::Relaxed).saturating_sub(connect_start)) as f64 / 1e9;
    // CPU shares over the connect phase (from the first attempt to now), to tell
    // whether the server or the generator limited the connect time.
    let connect_wall = (now_ns() - connect_start) as f64 / 1e9;
    let connect_server_cpu = match (connect_cpu0.0, sum_cpu(&args.server_pids)) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    let connect_server_util = connect_server_cpu.filter(|_| connect_wall > 0.0).map(|cpu| cpu / connect_wall);
    // Server CPU per connection made: where an auth mode's verification cost shows.
    let connect_server_cpu_us_per_conn = connect_server_cpu.filter(|_| connected > 0).map(|cpu| cpu * 1e6 / connected as f64);
    let connect_bench_util = match (connect_cpu0.1, cpu_secs("self")) {
        (Some(a), Some(b)) if connect_wall > 0.0 => Some((b - a) / connect_wall / threads as f64),
        _ => None,
    };
    tokio::time::sleep(Duration::from_secs_f64(args.settle)).await;
    let rss_connected = sum_rss(&args.server_pids);

    // Send.
    let holding = connected - shared.dropped.load(Ordering::Relaxed).min(connected);
    let cpu0 = sum_cpu(&args.server_pids);
    let bench_cpu0 = cpu_secs("self");
    let send_start = now_ns();
    let floor_writer = floor_conns.map(|conns| {
        floor::write(conns, args.rate, count, padding.clone(), args.floor_cpu, shared.clone())
    });
    let publisher = match &args.emitter_redis {
        Some(url) if count > 0 && connected >= 2 => {
            let publisher = emitter::Publisher::connect(url, &args.emitter_prefix).await?;
            Some(tokio::spawn(publisher.run(args.rate, count, padding.clone(), shared.clone())))
        }
        _ => None,
    };
    let flood = match args.api_flood {
        Some(secs) if connected >= 2 => {
            let flood = api_flood(&endpoints, &args.api_key, args.api_connections, secs, padding.clone(), shared.clone()).await?;
            count = flood.ok + flood.errors;
            Some(flood)
        }
        _ => None,
    };
    if let Some(secs) = args.ack_flood.filter(|_| connected >= 2) {
        let until = now_ns() + (secs * 1e9) as u64;
        for tx in &txs {
            let _ = tx.send(Cmd::Flood { until, window: args.ack_window.max(1) });
        }
        tokio::time::sleep(Duration::from_secs_f64(secs) + Duration::from_millis(20)).await;
        count = shared.sent.load(Ordering::Relaxed);
    } else if count > 0 && connected >= 2 && !args.floor && !through_emitter && flood.is_none() {
        if args.rate > 0.0 {
            let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate));
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            for seq in 0..count {
                ticker.tick().await;
                let _ = txs[(seq as usize) % txs.len()].send(Cmd::One(seq));
            }
        } else {
            let per = count / txs.len() as u64;
            let extra = count % txs.len() as u64;
            let mut first = 0;
            for (i, tx) in txs.iter().enumerate() {
                let n = per + u64::from((i as u64) < extra);
                let _ = tx.send(Cmd::Burst { first, n });
                first += n;
            }
        }
    }
    drop(txs);
    // Wait until every send went out, then for deliveries to stop coming.
    let send_deadline = Instant::now() + Duration::from_secs(30);
    while count > 0 && shared.sent.load(Ordering::Relaxed) < count && Instant::now() < send_deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let send_end = now_ns();
    if let Some(publisher) = publisher
        && publisher.is_finished()
    {
        publisher.await??;
    }
    let sent = shared.sent.load(Ordering::Relaxed);
    // A sender does not get its own broadcast; the floor and the emitter have
    // no sender among the clients, and an API emit goes to every client.
    let sender_is_client =
        !args.floor && !through_emitter && args.via == Via::Socket && args.api_flood.is_none();
    // An ack event is answered to its sender only: nothing is delivered.
    let expected = if ack_args.is_some() { 0 } else { sent * (holding.saturating_sub(usize::from(sender_is_client))) as u64 };
    if count > 0 {
        let mut last_seen = shared.delivered.load(Ordering::Relaxed);
        let mut last_change = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let d = shared.delivered.load(Ordering::Relaxed);
            let acks = shared.acked_ok.load(Ordering::Relaxed) + shared.acked_other.load(Ordering::Relaxed);
            // The floor's writer and the emitter ask for no acks.
            if d >= expected && (acks >= sent || args.floor || through_emitter) {
                break;
            }
            if d != last_seen {
                last_seen = d;
                last_change = Instant::now();
            } else if last_change.elapsed().as_secs_f64() >= args.drain {
                break;
            }
        }
    }
    let end = now_ns();
    let cpu1 = sum_cpu(&args.server_pids);
    let rss_end = sum_rss(&args.server_pids);
    let bench_cpu1 = cpu_secs("self");

    let delivered = shared.delivered.load(Ordering::Relaxed);
    let last_delivery = shared.last_delivery_ns.load(Ordering::Relaxed);
    let active_secs = if delivered > 0 {
        (last_delivery.saturating_sub(send_start)) as f64 / 1e9
    } else {
        0.0
    };
    let deliveries_per_sec = if active_secs > 0.0 { delivered as f64 / active_secs } else { 0.0 };
    let ratio = if expected > 0 { delivered as f64 / expected as f64 } else { 0.0 };
    let mut hist = Histogram::<u64>::new_with_bounds(1, MAX_LATENCY_US, 3)?;
    for h in &shared.hist {
        hist.add(&*h.lock().unwrap())?;
    }
    let q = |p: f64| if hist.is_empty() { 0.0 } else { hist.value_at_quantile(p) as f64 / 1000.0 };
    let (p50, p90, p99, max) = (q(0.5), q(0.9), q(0.99), if hist.is_empty() { 0.0 } else { hist.max() as f64 / 1000.0 });
    let wall = (end - send_start) as f64 / 1e9;
    let writer_cpu = match floor_writer {
        Some(writer) => {
            let floor = tokio::task::spawn_blocking(move || writer.join())
                .await?
                .map_err(|_| anyhow::anyhow!("the floor writer panicked"))??;
            Some(floor.writer_cpu_secs)
        }
        None => None,
    };
    // In floor mode the "server" is this process's writer thread, and the
    // generator is the rest of the process.
    let server_cpu = match (cpu0, cpu1) {
        (Some(a), Some(b)) => Some(b - a),
        _ => writer_cpu,
    };
    let bench_cpu = match (bench_cpu0, bench_cpu1) {
        (Some(a), Some(b)) => Some(b - a - writer_cpu.unwrap_or(0.0)),
        _ => None,
    };
    let rss_per_conn = match (rss_before, rss_connected) {
        (Some(a), Some(b)) if connected > 0 => Some((b as f64 - a as f64) / connected as f64),
        _ => None,
    };
    let dropped = shared.dropped.load(Ordering::Relaxed);
    let flood_q = |p: f64| flood.as_ref().filter(|f| !f.hist.is_empty()).map(|f| f.hist.value_at_quantile(p) as f64 / 1000.0);
    let api_rps = flood.as_ref().map(|f| f.ok as f64 / f.secs);
    let via = if args.api_flood.is_some() || args.via == Via::Api { "api" } else { "socket" };
    let acked = shared.acked_ok.load(Ordering::Relaxed) + shared.acked_other.load(Ordering::Relaxed);
    let ack_secs = shared.last_ack_ns.load(Ordering::Relaxed).saturating_sub(send_start) as f64 / 1e9;
    let acks_per_sec = ack_args.as_ref().filter(|_| ack_secs > 0.0).map(|_| acked as f64 / ack_secs);

    let summary = format!(
        "ecos-bench {label}\n  clients {connected}/{clients} connected ({failed} failed, {dropped} dropped later) in {connect_secs:.2} s over {nurls} URL(s); CPU while connecting: server {csu}, generator {cbu}\n  \
         sent {sent} {what} from {senders} senders (rate {rate}), send phase {sendp:.2} s\n  \
         delivered {delivered} of {expected} expected, ratio {ratio}, {dps:.0} deliveries/s; acks ok {aok}, other {aother}\n  \
         latency ms: p50 {p50:.2}  p90 {p90:.2}  p99 {p99:.2}  max {max:.2}\n  \
         server RSS KiB: before {rb:?}, connected {rc:?}, end {re:?}; per connection {rpc}\n  \
         server CPU {scpu} s over {wall:.2} s ({sutil}); {cpd} us CPU per delivery; load generator CPU {bcpu} s in the same span on {threads} thread(s){flood_line}",
        label = args.label,
        what = if args.ack_event.is_some() { "acked emits" } else { "broadcasts" },
        csu = connect_server_util.map(|v| format!("{:.0}% of a core", v * 100.0)).unwrap_or_else(|| "n/a".into()),
        cbu = connect_bench_util.map(|v| format!("{:.0}%", v * 100.0)).unwrap_or_else(|| "n/a".into()),
        clients = args.clients,
        nurls = endpoints.len(),
        rate = if args.rate > 0.0 { format!("{}/s", args.rate) } else { "flat out".into() },
        sendp = (send_end - send_start) as f64 / 1e9,
        ratio = pct(ratio),
        dps = deliveries_per_sec,
        aok = shared.acked_ok.load(Ordering::Relaxed),
        aother = shared.acked_other.load(Ordering::Relaxed),
        rb = rss_before,
        rc = rss_connected,
        re = rss_end,
        rpc = rss_per_conn.map(|v| format!("{v:.1} KiB")).unwrap_or_else(|| "n/a".into()),
        scpu = server_cpu.map(|v| format!("{v:.2}")).unwrap_or_else(|| "n/a".into()),
        sutil = server_cpu.map(|v| format!("{:.0}% of a core", 100.0 * v / wall)).unwrap_or_else(|| "n/a".into()),
        cpd = match server_cpu {
            Some(v) if delivered > 0 => format!("{:.2}", v * 1e6 / delivered as f64),
            _ => "n/a".into(),
        },
        bcpu = bench_cpu.map(|v| format!("{v:.2}")).unwrap_or_else(|| "n/a".into()),
        flood_line = match &flood {
            Some(f) => format!(
                "\n  api flood: {} emits answered 200 ({} other) over {} keep-alive connections in {:.2} s: {:.0} requests/s; round trip ms p50 {:.2} p99 {:.2}",
                f.ok,
                f.errors,
                args.api_connections,
                f.secs,
                api_rps.unwrap_or(0.0),
                flood_q(0.5).unwrap_or(0.0),
                flood_q(0.99).unwrap_or(0.0)
            ),
            None => String::new(),
        },
    ) + &match (&args.ack_event, acks_per_sec) {
        (Some(event), Some(rate)) => format!(
            "\n  acks of `{event}`: {acked} in {ack_secs:.2} s, {rate:.0} acks/s (the latency figures above are their round trips)"
        ),
        _ => String::new(),
    };
    let json = serde_json::json!({
        "label": args.label,
        "urls": args.urls,
        "floor": args.floor,
        "source": if args.floor { "floor" } else if through_emitter { "emitter" } else { "clients" },
        "clients": args.clients,
        "connected": connected,
        "failed": failed,
        "dropped": dropped,
        "connect_secs": connect_secs,
        "connect_server_cpu_util": connect_server_util,
        "connect_server_cpu_us_per_conn": connect_server_cpu_us_per_conn,
        "connect_bench_cpu_util": connect_bench_util,
        "senders": senders,
        "rate": args.rate,
        "count": count,
        "sent": sent,
        "expected": expected,
        "delivered": delivered,
        "ratio": ratio,
        "acked_ok": shared.acked_ok.load(Ordering::Relaxed),
        "deliveries_per_sec": deliveries_per_sec,
        "send_secs": (send_end - send_start) as f64 / 1e9,
        "latency_ms": { "p50": p50, "p90": p90, "p99": p99, "max": max, "samples": hist.len() },
        "server_rss_kib": { "before": rss_before, "connected": rss_connected, "end": rss_end },
        "rss_per_conn_kib": rss_per_conn,
        "server_cpu_secs": server_cpu,
        "server_cpu_util": server_cpu.map(|v| v / wall),
        "server_cpu_us_per_delivery": server_cpu.filter(|_| delivered > 0).map(|v| v * 1e6 / delivered as f64),
        "bench_cpu_secs": bench_cpu,
        "bench_cpu_util": bench_cpu.map(|v| v / wall / threads as f64),
        "bench_threads": threads,
        "via": via,
        "api_requests_per_sec": api_rps,
        "api_requests_ok": flood.as_ref().map(|f| f.ok),
        "api_requests_other": flood.as_ref().map(|f| f.errors),
        "api_connections": flood.as_ref().map(|_| args.api_connections),
        "api_request_ms": flood.as_ref().map(|_| serde_json::json!({ "p50": flood_q(0.5), "p99": flood_q(0.99), "max": flood_q(1.0) })),
        "ack_event": args.ack_event,
        "ack_window": args.ack_flood.map(|_| args.ack_window),
        "acks_per_sec": acks_per_sec,
    });
    if args.json {
        eprintln!("{summary}");
        println!("{json}");
    } else {
        println!("{summary}");
    }
    Ok(if connected == args.clients { 0 } else { 1 })
}
