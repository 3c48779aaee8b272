//! `auth.mode = jwt` from the server's side: the user room across a cluster,
//! the handshake's `Authorization` header, the origin guard on both
//! transports, and the settings that must stop start-up. The official
//! clients' view (jose and PyJWT tokens, every refusal) is in tests/js/auth.test.mjs
//! and tests/python/test_auth.py.

use std::time::Duration;

use ecos::{
    Application,
    auth::mint::{TokenRequest, mint},
    config::{AuthMode, Settings},
    hub::Selector,
    realtime::args::Args,
};
use futures_util::StreamExt;
use serde_json::json;

use crate::{
    client::{ConnectError, SioClient, Transport},
    config::load,
    helpers::{spawn_app_with, spawn_built, test_settings},
};

const SECRET: &str = "rust-test-secret-0123456789abcdef0123";
const QUIET: Duration = Duration::from_millis(400);

fn jwt_mode(s: &mut Settings) {
    s.auth.mode = AuthMode::Jwt;
    s.auth.jwt.secrets = vec![ecos::config::Secret::new(SECRET)];
}

fn token(s: &Settings, sub: &str) -> String {
    mint(
        &s.auth.jwt,
        &TokenRequest {
            sub: sub.to_owned(),
            rooms: vec!["team:*".to_owned()],
            ttl: Duration::from_secs(600),
            broadcast: false,
        },
    )
    .expect("token")
}

async fn connect_as(addr: std::net::SocketAddr, token: &str) -> SioClient {
    SioClient::connect_ns(
        addr,
        Transport::WebSocket,
        "/",
        Some(json!({ "token": token })),
    )
    .await
    .expect("connects")
}

#[tokio::test]
async fn the_user_room_reaches_every_device_of_a_user_on_every_instance() {
    let prefix = format!("ecos-test-user-room-{}", std::process::id());
    let mut nodes = Vec::new();
    let mut hubs = Vec::new();
    let mut settings_of_first = None;
    for i in 0..3 {
        let mut s = test_settings(&format!("node-{i}"));
        jwt_mode(&mut s);
        s.redis.url = Some("redis://127.0.0.1:6379".to_owned());
        s.redis.prefix = prefix.clone();
        settings_of_first.get_or_insert_with(|| s.clone());
        let app = Application::build(s).await.expect("builds");
        hubs.push(app.hub());
        nodes.push(spawn_built(app).await);
    }
    let s = settings_of_first.expect("settings");
    // Every node subscribed to the cluster before anything is sent across it.
    for node in &nodes {
        crate::helpers::eventually("redis to be up", Duration::from_secs(10), async || {
            match crate::helpers::readyz(node.addr.port()).await {
                (200, body) if body["redis"] == json!("up") => Ok(()),
                (status, body) => Err(format!("{status} {body}")),
            }
        })
        .await;
    }
    let mut alices = Vec::new();
    for node in &nodes {
        let mut alice = connect_as(node.addr, &token(&s, "alice")).await;
        let welcome = alice.expect_event("welcome").await;
        assert_eq!(welcome.args[0]["user"], json!("alice"));
        alices.push(alice);
    }
    let mut bob = connect_as(nodes[1].addr, &token(&s, "bob")).await;

    let selector = Selector {
        rooms: vec![ecos::realtime::user_room("alice")],
        ..Selector::default()
    };
    hubs[0]
        .emit(
            &selector,
            "notice",
            &Args(vec![rmpv::Value::from("for alice")]),
        )
        .await
        .expect("emits");
    for alice in &mut alices {
        let notice = alice.expect_event("notice").await;
        assert_eq!(notice.args, vec![json!("for alice")]);
    }
    bob.assert_no_event("notice", QUIET).await;
}

