//! Settings: defaults, then an optional TOML file, then `ECOS_*` environment
//! variables, then the platform's plain `PORT` and `REDIS_URL`.
//!
//! Every key is read as text and parsed here, once, into [`Settings`], so a bad
//! value stops start-up with one line that names the key, the value and the
//! form that was expected, rather than a serde message about an internal type.

use std::{collections::HashMap, fmt, net::IpAddr, path::PathBuf, time::Duration};

use config::{Config, Environment, File, FileFormat, Map, Value, ValueKind};
use serde::Serialize;

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
    /// The layered sources could not be merged (for example a table where a value belongs).
    #[error("configuration error: {0}")]
    Merge(String),
}

/// Output format of the logs written to stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines, for a terminal.
    Text,
    /// One JSON object per line, for log drains and aggregators.
    Json,
}

/// Which origins may make cross-origin HTTP requests (long-polling) to ecos.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CorsPolicy {
    /// Same origin, plus any `http(s)://localhost`, `127.0.0.1` or `[::1]` origin on any port:
    /// the development default, which grants nothing to a remote site.
    LocalhostOnly,
    /// Any origin (`*`).
    Any,
    /// Exactly these origins (scheme, host and port).
    List(Vec<String>),
}

/// How Socket.IO packets are encoded on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SocketIoParser {
    /// The standard JSON-with-binary-attachments encoding every official client speaks.
    Default,
    /// MessagePack, for clients built with `socket.io-msgpack-parser` (or its equivalent).
    /// Clients using the default encoding cannot connect then.
    Msgpack,
}

/// The typed, validated settings ecos runs with.
#[derive(Debug, Clone, Serialize)]
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
    /// Async runtime settings.
    pub runtime: RuntimeSettings,
    /// Logging settings.
    pub log: LogSettings,
    /// Cross-origin policy for the HTTP transport.
    #[serde(serialize_with = "cors_origins")]
    pub cors: CorsPolicy,
    /// Engine.IO / Socket.IO protocol settings.
    pub socketio: SocketIoSettings,
    /// Input size limits.
    pub limits: Limits,
    /// Shutdown behaviour.
    pub shutdown: ShutdownSettings,
    /// Demo page settings.
    pub demo: DemoSettings,
    /// Redis connection for the cluster adapter; `None` runs a single in-memory instance.
    pub redis: RedisSettings,
}

/// Async runtime settings.
#[derive(Debug, Clone, Serialize)]
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
#[derive(Debug, Clone, Serialize)]
pub struct LogSettings {
    /// `text` or `json`.
    pub format: LogFormat,
    /// A `RUST_LOG`-style filter, e.g. `info` or `info,ecos=debug`.
    pub level: String,
}

/// Engine.IO / Socket.IO protocol settings.
#[derive(Debug, Clone, Serialize)]
pub struct SocketIoSettings {
    /// How often the server pings; must stay well under a router's idle cut-off (Heroku: 55 s,
    /// and a held long-poll must be answered within 30 s).
    #[serde(with = "secs", rename = "ping_interval_secs")]
    pub ping_interval: Duration,
    /// How long the server waits for a pong before closing the session.
    #[serde(with = "secs", rename = "ping_timeout_secs")]
    pub ping_timeout: Duration,
    /// How long a client has after the Engine.IO handshake to connect to a namespace.
    #[serde(with = "secs", rename = "connect_timeout_secs")]
    pub connect_timeout: Duration,
    /// Default time the server waits for a client's acknowledgement.
    #[serde(with = "secs", rename = "ack_timeout_secs")]
    pub ack_timeout: Duration,
    /// Packets queued per connection; a client whose queue overflows is a slow consumer.
    pub max_buffer_packets: usize,
    /// How long a connection's writes may stay blocked (the client is not
    /// reading) before it is closed as a slow consumer; `None` when 0 (never).
    #[serde(with = "opt_secs", rename = "slow_consumer_timeout_secs")]
    pub slow_consumer_timeout: Option<Duration>,
    /// Packet encoding: `default` or `msgpack`.
    pub parser: SocketIoParser,
    /// Also accept Engine.IO v3 clients (Socket.IO v2, e.g. `socket.io-client@2`).
    pub allow_eio3: bool,
}

