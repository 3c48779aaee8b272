//! The built binary, started the way a platform starts it: only `PORT` (and
//! `REDIS_URL`) in the environment, SIGTERM to stop.

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use serde_json::json;

use crate::{
    client::{SioClient, Transport},
    helpers::{eventually, free_port, readyz},
    redis_server::RedisServer,
};

/// A running `ecos` process and the start-up fields it logged.
pub(crate) struct Process {
    /// The child process.
    child: Child,
    /// Fields of the JSON "ecos started" line.
    started: serde_json::Value,
    /// Further stdout lines.
    lines: mpsc::Receiver<String>,
    /// The JSON lines logged before the start-up line.
    early: Vec<serde_json::Value>,
}

/// Starts the binary with a clean environment plus `env`, JSON logs, and
/// waits for its start-up line.
pub(crate) fn start(env: &[(&str, String)]) -> Process {
    start_command(Command::new(env!("CARGO_BIN_EXE_ecos")), env)
}

/// Like [`start`], with `ulimit` first applying `limit` (e.g. `-n 1024`) to the binary.
fn start_with_ulimit(limit: &str, env: &[(&str, String)]) -> Process {
    let mut command = Command::new("bash");
    command.args([
        "-c",
        &format!("ulimit {limit} && exec \"$0\""),
        env!("CARGO_BIN_EXE_ecos"),
    ]);
    start_command(command, env)
}

fn start_command(mut command: Command, env: &[(&str, String)]) -> Process {
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("ECOS_LOG__FORMAT", "json")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.spawn().expect("binary starts");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut early = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = lines.recv_timeout(left) else {
            // Reap the child before failing, so no process outlives the test.
            let _ = child.kill();
            let _ = child.wait();
            panic!("no start-up line within 10 s");
        };
        let Ok(parsed) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if parsed["fields"]["message"] == json!("ecos started") {
            return Process {
                child,
                started: parsed["fields"].clone(),
                lines,
                early,
            };
        }
        early.push(parsed);
    }
}

impl Process {
    fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// Waits for the exit; returns the code and how long it took.
    async fn wait_exit(&mut self, within: Duration) -> (Option<i32>, Duration) {
        let started = Instant::now();
        let status = eventually("ecos to exit", within, async || {
            self.child
                .try_wait()
                .expect("try_wait")
                .ok_or("still running")
        })
        .await;
        (status.code(), started.elapsed())
    }

    /// Waits for a logged line with this message and returns it (JSON);
    /// the lines before it are consumed.
    pub(crate) fn wait_logged(&self, message: &str, within: Duration) -> Option<serde_json::Value> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).ok()?;
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                && v["fields"]["message"] == json!(message)
            {
                return Some(v);
            }
        }
    }

    /// Whether a logged line with this message arrived already.
    fn logged(&self, message: &str) -> bool {
        self.lines
            .try_iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(&l).ok())
            .any(|v| v["fields"]["message"] == json!(message))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn with_only_port_set_it_binds_all_interfaces_and_drains_on_sigterm() {
    let port = free_port();
    let mut ecos = start(&[("PORT", port.to_string())]);
    assert_eq!(ecos.started["addr"], json!(format!("0.0.0.0:{port}")));
    assert_eq!(ecos.started["adapter"], json!("memory"));
    // Reachable from outside with nobody authenticated: said once, at start-up.
    let warned = ecos.early.iter().filter(|l| {
        l["level"] == json!("WARN")
            && l["fields"]["message"].as_str().is_some_and(|m| {
                m.starts_with("auth.mode is `none`: anyone who reaches this address can connect")
            })
    });
    assert_eq!(warned.count(), 1, "{:?}", ecos.early);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));

    let mut clients = Vec::new();
    for transport in [
        Transport::WebSocket,
        Transport::Polling,
        Transport::WebSocket,
    ] {
        clients.push(SioClient::connect(addr, transport).await.expect("connects"));
    }
    ecos.sigterm();
    for client in clients.iter_mut() {
        assert!(
            client.wait_closed(Duration::from_secs(10)).await,
            "client closed by the drain"
        );
    }
    let (code, took) = ecos.wait_exit(Duration::from_secs(30)).await;
    assert_eq!(code, Some(0));
    // Well inside Heroku's 30 s between SIGTERM and SIGKILL.
    assert!(took < Duration::from_secs(5), "exit took {took:?}");
    assert!(ecos.logged("drained; exiting") || ecos.logged("draining"));
}

