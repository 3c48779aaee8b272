//! A full queue closes the client behind it, whatever its transport and
//! wherever the broadcast came from: a WebSocket client that reads, but too
//! slowly; a long-polling client that stopped polling; a session that
//! upgraded from polling to WebSocket; and a broadcast from another instance.
//! Each is closed with `slow_consumer`, and what it received before is every
//! message in order, with none missing.

use std::{net::SocketAddr, time::Duration};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::{net::TcpStream, task::JoinHandle};
use tokio_tungstenite::{WebSocketStream, tungstenite::Message};

use crate::{
    backpressure::{
        expect_all_messages, send_until_slow_consumer_closed, small_buffer_websocket,
        stalled_client,
    },
    client::{SioClient, Transport},
    cluster::{SHARED_REDIS, spawn_node_with, unique_prefix},
    helpers::{TestApp, eventually, http_client, spawn_app_with},
};

const SLOW_CONSUMER: &str = r#"ecos_disconnections_total{reason="slow_consumer""#;
const DROPPED: &str = r#"ecos_messages_dropped_total{event="message""#;
const DROPPED_REMOTE: &str = r#"ecos_messages_dropped_total{event="cluster""#;

/// A WebSocket client on a 4 KiB receive buffer that takes one frame every
/// 20 ms until its connection ends; yields the `seq` of every `message` it got.
async fn slow_reader(addr: SocketAddr) -> JoinHandle<Vec<u64>> {
    let ws = stalled_client(addr).await;
    tokio::spawn(read_slowly(ws))
}

