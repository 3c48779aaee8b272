//! Every setting ecos reads, declared once: its dotted name, its default, the
//! platform variable that may also set it, the README's description, and the
//! parser that turns its text into a field of [`Settings`].
//!
//! The loader walks this table, the unknown-key check compares against it, and
//! the README's configuration table is generated from it (a test fails when
//! they disagree: `UPDATE_README=1 cargo test --test api readme` rewrites it).

use std::path::PathBuf;

use super::{
    AuthMode, ConfigError, EmitterMode, LogFormat, Settings, Shown, SocketIoParser,
    parse::{self, Raw},
};

/// One setting: where it comes from, what it means, how it is parsed.
pub struct Key {
    /// Dotted name, as in the TOML file (`socketio.ping_interval_secs`).
    pub name: &'static str,
    /// The default as text, parsed like any other value (`""`: unset).
    pub default: &'static str,
    /// How the README shows the default when the text alone would not say it.
    pub shown_default: Option<&'static str>,
    /// The platform's plain variable that also sets this key, and wins (`PORT`).
    pub platform_var: Option<&'static str>,
    /// What the setting does, as the README's table says it.
    pub doc: &'static str,
    /// Parses the value and stores it in its field.
    pub apply: fn(&mut Settings, &Raw<'_>) -> Result<(), ConfigError>,
    /// The effective value, for `--print-config`.
    pub show: fn(&Settings) -> Shown,
}

impl Key {
    /// The `ECOS_*` variable for this key (`.` becomes `__`).
    pub fn env_var(&self) -> String {
        format!("ECOS_{}", self.name.to_ascii_uppercase().replace('.', "__"))
    }
}

/// Every key, in the order the README lists them.
pub const KEYS: &[Key] = &[
    Key {
        name: "port",
        default: "3000",
        shown_default: None,
        platform_var: Some("PORT"),
        doc: r#"TCP port (0 picks a free one)"#,
        apply: |s, v| {
            s.port = v.parse("an integer from 0 to 65535")?;
            Ok(())
        },
        show: |s| Shown::num(s.port),
    },
    Key {
        name: "bind_address",
        default: "0.0.0.0",
        shown_default: None,
        platform_var: None,
        doc: r#"Address to bind. Platform routers connect from outside the container, so do not bind localhost there."#,
        apply: |s, v| {
            s.bind_address = v.parse("an IP address such as 0.0.0.0 or ::")?;
            Ok(())
        },
        show: |s| Shown::text(s.bind_address),
    },
    Key {
        name: "listen_backlog",
        default: "1024",
        shown_default: None,
        platform_var: None,
        doc: r#"Connections the kernel queues before ecos accepts them. When an instance restarts, all its clients reconnect elsewhere at once. A short queue then overflows, and every dropped connection attempt waits a 1 s retransmission. The kernel caps the value at `net.core.somaxconn`. From 1 to 65535."#,
        apply: |s, v| {
            s.listen_backlog = v.bounded(1..=65535, "a whole number from 1 to 65535")?;
            Ok(())
        },
        show: |s| Shown::num(s.listen_backlog),
    },
    Key {
        name: "runtime.worker_threads",
        default: "0",
        shown_default: None,
        platform_var: None,
        doc: r#"Threads that run the connections. `0` means one per CPU the process may use. Containers often see more CPUs than their share. A Heroku standard dyno, for example, has no dedicated core, and Heroku's guidance is a load average of at most 1.0 there, so `1` matches it. See [docs/performance.md](docs/performance.md#worker-threads)."#,
        apply: |s, v| {
            s.runtime.worker_threads =
                v.bounded(0..=1024, "a whole number from 0 (one per CPU) to 1024")?;
            Ok(())
        },
        show: |s| Shown::num(s.runtime.worker_threads),
    },
    Key {
        name: "instance_id",
        default: "",
        shown_default: Some(r#"generated `ecos-xxxxxxxx`"#),
        platform_var: None,
        doc: r#"Name of this instance in `welcome`, logs and the `node` label of metrics. `$DYNO` (e.g. `web.1`) wins when set. Up to 64 characters from `A-Z a-z 0-9 . - _ :`."#,
        apply: |s, v| {
            s.instance_id = parse::instance_id(v)?;
            Ok(())
        },
        show: |s| {
            if s.instance_id_generated {
                Shown::Generated(s.instance_id.clone())
            } else {
                Shown::text(&s.instance_id)
            }
        },
    },
    Key {
        name: "log.format",
        default: "text",
        shown_default: None,
        platform_var: None,
        doc: r#"`text` (human-readable; coloured only when stdout is a terminal and `NO_COLOR` is unset or empty, so a platform's log drain, which reads a pipe, gets plain text) or `json` (one object per line)"#,
        apply: |s, v| {
            s.log.format = v.choice(
                &[("text", LogFormat::Text), ("json", LogFormat::Json)],
                "`text` or `json`",
            )?;
            Ok(())
        },
        show: |s| Shown::text(s.log.format),
    },
    Key {
        name: "log.level",
        default: "info",
        shown_default: None,
        platform_var: None,
        doc: r#"A `RUST_LOG`-style filter such as `info,ecos=debug`. `RUST_LOG` is used when this key is not set."#,
        apply: |s, v| {
            s.log.level = parse::log_level(v)?;
            Ok(())
        },
        show: |s| Shown::text(&s.log.level),
    },
    Key {
        name: "cors.allowed_origins",
        default: "",
        shown_default: Some(r#"*(empty)*"#),
        platform_var: None,
        doc: r#"Which browser origins may use ecos: cross-origin long-polling requests (CORS), and Engine.IO sessions on both transports, since a page from any other origin gets `403` on the WebSocket upgrade and on polling (cross-site WebSocket hijacking). Clients that send no `Origin` (Node, Python, mobile) and pages served by ecos itself are not affected. Empty means same-origin pages plus any `http(s)://localhost`, `127.0.0.1` or `[::1]` origin on any port, which is handy in development and grants nothing to a remote site. Otherwise give a comma-separated list of origins (`https://app.example.com`), which replaces the localhost default, or `*` for any origin. Credentials are allowed, so a load balancer's sticky-session cookie travels with the requests."#,
        apply: |s, v| {
            s.cors = parse::cors(v)?;
            Ok(())
        },
        show: |s| Shown::text(s.cors.origins_setting()),
    },
    Key {
        name: "socketio.ping_interval_secs",
        default: "25",
        shown_default: None,
        platform_var: None,
        doc: r#"Heartbeat interval. Keep it well under 30 s on Heroku: a held long-poll GET is answered by the next ping, and the router cuts a request with no first byte after 30 s."#,
        apply: |s, v| {
            s.socketio.ping_interval = v.duration()?;
            Ok(())
        },
        show: |s| Shown::secs(s.socketio.ping_interval),
    },
    Key {
        name: "socketio.ping_timeout_secs",
        default: "20",
        shown_default: None,
        platform_var: None,
        doc: r#"How long to wait for a pong before closing the session"#,
        apply: |s, v| {
            s.socketio.ping_timeout = v.duration()?;
            Ok(())
        },
        show: |s| Shown::secs(s.socketio.ping_timeout),
    },
    Key {
        name: "socketio.connect_timeout_secs",
        default: "45",
        shown_default: None,
        platform_var: None,
        doc: r#"How long a client has, after the Engine.IO handshake, to connect to a namespace"#,
        apply: |s, v| {
            s.socketio.connect_timeout = v.duration()?;
            Ok(())
        },
        show: |s| Shown::secs(s.socketio.connect_timeout),
    },
    Key {
        name: "socketio.ack_timeout_secs",
        default: "5",
        shown_default: None,
        platform_var: None,
        doc: r#"How long the server waits for a client's ack (e.g. `latency`)"#,
        apply: |s, v| {
            s.socketio.ack_timeout = v.duration()?;
            Ok(())
        },
        show: |s| Shown::secs(s.socketio.ack_timeout),
    },
    Key {
        name: "socketio.parser",
        default: "default",
        shown_default: None,
        platform_var: None,
        doc: r#"`default` (JSON with binary attachments) or `msgpack` (for clients using `socket.io-msgpack-parser`). Clients must use the same parser as the server."#,
        apply: |s, v| {
            s.socketio.parser = v.choice(
                &[
                    ("default", SocketIoParser::Default),
                    ("msgpack", SocketIoParser::Msgpack),
                ],
                "`default` or `msgpack`",
            )?;
            Ok(())
        },
        show: |s| Shown::text(s.socketio.parser),
    },
    Key {
        name: "socketio.allow_eio3",
        default: "false",
        shown_default: None,
        platform_var: None,
        doc: r#"Also accept Engine.IO 3 clients (Socket.IO v2-era clients such as `socket.io-client@2`). Off: they get `400 {"code":5,"message":"Unsupported protocol version"}`. Known limit: binary from the server to a v2 client over long-polling does not arrive (an engineioxide bug; WebSocket works)."#,
        apply: |s, v| {
            s.socketio.allow_eio3 = v.boolean()?;
            Ok(())
        },
        show: |s| Shown::flag(s.socketio.allow_eio3),
    },
    Key {
        name: "socketio.max_buffer_packets",
        default: "1024",
        shown_default: None,
        platform_var: None,
        doc: r#"Packets queued per connection. A broadcast goes out to every socket's own queue, so this absorbs bursts without slowing anyone else. A queue only fills behind a client that stopped reading. See [Slow consumers](#slow-consumers)."#,
        apply: |s, v| {
            s.socketio.max_buffer_packets = v.positive()?;
            Ok(())
        },
        show: |s| Shown::num(s.socketio.max_buffer_packets),
    },
    Key {
        name: "socketio.slow_consumer_timeout_secs",
        default: "10",
        shown_default: None,
        platform_var: None,
        doc: r#"How long a connection's writes may stay blocked (the client is not reading) before ecos closes it as a slow consumer. `0` turns the timeout off; a queue overflow still closes the client."#,
        apply: |s, v| {
            s.socketio.slow_consumer_timeout = v.optional_duration()?;
            Ok(())
        },
        show: |s| Shown::secs(s.socketio.slow_consumer_timeout.unwrap_or_default()),
    },
    Key {
        name: "limits.max_http_payload_bytes",
        default: "1000000",
        shown_default: None,
        platform_var: None,
        doc: r#"Largest long-polling request body. A larger one gets `413` and ends that session."#,
        apply: |s, v| {
            s.limits.max_http_payload_bytes = v.positive()?;
            Ok(())
        },
        show: |s| Shown::num(s.limits.max_http_payload_bytes),
    },
    Key {
        name: "limits.max_ws_message_bytes",
        default: "1000000",
        shown_default: None,
        platform_var: None,
        doc: r#"Largest WebSocket message. A larger one ends that session. The library's own default is 64 MiB."#,
        apply: |s, v| {
            s.limits.max_ws_message_bytes = v.positive()?;
            Ok(())
        },
        show: |s| Shown::num(s.limits.max_ws_message_bytes),
    },
    Key {
        name: "limits.ws_read_buffer_bytes",
        default: "1024",
        shown_default: None,
        platform_var: None,
        doc: r#"Read buffer of each WebSocket, and the most read per system call. Each idle connection holds one. Larger messages still arrive whole; they just take more reads. The library default is 4096."#,
        apply: |s, v| {
            s.limits.ws_read_buffer_bytes = v.positive()?;
            Ok(())
        },
        show: |s| Shown::num(s.limits.ws_read_buffer_bytes),
    },
    Key {
        name: "limits.events_per_second",
        default: "100",
        shown_default: None,
        platform_var: None,
        doc: r#"Client events one socket may send per second, on average (a token bucket). An event over the limit is not handled; if it asked for an ack, the ack is `{ ok: false, error: "rate limited" }`. A client that stays over the limit for 5 s is disconnected (`reason="rate_limited"`). `rooms` and `room:members` cost 10 events each. `0` turns the limit off (the benchmarks do). See [docs/hardening.md](docs/hardening.md)."#,
        apply: |s, v| {
            s.limits.events_per_second = v.bounded(
                0.0..=1.0e6,
                "a number of events per second from 0 (off) to 1000000",
            )?;
            Ok(())
        },
        show: |s| Shown::num(s.limits.events_per_second),
    },
    Key {
        name: "limits.events_burst",
        default: "200",
        shown_default: None,
        platform_var: None,
        doc: r#"Events one socket may send at once before `limits.events_per_second` applies. At least 10, the cost of one listing."#,
        apply: |s, v| {
            s.limits.events_burst =
                v.bounded(10.0..=1.0e6, "a number of events from 10 to 1000000")?;
            Ok(())
        },
        show: |s| Shown::num(s.limits.events_burst),
    },
    Key {
        name: "limits.max_rooms_per_socket",
        default: "100",
        shown_default: None,
        platform_var: None,
        doc: r#"Rooms one socket may join. A `join` beyond it is acked `{ ok: false, error: "too many rooms" }`."#,
        apply: |s, v| {
            s.limits.max_rooms_per_socket = v.positive()?;
            Ok(())
        },
        show: |s| Shown::num(s.limits.max_rooms_per_socket),
    },
    Key {
        name: "limits.overload_shed_secs",
        default: "0",
        shown_default: None,
        platform_var: None,
        doc: r#"How long this instance refuses new `message` and `room:message` broadcasts after one found a socket's outgoing queue full, so the queues can drain instead of dropping more. A refused broadcast is acked `{ ok: false, error: "overloaded" }` and counted in `ecos_overloaded_total`. `0` (the default) turns shedding off: a long-polling client that stops polling keeps its queue full until its heartbeat ends it, and would keep the instance shedding (see [docs/hardening.md](docs/hardening.md) before turning it on)."#,
        apply: |s, v| {
            s.limits.overload_shed = v.optional_duration()?;
            Ok(())
        },
        show: |s| Shown::secs(s.limits.overload_shed.unwrap_or_default()),
    },
    Key {
        name: "limits.header_read_timeout_secs",
        default: "30",
        shown_default: None,
        platform_var: None,
        doc: r#"Time a connection has to send a complete request head (request line and headers), counted from when it is accepted, or from its first byte after an idle keep-alive pause. A connection that sends nothing, or trickles its head, is closed at this time: with `408` when part of a head arrived, silently otherwise. WebSockets, once upgraded, are not subject to it. See [docs/hardening.md](docs/hardening.md#slow-and-idle-connections)."#,
        apply: |s, v| {
            s.limits.header_read_timeout = v.duration()?;
            Ok(())
        },
        show: |s| Shown::secs(s.limits.header_read_timeout),
    },
    Key {
        name: "limits.keep_alive_idle_secs",
        default: "100",
        shown_default: None,
        platform_var: None,
        doc: r#"How long an idle HTTP keep-alive connection is kept between two requests. Keep it above your router's own idle time: Heroku's router reuses a connection for up to 90 s, and an app that closes first makes it fail requests. WebSockets and held long-polling requests are not idle in this sense."#,
        apply: |s, v| {
            s.limits.keep_alive_idle = v.duration()?;
            Ok(())
        },
        show: |s| Shown::secs(s.limits.keep_alive_idle),
    },
    Key {
        name: "limits.max_connections",
        default: "10000",
        shown_default: None,
        platform_var: None,
        doc: r#"Most TCP connections served at once, WebSockets included. `0` means no cap of its own. Either way the cap is lowered to what the open-file limit allows, with room kept for Redis and health checks. Over the cap, a connection still gets `/healthz` and `/readyz`; any other request gets `503` and the connection is closed."#,
        apply: |s, v| {
            let max: usize = v.parse("a whole number, 0 for no cap")?;
            s.limits.max_connections = (max > 0).then_some(max);
            Ok(())
        },
        show: |s| Shown::num(s.limits.max_connections.unwrap_or(0)),
    },
    Key {
        name: "limits.max_header_bytes",
        default: "16384",
        shown_default: None,
        platform_var: None,
        doc: r#"Largest request head (request line and headers). A larger one gets `431` and the connection is closed. From 1024 to 262144; Node's default is 16384."#,
        apply: |s, v| {
            s.limits.max_header_bytes =
                v.bounded(1024..=262_144, "a whole number from 1024 to 262144")?;
            Ok(())
        },
        show: |s| Shown::num(s.limits.max_header_bytes),
    },
    Key {
        name: "shutdown.drain_timeout_secs",
        default: "25",
        shown_default: None,
        platform_var: None,
        doc: r#"Longest time from SIGTERM to exit (Heroku sends SIGKILL 30 s after SIGTERM)"#,
        apply: |s, v| {
            s.shutdown.drain_timeout = v.duration()?;
            Ok(())
        },
        show: |s| Shown::secs(s.shutdown.drain_timeout),
    },
    Key {
        name: "shutdown.delay_secs",
        default: "0",
        shown_default: None,
        platform_var: None,
        doc: r#"Time between `/readyz` turning 503 and sessions being closed, so a load balancer stops routing here first (Kubernetes: a few seconds). Counts toward the drain timeout and must be less than it."#,
        apply: |s, v| {
            s.shutdown.delay = parse::shutdown_delay(v)?;
            Ok(())
        },
        show: |s| Shown::secs(s.shutdown.delay),
    },
    Key {
        name: "demo.client_script_path",
        default: "",
        shown_default: Some(r#"*(unset)*"#),
        platform_var: None,
        doc: r#"Local `socket.io.min.js` to serve instead of the CDN copy"#,
        apply: |s, v| {
            s.demo.client_script_path = v.non_empty().map(PathBuf::from);
            Ok(())
        },
        show: |s| Shown::optional(s.demo.client_script_path.as_ref().map(|p| p.display())),
    },
    Key {
        name: "redis.url",
        default: "",
        shown_default: Some(r#"*(unset)*"#),
        platform_var: Some("REDIS_URL"),
        doc: r#"`redis://` or `rediss://` URL (user, password and database number allowed). Unset means a single instance with the in-memory adapter. See below."#,
        apply: |s, v| {
            s.redis.url = parse::redis_url(v)?;
            Ok(())
        },
        show: |s| Shown::optional(s.redis.url.as_deref().map(parse::mask)),
    },
    Key {
        name: "redis.tls_insecure",
        default: "false",
        shown_default: None,
        platform_var: None,
        doc: r#"Accept a `rediss://` certificate that cannot be verified. Heroku Key-Value Store needs `true`: its certificate is self-signed. Verification stays on by default."#,
        apply: |s, v| {
            s.redis.tls_insecure = v.boolean()?;
            Ok(())
        },
        show: |s| Shown::flag(s.redis.tls_insecure),
    },
    Key {
        name: "redis.prefix",
        default: "",
        shown_default: Some(r#"`ecos-<app>` or `ecos`"#),
        platform_var: None,
        doc: r#"Prefix of every channel and key, so several apps can share one Redis. The default uses the app name the platform sets (`HEROKU_APP_NAME`, `FLY_APP_NAME`, `RENDER_SERVICE_NAME`, `RAILWAY_SERVICE_NAME`), else `ecos`. No `#` or spaces."#,
        apply: |s, v| {
            s.redis.prefix = parse::redis_prefix(v)?;
            Ok(())
        },
        show: |s| Shown::text(&s.redis.prefix),
    },
    Key {
        name: "redis.connect_timeout_secs",
        default: "5",
        shown_default: None,
        platform_var: None,
        doc: r#"Longest wait for a connection to Redis (TCP, TLS, AUTH)"#,
        apply: |s, v| {
            s.redis.connect_timeout = v.duration()?;
            Ok(())
        },
        show: |s| Shown::secs(s.redis.connect_timeout),
    },
    Key {
        name: "redis.command_timeout_secs",
        default: "2",
        shown_default: None,
        platform_var: None,
        doc: r#"Longest wait for one Redis command (publish, subscribe, health ping). A slow Redis never blocks a handler for longer."#,
        apply: |s, v| {
            s.redis.command_timeout = v.duration()?;
            Ok(())
        },
        show: |s| Shown::secs(s.redis.command_timeout),
    },
    Key {
        name: "redis.request_timeout_secs",
        default: "5",
        shown_default: None,
        platform_var: None,
        doc: r#"Longest wait for the other instances to answer a cluster request (`room:members`, the ack count of `room:ask`)"#,
        apply: |s, v| {
            s.redis.request_timeout = v.duration()?;
            Ok(())
        },
        show: |s| Shown::secs(s.redis.request_timeout),
    },
    Key {
        name: "redis.stats_interval_secs",
        default: "5",
        shown_default: None,
        platform_var: None,
        doc: r#"How often each instance reports its socket count for the cluster totals"#,
        apply: |s, v| {
            s.redis.stats_interval = v.duration()?;
            Ok(())
        },
        show: |s| Shown::secs(s.redis.stats_interval),
    },
    Key {
        name: "readiness.require_redis",
        default: "false",
        shown_default: None,
        platform_var: None,
        doc: r#"Make `/readyz` answer 503 (`degraded`) while Redis is down. Off by default: Redis is shared, so a readiness that follows it takes every instance out of the load balancer at once, although each one still serves its own clients; `/readyz` then stays 200 and says `"redis": "down"`. See [Redis outages and readiness](docs/hardening.md#redis-outages-and-readiness)."#,
        apply: |s, v| {
            s.readiness.require_redis = v.boolean()?;
            Ok(())
        },
        show: |s| Shown::flag(s.readiness.require_redis),
    },
    Key {
        name: "auth.mode",
        default: "none",
        shown_default: None,
        platform_var: None,
        doc: r#"`none`: anyone may connect and use every event (the demo's mode; a warning is logged when ecos listens beyond loopback). `jwt`: a connection needs a signed token (`io(url, { auth: { token } })`, or `Authorization: Bearer` on the handshake); its claims give the user id and the rooms it may use. See [docs/auth.md](docs/auth.md)."#,
        apply: |s, v| {
            s.auth.mode = v.choice(
                &[("none", AuthMode::None), ("jwt", AuthMode::Jwt)],
                "`none` or `jwt`",
            )?;
            Ok(())
        },
        show: |s| Shown::text(s.auth.mode),
    },
    Key {
        name: "auth.jwt.secrets",
        default: "",
        shown_default: Some(r#"*(unset)*"#),
        platform_var: None,
        doc: r#"HMAC secrets for HS256/HS384/HS512 tokens, comma-separated (each 1 to 512 visible ASCII characters, e.g. `openssl rand -hex 32`); a token signed with any of them is accepted, so a new secret can be added before the old one is removed. Never logged or printed. In `jwt` mode at least one of this, `auth.jwt.public_key_file` or `auth.jwt.jwks_url` is required."#,
        apply: |s, v| {
            s.auth.jwt.secrets = parse::secrets(v)?;
            Ok(())
        },
        show: |s| match s.auth.jwt.secrets.len() {
            0 => Shown::Unset,
            n => Shown::Hidden(parse::describe_secrets(n)),
        },
    },
    Key {
        name: "auth.jwt.public_key_file",
        default: "",
        shown_default: Some(r#"*(unset)*"#),
        platform_var: None,
        doc: r#"A PEM public key: RSA (RS256/384/512, PS256/384/512), EC P-256 or P-384 (ES256, ES384) or Ed25519 (EdDSA). Read at start-up; a key that cannot be read stops ecos."#,
        apply: |s, v| {
            s.auth.jwt.public_key_file = v.non_empty().map(PathBuf::from);
            Ok(())
        },
        show: |s| Shown::optional(s.auth.jwt.public_key_file.as_ref().map(|p| p.display())),
    },
    Key {
        name: "auth.jwt.jwks_url",
        default: "",
        shown_default: Some(r#"*(unset)*"#),
        platform_var: None,
        doc: r#"An identity provider's JWKS endpoint (`https://…/.well-known/jwks.json`). Keys are fetched at start-up and every 5 minutes, and again when a token names an unknown `kid` (at most once every 5 s). While no key could be fetched, connections are refused with `unauthorized: keys unavailable`."#,
        apply: |s, v| {
            s.auth.jwt.jwks_url = parse::http_url(v)?;
            Ok(())
        },
        show: |s| Shown::optional(s.auth.jwt.jwks_url.as_deref().map(parse::mask)),
    },
    Key {
        name: "auth.jwt.issuer",
        default: "",
        shown_default: Some(r#"*(unset)*"#),
        platform_var: None,
        doc: r#"When set, a token's `iss` must equal it."#,
        apply: |s, v| {
            s.auth.jwt.issuer = v.non_empty();
            Ok(())
        },
        show: |s| Shown::optional(s.auth.jwt.issuer.as_deref()),
    },
    Key {
        name: "auth.jwt.audience",
        default: "",
        shown_default: Some(r#"*(unset)*"#),
        platform_var: None,
        doc: r#"When set, a token's `aud` must contain it."#,
        apply: |s, v| {
            s.auth.jwt.audience = v.non_empty();
            Ok(())
        },
        show: |s| Shown::optional(s.auth.jwt.audience.as_deref()),
    },
    Key {
        name: "auth.jwt.leeway_secs",
        default: "30",
        shown_default: None,
        platform_var: None,
        doc: r#"Clock skew allowed when checking `exp` and `nbf`, in whole seconds (0 to 600)."#,
        apply: |s, v| {
            let secs: u64 = v.bounded(0..=600, "a whole number of seconds from 0 to 600")?;
            s.auth.jwt.leeway = std::time::Duration::from_secs(secs);
            Ok(())
        },
        show: |s| Shown::num(s.auth.jwt.leeway.as_secs()),
    },
    Key {
        name: "auth.jwt.user_claim",
        default: "sub",
        shown_default: None,
        platform_var: None,
        doc: r#"The claim that holds the user id (a string of 1 to 120 characters). The socket joins the room `user:<id>`."#,
        apply: |s, v| {
            s.auth.jwt.user_claim = parse::claim_name(v)?;
            Ok(())
        },
        show: |s| Shown::text(&s.auth.jwt.user_claim),
    },
    Key {
        name: "auth.jwt.rooms_claim",
        default: "rooms",
        shown_default: None,
        platform_var: None,
        doc: r#"The claim that lists the rooms a socket may `join`, `room:message`, `room:ask` and list with `room:members`: an array of names, where a trailing `*` matches a prefix (`["team:42", "public:*"]`). Without it, a socket may use no room but its own `user:` room."#,
        apply: |s, v| {
            s.auth.jwt.rooms_claim = parse::claim_name(v)?;
            Ok(())
        },
        show: |s| Shown::text(&s.auth.jwt.rooms_claim),
    },
    Key {
        name: "auth.jwt.require_exp",
        default: "true",
        shown_default: None,
        platform_var: None,
        doc: r#"Refuse tokens without an `exp` claim. A token that never expires is valid until its key is retired."#,
        apply: |s, v| {
            s.auth.jwt.require_exp = v.boolean()?;
            Ok(())
        },
        show: |s| Shown::flag(s.auth.jwt.require_exp),
    },
    Key {
        name: "emitter.enabled",
        default: "auto",
        shown_default: None,
        platform_var: None,
        doc: r#"Listen to socket.io's own Redis format, so an unchanged `@socket.io/redis-emitter` (or another compatible emitter) reaches ecos's clients. `auto` means on when `redis.url` is set; `true` requires `redis.url`; `false` turns it off. Uses one more Redis connection per instance. See [docs/server-api.md](docs/server-api.md#the-official-redis-emitter)."#,
        apply: |s, v| {
            s.emitter.enabled = v.choice(
                &[
                    ("auto", EmitterMode::Auto),
                    ("true", EmitterMode::On),
                    ("false", EmitterMode::Off),
                ],
                "`auto`, `true` or `false`",
            )?;
            Ok(())
        },
        show: |s| Shown::text(s.emitter.enabled),
    },
    Key {
        name: "emitter.prefix",
        default: "socket.io",
        shown_default: None,
        platform_var: None,
        doc: r#"The emitter's `key` option: ecos listens on `<prefix>#/#…` and `<prefix>-request#/#`. Must differ from `redis.prefix`. Do not share it with Node socket.io servers (see the linked section). No `#` or spaces."#,
        apply: |s, v| {
            s.emitter.prefix = parse::emitter_prefix(v)?;
            Ok(())
        },
        show: |s| Shown::text(&s.emitter.prefix),
    },
    Key {
        name: "api.keys",
        default: "",
        shown_default: Some(r#"*(unset: the API is off)*"#),
        platform_var: None,
        doc: r#"Keys of the [HTTP server API](docs/server-api.md) (`/api/v1/...`), comma-separated; several at once let you rotate them. A backend sends one as `Authorization: Bearer <key>`, compared in constant time. Unset: the API is off and every `/api/` route is 404. Keys are never logged, and `--print-config` only says how many there are. Use long random values (`openssl rand -hex 32`) and never give one to a browser."#,
        apply: |s, v| {
            s.api.keys = parse::secrets(v)?;
            Ok(())
        },
        show: |s| {
            if s.api.keys.is_empty() {
                Shown::Unset
            } else {
                Shown::Hidden(parse::describe_secrets(s.api.keys.len()))
            }
        },
    },
    Key {
        name: "api.max_body_bytes",
        default: "1000000",
        shown_default: None,
        platform_var: None,
        doc: r#"Largest request body the server API reads (JSON, base64 binary arguments included). A larger one gets `413`. From 1024 to 104857600."#,
        apply: |s, v| {
            s.api.max_body_bytes =
                v.bounded(1024..=104_857_600, "a whole number from 1024 to 104857600")?;
            Ok(())
        },
        show: |s| Shown::num(s.api.max_body_bytes),
    },
    Key {
        name: "metrics.token",
        default: "",
        shown_default: Some(r#"*(unset)*"#),
        platform_var: None,
        doc: r#"When set, `/metrics` answers `401` unless the request carries `Authorization: Bearer <token>` (compared in constant time). Unset by default, for scrapers inside a private network. Set it where every route is public, as on Heroku, whose router exposes `/metrics` to anyone. Never printed or logged."#,
        apply: |s, v| {
            s.metrics.token = parse::secret(v)?;
            Ok(())
        },
        show: |s| match &s.metrics.token {
            None => Shown::Unset,
            Some(_) => Shown::Hidden("a token".to_owned()),
        },
    },
    Key {
        name: "webhooks.url",
        default: "",
        shown_default: Some(r#"*(unset: webhooks are off)*"#),
        platform_var: None,
        doc: r#"The team's backend endpoint for [webhooks](docs/webhooks.md): ecos `POST`s signed JSON there for the hooks turned on below. `http://` or `https://` (certificates are verified against the system's CAs)."#,
        apply: |s, v| {
            s.webhooks.url = parse::webhook_url(v)?;
            Ok(())
        },
        show: |s| Shown::optional(s.webhooks.url.as_deref().map(parse::mask)),
    },
    Key {
        name: "webhooks.secret",
        default: "",
        shown_default: Some(r#"*(unset)*"#),
        platform_var: None,
        doc: r#"The key of every request's `X-Ecos-Signature` (HMAC-SHA256); required when `webhooks.url` is set. Never printed or logged."#,
        apply: |s, v| {
            s.webhooks.secret = parse::secret(v)?;
            Ok(())
        },
        show: |s| match &s.webhooks.secret {
            None => Shown::Unset,
            Some(_) => Shown::Hidden("a secret".to_owned()),
        },
    },
    Key {
        name: "webhooks.connect",
        default: "false",
        shown_default: None,
        platform_var: None,
        doc: r#"Ask the backend whether each connection may connect, and as which user with which rooms. A refusal is CONNECT_ERROR `unauthorized: <reason>`."#,
        apply: |s, v| {
            s.webhooks.connect = v.boolean()?;
            Ok(())
        },
        show: |s| Shown::flag(s.webhooks.connect),
    },
    Key {
        name: "webhooks.forward_headers",
        default: "",
        shown_default: Some(r#"*(none)*"#),
        platform_var: None,
        doc: r#"Handshake headers the connect hook receives, comma-separated (e.g. `cookie,authorization`), so a session-cookie app can authenticate its users."#,
        apply: |s, v| {
            s.webhooks.forward_headers = parse::header_names(v)?;
            Ok(())
        },
        show: |s| Shown::text(s.webhooks.forward_headers.join(",")),
    },
    Key {
        name: "webhooks.events",
        default: "",
        shown_default: Some(r#"*(none)*"#),
        platform_var: None,
        doc: r#"Client events forwarded to the backend, comma-separated (e.g. `order:place,chat:read`); the backend's answer is the client's ack. ecos's own event names cannot be listed."#,
        apply: |s, v| {
            s.webhooks.events = parse::forwarded_events(v)?;
            Ok(())
        },
        show: |s| Shown::text(s.webhooks.events.join(",")),
    },
    Key {
        name: "webhooks.disconnect",
        default: "false",
        shown_default: None,
        platform_var: None,
        doc: r#"Tell the backend about every disconnection, at least once (retried, from a bounded queue)."#,
        apply: |s, v| {
            s.webhooks.disconnect = v.boolean()?;
            Ok(())
        },
        show: |s| Shown::flag(s.webhooks.disconnect),
    },
    Key {
        name: "webhooks.timeout_ms",
        default: "5000",
        shown_default: None,
        platform_var: None,
        doc: r#"How long one webhook request may take, in milliseconds (100 to 60000), the wait for a free slot included. Past it, a connection is refused (`backend unavailable`), an event is acked `{ ok: false, error: "backend unavailable" }`, and a disconnect notification is retried."#,
        apply: |s, v| {
            let ms: u64 = v.bounded(
                100..=60_000,
                "a whole number of milliseconds from 100 to 60000",
            )?;
            s.webhooks.timeout = std::time::Duration::from_millis(ms);
            Ok(())
        },
        show: |s| Shown::num(s.webhooks.timeout.as_millis()),
    },
    Key {
        name: "webhooks.max_concurrency",
        default: "64",
        shown_default: None,
        platform_var: None,
        doc: r#"Webhook requests in flight at once, per instance (1 to 1024), over pooled keep-alive connections. Others wait for a slot within `webhooks.timeout_ms`."#,
        apply: |s, v| {
            s.webhooks.max_concurrency = v.bounded(1..=1024, "a whole number from 1 to 1024")?;
            Ok(())
        },
        show: |s| Shown::num(s.webhooks.max_concurrency),
    },
    Key {
        name: "webhooks.fail_open",
        default: "false",
        shown_default: None,
        platform_var: None,
        doc: r#"When the connect hook cannot answer (timeout, network error, non-2xx), let the client in anonymously instead of refusing it. Off: a backend outage must not let everyone in."#,
        apply: |s, v| {
            s.webhooks.fail_open = v.boolean()?;
            Ok(())
        },
        show: |s| Shown::flag(s.webhooks.fail_open),
    },
    Key {
        name: "webhooks.disconnect_queue",
        default: "10000",
        shown_default: None,
        platform_var: None,
        doc: r#"Disconnect notifications waiting or being retried, at most (1 to 1000000). Beyond it a notification is dropped and counted in `ecos_webhook_dropped_total{reason="queue_full"}`."#,
        apply: |s, v| {
            s.webhooks.disconnect_queue =
                v.bounded(1..=1_000_000, "a whole number from 1 to 1000000")?;
            Ok(())
        },
        show: |s| Shown::num(s.webhooks.disconnect_queue),
    },
    Key {
        name: "webhooks.retry_for_secs",
        default: "60",
        shown_default: None,
        platform_var: None,
        doc: r#"How long a failed disconnect notification is retried (0 to 3600 whole seconds), with backoff from 0.5 s doubling to 10 s, under the same `X-Ecos-Delivery` id."#,
        apply: |s, v| {
            let secs: u64 = v.bounded(0..=3600, "a whole number of seconds from 0 to 3600")?;
            s.webhooks.retry_for = std::time::Duration::from_secs(secs);
            Ok(())
        },
        show: |s| Shown::num(s.webhooks.retry_for.as_secs()),
    },
];

/// Environment variables starting with `ECOS_` that are not settings but are allowed.
pub const OTHER_ECOS_VARS: &[&str] = &["ECOS_CONFIG"];

/// The key named `name`, if it is one.
pub fn find(name: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.name == name)
}

/// Every key with its variables and default, in plain text for `ecos --help`;
/// what each one does is in the README's table, which says it at length.
pub fn help_table() -> String {
    let rows: Vec<(String, String, String)> = KEYS
        .iter()
        .map(|key| {
            let env = match key.platform_var {
                Some(var) => format!("{var}, {}", key.env_var()),
                None => key.env_var(),
            };
            // The README's markdown, without its markup, reads fine in a terminal.
            let default = key
                .shown_default
                .map_or_else(|| key.default.to_owned(), |s| s.replace(['`', '*'], ""));
            (key.name.to_owned(), env, default)
        })
        .collect();
    let name_width = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
    let env_width = rows.iter().map(|r| r.1.len()).max().unwrap_or(0);
    let mut out = format!(
        "Settings (README.md, section \"Configuration\", says what each one does):\n  \
         {:name_width$}  {:env_width$}  default\n",
        "key (TOML)", "environment"
    );
    for (name, env, default) in rows {
        out.push_str(&format!(
            "  {name:name_width$}  {env:env_width$}  {default}\n"
        ));
    }
    out
}

/// The README's configuration table, rendered from [`KEYS`].
pub fn markdown_table() -> String {
    let mut out = String::from("| key | env | default | meaning |\n|---|---|---|---|\n");
    for key in KEYS {
        let env = match key.platform_var {
            Some(var) => format!("`{var}`, `{}`", key.env_var()),
            None => format!("`{}`", key.env_var()),
        };
        let default = match key.shown_default {
            Some(shown) => shown.to_owned(),
            None => format!("`{}`", key.default),
        };
        out.push_str(&format!(
            "| `{}` | {env} | {default} | {} |\n",
            key.name, key.doc
        ));
    }
    out
}
