//! Slow, idle and surplus connections: the header-read timeout, the
//! keep-alive idle time, the header size limit and the connection cap,
//! spoken over raw TCP.

use std::time::Duration;

use serde_json::json;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::Instant,
};

use crate::{
    client::{SioClient, Transport},
    helpers::{TRANSPORTS, TestApp, eventually, spawn_app_with},
};

const HEADER_TIMEOUT: Duration = Duration::from_millis(500);
const KEEP_ALIVE: Duration = Duration::from_secs(3);

const HEADER_TIMEOUTS: &str = r#"ecos_tcp_connections_closed_total{reason="header_timeout""#;
const KEEP_ALIVE_TIMEOUTS: &str =
    r#"ecos_tcp_connections_closed_total{reason="keep_alive_timeout""#;
const TOO_LARGE: &str = r#"ecos_tcp_connections_closed_total{reason="header_too_large""#;
const REFUSED: &str = r#"ecos_tcp_connections_refused_total{reason="max_connections""#;

/// An app with a 0.5 s header timeout and a 3 s keep-alive idle time.
async fn spawn_short_timeouts() -> TestApp {
    spawn_app_with(|s| {
        s.limits.header_read_timeout = HEADER_TIMEOUT;
        s.limits.keep_alive_idle = KEEP_ALIVE;
    })
    .await
}

/// Reads until the server closes the connection; what it sent, or `None`
/// if it was still open after `within`.
async fn read_to_close(stream: &mut TcpStream, within: Duration) -> Option<String> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(String::from_utf8_lossy(&got).into_owned()),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// Reads one response with a `content-length` body; its status and head.
async fn read_response(stream: &mut TcpStream) -> (u16, String) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("a response within 5 s")
            .expect("read");
        assert!(
            n > 0,
            "closed before a whole response: {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).into_owned();
        let Some(end) = text.find("\r\n\r\n") else {
            continue;
        };
        let head = text[..end].to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map_or(0, |v| v.trim().parse().expect("content-length"));
        if got.len() >= end + 4 + length {
            let status = head[9..12].parse().expect("status");
            return (status, head);
        }
    }
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nhost: ecos\r\n\r\n")
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_at_the_header_timeout() {
    let app = spawn_short_timeouts().await;
    let mut silent = TcpStream::connect(app.addr).await.expect("connects");
    let started = Instant::now();
    let said = read_to_close(&mut silent, Duration::from_secs(5))
        .await
        .expect("closed within 5 s");
    let took = started.elapsed();
    assert_eq!(said, "", "closed without a word");
    assert!(
        took >= HEADER_TIMEOUT - Duration::from_millis(50),
        "closed after {took:?}"
    );
    assert!(
        took < HEADER_TIMEOUT + Duration::from_secs(1),
        "closed after {took:?}"
    );
    app.wait_metric(HEADER_TIMEOUTS, 1.0).await;
}