async fn read_slowly(mut ws: WebSocketStream<TcpStream>) -> Vec<u64> {
    let mut seqs = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(30), ws.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => {
                if let Some(seq) = message_seq(text.as_str()) {
                    seqs.push(seq);
                }
                if text.as_str() == "2" {
                    let _ = ws.send(Message::text("3")).await;
                }
            }
            Ok(Some(Ok(_))) => {}
            // Closed, reset, or silent for 30 s (a failure the caller reports).
            _ => return seqs,
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What the slow reader got, once its connection has ended.
async fn seqs_once_closed(slow: JoinHandle<Vec<u64>>) -> Vec<u64> {
    tokio::time::timeout(Duration::from_secs(40), slow)
        .await
        .expect("the slow reader's connection ends")
        .expect("reader task")
}

/// The `seq` of a `message` event packet.
fn message_seq(packet: &str) -> Option<u64> {
    let json = packet.strip_prefix("42")?;
    let value: Value = serde_json::from_str(json).ok()?;
    (value[0] == "message").then(|| value[1]["seq"].as_u64())?
}

/// Asserts `seqs` is 0, 1, 2, ... with nothing missing.
fn assert_gapless(seqs: &[u64], who: &str) {
    for (i, seq) in seqs.iter().enumerate() {
        assert_eq!(
            *seq, i as u64,
            "{who} missed a message without being disconnected: got {seqs:?}"
        );
    }
}

/// Sends 8 KiB `message`s, 5 ms apart, until `app` closed a slow consumer.
async fn send_until_closed(app: &TestApp, sender: &SioClient) -> usize {
    send_until_slow_consumer_closed(app, sender, 8 * 1024, Duration::from_millis(5)).await
}

#[tokio::test]
async fn a_client_that_reads_too_slowly_is_closed_when_its_queue_overflows() {
    // No stall timeout: the slow reader's writes never stay blocked long
    // (it reads every 20 ms), so only the overflow policy can close it.
    let app = spawn_app_with(|s| {
        s.socketio.max_buffer_packets = 32;
        s.socketio.slow_consumer_timeout = None;
        s.limits.events_per_second = 0.0;
    })
    .await;
    let slow = slow_reader(app.addr).await;
    let mut reader = app.client(Transport::WebSocket).await;
    let sender = app.client(Transport::WebSocket).await;

    let sent = send_until_closed(&app, &sender).await;

    let got = seqs_once_closed(slow).await;
    assert_gapless(&got, "the slow reader");
    assert!(
        got.len() < sent,
        "the slow reader was closed although it kept up"
    );
    assert!(
        app.metric(DROPPED).await >= 1.0,
        "the overflow was not counted"
    );
    assert_eq!(app.metric(SLOW_CONSUMER).await, 1.0);
    // The client that keeps up was neither closed nor short of anything.
    expect_all_messages(&mut reader, sent).await;
}

/// Opens a long-polling session, connects it to `/` and polls until its
/// `welcome` arrived; returns its session id. It polls no more after that.
async fn polling_client_that_stops(addr: SocketAddr) -> String {
    let http = http_client();
    let base = format!("http://{addr}/socket.io/?EIO=4&transport=polling");
    let open = http
        .get(&base)
        .send()
        .await
        .expect("handshake")
        .text()
        .await
        .expect("body");
    let handshake: Value =
        serde_json::from_str(open.strip_prefix('0').expect("OPEN packet")).expect("handshake JSON");
    let sid = handshake["sid"].as_str().expect("sid").to_owned();
    let url = format!("{base}&sid={sid}");
    http.post(&url).body("40").send().await.expect("CONNECT");
    let mut seen = String::new();
    while !seen.contains("welcome") {
        let body = tokio::time::timeout(Duration::from_secs(5), async {
            http.get(&url)
                .send()
                .await
                .expect("poll")
                .text()
                .await
                .expect("poll body")
        })
        .await
        .expect("the session answers its polls");
        seen.push_str(&body);
    }
    sid
}

#[tokio::test]
async fn a_polling_client_that_stops_polling_is_closed_and_stops_the_shedding() {
    // Shedding on: before, the session's queue overflowed again at every
    // broadcast until its heartbeat ended it, and every sender was refused
    // `overloaded` meanwhile.
    let app = spawn_app_with(|s| {
        s.socketio.max_buffer_packets = 16;
        s.socketio.slow_consumer_timeout = None;
        s.socketio.ping_interval = Duration::from_secs(3);
        s.socketio.ping_timeout = Duration::from_secs(3);
        s.limits.events_per_second = 0.0;
        s.limits.overload_shed = Some(Duration::from_millis(500));
    })
    .await;
    let sid = polling_client_that_stops(app.addr).await;
    let mut sender = app.client(Transport::WebSocket).await;

    // 3 s of acked messages, 20 ms apart; the heartbeat would end the
    // session only after 6 s.
    let started = tokio::time::Instant::now();
    let mut late = Vec::new();
    let mut seq = 0;
    while started.elapsed() < Duration::from_secs(3) {
        let ack = sender
            .emit_with_ack("message", vec![json!({ "seq": seq })])
            .await
            .expect("ack");
        if started.elapsed() > Duration::from_secs(2) {
            late.push(ack[0].clone());
        }
        seq += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        app.metric(DROPPED).await >= 1.0,
        "the overflow was not counted"
    );
    assert!(!late.is_empty());
    assert!(
        late.iter().all(|ack| ack == &json!({ "ok": true })),
        "broadcasts were still refused after the slow consumer was closed: {late:?}"
    );

    // Its next poll finds the session gone, so its client reconnects.
    let poll = http_client()
        .get(format!(
            "http://{}/socket.io/?EIO=4&transport=polling&sid={sid}",
            app.addr
        ))
        .send()
        .await
        .expect("poll");
    assert_eq!(poll.status(), 400);
    assert!(
        poll.text()
            .await
            .expect("body")
            .contains("Session ID unknown")
    );
    // Counted once the server's side of the session is gone.
    app.wait_metric(SLOW_CONSUMER, 1.0).await;
}

/// A session opened on long-polling that upgrades to WebSocket (as
/// socket.io-client does by default) over a 4 KiB receive buffer, then never reads.
async fn upgraded_client_that_stops(addr: SocketAddr) -> WebSocketStream<TcpStream> {
    let sid = polling_client_that_stops(addr).await;
    let mut ws = small_buffer_websocket(addr, &format!("&sid={sid}")).await;
    ws.send(Message::text("2probe")).await.expect("probe");
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("probe answered")
            .expect("open")
            .expect("frame");
        if frame == Message::text("3probe") {
            break;
        }
    }
    ws.send(Message::text("5")).await.expect("UPGRADE");
    ws
}