/// Input size limits: anything above ends the offending session only.
#[derive(Debug, Clone, Serialize)]
pub struct Limits {
    /// Largest HTTP long-polling request body, in bytes.
    pub max_http_payload_bytes: u64,
    /// Largest WebSocket message, in bytes (the library default of 64 MiB is far too generous).
    pub max_ws_message_bytes: usize,
    /// Bytes read from a WebSocket per system call, and the read buffer each idle connection holds.
    pub ws_read_buffer_bytes: usize,
}

/// Shutdown behaviour.
#[derive(Debug, Clone, Serialize)]
pub struct ShutdownSettings {
    /// Longest time from SIGTERM to exit; under Heroku's 30 s before SIGKILL.
    #[serde(with = "secs", rename = "drain_timeout_secs")]
    pub drain_timeout: Duration,
    /// Time between `/readyz` turning 503 and sessions being closed, so a load
    /// balancer stops routing here first; part of `drain_timeout`.
    #[serde(with = "secs", rename = "delay_secs")]
    pub delay: Duration,
}

/// Demo page settings.
#[derive(Debug, Clone, Serialize)]
pub struct DemoSettings {
    /// A local copy of `socket.io.min.js` to serve instead of loading it from the CDN.
    pub client_script_path: Option<PathBuf>,
}

/// Redis settings for the cluster adapter.
#[derive(Debug, Clone, Serialize)]
pub struct RedisSettings {
    /// Connection URL (`redis://` or `rediss://`); masked when printed.
    #[serde(serialize_with = "mask_url")]
    pub url: Option<String>,
    /// Accept a TLS certificate that cannot be verified (Heroku Key-Value
    /// Store's `rediss://` uses a self-signed one). Off by default.
    pub tls_insecure: bool,
    /// Prefix of every channel and key, so several apps can share one Redis.
    pub prefix: String,
    /// Longest wait for a TCP + TLS + AUTH connection to Redis.
    #[serde(with = "secs", rename = "connect_timeout_secs")]
    pub connect_timeout: Duration,
    /// Longest wait for one Redis command (publish, subscribe, health ping).
    #[serde(with = "secs", rename = "command_timeout_secs")]
    pub command_timeout: Duration,
    /// Longest wait for the other instances to answer a cluster request
    /// (fetching sockets, aggregating acks).
    #[serde(with = "secs", rename = "request_timeout_secs")]
    pub request_timeout: Duration,
    /// How often each instance publishes its socket count for the cluster total.
    #[serde(with = "secs", rename = "stats_interval_secs")]
    pub stats_interval: Duration,
}

/// Where settings come from: an optional file and an environment.
///
/// Passing the environment in (rather than reading the process's) lets tests
/// check the layering without touching global state.
#[derive(Debug, Default, Clone)]
pub struct Sources {
    /// TOML file given with `--config` or `ECOS_CONFIG`.
    pub file: Option<PathBuf>,
    /// Environment variables, e.g. from `std::env::vars()`.
    pub env: HashMap<String, String>,
}

impl Sources {
    /// Sources from the process environment and an optional file path.
    pub fn from_process(file: Option<PathBuf>) -> Self {
        let env: HashMap<String, String> = std::env::vars().collect();
        let file = file.or_else(|| env.get("ECOS_CONFIG").map(PathBuf::from));
        Self { file, env }
    }
}