#[tokio::test]
async fn a_trickled_head_gets_408_at_the_header_timeout() {
    let app = spawn_short_timeouts().await;
    let stream = TcpStream::connect(app.addr).await.expect("connects");
    let (mut read, mut write) = stream.into_split();
    let started = Instant::now();
    // One byte every 100 ms: each arrives well within any per-read timeout,
    // the whole head never does.
    let trickle = tokio::spawn(async move {
        for byte in get("/healthz").bytes() {
            if write.write_all(&[byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let mut got = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), read.read_to_end(&mut got)).await;
    let took = started.elapsed();
    assert!(closed.is_ok(), "still open after 5 s");
    let said = String::from_utf8_lossy(&got);
    assert!(said.starts_with("HTTP/1.1 408 "), "{said:?}");
    assert!(
        took < HEADER_TIMEOUT + Duration::from_secs(1),
        "closed after {took:?}"
    );
    trickle.abort();
    app.wait_metric(HEADER_TIMEOUTS, 1.0).await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_outlives_the_header_timeout() {
    let app = spawn_short_timeouts().await;
    let mut stream = TcpStream::connect(app.addr).await.expect("connects");
    stream
        .write_all(get("/healthz").as_bytes())
        .await
        .expect("write");
    assert_eq!(read_response(&mut stream).await.0, 200);

    // Three header timeouts of idleness: still the same, usable connection.
    tokio::time::sleep(3 * HEADER_TIMEOUT).await;
    stream
        .write_all(get("/readyz").as_bytes())
        .await
        .expect("write");
    assert_eq!(read_response(&mut stream).await.0, 200);

    // Then idle for good: closed at the keep-alive time, not before.
    let idle_since = Instant::now();
    let said = read_to_close(&mut stream, KEEP_ALIVE + Duration::from_secs(2))
        .await
        .expect("closed after the keep-alive idle time");
    let idle = idle_since.elapsed();
    assert_eq!(said, "");
    assert!(
        idle >= KEEP_ALIVE - Duration::from_millis(100),
        "closed after {idle:?}"
    );
    app.wait_metric(KEEP_ALIVE_TIMEOUTS, 1.0).await;
    assert_eq!(app.metric(HEADER_TIMEOUTS).await, 0.0);
}

#[tokio::test]
async fn a_head_over_16_kib_gets_431_and_one_under_passes() {
    let app = spawn_app_with(|_| {}).await;
    let with_header = |size: usize| {
        format!(
            "GET /healthz HTTP/1.1\r\nhost: ecos\r\nx-padding: {}\r\n\r\n",
            "a".repeat(size)
        )
    };

    let mut stream = TcpStream::connect(app.addr).await.expect("connects");
    stream
        .write_all(with_header(15 * 1024).as_bytes())
        .await
        .expect("write");
    assert_eq!(read_response(&mut stream).await.0, 200);

    let mut stream = TcpStream::connect(app.addr).await.expect("connects");
    stream
        .write_all(with_header(17 * 1024).as_bytes())
        .await
        .expect("write");
    let said = read_to_close(&mut stream, Duration::from_secs(5))
        .await
        .expect("closed");
    assert!(said.starts_with("HTTP/1.1 431 "), "{said:?}");
    app.wait_metric(TOO_LARGE, 1.0).await;
}

#[tokio::test]
async fn the_header_limit_is_a_setting() {
    let app = spawn_app_with(|s| s.limits.max_header_bytes = 4096).await;
    let mut stream = TcpStream::connect(app.addr).await.expect("connects");
    let head = format!(
        "GET /healthz HTTP/1.1\r\nx-padding: {}\r\n\r\n",
        "a".repeat(5000)
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    let said = read_to_close(&mut stream, Duration::from_secs(5))
        .await
        .expect("closed");
    assert!(said.starts_with("HTTP/1.1 431 "), "{said:?}");
}

#[tokio::test]
async fn over_the_cap_connections_get_503_but_health_checks_answer() {
    const CAP: usize = 3;
    let app = spawn_app_with(|s| s.limits.max_connections = Some(CAP)).await;
    let mut held = Vec::new();
    for _ in 0..CAP {
        held.push(TcpStream::connect(app.addr).await.expect("connects"));
    }
    // Let the server accept them before the next ones arrive.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let mut extra = TcpStream::connect(app.addr).await.expect("connects");
    extra
        .write_all(get("/socket.io/?EIO=4&transport=polling").as_bytes())
        .await
        .expect("write");
    let said = read_to_close(&mut extra, Duration::from_secs(5))
        .await
        .expect("closed after the answer");
    assert!(said.starts_with("HTTP/1.1 503 "), "{said:?}");
    assert!(
        said.to_ascii_lowercase().contains("connection: close"),
        "{said:?}"
    );

    for path in ["/healthz", "/readyz"] {
        let mut probe = TcpStream::connect(app.addr).await.expect("connects");
        probe.write_all(get(path).as_bytes()).await.expect("write");
        let said = read_to_close(&mut probe, Duration::from_secs(5))
            .await
            .expect("closed after one answer");
        assert!(said.starts_with("HTTP/1.1 200 "), "{path}: {said:?}");
    }

    // A place freed is a place for a Socket.IO client again.
    drop(held);
    let mut client = eventually(
        "a client to connect under the cap",
        Duration::from_secs(5),
        async || SioClient::connect(app.addr, Transport::WebSocket).await,
    )
    .await;
    client.expect_event("welcome").await;
    // The extra connection is the only refusal: health checks are not counted.
    assert_eq!(app.metric(REFUSED).await, 1.0);
}

#[tokio::test]
async fn idle_connections_over_the_cap_cannot_keep_a_health_check_out() {
    const CAP: usize = 2;
    let app = spawn_app_with(|s| s.limits.max_connections = Some(CAP)).await;
    // The cap, and three times the health reserve over it, all silent.
    let mut held = Vec::new();
    for _ in 0..CAP + 3 * ecos::net::server::HEALTH_RESERVE {
        held.push(TcpStream::connect(app.addr).await.expect("connects"));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let mut probe = TcpStream::connect(app.addr).await.expect("connects");
    probe
        .write_all(get("/healthz").as_bytes())
        .await
        .expect("write");
    let said = read_to_close(&mut probe, Duration::from_secs(5))
        .await
        .expect("answered");
    assert!(said.starts_with("HTTP/1.1 200 "), "{said:?}");
    // Well before the over-cap connections' own 2 s head deadline.
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn sessions_outlive_the_header_and_keep_alive_timeouts() {
    let app = spawn_app_with(|s| {
        s.limits.header_read_timeout = HEADER_TIMEOUT;
        s.limits.keep_alive_idle = Duration::from_secs(1);
    })
    .await;
    for transport in TRANSPORTS {
        let mut client = app.client(transport).await;
        // Quiet for longer than both timeouts (a long-poll is held meanwhile).
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert!(client.is_open(), "{transport:?} closed while quiet");
        let ack = client
            .emit_with_ack("message", vec![json!("still here")])
            .await
            .expect("ack");
        assert_eq!(ack, vec![json!({ "ok": true })], "{transport:?}");
    }
    // (An idle keep-alive connection of the polling client may have been
    // closed meanwhile: that is the keep-alive time doing its job, and the
    // client simply opened another.)
}
