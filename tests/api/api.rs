//! The HTTP server API on the wire: off without keys, 401/400/404/405/413
//! answers, no CORS grant, `metrics.token`, and the routes acting on real
//! sockets, on one instance, across instances and during a Redis outage.
//! (The Node and Python suites drive every route and selector with the
//! official clients.)

use std::time::Duration;

use ecos::config::Secret;
use serde_json::{Value, json};

use crate::{
    client::Transport,
    cluster::{SHARED_REDIS, unique_prefix, wait_redis},
    helpers::{TestApp, eventually, spawn_app_with},
    redis_server::RedisServer,
};

const KEY: &str = "test-api-key-0123456789abcdef";
const QUIET: Duration = Duration::from_millis(300);

/// An app with the API on (one key) and `tweak` applied.
async fn spawn_api_app(tweak: impl FnOnce(&mut ecos::Settings)) -> TestApp {
    spawn_app_with(|s| {
        s.api.keys = vec![Secret::new(KEY)];
        tweak(s);
    })
    .await
}

/// A request to `path` with the API key.
fn authed(app: &TestApp, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
    app.http.request(method, app.url(path)).bearer_auth(KEY)
}

/// POST `body` (raw text) to `path` with the key: status and JSON answer.
async fn post(app: &TestApp, path: &str, body: &str) -> (u16, Value) {
    let response = authed(app, reqwest::Method::POST, path)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .expect("POST succeeds");
    let status = response.status().as_u16();
    (status, response.json().await.expect("a JSON answer"))
}

/// GET `path` with the key: status and JSON answer.
async fn get(app: &TestApp, path: &str) -> (u16, Value) {
    let response = authed(app, reqwest::Method::GET, path)
        .send()
        .await
        .expect("GET succeeds");
    let status = response.status().as_u16();
    (status, response.json().await.expect("a JSON answer"))
}

/// The value of the series `name` whose labels include every one of `labels`
/// (in any order); 0 when there is none.
fn series(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter_map(|line| line.strip_prefix(name)?.strip_prefix('{'))
        .filter_map(|rest| rest.split_once("} "))
        .find(|(set, _)| {
            labels
                .iter()
                .all(|(k, v)| set.split(',').any(|pair| pair == format!("{k}=\"{v}\"")))
        })
        .and_then(|(_, value)| value.trim().parse().ok())
        .unwrap_or(0.0)
}

/// The API's request counter for one route and status.
async fn api_calls(app: &TestApp, route: &str, status: u16) -> f64 {
    let (_, text) = app.get_text("/metrics").await;
    series(
        &text,
        "ecos_api_requests_total",
        &[("route", route), ("status", &status.to_string())],
    )
}

#[tokio::test]
async fn without_keys_every_api_route_is_a_plain_404() {
    let app = spawn_app_with(|_| {}).await;
    for path in [
        "/api",
        "/api/",
        "/api/v1/emit",
        "/api/v1/openapi.json",
        "/api/v1/rooms",
        "/api/v2/anything",
    ] {
        for method in [reqwest::Method::GET, reqwest::Method::POST] {
            let response = authed(&app, method.clone(), path)
                .body(r#"{"event":"x"}"#)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status().as_u16(), 404, "{method} {path}");
        }
    }
    let (_, metrics) = app.get_text("/metrics").await;
    assert!(
        !metrics.contains("ecos_api_"),
        "no API series when it is off"
    );
}

#[tokio::test]
async fn a_missing_or_wrong_key_gets_401_with_a_json_error_and_is_counted() {
    let app = spawn_app_with(|s| {
        s.api.keys = vec![Secret::new("old-key-0123456789"), Secret::new(KEY)];
    })
    .await;
    let emit = app.url("/api/v1/emit");
    let body = r#"{"event":"hello"}"#;
    let no_key = app.http.post(&emit).body(body).send().await.unwrap();
    assert_eq!(no_key.status().as_u16(), 401);
    assert_eq!(
        no_key.headers()["www-authenticate"],
        "Bearer realm=\"ecos\""
    );
    let answer: Value = no_key.json().await.unwrap();
    assert_eq!(answer["ok"], json!(false));
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("Authorization: Bearer")
    );

    for token in ["wrong", "old-key-012345678", "old-key-01234567890", ""] {
        let response = app
            .http
            .post(&emit)
            .header("authorization", format!("Bearer {token}"))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 401, "token {token:?}");
    }
    let basic = app
        .http
        .post(&emit)
        .basic_auth("user", Some(KEY))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status().as_u16(), 401, "only bearer tokens count");
    // Unknown routes are not revealed to a caller without a key.
    let hidden = app.http.get(app.url("/api/v1/nope")).send().await.unwrap();
    assert_eq!(hidden.status().as_u16(), 401);

    // Both keys work, for rotation.
    for key in ["old-key-0123456789", KEY] {
        let ok = app
            .http
            .post(&emit)
            .bearer_auth(key)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(ok.status().as_u16(), 200);
    }
    assert_eq!(api_calls(&app, "/api/v1/emit", 401).await, 6.0);
    assert_eq!(api_calls(&app, "unmatched", 401).await, 1.0);
    assert_eq!(api_calls(&app, "/api/v1/emit", 200).await, 2.0);
    let (_, metrics) = app.get_text("/metrics").await;
    assert_eq!(
        series(
            &metrics,
            "ecos_api_request_duration_seconds_count",
            &[("route", "/api/v1/emit")]
        ),
        8.0,
        "every call is timed"
    );
}