/// Every key ecos reads, its default, and what it accepts. The README's table mirrors this.
const KEYS: &[(&str, &str)] = &[
    ("port", "3000"),
    ("bind_address", "0.0.0.0"),
    ("listen_backlog", "1024"),
    ("instance_id", ""),
    ("runtime.worker_threads", "0"),
    ("log.format", "text"),
    ("log.level", "info"),
    ("cors.allowed_origins", ""),
    ("socketio.ping_interval_secs", "25"),
    ("socketio.ping_timeout_secs", "20"),
    ("socketio.connect_timeout_secs", "45"),
    ("socketio.ack_timeout_secs", "5"),
    ("socketio.max_buffer_packets", "1024"),
    ("socketio.slow_consumer_timeout_secs", "10"),
    ("socketio.parser", "default"),
    ("socketio.allow_eio3", "false"),
    ("limits.max_http_payload_bytes", "1000000"),
    ("limits.max_ws_message_bytes", "1000000"),
    ("limits.ws_read_buffer_bytes", "1024"),
    ("shutdown.drain_timeout_secs", "25"),
    ("shutdown.delay_secs", "0"),
    ("demo.client_script_path", ""),
    ("redis.url", ""),
    ("redis.tls_insecure", "false"),
    ("redis.prefix", ""),
    ("redis.connect_timeout_secs", "5"),
    ("redis.command_timeout_secs", "2"),
    ("redis.request_timeout_secs", "5"),
    ("redis.stats_interval_secs", "5"),
];

impl Settings {
    /// Loads and validates the settings from `sources`.
    pub fn load(sources: &Sources) -> Result<Self, ConfigError> {
        let merged = merge(sources)?;
        let get = |key: &str| -> String {
            // Every key has a default, so a missing one only happens for a
            // table given where a value belongs, which `lookup` reports.
            lookup(&merged, key).unwrap_or_default()
        };
        let env = &sources.env;
        let port_origin = if env.contains_key("PORT") {
            " (from PORT)"
        } else {
            ""
        };

        let settings = Settings {
            port: parse(
                "port",
                &get("port"),
                "an integer from 0 to 65535",
                port_origin,
            )?,
            bind_address: parse(
                "bind_address",
                &get("bind_address"),
                "an IP address such as 0.0.0.0 or ::",
                "",
            )?,
            listen_backlog: bounded(
                "listen_backlog",
                &get("listen_backlog"),
                1..=65535,
                "a whole number from 1 to 65535",
            )?,
            instance_id: instance_id(&get("instance_id"), env)?,
            runtime: RuntimeSettings {
                worker_threads: bounded(
                    "runtime.worker_threads",
                    &get("runtime.worker_threads"),
                    0..=1024,
                    "a whole number from 0 (one per CPU) to 1024",
                )?,
            },
            log: LogSettings {
                format: match get("log.format").trim().to_ascii_lowercase().as_str() {
                    "text" => LogFormat::Text,
                    "json" => LogFormat::Json,
                    other => return Err(invalid("log.format", other, "`text` or `json`", "")),
                },
                level: log_level(&get("log.level"), env)?,
            },
            cors: cors(&get("cors.allowed_origins"))?,
            socketio: SocketIoSettings {
                ping_interval: duration(
                    "socketio.ping_interval_secs",
                    &get("socketio.ping_interval_secs"),
                )?,
                ping_timeout: duration(
                    "socketio.ping_timeout_secs",
                    &get("socketio.ping_timeout_secs"),
                )?,
                connect_timeout: duration(
                    "socketio.connect_timeout_secs",
                    &get("socketio.connect_timeout_secs"),
                )?,
                ack_timeout: duration(
                    "socketio.ack_timeout_secs",
                    &get("socketio.ack_timeout_secs"),
                )?,
                max_buffer_packets: positive(
                    "socketio.max_buffer_packets",
                    &get("socketio.max_buffer_packets"),
                )?,
                slow_consumer_timeout: optional_duration(
                    "socketio.slow_consumer_timeout_secs",
                    &get("socketio.slow_consumer_timeout_secs"),
                )?,
                parser: match get("socketio.parser").trim().to_ascii_lowercase().as_str() {
                    "default" => SocketIoParser::Default,
                    "msgpack" => SocketIoParser::Msgpack,
                    other => {
                        return Err(invalid(
                            "socketio.parser",
                            other,
                            "`default` or `msgpack`",
                            "",
                        ));
                    }
                },
                allow_eio3: boolean("socketio.allow_eio3", &get("socketio.allow_eio3"))?,
            },
            limits: Limits {
                max_http_payload_bytes: positive(
                    "limits.max_http_payload_bytes",
                    &get("limits.max_http_payload_bytes"),
                )?,
                max_ws_message_bytes: positive(
                    "limits.max_ws_message_bytes",
                    &get("limits.max_ws_message_bytes"),
                )?,
                ws_read_buffer_bytes: positive(
                    "limits.ws_read_buffer_bytes",
                    &get("limits.ws_read_buffer_bytes"),
                )?,
            },
            shutdown: shutdown(
                &get("shutdown.drain_timeout_secs"),
                &get("shutdown.delay_secs"),
            )?,
            demo: DemoSettings {
                client_script_path: non_empty(&get("demo.client_script_path")).map(PathBuf::from),
            },
            redis: RedisSettings {
                url: redis_url(&get("redis.url"))?,
                tls_insecure: boolean("redis.tls_insecure", &get("redis.tls_insecure"))?,
                prefix: redis_prefix(&get("redis.prefix"), env)?,
                connect_timeout: duration(
                    "redis.connect_timeout_secs",
                    &get("redis.connect_timeout_secs"),
                )?,
                command_timeout: duration(
                    "redis.command_timeout_secs",
                    &get("redis.command_timeout_secs"),
                )?,
                request_timeout: duration(
                    "redis.request_timeout_secs",
                    &get("redis.request_timeout_secs"),
                )?,
                stats_interval: duration(
                    "redis.stats_interval_secs",
                    &get("redis.stats_interval_secs"),
                )?,
            },
        };
        Ok(settings)
    }

