//! The event contract on `/`, over WebSocket and over long-polling.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{TRANSPORTS, spawn_app, spawn_app_with};

const QUIET: Duration = Duration::from_millis(300);

#[tokio::test]
async fn welcome_carries_the_socket_id_and_the_instance() {
    let app = spawn_app_with(|s| s.instance_id = "web.7".into()).await;
    for transport in TRANSPORTS {
        let mut client = crate::client::SioClient::connect(app.addr, transport)
            .await
            .expect("connects");
        let welcome = client.expect_event("welcome").await;
        assert_eq!(
            welcome.args,
            vec![json!({ "id": client.sid(), "instance": "web.7", "user": null })],
            "{transport:?}"
        );
    }
}

#[tokio::test]
async fn message_reaches_every_other_socket_but_not_the_sender_and_is_acked() {
    let app = spawn_app().await;
    for transport in TRANSPORTS {
        let mut sender = app.client(transport).await;
        let mut ws_peer = app.client(crate::client::Transport::WebSocket).await;
        let mut polling_peer = app.client(crate::client::Transport::Polling).await;

        let data = json!({ "text": "hello", "n": [1, 2.5, null, true], "nested": { "é": "ü" } });
        let ack = sender
            .emit_with_ack("message", vec![data.clone()])
            .await
            .expect("ack");
        assert_eq!(ack, vec![json!({ "ok": true })], "{transport:?}");

        for peer in [&mut ws_peer, &mut polling_peer] {
            let event = peer.expect_event("message").await;
            assert_eq!(event.args, vec![data.clone()], "{transport:?}");
        }
        sender.assert_no_event("message", QUIET).await;
    }
}

#[tokio::test]
async fn message_without_ack_is_still_broadcast() {
    let app = spawn_app().await;
    for transport in TRANSPORTS {
        let sender = app.client(transport).await;
        let mut peer = app.client(transport).await;
        sender
            .emit("message", vec![json!("plain")])
            .await
            .expect("emit");
        assert_eq!(
            peer.expect_event("message").await.args,
            vec![json!("plain")],
            "{transport:?}"
        );
    }
}

#[tokio::test]
async fn binary_payloads_are_relayed_intact_even_when_nested() {
    let app = spawn_app().await;
    let blob: Vec<u8> = (0..=255u8).chain([0, 0, 255]).collect();
    for transport in TRANSPORTS {
        let mut sender = app.client(transport).await;
        let mut peer = app.client(transport).await;
        let data = json!({ "file": { "_placeholder": true, "num": 0 }, "name": "a.bin" });
        let reply = sender
            .emit_binary_with_ack("message", vec![data], vec![blob.clone()])
            .await
            .expect("ack");
        assert_eq!(reply.args, vec![json!({ "ok": true })], "{transport:?}");

        let event = peer.expect_event("message").await;
        assert_eq!(
            event.binaries,
            vec![blob.clone()],
            "{transport:?}: attachment bytes"
        );
        let object = event
            .args
            .first()
            .and_then(Value::as_object)
            .expect("object payload");
        assert_eq!(object.get("name"), Some(&json!("a.bin")), "{transport:?}");
        assert_eq!(
            object.get("file"),
            Some(&json!({ "_placeholder": true, "num": 0 })),
            "{transport:?}"
        );
    }
}

