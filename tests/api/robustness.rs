//! Bad input ends only the offending session; everyone else carries on.

use std::time::Duration;

use serde_json::json;

use crate::{
    client::{ConnectError, SioClient, Transport},
    helpers::{TRANSPORTS, TestApp, spawn_app, spawn_app_with},
};

const CLOSE_WITHIN: Duration = Duration::from_secs(5);

/// A bystander on each transport that must keep working after someone misbehaves.
async fn bystanders(app: &TestApp) -> [SioClient; 2] {
    [
        app.client(Transport::WebSocket).await,
        app.client(Transport::Polling).await,
    ]
}

async fn assert_bystanders_still_work(app: &TestApp, bystanders: &mut [SioClient; 2]) {
    let mut sender = app.client(Transport::WebSocket).await;
    let ack = sender
        .emit_with_ack("message", vec![json!("still fine")])
        .await
        .expect("ack");
    assert_eq!(ack, vec![json!({ "ok": true })]);
    for bystander in bystanders.iter_mut() {
        assert!(bystander.is_open());
        assert_eq!(
            bystander.expect_event("message").await.args,
            vec![json!("still fine")]
        );
    }
}

#[tokio::test]
async fn malformed_packets_close_only_the_offending_session() {
    let app = spawn_app().await;
    let mut others = bystanders(&app).await;
    let garbage = [
        "4",
        "42[\"message\"",
        "4x",
        "9",
        "42{not json",
        "45-[\"a\",{\"_placeholder\":true,\"num\":0}]",
    ];
    for transport in TRANSPORTS {
        for packet in garbage {
            let mut offender = app.client(transport).await;
            offender.send_raw_text(packet).await.expect("send");
            // A broken binary header waits for attachments; the rest are refused at once.
            if packet.starts_with("45") {
                continue;
            }
            assert!(
                offender.wait_closed(CLOSE_WITHIN).await,
                "{transport:?}: {packet:?} should end the session"
            );
        }
    }
    assert_bystanders_still_work(&app, &mut others).await;
    assert!(
        app.metric("ecos_disconnections_total{reason=\"packet_parsing_error\"")
            .await
            >= 1.0
    );
}

#[tokio::test]
async fn an_oversized_websocket_message_closes_only_that_session() {
    let app = spawn_app_with(|s| s.limits.max_ws_message_bytes = 64 * 1024).await;
    let mut others = bystanders(&app).await;
    let mut offender = app.client(Transport::WebSocket).await;
    let big = "x".repeat(100 * 1024);
    let _ = offender.emit("message", vec![json!(big)]).await;
    assert!(
        offender.wait_closed(CLOSE_WITHIN).await,
        "oversized message ends the session"
    );
    // Nobody received the oversized payload.
    for bystander in others.iter_mut() {
        bystander
            .assert_no_event("message", Duration::from_millis(300))
            .await;
    }
    assert_bystanders_still_work(&app, &mut others).await;

    // Just under the limit is fine.
    let mut sender = app.client(Transport::WebSocket).await;
    let fits = "y".repeat(60 * 1024);
    let ack = sender
        .emit_with_ack("message", vec![json!(fits)])
        .await
        .expect("ack");
    assert_eq!(ack, vec![json!({ "ok": true })]);
}

#[tokio::test]
async fn an_oversized_polling_body_is_refused_and_only_that_session_ends() {
    let app = spawn_app_with(|s| s.limits.max_http_payload_bytes = 64 * 1024).await;
    let mut others = bystanders(&app).await;
    let mut offender = app.client(Transport::Polling).await;
    let big = "x".repeat(100 * 1024);
    let _ = offender.emit("message", vec![json!(big)]).await;
    assert!(
        offender.wait_closed(CLOSE_WITHIN).await,
        "oversized body ends the session"
    );
    for bystander in others.iter_mut() {
        bystander
            .assert_no_event("message", Duration::from_millis(300))
            .await;
    }
    assert_bystanders_still_work(&app, &mut others).await;
}

#[tokio::test]
async fn an_unknown_namespace_gets_a_connect_error_and_nothing_else_breaks() {
    let app = spawn_app().await;
    let mut others = bystanders(&app).await;
    for transport in TRANSPORTS {
        match SioClient::connect_ns(app.addr, transport, "/admin", None).await {
            Err(ConnectError::Refused(message)) => {
                assert!(
                    message.to_lowercase().contains("namespace"),
                    "{transport:?}: {message}"
                )
            }
            Err(other) => panic!("{transport:?}: expected a CONNECT_ERROR, got {other}"),
            Ok(_) => panic!("{transport:?}: /admin must not accept connections"),
        }
    }
    assert_bystanders_still_work(&app, &mut others).await;
}

#[tokio::test]
async fn raw_http_garbage_gets_a_4xx_not_a_crash() {
    let app = spawn_app().await;
    let mut others = bystanders(&app).await;
    for path in [
        "/socket.io/?EIO=9&transport=polling",
        "/socket.io/?EIO=4&transport=carrier-pigeon",
        "/socket.io/?EIO=4&transport=polling&sid=does-not-exist",
        "/socket.io/",
    ] {
        let (status, _) = app.get_text(path).await;
        assert!((400..500).contains(&status), "{path}: {status}");
    }
    let body = app
        .http
        .post(app.url("/socket.io/?EIO=4&transport=polling&sid=nope"))
        .body(vec![0xff, 0xfe, 0x00])
        .send()
        .await
        .expect("post");
    assert!(body.status().is_client_error(), "{}", body.status());
    assert_bystanders_still_work(&app, &mut others).await;
}

#[tokio::test]
async fn a_burst_from_one_client_does_not_starve_the_others() {
    let app = spawn_app().await;
    let mut others = bystanders(&app).await;
    let flooder = app.client(Transport::WebSocket).await;
    for i in 0..500 {
        flooder
            .emit("no-such-event", vec![json!(i)])
            .await
            .expect("emit");
    }
    assert_bystanders_still_work(&app, &mut others).await;
}
