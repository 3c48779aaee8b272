//! Settings: defaults, then an optional TOML file, then `ECOS_*` environment
//! variables, then the platform's plain `PORT` and `REDIS_URL`.
//!
//! - [`keys`]: the table of every setting (name, default, README text, parser);
//! - [`parse`]: value parsers, each naming the key and the expected form on error;
//! - [`load`]: layering, the unknown-key check, `--print-config`.
//!
//! Every key is read as text and parsed once into [`Settings`], so a bad value
//! or an unknown key stops start-up with one line that names it.

pub mod keys;
pub mod load;
pub mod parse;

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr},
    path::PathBuf,
    time::Duration,
};

pub use load::Sources;
pub use parse::mask;

/// Why the settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A key holds a value of the wrong form.
    #[error("invalid value for `{key}`{origin}: {value:?}; expected {expected}")]
    Invalid {
        /// The dotted key, e.g. `socketio.ping_interval_secs`.
        key: &'static str,
        /// The offending value as it was given.
        value: String,
        /// The form the key accepts.
        expected: &'static str,
        /// Where the value came from when that is not obvious (e.g. ` (from PORT)`).
        origin: &'static str,
    },
    /// The configuration file could not be read or is not valid TOML.
    #[error("cannot read configuration file {path}: {message}")]
    File {
        /// The path given with `--config` or `ECOS_CONFIG`.
        path: PathBuf,
        /// What the TOML reader said.
        message: String,
    },
    /// A key in the file or an `ECOS_*` variable is not a setting (often a typo).
    #[error("unknown setting {name} (in {place}){}", suggestion.map(|s| format!("; did you mean `{s}`?")).unwrap_or_default())]
    UnknownKey {
        /// The key or variable as given.
        name: String,
        /// Where it was found: the file's path, or `the environment`.
        place: String,
        /// The closest valid key, when one is close.
        suggestion: Option<&'static str>,
    },
    /// A value is well-formed but needs another key that is missing.
    #[error("`{key} = {value}` needs {needs}")]
    Requires {
        /// The key whose value needs more.
        key: &'static str,
        /// Its value.
        value: String,
        /// What else must be set, naming the keys.
        needs: &'static str,
    },
    /// A value names a resource (a file) that cannot be used.
    #[error("cannot use `{key}` ({value}): {message}")]
    Unusable {
        /// The key.
        key: &'static str,
        /// Its value (never a secret).
        value: String,
        /// Why it cannot be used.
        message: String,
    },
    /// The layered sources could not be merged (for example a table where a value belongs).
    #[error("configuration error: {0}")]
    Merge(String),
}

/// Output format of the logs written to stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines, for a terminal.
    #[default]
    Text,
    /// One JSON object per line, for log drains and aggregators.
    Json,
}

/// Which origins may make cross-origin HTTP requests (long-polling) to ecos.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum CorsPolicy {
    /// Same origin, plus any `http(s)://localhost`, `127.0.0.1` or `[::1]` origin on any port:
    /// the development default, which grants nothing to a remote site.
    #[default]
    LocalhostOnly,
    /// Any origin (`*`).
    Any,
    /// Exactly these origins (scheme, host and port).
    List(Vec<String>),
}

/// How Socket.IO packets are encoded on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SocketIoParser {
    /// The standard JSON-with-binary-attachments encoding every official client speaks.
    #[default]
    Default,
    /// MessagePack, for clients built with `socket.io-msgpack-parser` (or its equivalent).
    /// Clients using the default encoding cannot connect then.
    Msgpack,
}

/// The typed, validated settings ecos runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    /// TCP port to listen on (`PORT` on every platform; 0 picks a free port).
    pub port: u16,
    /// Address to bind; `0.0.0.0` because platform routers connect from outside the container.
    pub bind_address: IpAddr,
    /// Connections the kernel queues for ecos to accept; a reconnect storm
    /// after a deploy overflows a short queue, and each dropped SYN costs its
    /// client a 1 s retransmission (the kernel caps it at `net.core.somaxconn`).
    pub listen_backlog: u32,
    /// Name of this instance in logs, metrics and the `welcome` event.
    pub instance_id: String,
    /// Whether `instance_id` was generated at start-up rather than configured,
    /// so `--print-config` does not write one process's random id into a file.
    pub instance_id_generated: bool,
    /// Async runtime settings.
    pub runtime: RuntimeSettings,
    /// Logging settings.
    pub log: LogSettings,
    /// Cross-origin policy for the HTTP transport.
    pub cors: CorsPolicy,
    /// Engine.IO / Socket.IO protocol settings.
    pub socketio: SocketIoSettings,
    /// Input size and connection limits.
    pub limits: Limits,
    /// Shutdown behaviour.
    pub shutdown: ShutdownSettings,
    /// Demo page settings.
    pub demo: DemoSettings,
    /// Redis connection for the cluster adapter; `None` runs a single in-memory instance.
    pub redis: RedisSettings,
    /// What `/readyz` requires before it answers 200.
    pub readiness: ReadinessSettings,
    /// Who may connect, and what a connection may do.
    pub auth: AuthSettings,
    /// The listener for socket.io's own Redis format (`@socket.io/redis-emitter`).
    pub emitter: EmitterSettings,
    /// The HTTP server API for backends (`/api/v1/...`).
    pub api: ApiSettings,
    /// Who may read `/metrics`.
    pub metrics: MetricsSettings,
    /// Signed HTTP calls to the team's backend (connect, events, disconnect).
    pub webhooks: WebhookSettings,
}