#[tokio::test]
async fn message_without_data_gets_an_error_ack() {
    let app = spawn_app().await;
    for transport in TRANSPORTS {
        let mut client = app.client(transport).await;
        let ack = client.emit_with_ack("message", vec![]).await.expect("ack");
        assert_eq!(ack[0]["ok"], json!(false), "{transport:?}");
        assert!(
            ack[0]["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{transport:?}"
        );
    }
}

#[tokio::test]
async fn join_and_leave_are_acked_with_the_room() {
    let app = spawn_app().await;
    for transport in TRANSPORTS {
        let mut client = app.client(transport).await;
        let joined = client
            .emit_with_ack("join", vec![json!("lobby")])
            .await
            .expect("ack");
        assert_eq!(
            joined,
            vec![json!({ "ok": true, "room": "lobby" })],
            "{transport:?}"
        );
        let left = client
            .emit_with_ack("leave", vec![json!("lobby")])
            .await
            .expect("ack");
        assert_eq!(
            left,
            vec![json!({ "ok": true, "room": "lobby" })],
            "{transport:?}"
        );
    }
}

#[tokio::test]
async fn bad_rooms_get_a_clear_error_and_the_socket_stays_up() {
    let app = spawn_app().await;
    let bad = [
        json!(42),
        json!(""),
        json!("x".repeat(129)),
        json!({ "room": "a" }),
        json!(null),
    ];
    for transport in TRANSPORTS {
        let mut client = app.client(transport).await;
        let mut peer = app.client(transport).await;
        for room in &bad {
            for event in ["join", "leave"] {
                let ack = client
                    .emit_with_ack(event, vec![room.clone()])
                    .await
                    .expect("ack");
                assert_eq!(ack[0]["ok"], json!(false), "{transport:?} {event} {room}");
                let error = ack[0]["error"].as_str().unwrap_or_default();
                assert!(
                    error.contains("room"),
                    "{transport:?} {event} {room}: {error:?}"
                );
            }
            let ack = client
                .emit_with_ack("room:message", vec![room.clone(), json!("hi")])
                .await
                .expect("ack");
            assert_eq!(
                ack[0]["ok"],
                json!(false),
                "{transport:?} room:message {room}"
            );
        }
        // A room of exactly 128 characters is fine.
        let long = "é".repeat(128);
        let ack = client
            .emit_with_ack("join", vec![json!(long)])
            .await
            .expect("ack");
        assert_eq!(ack[0]["ok"], json!(true), "{transport:?}");

        // Still connected and useful.
        assert!(client.is_open());
        client
            .emit("message", vec![json!("still here")])
            .await
            .expect("emit");
        assert_eq!(
            peer.expect_event("message").await.args,
            vec![json!("still here")]
        );
    }
}

#[tokio::test]
async fn room_message_reaches_only_the_other_members_of_the_room() {
    let app = spawn_app().await;
    for transport in TRANSPORTS {
        let mut sender = app.client(transport).await;
        let mut member = app.client(transport).await;
        let mut outsider = app.client(transport).await;
        for client in [&mut sender, &mut member] {
            client
                .emit_with_ack("join", vec![json!("ops")])
                .await
                .expect("join");
        }
        let ack = sender
            .emit_with_ack("room:message", vec![json!("ops"), json!({ "alert": 1 })])
            .await
            .expect("ack");
        assert_eq!(ack, vec![json!({ "ok": true })], "{transport:?}");

        let event = member.expect_event("room:message").await;
        assert_eq!(
            event.args,
            vec![json!("ops"), json!({ "alert": 1 })],
            "{transport:?}"
        );
        outsider.assert_no_event("room:message", QUIET).await;
        sender.assert_no_event("room:message", QUIET).await;

        // After leaving, the member no longer receives.
        member
            .emit_with_ack("leave", vec![json!("ops")])
            .await
            .expect("leave");
        sender
            .emit_with_ack("room:message", vec![json!("ops"), json!(2)])
            .await
            .expect("ack");
        member.assert_no_event("room:message", QUIET).await;
    }
}

#[tokio::test]
async fn room_message_with_missing_arguments_gets_an_error_ack() {
    let app = spawn_app().await;
    for transport in TRANSPORTS {
        let mut client = app.client(transport).await;
        let ack = client
            .emit_with_ack("room:message", vec![json!("ops")])
            .await
            .expect("ack");
        assert_eq!(ack[0]["ok"], json!(false), "{transport:?}");
        assert!(
            ack[0]["error"].as_str().is_some_and(|e| e.contains("room")),
            "{transport:?}"
        );
    }
}

#[tokio::test]
async fn unknown_events_are_ignored_and_counted_as_other() {
    let app = spawn_app().await;
    for transport in TRANSPORTS {
        let client = app.client(transport).await;
        let mut peer = app.client(transport).await;
        client
            .emit("no-such-event", vec![json!(1)])
            .await
            .expect("emit");
        client.emit(&"z".repeat(5000), vec![]).await.expect("emit");
        client
            .emit("message", vec![json!("after")])
            .await
            .expect("emit");
        assert_eq!(
            peer.expect_event("message").await.args,
            vec![json!("after")],
            "{transport:?}"
        );
        assert!(client.is_open(), "{transport:?}");
    }
    assert_eq!(
        app.metric("ecos_events_received_total{event=\"other\"")
            .await,
        4.0
    );
}

#[tokio::test]
async fn latency_uses_a_server_to_client_ack() {
    let app = spawn_app().await;
    for transport in TRANSPORTS {
        let mut client = app.client(transport).await;
        client
            .emit("latency", vec![])
            .await
            .expect("emit without ack");
        let request = client.expect_event("latency").await;
        let ack_id = request.ack_id.expect("server asked for an ack");
        assert_eq!(
            request.args,
            vec![json!({ "instance": "test" })],
            "{transport:?}"
        );
        client.ack(ack_id, vec![json!("pong")]).await.expect("ack");
    }
}

#[tokio::test]
async fn latency_reports_the_round_trip_of_the_client_ack() {
    let app = spawn_app().await;
    for transport in TRANSPORTS {
        let client = app.client(transport).await;
        let ack = client
            .emit_with_ack_answering("latency", vec![], "latency")
            .await
            .expect("ack");
        assert_eq!(ack[0]["ok"], json!(true), "{transport:?}: {ack:?}");
        assert!(
            ack[0]["rtt_ms"].as_f64().is_some_and(|ms| ms >= 0.0),
            "{transport:?}: {ack:?}"
        );
    }
}

#[tokio::test]
async fn latency_without_a_client_ack_times_out_with_an_error() {
    let app = spawn_app_with(|s| s.socketio.ack_timeout = Duration::from_millis(200)).await;
    for transport in TRANSPORTS {
        let mut client = app.client(transport).await;
        let ack = client.emit_with_ack("latency", vec![]).await.expect("ack");
        assert_eq!(ack[0]["ok"], json!(false), "{transport:?}");
        assert!(
            ack[0]["error"]
                .as_str()
                .is_some_and(|e| e.contains("latency")),
            "{transport:?}"
        );
    }
}

#[tokio::test]
async fn room_members_lists_the_sockets_in_the_room() {
    let app = spawn_app().await;
    for transport in TRANSPORTS {
        let mut a = app.client(transport).await;
        let mut b = app.client(transport).await;
        let _outsider = app.client(transport).await;
        for client in [&mut a, &mut b] {
            client
                .emit_with_ack("join", vec![json!("team")])
                .await
                .expect("join");
        }
        let ack = a
            .emit_with_ack("room:members", vec![json!("team")])
            .await
            .expect("ack");
        let mut expected = vec![a.sid().to_owned(), b.sid().to_owned()];
        expected.sort();
        assert_eq!(
            ack,
            vec![json!({ "ok": true, "room": "team", "count": 2, "members": expected })],
            "{transport:?}"
        );
        for client in [&mut a, &mut b] {
            client
                .emit_with_ack("leave", vec![json!("team")])
                .await
                .expect("leave");
        }
        let bad = a
            .emit_with_ack("room:members", vec![json!(5)])
            .await
            .expect("ack");
        assert_eq!(bad[0]["ok"], json!(false), "{transport:?}");
    }
}

#[tokio::test]
async fn room_ask_gathers_the_other_members_answers() {
    let app = spawn_app_with(|s| s.socketio.ack_timeout = Duration::from_millis(500)).await;
    for transport in TRANSPORTS {
        let mut asker = app.client(transport).await;
        let mut answers_yes = app.client(transport).await;
        let mut stays_silent = app.client(transport).await;
        for client in [&mut asker, &mut answers_yes, &mut stays_silent] {
            client
                .emit_with_ack("join", vec![json!("vote")])
                .await
                .expect("join");
        }
        let answerer = async {
            let question = answers_yes.expect_event("room:ask").await;
            assert_eq!(
                question.args,
                vec![json!("vote"), json!({ "q": "ship it?" })]
            );
            answers_yes
                .ack(question.ack_id.expect("ack requested"), vec![json!("yes")])
                .await
                .expect("answer");
            answers_yes.sid().to_owned()
        };
        let (reply, yes_id) = tokio::join!(
            asker.emit_with_ack("room:ask", vec![json!("vote"), json!({ "q": "ship it?" })]),
            answerer
        );
        let reply = reply.expect("ack");
        assert_eq!(
            reply,
            vec![
                json!({ "ok": true, "answers": [{ "id": yes_id, "answer": "yes" }], "missed": 1 })
            ],
            "{transport:?}"
        );
        assert_eq!(
            stays_silent.expect_event("room:ask").await.args[0],
            json!("vote")
        );
        asker.assert_no_event("room:ask", QUIET).await;
        for client in [&mut asker, &mut answers_yes, &mut stays_silent] {
            client
                .emit_with_ack("leave", vec![json!("vote")])
                .await
                .expect("leave");
        }
    }
}

#[tokio::test]
async fn rooms_lists_every_room_of_the_namespace() {
    let app = spawn_app().await;
    for transport in TRANSPORTS {
        let mut a = app.client(transport).await;
        let mut b = app.client(transport).await;
        a.emit_with_ack("join", vec![json!("alpha")])
            .await
            .expect("join");
        b.emit_with_ack("join", vec![json!("beta")])
            .await
            .expect("join");
        b.emit_with_ack("join", vec![json!("alpha")])
            .await
            .expect("join");
        let ack = a.emit_with_ack("rooms", vec![]).await.expect("ack");
        assert_eq!(
            ack,
            vec![json!({ "ok": true, "count": 2, "rooms": ["alpha", "beta"] })],
            "{transport:?}"
        );
        a.emit_with_ack("leave", vec![json!("alpha")])
            .await
            .expect("leave");
        for room in ["alpha", "beta"] {
            b.emit_with_ack("leave", vec![json!(room)])
                .await
                .expect("leave");
        }
        let ack = a.emit_with_ack("rooms", vec![]).await.expect("ack");
        assert_eq!(
            ack,
            vec![json!({ "ok": true, "count": 0, "rooms": [] })],
            "{transport:?}"
        );
    }
}