#[tokio::test]
async fn a_second_sigterm_during_the_drain_changes_nothing() {
    let port = free_port();
    let mut ecos = start(&[
        ("PORT", port.to_string()),
        ("ECOS_SHUTDOWN__DELAY_SECS", "1".into()),
    ]);
    let _client = SioClient::connect(
        SocketAddr::from(([127, 0, 0, 1], port)),
        Transport::WebSocket,
    )
    .await
    .expect("connects");
    ecos.sigterm();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(readyz(port).await.0, 503);
    ecos.sigterm(); // Heroku may send SIGTERM more than once.
    let (code, took) = ecos.wait_exit(Duration::from_secs(30)).await;
    assert_eq!(code, Some(0));
    assert!(took < Duration::from_secs(5), "exit took {took:?}");
}

#[tokio::test]
async fn with_rediss_and_tls_insecure_it_joins_a_self_signed_tls_redis() {
    let redis = RedisServer::start_tls();
    let prefix = format!("ecos-test-process-{}", std::process::id());
    let ports = [free_port(), free_port()];
    let processes: Vec<Process> = ports
        .iter()
        .enumerate()
        .map(|(i, port)| {
            start(&[
                ("PORT", port.to_string()),
                ("REDIS_URL", redis.url()),
                ("ECOS_REDIS__TLS_INSECURE", "true".into()),
                ("ECOS_REDIS__PREFIX", prefix.clone()),
                ("DYNO", format!("web.{}", i + 1)),
            ])
        })
        .collect();
    for (process, port) in processes.iter().zip(ports) {
        assert_eq!(process.started["adapter"], json!("redis"));
        let body = eventually(
            &format!("readiness on port {port}"),
            Duration::from_secs(10),
            async || match readyz(port).await {
                // Readiness stays 200 without Redis; wait for the link too.
                (200, body) if body["redis"] == json!("up") => Ok(body),
                (_, body) => Err(body),
            },
        )
        .await;
        assert!(
            body["instance"]
                .as_str()
                .is_some_and(|i| i.starts_with("web.")),
            "{body}"
        );
    }
    let mut sender = SioClient::connect(
        SocketAddr::from(([127, 0, 0, 1], ports[0])),
        Transport::WebSocket,
    )
    .await
    .expect("connects");
    let mut remote = SioClient::connect(
        SocketAddr::from(([127, 0, 0, 1], ports[1])),
        Transport::Polling,
    )
    .await
    .expect("connects");
    assert_eq!(
        remote.expect_event("welcome").await.args[0]["instance"],
        json!("web.2")
    );
    sender
        .emit_with_ack("message", vec![json!("via rediss")])
        .await
        .expect("ack");
    assert_eq!(
        remote.expect_event("message").await.args,
        vec![json!("via rediss")]
    );
}

#[tokio::test]
async fn the_runtime_runs_the_configured_number_of_workers() {
    let port = free_port();
    let ecos = start(&[
        ("PORT", port.to_string()),
        ("ECOS_RUNTIME__WORKER_THREADS", "3".to_owned()),
    ]);
    assert_eq!(ecos.started["workers"], json!(3));
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut client = SioClient::connect(addr, Transport::WebSocket)
        .await
        .expect("connects");
    client
        .emit_with_ack("message", vec![json!("hi")])
        .await
        .expect("serves on the configured runtime");
    drop(ecos);

    // 0, the default, is one worker per CPU the process may use.
    let port = free_port();
    let ecos = start(&[("PORT", port.to_string())]);
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    assert_eq!(ecos.started["workers"], json!(cpus));
    assert_eq!(ecos.started["listen_backlog"], json!(1024));
}