/// Async runtime settings.
#[derive(Debug, Clone, Default)]
pub struct RuntimeSettings {
    /// Threads that run connections; 0 means one per CPU the process may use.
    /// Platforms often show more CPUs than a small container's share (a
    /// Heroku standard dyno has no dedicated core), where fewer threads do as well.
    pub worker_threads: usize,
}

impl RuntimeSettings {
    /// The number of worker threads to start: the setting, or one per usable CPU.
    pub fn effective_worker_threads(&self) -> usize {
        if self.worker_threads > 0 {
            self.worker_threads
        } else {
            std::thread::available_parallelism().map_or(1, usize::from)
        }
    }
}

/// Logging settings.
#[derive(Debug, Clone, Default)]
pub struct LogSettings {
    /// `text` or `json`.
    pub format: LogFormat,
    /// A `RUST_LOG`-style filter, e.g. `info` or `info,ecos=debug`.
    pub level: String,
}

/// Engine.IO / Socket.IO protocol settings.
#[derive(Debug, Clone, Default)]
pub struct SocketIoSettings {
    /// How often the server pings; must stay well under a router's idle cut-off (Heroku: 55 s,
    /// and a held long-poll must be answered within 30 s).
    pub ping_interval: Duration,
    /// How long the server waits for a pong before closing the session.
    pub ping_timeout: Duration,
    /// How long a client has after the Engine.IO handshake to connect to a namespace.
    pub connect_timeout: Duration,
    /// Default time the server waits for a client's acknowledgement.
    pub ack_timeout: Duration,
    /// Packets queued per connection; a client whose queue overflows is a slow consumer.
    pub max_buffer_packets: usize,
    /// How long a connection's writes may stay blocked (the client is not
    /// reading) before it is closed as a slow consumer; `None` when 0 (never).
    pub slow_consumer_timeout: Option<Duration>,
    /// Packet encoding: `default` or `msgpack`.
    pub parser: SocketIoParser,
    /// Also accept Engine.IO v3 clients (Socket.IO v2, e.g. `socket.io-client@2`).
    pub allow_eio3: bool,
}

/// Input size and connection limits: anything above ends the offending session or connection only.
#[derive(Debug, Clone, Default)]
pub struct Limits {
    /// Largest HTTP long-polling request body, in bytes.
    pub max_http_payload_bytes: u64,
    /// Largest WebSocket message, in bytes (the library default of 64 MiB is far too generous).
    pub max_ws_message_bytes: usize,
    /// Bytes read from a WebSocket per system call, and the read buffer each idle connection holds.
    pub ws_read_buffer_bytes: usize,
    /// Events a socket may send per second, on average; 0 turns the limit off.
    pub events_per_second: f64,
    /// Events a socket may send at once before the rate applies.
    pub events_burst: f64,
    /// Rooms one socket may be in (its own joins).
    pub max_rooms_per_socket: usize,
    /// How long new broadcasts are refused after one found a full outgoing queue; `None`: never.
    pub overload_shed: Option<Duration>,
    /// How long a connection may take to send a complete request head,
    /// counted from its accept or from the first byte after an idle pause.
    pub header_read_timeout: Duration,
    /// How long an idle keep-alive connection is kept between requests; above
    /// the 90 s a Heroku-style router reuses its connections for, so the
    /// router, not ecos, always closes first.
    pub keep_alive_idle: Duration,
    /// Most TCP connections served at once (WebSockets included); `None`:
    /// only the file-descriptor limit caps them.
    pub max_connections: Option<usize>,
    /// Largest request head (request line plus headers), in bytes; larger gets 431.
    pub max_header_bytes: usize,
}

