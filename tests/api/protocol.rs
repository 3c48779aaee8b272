//! Engine.IO v4 / Socket.IO v5 wire behaviour, checked against the protocol
//! specification.
//!
//! Most tests talk raw HTTP long-polling and raw WebSocket, because what is
//! checked is the framing itself: the handshake fields, the upgrade sequence,
//! the heartbeat timing, the payload limit, how binary attachments are laid
//! out on each transport. The test client (`client.rs`) is used where the
//! framing is not the point. The last tests cover the conformance mode
//! (`ecos::conformance`), which the official suites run against.
//!
//! Malformed packets, oversized WebSocket messages and bodies, and unknown
//! namespaces are covered in `robustness.rs`.

use std::time::Duration;

use base64::Engine as _;
use ecos::{
    Application,
    conformance::{self, Conformance},
};
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::{net::TcpStream, time::Instant};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, tungstenite::Message};

use crate::{
    client::{SioClient, Transport},
    helpers::{TRANSPORTS, TestApp, eventually, spawn_app, spawn_app_with, spawn_built},
};

/// Engine.IO v4 packet separator in a long-polling payload.
const SEP: char = '\x1e';

/// Upper bound for any single wait on the server.
const WITHIN: Duration = Duration::from_secs(2);

/// One raw Engine.IO long-polling session.
struct Polling {
    http: reqwest::Client,
    /// The session URL (with `sid`).
    url: String,
}

impl Polling {
    /// Opens a session on `path` (`/socket.io/` or `/engine.io/`) and returns it
    /// with the OPEN packet's JSON.
    async fn open(app: &TestApp, path: &str) -> (Self, Value) {
        ecos::app::install_crypto_provider();
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(WITHIN)
            .build()
            .expect("http client");
        let base = app.url(&format!("{path}?EIO=4&transport=polling"));
        let response = http.get(&base).send().await.expect("handshake GET");
        assert_eq!(response.status().as_u16(), 200, "handshake status");
        let body = response.text().await.expect("handshake body");
        let open = body
            .strip_prefix('0')
            .unwrap_or_else(|| panic!("expected an OPEN packet, got {body:?}"));
        let handshake: Value = serde_json::from_str(open).expect("OPEN is JSON");
        let sid = handshake["sid"].as_str().expect("string sid").to_owned();
        let url = format!("{base}&sid={sid}");
        (Self { http, url }, handshake)
    }

    /// One GET: the status and the packets of the payload.
    async fn get(&self) -> (u16, Vec<String>) {
        let response = self.http.get(&self.url).send().await.expect("GET");
        let status = response.status().as_u16();
        let body = response.text().await.expect("GET body");
        let packets = if status == 200 {
            body.split(SEP).map(str::to_owned).collect()
        } else {
            Vec::new()
        };
        (status, packets)
    }

    /// One POST of `body`: the status.
    async fn post(&self, body: impl Into<String>) -> u16 {
        self.http
            .post(&self.url)
            .header("content-type", "text/plain;charset=UTF-8")
            .body(body.into())
            .send()
            .await
            .expect("POST")
            .status()
            .as_u16()
    }

    /// GETs until `done` holds for the packets received so far (pings are
    /// answered and left out); returns them.
    async fn collect_until(&self, done: impl Fn(&[String]) -> bool) -> Vec<String> {
        let deadline = Instant::now() + WITHIN;
        let mut got = Vec::new();
        while !done(&got) {
            assert!(Instant::now() < deadline, "only got {got:?}");
            let (status, packets) = self.get().await;
            assert_eq!(status, 200, "GET while collecting; got so far {got:?}");
            for packet in packets {
                if packet == "2" {
                    assert_eq!(self.post("3").await, 200, "pong");
                } else {
                    got.push(packet);
                }
            }
        }
        got
    }

    /// GETs until a ping arrives, and answers it.
    async fn answer_a_ping(&self) {
        let deadline = Instant::now() + WITHIN;
        loop {
            assert!(Instant::now() < deadline, "no ping came");
            let (status, packets) = self.get().await;
            assert_eq!(status, 200, "GET while waiting for a ping");
            if packets.iter().any(|p| p == "2") {
                assert_eq!(self.post("3").await, 200, "pong");
                return;
            }
        }
    }