    /// Settings for tests and embedding: the defaults, bound to `127.0.0.1:0`.
    pub fn for_tests(instance_id: &str) -> Self {
        let env = HashMap::from([
            ("ECOS_PORT".to_owned(), "0".to_owned()),
            ("ECOS_BIND_ADDRESS".to_owned(), "127.0.0.1".to_owned()),
            ("ECOS_INSTANCE_ID".to_owned(), instance_id.to_owned()),
        ]);
        // The defaults are valid by construction; `defaults_are_valid` tests it.
        Self::load(&Sources { file: None, env }).expect("default settings are valid")
    }

    /// The effective settings as TOML `key = value` lines (dotted keys), secrets masked.
    pub fn to_display_string(&self) -> String {
        let value = serde_json::to_value(self).unwrap_or_default();
        let mut out = String::new();
        flatten("", &value, &mut out);
        out
    }
}

fn flatten(prefix: &str, value: &serde_json::Value, out: &mut String) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        // TOML has no null: show unset keys as comments so the output stays valid TOML.
        serde_json::Value::Null => out.push_str(&format!("# {prefix} is not set\n")),
        other => out.push_str(&format!("{prefix} = {other}\n")),
    }
}

fn merge(sources: &Sources) -> Result<Config, ConfigError> {
    let mut builder = Config::builder();
    for (key, default) in KEYS {
        builder = builder
            .set_default(*key, *default)
            .map_err(|e| ConfigError::Merge(e.to_string()))?;
    }
    if let Some(path) = &sources.file {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
            path: path.clone(),
            message: e.to_string(),
        })?;
        // Parsed on its own so a syntax error names the file; the parsed
        // config is itself a source for the layered build.
        let file = Config::builder()
            .add_source(File::from_str(&text, FileFormat::Toml))
            .build()
            .map_err(|e| ConfigError::File {
                path: path.clone(),
                message: e.to_string(),
            })?;
        builder = builder.add_source(file);
    }
    let ecos_env: Map<String, String> = sources
        .env
        .iter()
        .filter(|(k, _)| k.starts_with("ECOS_") && k.as_str() != "ECOS_CONFIG")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    builder = builder.add_source(
        Environment::with_prefix("ECOS")
            .prefix_separator("_")
            .separator("__")
            .source(Some(ecos_env)),
    );
    // The platform's own variables win: they are what the router and add-on set.
    for (var, key) in [("PORT", "port"), ("REDIS_URL", "redis.url")] {
        if let Some(v) = sources.env.get(var) {
            builder = builder
                .set_override(key, v.as_str())
                .map_err(|e| ConfigError::Merge(e.to_string()))?;
        }
    }
    builder
        .build()
        .map_err(|e| ConfigError::Merge(e.to_string()))
}