/// Shutdown behaviour.
#[derive(Debug, Clone, Default)]
pub struct ShutdownSettings {
    /// Longest time from SIGTERM to exit; under Heroku's 30 s before SIGKILL.
    pub drain_timeout: Duration,
    /// Time between `/readyz` turning 503 and sessions being closed, so a load
    /// balancer stops routing here first; part of `drain_timeout`.
    pub delay: Duration,
}

/// Demo page settings.
#[derive(Debug, Clone, Default)]
pub struct DemoSettings {
    /// A local copy of `socket.io.min.js` to serve instead of loading it from the CDN.
    pub client_script_path: Option<PathBuf>,
}

/// Redis settings for the cluster adapter.
#[derive(Debug, Clone, Default)]
pub struct RedisSettings {
    /// Connection URL (`redis://` or `rediss://`); masked when printed.
    pub url: Option<String>,
    /// Accept a TLS certificate that cannot be verified (Heroku Key-Value
    /// Store's `rediss://` uses a self-signed one). Off by default.
    pub tls_insecure: bool,
    /// Prefix of every channel and key, so several apps can share one Redis.
    pub prefix: String,
    /// Longest wait for a TCP + TLS + AUTH connection to Redis.
    pub connect_timeout: Duration,
    /// Longest wait for one Redis command (publish, subscribe, health ping).
    pub command_timeout: Duration,
    /// Longest wait for the other instances to answer a cluster request
    /// (fetching sockets, aggregating acks).
    pub request_timeout: Duration,
    /// How often each instance publishes its socket count for the cluster total.
    pub stats_interval: Duration,
}

/// Whether ecos listens to the official Redis emitter's messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EmitterMode {
    /// On when `redis.url` is set, off otherwise.
    #[default]
    Auto,
    /// On; `redis.url` must be set.
    On,
    /// Off, whatever the Redis setting.
    Off,
}

/// The listener for socket.io's own Redis wire format, so that
/// `@socket.io/redis-emitter` (and compatible emitters) reach ecos's clients.
#[derive(Debug, Clone, Default)]
pub struct EmitterSettings {
    /// `auto`, `true` or `false`.
    pub enabled: EmitterMode,
    /// The emitter's `key` option: channels are `<prefix>#/#…` and `<prefix>-request#/#`.
    pub prefix: String,
}

impl EmitterSettings {
    /// Whether the listener runs, given whether Redis is configured.
    pub fn active(&self, redis_configured: bool) -> bool {
        match self.enabled {
            EmitterMode::Auto => redis_configured,
            EmitterMode::On => true,
            EmitterMode::Off => false,
        }
    }
}

impl fmt::Display for EmitterMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EmitterMode::Auto => "auto",
            EmitterMode::On => "true",
            EmitterMode::Off => "false",
        })
    }
}

/// What `/readyz` requires before it answers 200.
#[derive(Debug, Clone, Default)]
pub struct ReadinessSettings {
    /// Answer 503 (`degraded`) while the Redis link is down. Off by default:
    /// Redis is shared, so a readiness that follows it takes every instance
    /// out of the load balancer at once, although each one still serves its
    /// own clients.
    pub require_redis: bool,
}

/// How connections are authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthMode {
    /// Anyone may connect and use every event (the demo, development).
    #[default]
    None,
    /// A signed JWT is required on connect; its claims name the user and bound the rooms.
    Jwt,
}

/// Who may connect, and what a connection may do.
#[derive(Debug, Clone, Default)]
pub struct AuthSettings {
    /// `none` or `jwt`.
    pub mode: AuthMode,
    /// How tokens are verified in `jwt` mode.
    pub jwt: JwtSettings,
}

