//! Slow consumers: a client that stops reading is closed and counted, and the
//! clients that keep reading get every message, in order.

use std::{net::SocketAddr, time::Duration};

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::{WebSocketStream, tungstenite::Message};

use crate::client::{SioClient, Transport};
use crate::helpers::{TestApp, spawn_app_with};

const SLOW_CONSUMER: &str = r#"ecos_disconnections_total{reason="slow_consumer""#;
const DROPPED: &str = r#"ecos_messages_dropped_total{event="message""#;

/// A WebSocket to Engine.IO (`query` added to `EIO=4&transport=websocket`)
/// on a socket with a 4 KiB receive buffer, so that it backs up fast.
pub(crate) async fn small_buffer_websocket(
    addr: SocketAddr,
    query: &str,
) -> WebSocketStream<TcpStream> {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let tcp = socket.connect(addr).await.expect("connect");
    let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket{query}");
    let (ws, _) = tokio_tungstenite::client_async(url, tcp)
        .await
        .expect("upgrade");
    ws
}

/// A client that connects to `/`, takes its `welcome`, and then never reads
/// again, on a socket with a tiny receive buffer so that it backs up fast.
pub(crate) async fn stalled_client(addr: SocketAddr) -> WebSocketStream<TcpStream> {
    let mut ws = small_buffer_websocket(addr, "").await;
    let mut welcomed = false;
    while !welcomed {
        let frame = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("server answers the handshake")
            .expect("connection open")
            .expect("frame");
        if let Message::Text(text) = frame {
            if text.starts_with('0') {
                ws.send(Message::text("40")).await.expect("send connect");
            }
            welcomed = text.starts_with("42[\"welcome\"");
        }
    }
    ws
}

/// Sends `message`s of `size` bytes from `sender`, `every` apart, until the
/// app has closed a slow consumer (or 20 s went by); returns how many were sent.
pub(crate) async fn send_until_slow_consumer_closed(
    app: &TestApp,
    sender: &SioClient,
    size: usize,
    every: Duration,
) -> usize {
    let padding = "x".repeat(size);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut sent = 0;
    loop {
        sender
            .emit("message", vec![json!({ "seq": sent, "p": padding })])
            .await
            .expect("emit");
        sent += 1;
        tokio::time::sleep(every).await;
        if sent % 20 == 0 && app.metric(SLOW_CONSUMER).await >= 1.0 {
            return sent;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no slow consumer was closed after {sent} messages of {size} bytes"
        );
    }
}

/// Asserts `client` receives `message` with `seq` 0..n, in order and none missing.
pub(crate) async fn expect_all_messages(client: &mut SioClient, n: usize) {
    for want in 0..n {
        let event = client.expect_event("message").await;
        assert_eq!(
            event.args[0]["seq"],
            json!(want),
            "a reading client missed or reordered a message"
        );
    }
}

/// The stalled client's connection ends (EOF, close or reset) once the
/// server has closed it: reading drains what was buffered, then stops.
async fn expect_closed(mut ws: WebSocketStream<TcpStream>) {
    let closed = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(Message::Text(t))) if t.as_str() == "1" || t.starts_with("41") => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the slow consumer's connection was never closed"
    );
}

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_after_the_timeout_and_nothing_is_dropped() {
    // The queue is larger than anything this test sends: only the stall timeout can act.
    let app = spawn_app_with(|s| {
        s.socketio.max_buffer_packets = 1_000_000;
        s.socketio.slow_consumer_timeout = Some(Duration::from_secs(1));
    })
    .await;
    let slow = stalled_client(app.addr).await;
    let mut reader = app.client(Transport::WebSocket).await;
    let sender = app.client(Transport::WebSocket).await;

    let sent =
        send_until_slow_consumer_closed(&app, &sender, 64 * 1024, Duration::from_millis(10)).await;

    expect_all_messages(&mut reader, sent).await;
    assert_eq!(app.metric(SLOW_CONSUMER).await, 1.0);
    assert_eq!(app.metric(DROPPED).await, 0.0);
    expect_closed(slow).await;
    // The clients that kept reading are still connected and served.
    sender
        .emit("message", vec![json!({ "seq": "after" })])
        .await
        .expect("emit");
    let event = reader.expect_event("message").await;
    assert_eq!(event.args[0]["seq"], json!("after"));
}

#[tokio::test]
async fn a_full_queue_closes_the_client_behind_it_and_counts_what_it_refused() {
    // No timeout: only the overflow of the (small) queue can close the client.
    let app = spawn_app_with(|s| {
        s.socketio.max_buffer_packets = 8;
        s.socketio.slow_consumer_timeout = None;
    })
    .await;
    let slow = stalled_client(app.addr).await;
    let mut reader = app.client(Transport::WebSocket).await;
    let sender = app.client(Transport::WebSocket).await;

    let sent =
        send_until_slow_consumer_closed(&app, &sender, 64 * 1024, Duration::from_millis(10)).await;

    expect_all_messages(&mut reader, sent).await;
    assert_eq!(app.metric(SLOW_CONSUMER).await, 1.0);
    assert!(
        app.metric(DROPPED).await >= 1.0,
        "the overflow that closed the client was not counted"
    );
    expect_closed(slow).await;
}

#[tokio::test]
async fn clients_that_keep_reading_are_never_closed_as_slow_consumers() {
    let app = spawn_app_with(|s| {
        s.socketio.slow_consumer_timeout = Some(Duration::from_millis(500));
    })
    .await;
    let mut reader = app.client(Transport::WebSocket).await;
    let mut polling = app.client(Transport::Polling).await;
    let sender = app.client(Transport::WebSocket).await;
    let padding = "x".repeat(16 * 1024);
    for seq in 0..200 {
        sender
            .emit("message", vec![json!({ "seq": seq, "p": padding })])
            .await
            .expect("emit");
    }
    expect_all_messages(&mut reader, 200).await;
    expect_all_messages(&mut polling, 200).await;
    assert_eq!(app.metric(SLOW_CONSUMER).await, 0.0);
    assert_eq!(app.metric(DROPPED).await, 0.0);
}