/// The value of `key` as text, whatever type the TOML file gave it.
fn lookup(config: &Config, key: &str) -> Option<String> {
    let value: Value = config.get(key).ok()?;
    Some(render(&value))
}

fn render(value: &Value) -> String {
    match &value.kind {
        ValueKind::Nil => String::new(),
        ValueKind::Array(items) => items.iter().map(render).collect::<Vec<_>>().join(","),
        ValueKind::Table(_) => "<table>".to_owned(),
        _ => value.to_string(),
    }
}

fn invalid(
    key: &'static str,
    value: &str,
    expected: &'static str,
    origin: &'static str,
) -> ConfigError {
    ConfigError::Invalid {
        key,
        value: value.to_owned(),
        expected,
        origin,
    }
}

fn parse<T: std::str::FromStr>(
    key: &'static str,
    raw: &str,
    expected: &'static str,
    origin: &'static str,
) -> Result<T, ConfigError> {
    raw.trim()
        .parse()
        .map_err(|_| invalid(key, raw, expected, origin))
}

fn positive<T: std::str::FromStr + PartialOrd + Default>(
    key: &'static str,
    raw: &str,
) -> Result<T, ConfigError> {
    let value: T = parse(key, raw, "a whole number greater than 0", "")?;
    if value > T::default() {
        Ok(value)
    } else {
        Err(invalid(key, raw, "a whole number greater than 0", ""))
    }
}

/// A whole number within `range`.
fn bounded<T: std::str::FromStr + PartialOrd>(
    key: &'static str,
    raw: &str,
    range: std::ops::RangeInclusive<T>,
    expected: &'static str,
) -> Result<T, ConfigError> {
    let value: T = parse(key, raw, expected, "")?;
    if range.contains(&value) {
        Ok(value)
    } else {
        Err(invalid(key, raw, expected, ""))
    }
}

/// Seconds as a decimal number, e.g. `25` or `0.3`; must be greater than zero.
fn duration(key: &'static str, raw: &str) -> Result<Duration, ConfigError> {
    const EXPECTED: &str = "a number of seconds greater than 0, e.g. 25 or 0.5";
    let secs: f64 = parse(key, raw, EXPECTED, "")?;
    if secs.is_finite() && secs > 0.0 && secs < 1.0e9 {
        Ok(Duration::from_secs_f64(secs))
    } else {
        Err(invalid(key, raw, EXPECTED, ""))
    }
}

/// A duration where 0 means "off".
fn optional_duration(key: &'static str, raw: &str) -> Result<Option<Duration>, ConfigError> {
    const EXPECTED: &str = "a number of seconds, 0 to turn it off, e.g. 10 or 2.5";
    let secs: f64 = parse(key, raw, EXPECTED, "")?;
    if secs == 0.0 {
        Ok(None)
    } else if secs.is_finite() && secs > 0.0 && secs < 1.0e9 {
        Ok(Some(Duration::from_secs_f64(secs)))
    } else {
        Err(invalid(key, raw, EXPECTED, ""))
    }
}