#[tokio::test]
async fn a_server_side_client_may_send_its_token_as_a_bearer_header() {
    let app = spawn_app_with(jwt_mode).await;
    let mut s = test_settings("t");
    jwt_mode(&mut s);
    let url = format!("ws://{}/socket.io/?EIO=4&transport=websocket", app.addr);
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url)
            .expect("request");
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {}", token(&s, "worker"))
            .parse()
            .expect("header"),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("upgrades");
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let open = ws.next().await.expect("open").expect("frame");
    assert!(open.to_text().expect("text").starts_with('0'));
    ws.send(Message::text("40")).await.expect("sends CONNECT");
    // The test settings ping often, so an engine ping may come first; it is
    // answered and skipped.
    let mut packets = Vec::new();
    while packets.len() < 2 {
        let frame = ws.next().await.expect("frame").expect("frame");
        let text = frame.to_text().expect("text").to_owned();
        if text == "2" {
            ws.send(Message::text("3")).await.expect("sends pong");
        } else {
            packets.push(text);
        }
    }
    assert!(packets[0].starts_with("40{"), "{packets:?}");
    assert!(packets[1].contains(r#""user":"worker""#), "{packets:?}");
}

#[tokio::test]
async fn a_refused_connection_gets_connect_error_with_the_reason() {
    let app = spawn_app_with(jwt_mode).await;
    for transport in [Transport::WebSocket, Transport::Polling] {
        match SioClient::connect_ns(app.addr, transport, "/", None).await {
            Err(ConnectError::Refused(message)) => {
                assert_eq!(message, "unauthorized: missing token")
            }
            Err(other) => panic!("{transport:?}: {other}"),
            Ok(_) => panic!("{transport:?}: connected without a token"),
        }
    }
    let (_, text) = app.get_text("/metrics").await;
    let failures: Vec<&str> = text
        .lines()
        .filter(|l| {
            l.starts_with("ecos_auth_failures_total{") && l.contains(r#"reason="missing_token""#)
        })
        .collect();
    assert_eq!(failures.len(), 1, "{text}");
    assert!(failures[0].ends_with(" 2"), "{}", failures[0]);
}

#[tokio::test]
async fn engine_requests_from_a_foreign_origin_are_refused_on_both_transports() {
    let app = spawn_app_with(|s| {
        s.cors = ecos::config::CorsPolicy::List(vec!["https://app.example.com".to_owned()]);
    })
    .await;
    let polling = app.url("/socket.io/?EIO=4&transport=polling");
    let status = |origin: Option<&'static str>| {
        let mut request = app.http.get(&polling);
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        async move { request.send().await.expect("answers").status().as_u16() }
    };
    assert_eq!(status(Some("https://evil.example.com")).await, 403);
    assert_eq!(status(Some("https://app.example.com")).await, 200);
    assert_eq!(
        status(None).await,
        200,
        "clients without Origin are not browsers"
    );
    let same_origin: &'static str = Box::leak(format!("http://{}", app.addr).into_boxed_str());
    assert_eq!(
        status(Some(same_origin)).await,
        200,
        "the demo page's own origin"
    );

    let url = format!("ws://{}/socket.io/?EIO=4&transport=websocket", app.addr);
    for (origin, allowed) in [
        ("https://evil.example.com", false),
        ("https://app.example.com", true),
    ] {
        let mut request =
            tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
                url.as_str(),
            )
            .expect("request");
        request
            .headers_mut()
            .insert("origin", origin.parse().expect("header"));
        let result = tokio_tungstenite::connect_async(request).await;
        match (result, allowed) {
            (Ok(_), true) => {}
            (Err(tokio_tungstenite::tungstenite::Error::Http(response)), false) => {
                assert_eq!(response.status().as_u16(), 403, "{origin}");
            }
            (other, _) => panic!("{origin}: unexpected {:?}", other.map(|_| ())),
        }
    }
}

#[test]
fn jwt_mode_without_any_key_stops_start_up_naming_the_keys() {
    let error = load(&[("ECOS_AUTH__MODE", "jwt")]).unwrap_err().to_string();
    assert_eq!(
        error,
        "`auth.mode = \"jwt\"` needs at least one of `auth.jwt.secrets`, `auth.jwt.public_key_file` or `auth.jwt.jwks_url`"
    );
    let error = load(&[("ECOS_AUTH__MODE", "oauth")])
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("`auth.mode`") && error.contains("`none` or `jwt`"),
        "{error}"
    );
}

#[test]
fn a_public_key_file_that_is_not_a_public_key_stops_start_up() {
    let dir = std::env::temp_dir().join(format!("ecos-auth-key-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("not-a-key.pem");
    std::fs::write(
        &file,
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
    )
    .expect("write");
    let path = file.display().to_string();
    let error = load(&[
        ("ECOS_AUTH__MODE", "jwt"),
        ("ECOS_AUTH__JWT__PUBLIC_KEY_FILE", &path),
    ])
    .unwrap_err()
    .to_string();
    assert!(
        error.starts_with("cannot use `auth.jwt.public_key_file`"),
        "{error}"
    );
    let missing = load(&[("ECOS_AUTH__JWT__PUBLIC_KEY_FILE", "/nonexistent/key.pem")])
        .unwrap_err()
        .to_string();
    assert!(missing.contains("auth.jwt.public_key_file"), "{missing}");
}

#[test]
fn secrets_never_appear_in_print_config_or_debug_output() {
    let s = load(&[
        ("ECOS_AUTH__MODE", "jwt"),
        (
            "ECOS_AUTH__JWT__SECRETS",
            "s3cret-one-0123456789abcdef,s3cret-two-0123456789abcdef",
        ),
    ])
    .expect("loads");
    assert_eq!(s.auth.jwt.secrets.len(), 2);
    let printed = s.to_display_string();
    assert!(!printed.contains("s3cret"), "{printed}");
    assert!(
        printed.contains("# auth.jwt.secrets is set (2 keys); secrets are not printed"),
        "{printed}"
    );
    assert!(!format!("{s:?}").contains("s3cret"));
}
