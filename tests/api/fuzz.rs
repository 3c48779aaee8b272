//! Fuzzing what a client can send: property tests of the decoding ecos owns,
//! and random frames against the running server. Bounded in count, so CI
//! stays fast; the property tests shrink a failure to a small case.

use std::time::Duration;

use ecos::realtime::{args::Args, room_name};
use futures_util::{SinkExt as _, StreamExt as _};
use proptest::prelude::*;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::{client::Transport, helpers::spawn_app};

/// Arbitrary JSON, nested a few levels deep.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        // Floats serde_json itself writes and reads back exactly.
        any::<f64>()
            .prop_filter("finite and exact in JSON", |f| f.is_finite()
                && serde_json::from_str::<f64>(&serde_json::to_string(f).unwrap())
                    .ok()
                    == Some(*f))
            .prop_map(serde_json::Value::from),
        ".{0,40}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(serde_json::Value::from),
            prop::collection::btree_map(".{0,8}", inner, 0..8)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Any argument list decodes into `Args` and encodes back to the same list.
    #[test]
    fn any_argument_list_round_trips(args in prop::collection::vec(json_value(), 0..6)) {
        let text = serde_json::to_string(&args).unwrap();
        let decoded: Args = serde_json::from_str(&text).unwrap();
        prop_assert_eq!(decoded.len(), args.len());
        let back: serde_json::Value = serde_json::from_str(&serde_json::to_string(&decoded).unwrap()).unwrap();
        prop_assert_eq!(back, serde_json::Value::from(args));
    }

    /// A room name is accepted exactly when it is a string of 1 to 128 characters.
    #[test]
    fn room_names_follow_the_rule(value in json_value()) {
        let as_rmpv: rmpv::Value = serde_json::from_value(value.clone()).unwrap();
        let verdict = room_name(&as_rmpv);
        match value.as_str() {
            Some(s) if (1..=128).contains(&s.chars().count()) => prop_assert_eq!(verdict, Ok(s.to_owned())),
            _ => prop_assert!(verdict.is_err()),
        }
    }
}

/// A small deterministic generator, so a failure replays exactly.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One hostile frame: a packet of every type with random or broken payloads.
fn hostile_frame(rng: &mut XorShift) -> String {
    const PIECES: &[&str] = &[
        "[",
        "]",
        "{",
        "}",
        "\"",
        ",",
        ":",
        "null",
        "\"message\"",
        "\"join\"",
        "\"room:ask\"",
        "\"rooms\"",
        "{\"_placeholder\":true,\"num\":0}",
        "-1",
        "1e999",
        "\\u0000",
        "/",
        "#",
        "\u{1F600}",
        "9999999999999999999999",
    ];
    let mut frame = String::new();
    // Engine.IO type, then Socket.IO type, ack id and payload pieces.
    frame.push(char::from(b'0' + rng.below(8) as u8));
    frame.push(char::from(b'0' + rng.below(7) as u8));
    if rng.below(2) == 0 {
        frame.push_str(&rng.below(1_000_000).to_string());
    }
    for _ in 0..rng.below(12) {
        frame.push_str(PIECES[rng.below(PIECES.len() as u64) as usize]);
    }
    frame
}

/// 2,000 random frames over fresh WebSocket sessions: each may close its own
/// session, none may take the server or a bystander down.
#[tokio::test]
async fn random_frames_never_take_the_server_down() {
    let app = spawn_app().await;
    let mut bystander = app.client(Transport::WebSocket).await;
    let url = format!("ws://{}/socket.io/?EIO=4&transport=websocket", app.addr);
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let mut sent = 0;
    while sent < 2_000 {
        let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .expect("ws");
        let _open = ws.next().await;
        let _ = ws.send(Message::text("40")).await;
        for _ in 0..50 {
            let frame = hostile_frame(&mut rng);
            sent += 1;
            if ws.send(Message::text(frame)).await.is_err() {
                break;
            }
        }
        // Deep nesting and a binary frame nobody announced, too.
        let _ = ws
            .send(Message::text(format!("42{}", "[".repeat(100_000))))
            .await;
        let _ = ws.send(Message::binary(vec![0xff; 1024])).await;
        let _ = ws.close(None).await;
    }
    let (status, _) = app.get_text("/healthz").await;
    assert_eq!(status, 200);
    let ack = bystander
        .emit_with_ack("join", vec![json!("still-here")])
        .await
        .expect("the bystander is still served");
    assert_eq!(ack[0]["ok"], true);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(bystander.is_open());
}