fn shutdown(drain_raw: &str, delay_raw: &str) -> Result<ShutdownSettings, ConfigError> {
    const EXPECTED: &str = "a number of seconds from 0 to less than shutdown.drain_timeout_secs";
    let drain_timeout = duration("shutdown.drain_timeout_secs", drain_raw)?;
    let delay: f64 = parse("shutdown.delay_secs", delay_raw, EXPECTED, "")?;
    if !(delay.is_finite() && delay >= 0.0 && delay < drain_timeout.as_secs_f64()) {
        return Err(invalid("shutdown.delay_secs", delay_raw, EXPECTED, ""));
    }
    Ok(ShutdownSettings {
        drain_timeout,
        delay: Duration::from_secs_f64(delay),
    })
}

fn non_empty(raw: &str) -> Option<String> {
    let trimmed = raw.trim();
    (!trimmed.is_empty()).then(|| trimmed.to_owned())
}

/// `$DYNO` (Heroku's `web.1`) wins, then the configured name, then a generated one.
fn instance_id(raw: &str, env: &HashMap<String, String>) -> Result<String, ConfigError> {
    let chosen = env
        .get("DYNO")
        .and_then(|d| non_empty(d))
        .or_else(|| non_empty(raw))
        .unwrap_or_else(generated_instance_id);
    let valid = chosen.len() <= 64
        && chosen
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'));
    if valid {
        Ok(chosen)
    } else {
        Err(invalid(
            "instance_id",
            &chosen,
            "at most 64 characters from A-Z a-z 0-9 . - _ :",
            "",
        ))
    }
}

fn generated_instance_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    // RandomState is seeded per process, which is all the uniqueness a label needs.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    format!("ecos-{:08x}", hasher.finish() as u32)
}

/// `log.level`, falling back to `RUST_LOG` when ecos's own key was left at its default.
fn log_level(raw: &str, env: &HashMap<String, String>) -> Result<String, ConfigError> {
    let explicit = env.contains_key("ECOS_LOG__LEVEL") || raw.trim() != "info";
    let level = match env.get("RUST_LOG") {
        Some(rust_log) if !explicit && !rust_log.trim().is_empty() => rust_log.trim().to_owned(),
        _ => raw.trim().to_owned(),
    };
    tracing_subscriber::EnvFilter::try_new(&level)
        .map(|_| level.clone())
        .map_err(|_| {
            invalid(
                "log.level",
                &level,
                "a RUST_LOG-style filter such as `info` or `info,ecos=debug`",
                "",
            )
        })
}

fn cors(raw: &str) -> Result<CorsPolicy, ConfigError> {
    let origins: Vec<String> = raw
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.trim_end_matches('/').to_owned())
        .collect();
    if origins.is_empty() {
        return Ok(CorsPolicy::LocalhostOnly);
    }
    if origins.iter().any(|o| o == "*") {
        return Ok(CorsPolicy::Any);
    }
    for origin in &origins {
        let ok = (origin.starts_with("http://") || origin.starts_with("https://"))
            && origin
                .split("://")
                .nth(1)
                .is_some_and(|rest| !rest.is_empty() && !rest.contains('/'))
            && axum::http::HeaderValue::from_str(origin).is_ok();
        if !ok {
            return Err(invalid(
                "cors.allowed_origins",
                origin,
                "`*` or a comma-separated list of origins such as https://app.example.com",
                "",
            ));
        }
    }
    Ok(CorsPolicy::List(origins))
}

fn redis_url(raw: &str) -> Result<Option<String>, ConfigError> {
    use redis::IntoConnectionInfo;
    let Some(url) = non_empty(raw) else {
        return Ok(None);
    };
    let scheme_ok = url.starts_with("redis://") || url.starts_with("rediss://");
    // Parse with the client's own parser so a URL that passes here also connects.
    if scheme_ok && url.as_str().into_connection_info().is_ok() {
        Ok(Some(url))
    } else {
        Err(ConfigError::Invalid {
            key: "redis.url",
            value: mask(&url),
            expected: "a URL such as redis://host:6379 or rediss://user:password@host:port/0",
            origin: "",
        })
    }
}