#[tokio::test]
async fn a_session_that_upgraded_and_stopped_reading_is_counted_as_a_slow_consumer() {
    // Before, its WebSocket was closed but the disconnect was counted as a
    // `transport_error`: ecos looked at the handshake's (polling) connection.
    let app = spawn_app_with(|s| {
        s.socketio.max_buffer_packets = 1_000_000;
        s.socketio.slow_consumer_timeout = Some(Duration::from_secs(1));
        s.limits.events_per_second = 0.0;
    })
    .await;
    let ws = upgraded_client_that_stops(app.addr).await;
    let sender = app.client(Transport::WebSocket).await;

    let padding = "x".repeat(64 * 1024);
    let mut sent = 0;
    eventually(
        "the upgraded slow consumer to be closed",
        Duration::from_secs(20),
        async || {
            for _ in 0..10 {
                sender
                    .emit("message", vec![json!({ "seq": sent, "p": padding })])
                    .await
                    .map_err(|e| e.to_string())?;
                sent += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            match app.metric(SLOW_CONSUMER).await {
                1.0 => Ok(()),
                n => Err(format!("{n} slow consumers counted")),
            }
        },
    )
    .await;
    assert_eq!(
        app.metric(r#"ecos_disconnections_total{reason="transport_error""#)
            .await,
        0.0
    );
    drop(ws);
}

#[tokio::test]
async fn a_broadcast_from_another_instance_closes_the_slow_reader_it_overflows() {
    let prefix = unique_prefix("remote-overflow");
    let quick = |s: &mut ecos::Settings| {
        s.limits.events_per_second = 0.0;
    };
    let a = spawn_node_with(SHARED_REDIS, &prefix, "node-a", quick).await;
    let b = spawn_node_with(SHARED_REDIS, &prefix, "node-b", |s| {
        quick(s);
        s.socketio.max_buffer_packets = 32;
        s.socketio.slow_consumer_timeout = None;
    })
    .await;
    for node in [&a, &b] {
        eventually(
            "Redis to be up",
            Duration::from_secs(10),
            async || match node.metric("ecos_redis_up").await {
                1.0 => Ok(()),
                n => Err(format!("ecos_redis_up {n}")),
            },
        )
        .await;
    }
    let slow = slow_reader(b.addr).await;
    let mut reader = b.client(Transport::WebSocket).await;
    let sender = a.client(Transport::WebSocket).await;
    // The cluster delivers: wait until a message from A reaches B.
    eventually(
        "a message from A to reach B",
        Duration::from_secs(10),
        async || {
            sender
                .emit("message", vec![json!({ "probe": true })])
                .await
                .map_err(|e| e.to_string())?;
            match tokio::time::timeout(Duration::from_millis(500), reader.expect_event("message"))
                .await
            {
                Ok(_) => Ok(()),
                Err(_) => Err("nothing yet".to_owned()),
            }
        },
    )
    .await;
    while tokio::time::timeout(Duration::from_millis(300), reader.expect_event("message"))
        .await
        .is_ok()
    {}

    let sent = send_until_closed(&b, &sender).await;

    let got = seqs_once_closed(slow).await;
    assert_gapless(&got, "the slow reader on the other instance");
    assert!(
        b.metric(DROPPED_REMOTE).await >= 1.0,
        "the overflow was not counted"
    );
    assert_eq!(b.metric(SLOW_CONSUMER).await, 1.0);
    expect_all_messages(&mut reader, sent).await;
}