    /// Connects the session to namespace `/` and waits for the CONNECT reply
    /// and `welcome`; returns the Socket.IO socket id.
    async fn connect_sio(&self) -> String {
        assert_eq!(self.post("40").await, 200, "CONNECT");
        let got = self
            .collect_until(|p| p.iter().any(|p| p.starts_with("42[\"welcome\"")))
            .await;
        let connect = got
            .iter()
            .find_map(|p| p.strip_prefix("40"))
            .expect("CONNECT reply");
        let connect: Value = serde_json::from_str(connect).expect("CONNECT JSON");
        connect["sid"].as_str().expect("socket id").to_owned()
    }
}

/// One raw WebSocket connection.
struct Ws {
    stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// A data frame: text or binary.
#[derive(Debug, PartialEq)]
enum Frame {
    Text(String),
    Binary(Vec<u8>),
}

impl Ws {
    async fn connect(app: &TestApp, path_and_query: &str) -> Self {
        let url = format!("ws://{}{path_and_query}", app.addr);
        let (stream, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .unwrap_or_else(|e| panic!("websocket connect {url}: {e}"));
        Self { stream }
    }

    /// A new direct WebSocket session on `path`; returns it with the OPEN JSON.
    async fn open(app: &TestApp, path: &str) -> (Self, Value) {
        let mut ws = Self::connect(app, &format!("{path}?EIO=4&transport=websocket")).await;
        let open = match ws.next().await {
            Some(Frame::Text(t)) => t,
            other => panic!("expected the OPEN packet, got {other:?}"),
        };
        let handshake = serde_json::from_str(open.strip_prefix('0').expect("OPEN packet"))
            .expect("OPEN is JSON");
        (ws, handshake)
    }

    async fn send_text(&mut self, text: &str) {
        self.stream
            .send(Message::text(text))
            .await
            .expect("ws send");
    }

    async fn send_binary(&mut self, data: &[u8]) {
        self.stream
            .send(Message::binary(data.to_vec()))
            .await
            .expect("ws send");
    }

    /// The next data frame within [`WITHIN`], or None once the connection ended.
    async fn next(&mut self) -> Option<Frame> {
        loop {
            let message = tokio::time::timeout(WITHIN, self.stream.next())
                .await
                .expect("a frame in time");
            match message {
                Some(Ok(Message::Text(t))) => return Some(Frame::Text(t.to_string())),
                Some(Ok(Message::Binary(b))) => return Some(Frame::Binary(b.to_vec())),
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return None,
                Some(Ok(_)) => continue,
            }
        }
    }

    /// The next data frame that is not an Engine.IO ping; pings are answered.
    async fn next_data(&mut self) -> Frame {
        loop {
            match self.next().await {
                Some(Frame::Text(t)) if t == "2" => self.send_text("3").await,
                Some(frame) => return frame,
                None => panic!("connection ended while waiting for data"),
            }
        }
    }

    /// The next text frame that is not a ping.
    async fn next_text(&mut self) -> String {
        match self.next_data().await {
            Frame::Text(t) => t,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }

    /// Connects to namespace `/` and waits for the CONNECT reply and `welcome`.
    async fn connect_sio(&mut self) {
        self.send_text("40").await;
        let connect = self.next_text().await;
        assert!(connect.starts_with("40{"), "CONNECT reply: {connect}");
        let welcome = self.next_text().await;
        assert!(welcome.starts_with("42[\"welcome\""), "welcome: {welcome}");
    }
}

/// Splits a Socket.IO packet (without the Engine.IO `4`) into its header
/// (type, attachments, namespace, ack id) and its JSON data.
fn split_sio(packet: &str) -> (String, Value) {
    let start = packet
        .find(['[', '{'])
        .unwrap_or_else(|| panic!("no data in {packet:?}"));
    let data = serde_json::from_str(&packet[start..])
        .unwrap_or_else(|e| panic!("bad JSON in {packet:?}: {e}"));
    (packet[..start].to_owned(), data)
}

fn placeholder(num: usize) -> Value {
    json!({ "_placeholder": true, "num": num })
}

#[tokio::test]
async fn the_handshake_carries_the_configured_heartbeat_and_payload_limit() {
    let app = spawn_app_with(|s| {
        s.socketio.ping_interval = Duration::from_millis(1500);
        s.socketio.ping_timeout = Duration::from_millis(1000);
        s.limits.max_http_payload_bytes = 250_000;
    })
    .await;
    let (first, polling) = Polling::open(&app, "/socket.io/").await;
    let (_second, polling_again) = Polling::open(&app, "/socket.io/").await;
    let (_ws, websocket) = Ws::open(&app, "/socket.io/").await;

    for (handshake, upgrades) in [(&polling, json!(["websocket"])), (&websocket, json!([]))] {
        let mut keys: Vec<_> = handshake
            .as_object()
            .expect("object")
            .keys()
            .cloned()
            .collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "maxPayload",
                "pingInterval",
                "pingTimeout",
                "sid",
                "upgrades"
            ],
            "{handshake}"
        );
        assert!(
            handshake["sid"].as_str().is_some_and(|s| !s.is_empty()),
            "{handshake}"
        );
        // A WebSocket session has nothing to upgrade to; polling offers WebSocket.
        assert_eq!(handshake["upgrades"], upgrades, "{handshake}");
        assert_eq!(handshake["pingInterval"], json!(1500), "{handshake}");
        assert_eq!(handshake["pingTimeout"], json!(1000), "{handshake}");
        assert_eq!(handshake["maxPayload"], json!(250_000), "{handshake}");
    }
    let sids = [&polling["sid"], &polling_again["sid"], &websocket["sid"]];
    assert!(
        sids[0] != sids[1] && sids[0] != sids[2] && sids[1] != sids[2],
        "every session gets its own id: {sids:?}"
    );
    // The polling session is live: it accepts a packet.
    assert_eq!(first.post("40").await, 200);
}

#[tokio::test]
async fn a_polling_session_upgrades_to_websocket_and_the_polling_side_is_retired() {
    let app = spawn_app().await;
    let (polling, handshake) = Polling::open(&app, "/socket.io/").await;
    let socket_id = polling.connect_sio().await;
    let sid = handshake["sid"].as_str().expect("sid");

    let mut ws = Ws::connect(
        &app,
        &format!("/socket.io/?EIO=4&transport=websocket&sid={sid}"),
    )
    .await;
    // The probe is answered on the new transport before anything else.
    ws.send_text("2probe").await;
    assert_eq!(ws.next().await, Some(Frame::Text("3probe".into())));
    // While the upgrade is pending, a poll is released at once with a NOOP.
    assert_eq!(polling.get().await, (200, vec!["6".to_owned()]));

    ws.send_text("5").await;
    ws.send_text(r#"420["join","upgraded"]"#).await;
    ws.send_text(r#"421["room:members","upgraded"]"#).await;
    let (header, joined) = split_sio(&ws.next_text().await);
    assert_eq!(header, "430");
    assert_eq!(joined, json!([{ "ok": true, "room": "upgraded" }]));
    // The same Socket.IO socket carries on over WebSocket.
    let (header, members) = split_sio(&ws.next_text().await);
    assert_eq!(header, "431");
    assert_eq!(members[0]["members"], json!([socket_id]), "{members}");

    // The session no longer speaks polling: both directions are refused.
    assert_eq!(polling.get().await.0, 400);
    assert_eq!(polling.post("3").await, 400);
    // And a second upgrade of the same session is not accepted: refused, or
    // closed without a single frame.
    let url = format!(
        "ws://{}/socket.io/?EIO=4&transport=websocket&sid={sid}",
        app.addr
    );
    if let Ok((stream, _)) = tokio_tungstenite::connect_async(url.as_str()).await {
        let mut again = Ws { stream };
        assert_eq!(again.next().await, None, "a second websocket is closed");
    }
    ws.send_text(r#"422["leave","upgraded"]"#).await;
    assert_eq!(split_sio(&ws.next_text().await).0, "432");
}

#[tokio::test]
async fn the_server_pings_every_interval_and_ends_sessions_that_do_not_answer() {
    const INTERVAL: Duration = Duration::from_millis(300);
    const TIMEOUT: Duration = Duration::from_millis(200);
    let app = spawn_app_with(|s| {
        s.socketio.ping_interval = INTERVAL;
        s.socketio.ping_timeout = TIMEOUT;
    })
    .await;

    // Answers every ping and records when each one came.
    let responsive = async {
        let (mut ws, _) = Ws::open(&app, "/socket.io/").await;
        let opened = Instant::now();
        ws.send_text("40").await;
        let mut pings = Vec::new();
        while opened.elapsed() < Duration::from_millis(1300) {
            match ws.next().await {
                Some(Frame::Text(t)) if t == "2" => {
                    pings.push(opened.elapsed());
                    ws.send_text("3").await;
                }
                Some(_) => {}
                None => panic!("a client that answers pings was disconnected"),
            }
        }
        ws.send_text(r#"420["join","alive"]"#).await;
        assert_eq!(split_sio(&ws.next_text().await).0, "430", "still served");
        pings
    };
    // Connects to `/`, then reads everything and answers nothing.
    let silent_ws = async {
        let (mut ws, _) = Ws::open(&app, "/socket.io/").await;
        let opened = Instant::now();
        ws.send_text("40").await;
        while ws.next().await.is_some() {}
        opened.elapsed()
    };
    // Connects to `/`, then never polls (so never sees nor answers a ping).
    let silent_polling = async {
        let (polling, _) = Polling::open(&app, "/socket.io/").await;
        assert_eq!(polling.post("40").await, 200);
        tokio::time::sleep(INTERVAL + TIMEOUT + Duration::from_millis(300)).await;
        polling.get().await.0
    };
    let (pings, silent_ws_lasted, silent_polling_status) =
        tokio::join!(responsive, silent_ws, silent_polling);

    assert!(pings.len() >= 3, "pings at {pings:?}");
    assert!(
        pings[0] <= INTERVAL + Duration::from_millis(200),
        "first ping at {:?}",
        pings[0]
    );
    for gap in pings.windows(2).map(|w| w[1] - w[0]) {
        assert!(
            // tokio catches up on a late tick, so allow some slack below too.
            gap >= INTERVAL / 2 && gap <= INTERVAL * 2,
            "pings at {pings:?}: one every {INTERVAL:?} expected"
        );
    }
    // The silent client is given the ping timeout to answer, and no more than
    // one interval plus the timeout in all.
    assert!(
        silent_ws_lasted >= TIMEOUT - Duration::from_millis(20)
            && silent_ws_lasted <= INTERVAL + TIMEOUT + Duration::from_millis(400),
        "silent websocket closed after {silent_ws_lasted:?}"
    );
    assert_eq!(silent_polling_status, 400, "silent polling session is gone");
    eventually(
        "both silent sockets to be counted",
        WITHIN,
        async || match app
            .metric("ecos_disconnections_total{reason=\"heartbeat_timeout\"")
            .await
        {
            counted if counted >= 2.0 => Ok(()),
            counted => Err(format!("{counted} counted")),
        },
    )
    .await;
}

#[tokio::test]
async fn a_second_concurrent_poll_ends_only_that_session() {
    let app = spawn_app_with(|s| {
        s.socketio.ping_interval = Duration::from_millis(800);
        s.socketio.ping_timeout = Duration::from_secs(2);
    })
    .await;
    let mut bystander = app.client(Transport::Polling).await;
    let (polling, _) = Polling::open(&app, "/socket.io/").await;
    polling.connect_sio().await;
    // engineioxide sends its first ping right after the handshake (see
    // docs/conformance.md); once one has been answered, nothing else is due
    // for a whole interval.
    polling.answer_a_ping().await;

    // Nothing is queued, so this poll is held by the server.
    let held = {
        let (http, url) = (polling.http.clone(), polling.url.clone());
        tokio::spawn(async move {
            let response = http.get(url).send().await.expect("held GET");
            let status = response.status().as_u16();
            (status, response.text().await.expect("held GET body"))
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (status, _) = polling.get().await;
    assert_eq!(status, 400, "a second concurrent poll is refused");

    let (status, body) = held.await.expect("held GET task");
    assert_eq!(status, 200, "the first poll is released");
    assert!(
        body.split(SEP).any(|p| p == "1"),
        "the first poll carries the CLOSE packet: {body:?}"
    );
    assert_eq!(polling.get().await.0, 400, "the session is gone");
    app.wait_metric(
        "ecos_disconnections_total{reason=\"multiple_http_polling\"",
        1.0,
    )
    .await;

    let ack = bystander
        .emit_with_ack("join", vec![json!("unaffected")])
        .await
        .expect("bystander ack");
    assert_eq!(ack, vec![json!({ "ok": true, "room": "unaffected" })]);
}

#[tokio::test]
async fn the_advertised_max_payload_is_the_limit_enforced_on_polling_bodies() {
    let app = spawn_app_with(|s| s.limits.max_http_payload_bytes = 1000).await;
    let (polling, handshake) = Polling::open(&app, "/socket.io/").await;
    assert_eq!(handshake["maxPayload"], json!(1000));
    polling.connect_sio().await;

    // `42["message","xx…x"]`: 16 bytes of framing around the text.
    let body_of = |len: usize| format!(r#"42["message","{}"]"#, "x".repeat(len - 16));
    assert_eq!(body_of(1000).len(), 1000);
    assert_eq!(polling.post(body_of(1000)).await, 200, "exactly maxPayload");
    assert_eq!(polling.post(r#"421["join","fits"]"#).await, 200);
    let got = polling
        .collect_until(|p| p.iter().any(|p| p.starts_with("431")))
        .await;
    assert!(
        got.contains(&r#"431[{"ok":true,"room":"fits"}]"#.to_owned()),
        "{got:?}"
    );

    assert_eq!(polling.post(body_of(1001)).await, 413, "one byte over");
    assert_eq!(polling.get().await.0, 400, "the session ended");
}

#[tokio::test]
async fn binary_attachments_keep_their_framing_on_each_transport() {
    let app = spawn_app().await;
    let (mut ws, _) = Ws::open(&app, "/socket.io/").await;
    ws.connect_sio().await;
    let (polling, _) = Polling::open(&app, "/socket.io/").await;
    polling.connect_sio().await;
    let header = r#"451-["message",{"_placeholder":true,"num":0}]"#;

    // WebSocket → polling: the attachment follows its header as a binary
    // frame, and reaches the polling client base64-encoded with a `b` prefix.
    let bytes = [0u8, 1, 2, 255, 254];
    ws.send_text(header).await;
    ws.send_binary(&bytes).await;
    let base64 = base64::engine::general_purpose::STANDARD.encode(bytes);
    let got = polling.collect_until(|p| p.len() >= 2).await;
    assert_eq!(got, vec![header.to_owned(), format!("b{base64}")]);

    // Polling → WebSocket: the same, the other way round.
    let other = [9u8, 8, 7, 0, 128];
    let base64 = base64::engine::general_purpose::STANDARD.encode(other);
    assert_eq!(polling.post(format!("{header}{SEP}b{base64}")).await, 200);
    assert_eq!(ws.next_data().await, Frame::Text(header.to_owned()));
    assert_eq!(ws.next_data().await, Frame::Binary(other.to_vec()));
}

#[tokio::test]
async fn binary_acks_travel_both_ways() {
    let app = spawn_app_with(|s| s.socketio.ack_timeout = Duration::from_secs(1)).await;
    let mut asker = app.client(Transport::WebSocket).await;
    let mut answerer = app.client(Transport::Polling).await;
    for client in [&mut asker, &mut answerer] {
        client
            .emit_with_ack("join", vec![json!("files")])
            .await
            .expect("join");
    }
    let file: Vec<u8> = (0..=255u8).rev().collect();
    let answer = async {
        let question = answerer.expect_event("room:ask").await;
        // Client → server: a BINARY_ACK.
        answerer
            .ack_binary(
                question.ack_id.expect("ack requested"),
                vec![json!({ "name": "a.bin", "data": placeholder(0) })],
                vec![file.clone()],
            )
            .await
            .expect("binary ack");
        answerer.sid().to_owned()
    };
    let (reply, answerer_id) = tokio::join!(
        asker.emit_binary_with_ack("room:ask", vec![json!("files"), json!("send it")], vec![]),
        answer
    );
    // Server → client: the gathered answer comes back as a BINARY_ACK too.
    let reply = reply.expect("ack");
    assert_eq!(reply.binaries, vec![file]);
    assert_eq!(
        reply.args,
        vec![json!({
            "ok": true,
            "answers": [{ "id": answerer_id, "answer": { "name": "a.bin", "data": placeholder(0) } }],
            "missed": 0
        })]
    );
}

/// The conformance mode on port 0, as the `ecos-conformance` binary runs it.
async fn spawn_conformance() -> TestApp {
    let settings = conformance::settings(crate::helpers::test_settings("conformance"));
    let setup = Conformance::new(&settings);
    spawn_built(
        Application::build_with(settings, setup)
            .await
            .expect("conformance app builds"),
    )
    .await
}

#[tokio::test]
async fn conformance_mode_echoes_every_argument_and_reports_the_auth_payload() {
    let app = spawn_conformance().await;
    let blobs = vec![vec![1u8, 2, 3], vec![4u8, 5, 6]];
    for transport in TRANSPORTS {
        let mut main = SioClient::connect_ns(app.addr, transport, "/", None)
            .await
            .expect("connects to /");
        assert_eq!(main.expect_event("auth").await.args, vec![json!({})]);

        let mut client = SioClient::connect_ns(
            app.addr,
            transport,
            "/custom",
            Some(json!({ "token": "abc" })),
        )
        .await
        .expect("connects to /custom");
        assert_eq!(
            client.expect_event("auth").await.args,
            vec![json!({ "token": "abc" })]
        );

        let args = vec![json!(1), json!("2"), json!({ "3": [true] }), json!(null)];
        client.emit("message", args.clone()).await.expect("emit");
        assert_eq!(client.expect_event("message-back").await.args, args);
        client.emit("message", vec![]).await.expect("emit");
        assert!(client.expect_event("message-back").await.args.is_empty());
        assert_eq!(
            client
                .emit_with_ack("message-with-ack", args.clone())
                .await
                .expect("ack"),
            args
        );

        let with_binaries = vec![placeholder(0), json!("between"), placeholder(1)];
        client
            .emit_binary("message", with_binaries.clone(), blobs.clone())
            .await
            .expect("emit");
        let back = client.expect_event("message-back").await;
        assert_eq!(
            (back.args, back.binaries),
            (with_binaries.clone(), blobs.clone())
        );
        let ack = client
            .emit_binary_with_ack("message-with-ack", with_binaries.clone(), blobs.clone())
            .await
            .expect("binary ack");
        assert_eq!((ack.args, ack.binaries), (with_binaries, blobs.clone()));

        // `/` is served by the same handlers.
        main.emit("message", vec![json!("to main")])
            .await
            .expect("emit");
        assert_eq!(
            main.expect_event("message-back").await.args,
            vec![json!("to main")]
        );
    }
}

#[tokio::test]
async fn conformance_mode_serves_an_engine_io_echo_behind_the_platform_middleware() {
    let app = spawn_conformance().await;

    let (mut ws, handshake) = Ws::open(&app, "/engine.io/").await;
    assert_eq!(handshake["pingInterval"], json!(300));
    assert_eq!(handshake["pingTimeout"], json!(200));
    assert_eq!(handshake["maxPayload"], json!(1_000_000));
    ws.send_text("4hello").await;
    assert_eq!(ws.next_data().await, Frame::Text("4hello".into()));
    ws.send_binary(&[1, 2, 3, 4]).await;
    assert_eq!(ws.next_data().await, Frame::Binary(vec![1, 2, 3, 4]));

    let (polling, handshake) = Polling::open(&app, "/engine.io/").await;
    assert_eq!(handshake["upgrades"], json!(["websocket"]));
    assert_eq!(polling.post(format!("4hello{SEP}bAQIDBA==")).await, 200);
    let got = polling.collect_until(|p| p.len() >= 2).await;
    assert_eq!(got, vec!["4hello".to_owned(), "bAQIDBA==".to_owned()]);

    // The request log and metrics saw the Engine.IO requests...
    let (_, metrics) = app.get_text("/metrics").await;
    let counted: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("ecos_http_requests_total{") && l.contains("method=\"POST\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(counted >= 1.0, "POSTs to /engine.io counted:\n{metrics}");
    // ...and the CORS layer wraps their answers, as it does for Socket.IO.
    let cross_origin = app
        .http
        .get(app.url("/engine.io/?EIO=4&transport=polling"))
        .header("origin", "http://localhost:5173")
        .send()
        .await
        .expect("cross-origin handshake");
    assert_eq!(cross_origin.status().as_u16(), 200);
    assert_eq!(
        cross_origin
            .headers()
            .get("access-control-allow-origin")
            .and_then(|v| v.to_str().ok()),
        Some("http://localhost:5173")
    );
}