fn boolean(key: &'static str, raw: &str) -> Result<bool, ConfigError> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" | "" => Ok(false),
        _ => Err(invalid(key, raw, "`true` or `false`", "")),
    }
}

/// The configured prefix, else `ecos-<app name>` from the platform, else `ecos`.
fn redis_prefix(raw: &str, env: &HashMap<String, String>) -> Result<String, ConfigError> {
    const PLATFORM_APP_NAMES: &[&str] = &[
        "HEROKU_APP_NAME",
        "FLY_APP_NAME",
        "RENDER_SERVICE_NAME",
        "RAILWAY_SERVICE_NAME",
    ];
    let prefix = non_empty(raw).unwrap_or_else(|| {
        PLATFORM_APP_NAMES
            .iter()
            .find_map(|var| env.get(*var).and_then(|v| non_empty(v)))
            .map(|app| format!("ecos-{app}"))
            .unwrap_or_else(|| "ecos".to_owned())
    });
    // The adapter separates channel parts with `#`.
    let valid = prefix.len() <= 64 && prefix.chars().all(|c| c.is_ascii_graphic() && c != '#');
    if valid {
        Ok(prefix)
    } else {
        Err(invalid(
            "redis.prefix",
            &prefix,
            "at most 64 visible ASCII characters, without `#` or spaces",
            "",
        ))
    }
}

/// Hides the password in a URL such as `rediss://user:secret@host:port`.
pub fn mask(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "****".to_owned();
    };
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:****@{host}")
        }
        None => url.to_owned(),
    }
}

fn mask_url<S: serde::Serializer>(url: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match url {
        Some(u) => s.serialize_str(&mask(u)),
        None => s.serialize_none(),
    }
}

/// Prints the CORS policy as the `cors.allowed_origins` value that gives it.
fn cors_origins<S: serde::Serializer>(policy: &CorsPolicy, s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let origins = match policy {
        CorsPolicy::LocalhostOnly => String::new(),
        CorsPolicy::Any => "*".to_owned(),
        CorsPolicy::List(list) => list.join(","),
    };
    let mut map = s.serialize_map(Some(1))?;
    map.serialize_entry("allowed_origins", &origins)?;
    map.end()
}

mod secs {
    use std::time::Duration;
    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
}

/// Serializes an optional duration as seconds, with 0 for "off".
mod opt_secs {
    use std::time::Duration;
    pub fn serialize<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.map_or(0.0, |d| d.as_secs_f64()))
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

#[cfg(test)]
mod socketio_option_tests {
    use super::*;

    fn load(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let env = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Settings::load(&Sources { file: None, env })
    }

    #[test]
    fn parser_and_eio3_default_to_the_standard_protocol() {
        let s = load(&[]).unwrap();
        assert_eq!(s.socketio.parser, SocketIoParser::Default);
        assert!(!s.socketio.allow_eio3);
        let text = s.to_display_string();
        assert!(text.contains("socketio.parser = \"default\""), "{text}");
        assert!(text.contains("socketio.allow_eio3 = false"), "{text}");
    }

    #[test]
    fn parser_and_eio3_are_read_from_the_environment() {
        let s = load(&[
            ("ECOS_SOCKETIO__PARSER", " MsgPack "),
            ("ECOS_SOCKETIO__ALLOW_EIO3", "true"),
        ])
        .unwrap();
        assert_eq!(s.socketio.parser, SocketIoParser::Msgpack);
        assert!(s.socketio.allow_eio3);
    }

    #[test]
    fn bad_parser_or_eio3_values_name_the_key() {
        let err = load(&[("ECOS_SOCKETIO__PARSER", "json")])
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "invalid value for `socketio.parser`: \"json\"; expected `default` or `msgpack`"
        );
        let err = load(&[("ECOS_SOCKETIO__ALLOW_EIO3", "maybe")])
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "invalid value for `socketio.allow_eio3`: \"maybe\"; expected `true` or `false`"
        );
    }
}
