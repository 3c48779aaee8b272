//! Graceful drain: readiness flips, new sessions are refused, sessions are
//! closed so clients reconnect elsewhere, and the server finishes in time.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::{
    client::{SioClient, Transport},
    helpers::{TRANSPORTS, eventually, spawn_app_with},
};

#[tokio::test]
async fn drain_flips_readiness_refuses_new_sessions_then_closes_the_rest() {
    let mut app = spawn_app_with(|s| {
        s.shutdown.delay = Duration::from_millis(1500);
        s.shutdown.drain_timeout = Duration::from_secs(5);
    })
    .await;
    let mut ws = app.client(Transport::WebSocket).await;
    let mut polling = app.client(Transport::Polling).await;
    assert_eq!(app.get_text("/readyz").await.0, 200);

    let started = Instant::now();
    app.signal_shutdown();
    // Readiness turns at once.
    eventually(
        "/readyz to turn 503 promptly",
        Duration::from_millis(500),
        async || match app.get_text("/readyz").await.0 {
            503 => Ok(()),
            other => Err(other),
        },
    )
    .await;
    let body: serde_json::Value = app.get("/readyz").await.json().await.expect("json");
    assert_eq!(body["status"], json!("draining"));
    assert_eq!(
        app.get_text("/healthz").await.0,
        200,
        "still alive while draining"
    );

    // A new session is refused with 503 while existing sessions keep working.
    for transport in TRANSPORTS {
        assert!(
            SioClient::connect(app.addr, transport).await.is_err(),
            "{transport:?} handshake refused"
        );
    }
    let (status, _) = app.get_text("/socket.io/?EIO=4&transport=polling").await;
    assert_eq!(status, 503);
    let ack = ws
        .emit_with_ack("message", vec![json!("last words")])
        .await
        .expect("ack during delay");
    assert_eq!(ack, vec![json!({ "ok": true })]);
    assert_eq!(
        polling.expect_event("message").await.args,
        vec![json!("last words")]
    );

    // Then every session is closed with an Engine.IO close (clients reconnect elsewhere).
    assert!(
        ws.wait_closed(Duration::from_secs(5)).await,
        "websocket session closed"
    );
    assert!(
        polling.wait_closed(Duration::from_secs(5)).await,
        "polling session closed"
    );
    let result = app
        .stopped(Duration::from_secs(5))
        .await
        .expect("server finished within the drain timeout");
    assert!(result.is_ok(), "{result:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn drain_without_delay_finishes_quickly_with_many_clients() {
    let mut app = spawn_app_with(|s| s.shutdown.drain_timeout = Duration::from_secs(5)).await;
    let mut clients = Vec::new();
    for i in 0..20 {
        let transport = if i % 2 == 0 {
            Transport::WebSocket
        } else {
            Transport::Polling
        };
        clients.push(app.client(transport).await);
    }
    app.wait_metric("ecos_connected_sockets", 20.0).await;
    let started = Instant::now();
    app.signal_shutdown();
    for client in clients.iter_mut() {
        assert!(client.wait_closed(Duration::from_secs(5)).await);
        let reason = client.close_reason().unwrap_or_default();
        assert!(
            !reason.contains("41"),
            "closed by the transport, not a namespace DISCONNECT: {reason}"
        );
    }
    let result = app.stopped(Duration::from_secs(5)).await.expect("finished");
    assert!(result.is_ok());
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn drain_timeout_bounds_the_shutdown_even_if_a_request_hangs() {
    use tokio::io::AsyncWriteExt;
    let mut app = spawn_app_with(|s| s.shutdown.drain_timeout = Duration::from_millis(800)).await;
    // A polling POST whose body never completes keeps a request in flight,
    // which a graceful HTTP shutdown would wait for forever.
    let (_, open) = app.get_text("/socket.io/?EIO=4&transport=polling").await;
    let open: serde_json::Value = serde_json::from_str(&open[1..]).expect("open packet");
    let sid = open["sid"].as_str().expect("sid");
    let mut stuck = tokio::net::TcpStream::connect(app.addr)
        .await
        .expect("connect");
    let head = format!(
        "POST /socket.io/?EIO=4&transport=polling&sid={sid} HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n\r\n40"
    );
    stuck.write_all(head.as_bytes()).await.expect("write");
    tokio::time::sleep(Duration::from_millis(100)).await;

    let started = Instant::now();
    app.signal_shutdown();
    let result = app
        .stopped(Duration::from_secs(5))
        .await
        .expect("finished despite the stuck request");
    assert!(result.is_ok());
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(700) && took < Duration::from_secs(3),
        "took {took:?}"
    );
}