/// Runs `command` (ecos, perhaps wrapped) with text logs on a free loopback
/// port, collects its stdout up to the start-up line, then stops it.
fn text_logs_until_started(mut command: Command) -> String {
    command
        .env("PORT", free_port().to_string())
        .env("ECOS_BIND_ADDRESS", "127.0.0.1")
        .env("ECOS_LOG__FORMAT", "text")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = command.spawn().expect("starts");
    let mut stdout = child.stdout.take().expect("stdout");
    let (tx, chunks) = mpsc::channel();
    std::thread::spawn(move || {
        use std::io::Read;
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut output = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !String::from_utf8_lossy(&output).contains("ecos started") {
        let left = deadline.saturating_duration_since(Instant::now());
        match chunks.recv_timeout(left) {
            Ok(chunk) => output.extend(chunk),
            Err(_) => break,
        }
    }
    // SIGTERM, so a wrapper (`script`) passes it on and ecos exits cleanly.
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let exit_deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().ok().flatten().is_none() && Instant::now() < exit_deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    let text = String::from_utf8_lossy(&output).into_owned();
    assert!(text.contains("ecos started"), "no start-up line: {text:?}");
    text
}

/// ecos under a pseudo-terminal (util-linux `script`), with `no_color` as `NO_COLOR`.
fn under_a_terminal(no_color: Option<&str>) -> Command {
    let mut command = Command::new("script");
    command
        .args(["-q", "-e", "-c"])
        .arg(env!("CARGO_BIN_EXE_ecos"))
        .arg("/dev/null")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    if let Some(value) = no_color {
        command.env("NO_COLOR", value);
    }
    command
}

#[test]
fn text_logs_carry_no_colour_codes_through_a_pipe() {
    // Heroku's log drain, Kubernetes and Docker read stdout through a pipe.
    let mut command = Command::new(env!("CARGO_BIN_EXE_ecos"));
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    let logs = text_logs_until_started(command);
    assert!(!logs.contains("\x1b["), "{logs:?}");
}

#[test]
fn text_logs_are_coloured_on_a_terminal_unless_no_color_is_set() {
    let coloured = text_logs_until_started(under_a_terminal(None));
    assert!(
        coloured.contains("\x1b["),
        "a terminal gets colour: {coloured:?}"
    );
    let plain = text_logs_until_started(under_a_terminal(Some("1")));
    assert!(!plain.contains("\x1b["), "NO_COLOR=1: {plain:?}");
    // An empty NO_COLOR counts as unset (no-color.org).
    let empty = text_logs_until_started(under_a_terminal(Some("")));
    assert!(empty.contains("\x1b["), "NO_COLOR=\"\": {empty:?}");
}

#[tokio::test]
async fn the_soft_open_file_limit_is_raised_to_the_hard_one() {
    let port = free_port();
    let ecos = start_with_ulimit("-S -n 512", &[("PORT", port.to_string())]);
    let line = ecos
        .early
        .iter()
        .find(|l| l["fields"]["message"] == json!("open-file limit (nofile)"))
        .expect("the limit is logged at start-up");
    let fields = &line["fields"];
    assert_eq!(fields["was"], json!(512));
    assert_eq!(fields["soft"], fields["hard"], "{fields}");
    assert!(fields["soft"].as_u64().expect("soft") > 512, "{fields}");
}

#[tokio::test]
async fn idle_connections_past_the_open_file_limit_leave_health_answering() {
    const IDLE: usize = 1100;
    // The test holds the client ends, more than the server may open.
    ecos::net::raise_nofile_limit().expect("raise the test's own limit");
    let port = free_port();
    let ecos = start_with_ulimit(
        "-n 1024",
        &[
            ("PORT", port.to_string()),
            ("ECOS_LIMITS__HEADER_READ_TIMEOUT_SECS", "3".into()),
        ],
    );
    // 1024 descriptors, 64 kept aside for Redis, the runtime and health checks.
    assert_eq!(ecos.started["max_connections"], json!(960));
    let addr = SocketAddr::from(([127, 0, 0, 1], port));

    let started = Instant::now();
    let mut idle = Vec::with_capacity(IDLE);
    for _ in 0..IDLE {
        idle.push(
            tokio::net::TcpStream::connect(addr)
                .await
                .expect("connects"),
        );
    }
    let opened = started.elapsed();

    // Every idle connection is still open (the header timeout is 3 s), and
    // the health routes answer at once.
    for path in ["/healthz", "/readyz"] {
        let asked = Instant::now();
        let response = crate::helpers::http_client()
            .get(format!("http://{addr}{path}"))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{path} with {IDLE} idle connections: {e}"));
        assert_eq!(response.status().as_u16(), 200, "{path}");
        assert!(
            asked.elapsed() < Duration::from_secs(1),
            "{path} took {:?}",
            asked.elapsed()
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "opening took {opened:?}"
    );

    // Past the header timeout the idle connections are gone, and a new
    // Socket.IO session connects.
    let mut client = eventually(
        "a session after the idle ones are closed",
        Duration::from_secs(6),
        async || SioClient::connect(addr, Transport::WebSocket).await,
    )
    .await;
    client.expect_event("welcome").await;
    drop(idle);
}
