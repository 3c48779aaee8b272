//! Hostile and busy clients: nothing a client sends is lost without a trace,
//! and what one client can make ecos hold is bounded.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::{
    client::{SioClient, Transport},
    helpers::{TRANSPORTS, spawn_app, spawn_app_with},
};

/// Keeps one core busy until dropped, so races that need a loaded machine show.
struct BusyCore(Arc<AtomicBool>);

impl BusyCore {
    fn start() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::spawn(move || {
            let mut x = 0u64;
            while !flag.load(Ordering::Relaxed) {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
        });
        Self(stop)
    }
}

impl Drop for BusyCore {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_sent_the_moment_connect_arrives_is_always_handled() {
    let app = spawn_app().await;
    let _busy = BusyCore::start();
    const CLIENTS: usize = 1000;
    for transport in TRANSPORTS {
        let mut tasks = Vec::new();
        for n in 0..CLIENTS {
            let addr = app.addr;
            tasks.push(tokio::spawn(async move {
                // `connect` returns as soon as the CONNECT packet is read; the
                // join goes out before anything else is awaited.
                let mut client = SioClient::connect(addr, transport).await.expect("connects");
                let room = format!("early-{n}");
                let ack = client.emit_with_ack("join", vec![json!(room)]).await;
                matches!(ack.as_deref(), Ok([ack]) if ack["ok"] == true)
            }));
        }
        let mut handled = 0;
        for task in tasks {
            handled += usize::from(task.await.expect("task"));
        }
        assert_eq!(handled, CLIENTS, "{transport:?}: every early join is acked");
    }
}

#[tokio::test]
async fn events_over_the_rate_limit_get_an_error_ack_and_are_counted() {
    let app = spawn_app_with(|s| {
        s.limits.events_per_second = 20.0;
        s.limits.events_burst = 10.0;
    })
    .await;
    for transport in TRANSPORTS {
        let mut sender = app.client(transport).await;
        let mut bystander = app.client(transport).await;
        let mut accepted = 0;
        let mut refused = 0;
        for n in 0..40 {
            let ack = sender
                .emit_with_ack("message", vec![json!({ "n": n })])
                .await
                .expect("every event is answered");
            match ack[0]["ok"].as_bool() {
                Some(true) => accepted += 1,
                _ => {
                    assert_eq!(ack[0], json!({ "ok": false, "error": "rate limited" }));
                    refused += 1;
                }
            }
        }
        assert!(accepted >= 10, "the burst passes: {accepted}");
        assert!(refused > 0, "a flood is refused: {refused}");
        // Exactly what was accepted reaches the others, nothing more.
        for _ in 0..accepted {
            bystander.expect_event("message").await;
        }
        bystander
            .assert_no_event("message", Duration::from_millis(300))
            .await;
        sender.disconnect().await.expect("disconnects");
        bystander.disconnect().await.expect("disconnects");
    }
    assert!(
        app.metric(r#"ecos_rate_limited_total{event="message""#)
            .await
            > 0.0,
        "refusals are counted by event"
    );
}

#[tokio::test]
async fn a_client_that_stays_over_the_limit_is_disconnected_and_counted() {
    let app = spawn_app_with(|s| {
        s.limits.events_per_second = 20.0;
        s.limits.events_burst = 10.0;
    })
    .await;
    let mut flooder = app.client(Transport::WebSocket).await;
    let mut bystander = app.client(Transport::WebSocket).await;
    // Twice the allowed rate, for longer than the 5 s grace.
    let mut closed = false;
    for _ in 0..300 {
        if flooder.emit("rooms", vec![]).await.is_err() || !flooder.is_open() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(closed || flooder.wait_closed(Duration::from_secs(2)).await);
    app.wait_metric(r#"ecos_disconnections_total{reason="rate_limited""#, 1.0)
        .await;
    // The bystander is untouched.
    let ack = bystander
        .emit_with_ack("join", vec![json!("calm")])
        .await
        .expect("bystander still served");
    assert_eq!(ack[0]["ok"], true);
}

#[tokio::test]
async fn zero_events_per_second_turns_the_limit_off() {
    let app = spawn_app_with(|s| s.limits.events_per_second = 0.0).await;
    let mut client = app.client(Transport::WebSocket).await;
    for n in 0..1000 {
        let ack = client
            .emit_with_ack("join", vec![json!(format!("r{}", n % 10))])
            .await
            .expect("acked");
        assert_eq!(ack[0]["ok"], true, "event {n}");
    }
    assert_eq!(
        app.metric(r#"ecos_rate_limited_total{event="join""#).await,
        0.0
    );
}

#[tokio::test]
async fn a_socket_may_join_only_so_many_rooms() {
    let app = spawn_app_with(|s| s.limits.max_rooms_per_socket = 3).await;
    let mut client = app.client(Transport::WebSocket).await;
    for room in ["a", "b", "c"] {
        let ack = client
            .emit_with_ack("join", vec![json!(room)])
            .await
            .unwrap();
        assert_eq!(ack[0], json!({ "ok": true, "room": room }));
    }
    let ack = client
        .emit_with_ack("join", vec![json!("d")])
        .await
        .unwrap();
    assert_eq!(ack[0], json!({ "ok": false, "error": "too many rooms" }));
    // Joining a room it is already in is no new room.
    let ack = client
        .emit_with_ack("join", vec![json!("b")])
        .await
        .unwrap();
    assert_eq!(ack[0]["ok"], true);
    client
        .emit_with_ack("leave", vec![json!("a")])
        .await
        .unwrap();
    let ack = client
        .emit_with_ack("join", vec![json!("d")])
        .await
        .unwrap();
    assert_eq!(ack[0], json!({ "ok": true, "room": "d" }));
    let ack = client.emit_with_ack("rooms", vec![]).await.unwrap();
    assert_eq!(ack[0]["rooms"], json!(["b", "c", "d"]));
}

#[tokio::test]
async fn only_a_few_asks_may_wait_at_once_and_missed_counts_the_silent() {
    let app = spawn_app_with(|s| s.socketio.ack_timeout = Duration::from_millis(1500)).await;
    let asker = app.client(Transport::WebSocket).await;
    // A member that never answers keeps every ask waiting for the timeout.
    let mut silent = app.client(Transport::WebSocket).await;
    silent
        .emit_with_ack("join", vec![json!("q")])
        .await
        .unwrap();
    let four = futures_util::future::join_all(
        (0..4).map(|n| asker.request("room:ask", vec![json!("q"), json!(n)])),
    );
    let fifth = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let started = tokio::time::Instant::now();
        let ack = asker
            .request("room:ask", vec![json!("q"), json!("fifth")])
            .await;
        (ack, started.elapsed())
    };
    let (four, (fifth, waited)) = tokio::join!(four, fifth);
    assert_eq!(
        fifth.expect("answered")[0],
        json!({ "ok": false, "error": "too many asks in flight; wait for an answer" })
    );
    assert!(
        waited < Duration::from_millis(500),
        "refused at once: {waited:?}"
    );
    for ack in four {
        assert_eq!(
            ack.expect("each ask is answered")[0],
            json!({ "ok": true, "answers": [], "missed": 1 })
        );
    }
    // The slots are free again once the asks ended.
    let ack = asker
        .request("room:ask", vec![json!("nobody-here"), json!("again")])
        .await
        .expect("answered");
    assert_eq!(ack[0], json!({ "ok": true, "answers": [], "missed": 0 }));
}

/// A client that pipelines requests and never reads its answers: when an ack
/// finds its queue full, the socket is closed and counted, not left waiting.
#[tokio::test]
async fn an_ack_that_finds_the_queue_full_closes_the_socket_with_a_reason() {
    let app = spawn_app_with(|s| {
        s.limits.events_per_second = 0.0;
        s.socketio.max_buffer_packets = 8;
        // Only the ack path may close it here.
        s.socketio.slow_consumer_timeout = None;
    })
    .await;
    let url = format!("ws://{}/socket.io/?EIO=4&transport=websocket", app.addr);
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.expect("ws");
    let open = ws.next().await.expect("open").expect("frame");
    assert!(matches!(open, Message::Text(ref t) if t.starts_with('0')));
    ws.send(Message::text("40")).await.unwrap();
    loop {
        match ws.next().await.expect("connect ack").expect("frame") {
            Message::Text(t) if t.starts_with("40") => break,
            _ => continue,
        }
    }
    // Requests as fast as possible, never reading: the kernel's buffers fill,
    // the writer blocks, the queue fills, and the next ack cannot be queued.
    let room = "r".repeat(100);
    let mut id = 0u64;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    'flood: while tokio::time::Instant::now() < deadline {
        for _ in 0..500 {
            let frame = Message::text(format!("42{id}[\"join\",\"{room}\"]"));
            id += 1;
            if ws.feed(frame).await.is_err() {
                break 'flood;
            }
        }
        if ws.flush().await.is_err()
            || app
                .metric(r#"ecos_disconnections_total{reason="queue_full""#)
                .await
                >= 1.0
        {
            break;
        }
    }
    app.wait_metric(r#"ecos_disconnections_total{reason="queue_full""#, 1.0)
        .await;
}

#[tokio::test]
async fn a_large_room_listing_is_exact_and_reused_for_a_moment() {
    let app = spawn_app().await;
    let mut members = Vec::new();
    for c in 0..11 {
        let mut client = app.client(Transport::WebSocket).await;
        for r in 0..100 {
            let ack = client
                .emit_with_ack("join", vec![json!(format!("c{c}-r{r}"))])
                .await
                .unwrap();
            assert_eq!(ack[0]["ok"], true);
        }
        members.push(client);
    }
    let mut caller = app.client(Transport::WebSocket).await;
    let ack = caller.emit_with_ack("rooms", vec![]).await.unwrap();
    assert_eq!(ack[0]["count"], 1100, "the count is exact");
    assert_eq!(ack[0]["rooms"].as_array().map(Vec::len), Some(1000));
    // Over 1,000 rooms the walk is reused for up to a second.
    caller
        .emit_with_ack("join", vec![json!("late")])
        .await
        .unwrap();
    let again = caller.emit_with_ack("rooms", vec![]).await.unwrap();
    assert_eq!(again[0]["count"], 1100);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let fresh = caller.emit_with_ack("rooms", vec![]).await.unwrap();
    assert_eq!(fresh[0]["count"], 1101);
}

/// The same over long-polling, where closing the handshake's connection does
/// not end the session: the DISCONNECT is retried until the queue has room.
#[tokio::test]
async fn an_ack_overflow_on_long_polling_ends_the_session_once_it_reads_again() {
    let app = spawn_app_with(|s| {
        s.limits.events_per_second = 0.0;
        s.socketio.max_buffer_packets = 4;
        s.socketio.slow_consumer_timeout = None;
    })
    .await;
    let http = crate::helpers::http_client();
    let base = app.url("/socket.io/?EIO=4&transport=polling");
    let open = http.get(&base).send().await.unwrap().text().await.unwrap();
    let handshake: serde_json::Value = serde_json::from_str(&open[1..]).expect("OPEN");
    let session = format!("{base}&sid={}", handshake["sid"].as_str().unwrap());
    http.post(&session).body("40").send().await.unwrap();
    let connected = http
        .get(&session)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        connected.split('\u{1e}').any(|p| p.starts_with("40")),
        "{connected}"
    );
    // Twenty requests, no reading: their acks overflow the queue of four.
    let requests: Vec<String> = (0..20)
        .map(|n| format!("42{n}[\"join\",\"r{n}\"]"))
        .collect();
    let posted = http
        .post(&session)
        .body(requests.join("\u{1e}"))
        .send()
        .await
        .unwrap();
    assert!(posted.status().is_success());
    // Reading again drains the queue and the retried DISCONNECT goes out (long
    // before the 25 s heartbeat would end the session), unless closing the
    // handshake's connection already ended the session: reqwest may have
    // reused that connection for the POST. Either way the session ends.
    let mut seen = String::new();
    let mut ended = false;
    for _ in 0..20 {
        let Ok(response) = http
            .get(&session)
            .timeout(Duration::from_secs(2))
            .send()
            .await
        else {
            break;
        };
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        seen.push_str(&body);
        seen.push('\u{1e}');
        if status.is_client_error()
            || body
                .split('\u{1e}')
                .any(|p| p.starts_with("41") || p == "1")
        {
            ended = true;
            break;
        }
    }
    assert!(ended, "the session ended: {seen}");
    app.wait_metric(r#"ecos_disconnections_total{reason="queue_full""#, 1.0)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_queues_overflow_broadcasts_are_refused_as_overloaded_and_readers_get_every_accepted_one()
 {
    // A short queue fills quickly behind the listeners that do not read.
    let app = spawn_app_with(|s| {
        s.socketio.max_buffer_packets = 256;
        s.limits.overload_shed = Some(Duration::from_secs(1));
    })
    .await;
    let room = "busy";
    let mut stalled = Vec::new();
    for _ in 0..3 {
        let mut ws = crate::backpressure::stalled_client(app.addr).await;
        ws.send(Message::text(format!("42[\"join\",\"{room}\"]")))
            .await
            .expect("join");
        stalled.push(ws);
    }
    let mut reader = app.client(Transport::WebSocket).await;
    reader
        .emit_with_ack("join", vec![json!(room)])
        .await
        .expect("join");
    let members = reader
        .emit_with_ack("room:members", vec![json!(room)])
        .await
        .expect("members");
    assert_eq!(members[0]["count"], json!(4), "{members:?}");

    // Eight senders, each at 50 events a second: half the rate limit.
    const SENDERS: usize = 8;
    let padding = "x".repeat(32 * 1024);
    let mut tasks = Vec::new();
    for s in 0..SENDERS {
        let sender = app.client(Transport::WebSocket).await;
        let padding = padding.clone();
        tasks.push(tokio::spawn(async move {
            let (mut accepted, mut overloaded) = (Vec::new(), 0);
            let until = tokio::time::Instant::now() + Duration::from_secs(4);
            let mut n = 0;
            while tokio::time::Instant::now() < until {
                let data = json!({ "s": s, "n": n, "p": padding });
                let ack = sender
                    .request("room:message", vec![json!(room), data])
                    .await
                    .expect("every broadcast is acked");
                match ack[0]["ok"].as_bool() {
                    Some(true) => accepted.push((s, n)),
                    _ => {
                        assert_eq!(ack[0]["error"], json!("overloaded"), "{ack:?}");
                        overloaded += 1;
                    }
                }
                n += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (accepted, overloaded)
        }));
    }
    let mut accepted = Vec::new();
    let mut overloaded = 0;
    for task in tasks {
        let (a, o) = task.await.expect("sender");
        accepted.extend(a);
        overloaded += o;
    }
    assert!(overloaded > 0, "no sender was told `overloaded`");
    assert_eq!(
        app.metric(r#"ecos_overloaded_total{event="room:message""#)
            .await,
        overloaded as f64
    );
    assert!(
        app.metric(r#"ecos_messages_dropped_total{event="room:message""#)
            .await
            >= 1.0
    );

    // The listener that reads got every accepted broadcast, and nothing else.
    let mut received = Vec::new();
    for _ in 0..accepted.len() {
        let event = reader.expect_event("room:message").await;
        let data = &event.args[1];
        received.push((
            data["s"].as_u64().expect("s") as usize,
            data["n"].as_u64().expect("n") as usize,
        ));
    }
    reader
        .assert_no_event("room:message", Duration::from_millis(300))
        .await;
    accepted.sort_unstable();
    received.sort_unstable();
    assert_eq!(received, accepted);
    assert!(
        reader.is_open(),
        "the reading listener was closed: {:?}",
        reader.close_reason()
    );
    drop(stalled);
}