#[tokio::test]
async fn bad_bodies_get_400_naming_the_field_and_what_was_expected() {
    let app = spawn_api_app(|_| {}).await;
    let cases = [
        ("/api/v1/emit", "", "the body is empty"),
        ("/api/v1/emit", "{\"event\":", "the body is not valid JSON"),
        ("/api/v1/emit", "[1]", "must be a JSON object"),
        ("/api/v1/emit", r#"{"args":[1]}"#, "`event` is required"),
        (
            "/api/v1/emit",
            r#"{"event":["x"]}"#,
            "`event` must be a string, not an array",
        ),
        ("/api/v1/emit", r#"{"event":"disconnect"}"#, "reserved"),
        (
            "/api/v1/emit",
            r#"{"event":"x","args":{}}"#,
            "`args` must be an array",
        ),
        (
            "/api/v1/emit",
            r#"{"event":"x","rooms":["ok",7]}"#,
            "`rooms[1]` must be a string, not a number",
        ),
        (
            "/api/v1/emit",
            r#"{"event":"x","except":[""]}"#,
            "`except[0]`: room must not be empty",
        ),
        (
            "/api/v1/emit",
            r#"{"event":"x","sockets":["short"]}"#,
            "`sockets[0]`: a socket id is 16 characters",
        ),
        (
            "/api/v1/emit",
            r#"{"event":"x","args":[{"a":{"$base64":"!!"}}]}"#,
            "`args[0].a.$base64` is not standard base64",
        ),
        (
            "/api/v1/emit",
            r#"{"event":"x","room":"r"}"#,
            "unknown field `room`",
        ),
        ("/api/v1/join", r#"{"rooms":["a"]}"#, "`room` is required"),
        (
            "/api/v1/leave",
            r#"{"room":5}"#,
            "`room` must be a string, not a number",
        ),
        (
            "/api/v1/join",
            r#"{"room":"r","users":[""]}"#,
            "`users[0]`: a user id must not be empty",
        ),
        ("/api/v1/disconnect", "{}", "\"all\": true"),
    ];
    for (path, body, expected) in cases {
        let (status, answer) = post(&app, path, body).await;
        assert_eq!(status, 400, "{path} {body}: {answer}");
        assert_eq!(answer["ok"], json!(false));
        let error = answer["error"].as_str().unwrap();
        assert!(
            error.contains(expected),
            "{path} {body}: {error:?} should say {expected:?}"
        );
    }
    let (status, answer) = get(&app, "/api/v1/sockets?room=a&user=b").await;
    assert_eq!(status, 400, "{answer}");
    let (status, answer) = get(&app, "/api/v1/rooms?page=2").await;
    assert_eq!(
        (status, answer["error"].as_str().unwrap().contains("`page`")),
        (400, true)
    );
    assert_eq!(api_calls(&app, "/api/v1/emit", 400).await, 12.0);
}

#[tokio::test]
async fn unknown_routes_get_404_and_wrong_methods_405_as_json() {
    let app = spawn_api_app(|_| {}).await;
    for path in ["/api/v1/nope", "/api/v2/emit", "/api", "/api/"] {
        let (status, answer) = get(&app, path).await;
        assert_eq!(status, 404, "{path}");
        assert!(
            answer["error"].as_str().unwrap().contains("no route"),
            "{answer}"
        );
    }
    let response = authed(&app, reqwest::Method::GET, "/api/v1/emit")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 405);
    assert_eq!(response.headers()["allow"], "POST");
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["ok"], json!(false));
    let (status, _) = post(&app, "/api/v1/rooms", "{}").await;
    assert_eq!(status, 405);
    assert_eq!(api_calls(&app, "unmatched", 404).await, 4.0);
    assert_eq!(api_calls(&app, "/api/v1/emit", 405).await, 1.0);
}

#[tokio::test]
async fn bodies_over_the_limit_get_413() {
    let app = spawn_api_app(|s| s.api.max_body_bytes = 2048).await;
    let padding = "x".repeat(3000);
    let (status, answer) = post(
        &app,
        "/api/v1/emit",
        &format!(r#"{{"event":"big","args":["{padding}"]}}"#),
    )
    .await;
    assert_eq!(status, 413, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("2048 bytes"),
        "{answer}"
    );
    let (status, _) = post(
        &app,
        "/api/v1/emit",
        &format!(r#"{{"event":"fits","args":["{}"]}}"#, "x".repeat(1900)),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(api_calls(&app, "/api/v1/emit", 413).await, 1.0);
}

#[tokio::test]
async fn the_api_grants_no_cors_even_when_every_origin_may_poll() {
    let app = spawn_api_app(|s| s.cors = ecos::config::CorsPolicy::Any).await;
    let preflight = |path: &str| {
        app.http
            .request(reqwest::Method::OPTIONS, app.url(path))
            .header("origin", "https://evil.example")
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization, content-type",
            )
            .send()
    };
    let api = preflight("/api/v1/emit").await.unwrap();
    assert!(
        api.status().as_u16() >= 400,
        "a preflight to the API is refused"
    );
    assert!(api.headers().get("access-control-allow-origin").is_none());
    let post = authed(&app, reqwest::Method::POST, "/api/v1/emit")
        .header("origin", "https://evil.example")
        .body(r#"{"event":"x"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(post.status().as_u16(), 200);
    assert!(post.headers().get("access-control-allow-origin").is_none());
    // The Socket.IO endpoint beside it keeps its CORS policy.
    let engine = preflight("/socket.io/").await.unwrap();
    assert_eq!(engine.status().as_u16(), 200);
    assert_eq!(
        engine.headers()["access-control-allow-origin"],
        "https://evil.example"
    );
}

#[tokio::test]
async fn metrics_token_puts_metrics_behind_a_bearer_token() {
    let app = spawn_app_with(|s| s.metrics.token = Some(Secret::new("scrape-token-42"))).await;
    let (status, body) = app.get_text("/metrics").await;
    assert_eq!(status, 401, "{body}");
    assert!(!body.contains("ecos_"), "nothing leaks: {body}");
    let wrong = app
        .http
        .get(app.url("/metrics"))
        .bearer_auth("scrape-token-4")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status().as_u16(), 401);
    let right = app
        .http
        .get(app.url("/metrics"))
        .bearer_auth("scrape-token-42")
        .send()
        .await
        .unwrap();
    assert_eq!(right.status().as_u16(), 200);
    assert!(
        right
            .text()
            .await
            .unwrap()
            .contains("ecos_connected_sockets")
    );
    // Health checks stay open.
    assert_eq!(app.get_text("/healthz").await.0, 200);
    assert_eq!(app.get_text("/readyz").await.0, 200);
}

#[tokio::test]
async fn print_config_never_shows_a_key_or_the_token() {
    let env = std::collections::HashMap::from([
        (
            "ECOS_API__KEYS".to_owned(),
            "first-secret-key, second-secret-key".to_owned(),
        ),
        (
            "ECOS_METRICS__TOKEN".to_owned(),
            "the-metrics-token".to_owned(),
        ),
    ]);
    let settings = ecos::Settings::load(&ecos::config::Sources { file: None, env }).unwrap();
    assert_eq!(settings.api.keys.len(), 2);
    let shown = settings.to_display_string();
    for secret in ["first-secret-key", "second-secret-key", "the-metrics-token"] {
        assert!(!shown.contains(secret), "{shown}");
        assert!(!format!("{settings:?}").contains(secret));
    }
    assert!(shown.contains("# api.keys is set (2 keys)"), "{shown}");
    assert!(shown.contains("# metrics.token is set"), "{shown}");
    let env = std::collections::HashMap::from([("ECOS_API__KEYS".to_owned(), "a b".to_owned())]);
    let error = ecos::Settings::load(&ecos::config::Sources { file: None, env })
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with("invalid value for `api.keys`: \"****\""),
        "{error}"
    );
}

#[tokio::test]
async fn every_route_acts_on_real_sockets_of_one_instance() {
    let app = spawn_api_app(|_| {}).await;
    let mut alice = app.client(Transport::WebSocket).await;
    let mut bob = app.client(Transport::Polling).await;
    let (a, b) = (alice.sid().to_owned(), bob.sid().to_owned());

    // The server puts alice's socket in her user room.
    let (status, answer) = post(
        &app,
        "/api/v1/join",
        &json!({ "sockets": [a], "room": "user:alice" }).to_string(),
    )
    .await;
    assert_eq!(
        (status, answer.clone()),
        (
            200,
            json!({ "ok": true, "cluster": "none", "room": "user:alice" })
        )
    );

    // users: only alice, every argument separately, binary at any depth.
    let body = json!({
        "event": "notice",
        "users": ["alice"],
        "args": ["hi", 2, { "$base64": "AAEC" }, { "nested": [{ "$base64": "/w==" }] }],
    });
    let (status, answer) = post(&app, "/api/v1/emit", &body.to_string()).await;
    assert_eq!(
        (status, answer),
        (200, json!({ "ok": true, "cluster": "none" }))
    );
    let event = alice.expect_event("notice").await;
    assert_eq!(event.args.len(), 4, "{event:?}");
    assert_eq!(event.args[0..2], [json!("hi"), json!(2)]);
    assert_eq!(event.args[2], json!({ "_placeholder": true, "num": 0 }));
    assert_eq!(
        event.args[3]["nested"][0],
        json!({ "_placeholder": true, "num": 1 })
    );
    assert_eq!(event.binaries, vec![vec![0, 1, 2], vec![255]]);
    bob.assert_no_event("notice", QUIET).await;

    // sockets: only bob. except: everyone but alice's room. No selector: both.
    post(
        &app,
        "/api/v1/emit",
        &json!({ "event": "to-bob", "sockets": [b] }).to_string(),
    )
    .await;
    assert!(bob.expect_event("to-bob").await.args.is_empty());
    alice.assert_no_event("to-bob", QUIET).await;
    post(
        &app,
        "/api/v1/emit",
        &json!({ "event": "not-alice", "except": ["user:alice"] }).to_string(),
    )
    .await;
    bob.expect_event("not-alice").await;
    alice.assert_no_event("not-alice", QUIET).await;
    post(
        &app,
        "/api/v1/emit",
        &json!({ "event": "all", "args": [null] }).to_string(),
    )
    .await;
    assert_eq!(alice.expect_event("all").await.args, vec![Value::Null]);
    assert_eq!(bob.expect_event("all").await.args, vec![Value::Null]);
    // A socket both in a room and named by id gets an emit once.
    post(
        &app,
        "/api/v1/emit",
        &json!({ "event": "once", "users": ["alice"], "sockets": [a] }).to_string(),
    )
    .await;
    alice.expect_event("once").await;
    alice.assert_no_event("once", QUIET).await;

    // Listings.
    let (_, rooms) = get(&app, "/api/v1/rooms").await;
    assert_eq!(
        rooms,
        json!({ "ok": true, "cluster": "none", "count": 1, "rooms": ["user:alice"] })
    );
    let (_, of_alice) = get(&app, "/api/v1/sockets?user=alice").await;
    assert_eq!(
        of_alice,
        json!({ "ok": true, "cluster": "none", "user": "alice", "count": 1, "sockets": [a] })
    );
    let (_, everyone) = get(&app, "/api/v1/sockets").await;
    assert_eq!(everyone["count"], json!(2));
    post(
        &app,
        "/api/v1/join",
        &json!({ "room": "order:17" }).to_string(),
    )
    .await;
    let (_, members) = get(&app, "/api/v1/sockets?room=order%3A17").await;
    assert_eq!(members["count"], json!(2), "{members}");
    post(
        &app,
        "/api/v1/leave",
        &json!({ "room": "order:17", "users": ["alice"] }).to_string(),
    )
    .await;
    let (_, members) = get(&app, "/api/v1/sockets?room=order:17").await;
    assert_eq!(members["sockets"], json!([b]), "{members}");

    // Disconnect by id: bob's session ends, alice stays.
    let (status, _) = post(
        &app,
        "/api/v1/disconnect",
        &json!({ "sockets": [b] }).to_string(),
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        bob.wait_closed(Duration::from_secs(5)).await,
        "bob was disconnected"
    );
    assert!(alice.is_open());
    post(
        &app,
        "/api/v1/disconnect",
        &json!({ "all": true }).to_string(),
    )
    .await;
    assert!(
        alice.wait_closed(Duration::from_secs(5)).await,
        "everyone was disconnected"
    );
}

#[tokio::test]
async fn a_call_on_one_instance_reaches_sockets_on_the_others_by_room_user_and_id() {
    let prefix = unique_prefix("api-cluster");
    let nodes = spawn_cluster_with_api(3, SHARED_REDIS, &prefix).await;
    let mut on_b = nodes[1].client(Transport::WebSocket).await;
    let mut on_c = nodes[2].client(Transport::Polling).await;
    let (b, c) = (on_b.sid().to_owned(), on_c.sid().to_owned());

    // By id, from A, for sockets on B and C.
    let (status, answer) = post(
        &nodes[0],
        "/api/v1/join",
        &json!({ "sockets": [b, c], "room": "user:carol" }).to_string(),
    )
    .await;
    assert_eq!(
        (status, answer["cluster"].clone()),
        (200, json!("up")),
        "{answer}"
    );
    let (_, listed) = get(&nodes[0], "/api/v1/sockets?user=carol").await;
    let mut want = vec![b.clone(), c.clone()];
    want.sort();
    assert_eq!(listed["sockets"], json!(want), "{listed}");
    let (_, rooms) = get(&nodes[0], "/api/v1/rooms").await;
    assert_eq!(
        rooms["rooms"],
        json!(["user:carol"]),
        "no room per socket: {rooms}"
    );

    post(
        &nodes[0],
        "/api/v1/emit",
        &json!({ "event": "only-c", "sockets": [c], "args": [{ "$base64": "AQID" }] }).to_string(),
    )
    .await;
    assert_eq!(
        on_c.expect_event("only-c").await.binaries,
        vec![vec![1, 2, 3]]
    );
    on_b.assert_no_event("only-c", QUIET).await;
    post(
        &nodes[0],
        "/api/v1/emit",
        &json!({ "event": "carol", "users": ["carol"], "except": [] }).to_string(),
    )
    .await;
    on_b.expect_event("carol").await;
    on_c.expect_event("carol").await;

    post(
        &nodes[0],
        "/api/v1/disconnect",
        &json!({ "sockets": [b] }).to_string(),
    )
    .await;
    assert!(
        on_b.wait_closed(Duration::from_secs(5)).await,
        "b disconnected from A"
    );
    assert!(on_c.is_open());
}

/// `n` cluster members on `url`/`prefix`, each with the API on.
async fn spawn_cluster_with_api(n: usize, url: &str, prefix: &str) -> Vec<TestApp> {
    let mut nodes = Vec::new();
    for i in 0..n {
        let (url, prefix) = (url.to_owned(), prefix.to_owned());
        let node = crate::cluster::spawn_node_with(&url, &prefix, &format!("api-{i}"), |s| {
            s.api.keys = vec![Secret::new(KEY)];
        })
        .await;
        nodes.push(node);
    }
    for node in &nodes {
        wait_redis(node, "up", Duration::from_secs(10)).await;
    }
    nodes
}

#[tokio::test]
async fn during_a_redis_outage_calls_deliver_locally_and_say_so() {
    let mut redis = RedisServer::start();
    let prefix = unique_prefix("api-outage");
    let nodes = spawn_cluster_with_api(2, &redis.url(), &prefix).await;
    let mut local = nodes[0].client(Transport::WebSocket).await;
    let mut remote = nodes[1].client(Transport::WebSocket).await;

    redis.stop();
    wait_redis(&nodes[0], "down", Duration::from_secs(5)).await;
    let (status, answer) = post(&nodes[0], "/api/v1/emit", r#"{"event":"during"}"#).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["ok"], json!(true));
    assert_eq!(answer["cluster"], json!("down"), "{answer}");
    assert!(
        answer["warning"]
            .as_str()
            .unwrap()
            .contains("this instance only"),
        "{answer}"
    );
    local.expect_event("during").await;
    remote.assert_no_event("during", QUIET).await;
    let (status, listing) = get(&nodes[0], "/api/v1/sockets").await;
    assert_eq!(status, 200);
    assert_eq!(listing["cluster"], json!("down"));
    assert_eq!(listing["sockets"], json!([local.sid()]), "{listing}");

    redis.restart();
    wait_redis(&nodes[0], "up", Duration::from_secs(10)).await;
    wait_redis(&nodes[1], "up", Duration::from_secs(10)).await;
    eventually(
        "an emit to reach the other instance again",
        Duration::from_secs(5),
        async || {
            let (_, answer) = post(&nodes[0], "/api/v1/emit", r#"{"event":"after"}"#).await;
            if answer["cluster"] != json!("up") {
                return Err(answer.to_string());
            }
            Ok(())
        },
    )
    .await;
    remote.expect_event("after").await;
}

/// Sends `request` on `stream` and reads one answer head (and its short body).
async fn exchange(stream: &mut tokio::net::TcpStream, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream.write_all(request.as_bytes()).await.expect("writes");
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
        .await
        .expect("an answer in time")
        .expect("reads");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test]
async fn a_404_with_an_unread_body_keeps_the_connection_usable() {
    // hyper closes a keep-alive connection whose request body was not read,
    // without saying so; a client that reuses it then sees "server
    // disconnected". Every /api/ answer that ignores the body reads it first.
    for with_keys in [false, true] {
        let app = spawn_app_with(|s| {
            if with_keys {
                s.api.keys = vec![Secret::new("a-key-long-enough-0123456789")];
            }
        })
        .await;
        let mut stream = tokio::net::TcpStream::connect(app.addr)
            .await
            .expect("connects");
        let body = r#"{"event":"x","args":["some payload"]}"#;
        let head = format!(
            "POST /api/v1/nowhere HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        // The body comes after a pause, as clients that write head and body
        // separately send it: an answer that does not wait for it leaves it unread.
        use tokio::io::AsyncWriteExt;
        stream.write_all(head.as_bytes()).await.expect("writes");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let first = exchange(&mut stream, body).await;
        // Without keys the API is a plain 404; with keys, no key is a 401 first.
        let expected = if with_keys {
            "HTTP/1.1 401"
        } else {
            "HTTP/1.1 404"
        };
        assert!(first.starts_with(expected), "{first}");
        assert!(
            !first.to_ascii_lowercase().contains("connection: close"),
            "{first}"
        );
        let second = exchange(&mut stream, "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").await;
        assert!(
            second.starts_with("HTTP/1.1 200"),
            "keys {with_keys}: {second}"
        );
    }
}