/// How connection tokens are verified.
#[derive(Debug, Clone, Default)]
pub struct JwtSettings {
    /// HMAC secrets (HS256/384/512); several at once while rotating. Never printed.
    pub secrets: Vec<Secret>,
    /// A PEM public key (RSA, EC P-256/P-384 or Ed25519), read at start-up.
    pub public_key_file: Option<PathBuf>,
    /// An identity provider's JWKS endpoint.
    pub jwks_url: Option<String>,
    /// The `iss` a token must carry, when set.
    pub issuer: Option<String>,
    /// The `aud` a token must carry, when set.
    pub audience: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`.
    pub leeway: Duration,
    /// The claim that holds the user id.
    pub user_claim: String,
    /// The claim that lists the rooms a socket may use.
    pub rooms_claim: String,
    /// Refuse tokens without `exp`: a token that never expires cannot be revoked by waiting.
    pub require_exp: bool,
}

impl fmt::Display for AuthMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AuthMode::None => "none",
            AuthMode::Jwt => "jwt",
        })
    }
}

/// A secret setting (an API key, a token): its `Debug` form never shows it,
/// so a settings dump or a panic message cannot leak it into the logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one comparison that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(****)")
    }
}

/// The HTTP server API for backends.
#[derive(Debug, Clone, Default)]
pub struct ApiSettings {
    /// Keys a backend may send as `Authorization: Bearer <key>`; several at
    /// once allow rotation. Empty: the API is off and every `/api/` route is 404.
    pub keys: Vec<Secret>,
    /// Largest request body the API reads; larger gets 413.
    pub max_body_bytes: usize,
}

impl ApiSettings {
    /// Whether the API is served (at least one key is configured).
    pub fn enabled(&self) -> bool {
        !self.keys.is_empty()
    }
}

/// Who may read `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct MetricsSettings {
    /// When set, `/metrics` answers 401 without `Authorization: Bearer <token>`.
    pub token: Option<Secret>,
}

/// Signed HTTP calls to the team's backend.
#[derive(Debug, Clone, Default)]
pub struct WebhookSettings {
    /// The backend endpoint; webhooks are off when unset.
    pub url: Option<String>,
    /// The HMAC key of `X-Ecos-Signature`.
    pub secret: Option<Secret>,
    /// Ask the backend to authorize every connection.
    pub connect: bool,
    /// Handshake headers passed to the connect hook (lowercase names).
    pub forward_headers: Vec<String>,
    /// Client events forwarded to the backend.
    pub events: Vec<String>,
    /// Notify the backend of every disconnection.
    pub disconnect: bool,
    /// How long one request may take, the wait for a free slot included.
    pub timeout: Duration,
    /// Requests in flight to the backend at once, per instance.
    pub max_concurrency: usize,
    /// Let clients in (anonymously) when the connect hook cannot answer.
    pub fail_open: bool,
    /// Disconnect notifications waiting or being retried, at most.
    pub disconnect_queue: usize,
    /// How long a disconnect notification is retried.
    pub retry_for: Duration,
}

impl WebhookSettings {
    /// Whether any hook is on (the URL is set).
    pub fn enabled(&self) -> bool {
        self.url.is_some()
    }
}

impl Default for Settings {
    /// Empty values, each overwritten by its key's default when loading.
    fn default() -> Self {
        Self {
            port: 0,
            bind_address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            listen_backlog: 0,
            instance_id: String::new(),
            instance_id_generated: false,
            runtime: RuntimeSettings::default(),
            log: LogSettings::default(),
            cors: CorsPolicy::default(),
            socketio: SocketIoSettings::default(),
            limits: Limits::default(),
            shutdown: ShutdownSettings::default(),
            demo: DemoSettings::default(),
            redis: RedisSettings::default(),
            readiness: ReadinessSettings::default(),
            auth: AuthSettings::default(),
            emitter: EmitterSettings::default(),
            api: ApiSettings::default(),
            metrics: MetricsSettings::default(),
            webhooks: WebhookSettings::default(),
        }
    }
}

impl CorsPolicy {
    /// The `cors.allowed_origins` value that gives this policy.
    pub fn origins_setting(&self) -> String {
        match self {
            CorsPolicy::LocalhostOnly => String::new(),
            CorsPolicy::Any => "*".to_owned(),
            CorsPolicy::List(list) => list.join(","),
        }
    }
}

impl fmt::Display for SocketIoParser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SocketIoParser::Default => "default",
            SocketIoParser::Msgpack => "msgpack",
        })
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        })
    }
}

/// A setting's effective value as `--print-config` writes it (TOML).
#[derive(Debug, Clone, PartialEq)]
pub enum Shown {
    /// A TOML literal: a number, a boolean or a quoted string.
    Value(String),
    /// No value (printed as a comment, TOML has no null).
    Unset,
    /// A value made up at start-up, which a saved file must not pin.
    Generated(String),
    /// A secret that is set: printed as a comment saying so (e.g. `2 keys`),
    /// never as a value a saved file would then hold.
    Hidden(String),
}

impl Shown {
    /// A number.
    pub fn num(n: impl fmt::Display) -> Self {
        Shown::Value(n.to_string())
    }
    /// A quoted string.
    pub fn text(s: impl fmt::Display) -> Self {
        Shown::Value(toml_string(&s.to_string()))
    }
    /// A boolean.
    pub fn flag(b: bool) -> Self {
        Shown::Value(b.to_string())
    }
    /// A duration in seconds.
    pub fn secs(d: Duration) -> Self {
        Shown::Value(d.as_secs_f64().to_string())
    }
    /// A quoted string, or unset.
    pub fn optional(s: Option<impl fmt::Display>) -> Self {
        s.map_or(Shown::Unset, Shown::text)
    }
}

/// A TOML basic string, with quotes and backslashes escaped.
fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
