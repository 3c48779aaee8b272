//! The emitter listener (socket.io's own Redis format) from Redis's side:
//! messages published with the redis crate, malformed ones included, and a
//! Redis outage. The official packages themselves are exercised by
//! tests/js/emitter.test.mjs and tests/python/test_emitter.py.

use std::{net::SocketAddr, time::Duration};

use redis::AsyncCommands;
use rmpv::Value;
use serde_json::json;

use crate::{
    client::{SioClient, Transport},
    helpers::{TestApp, eventually, free_port, metric_value, spawn_app_with},
    process,
    redis_server::RedisServer,
};

/// The machine's Redis, shared by tests that do not stop it.
const SHARED_REDIS: &str = "redis://127.0.0.1:6379";

/// A prefix no other test (or run) uses.
fn unique(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!("ecos-test-{tag}-{}-{nanos}", std::process::id())
}

/// What `@socket.io/redis-emitter` publishes for `emit(event, ...args)`.
fn broadcast(event: &str, args: Vec<Value>) -> Vec<u8> {
    let mut data = vec![Value::from(event)];
    data.extend(args);
    message_with_data(data)
}

/// A broadcast whose `packet.data` is `data` as given.
fn message_with_data(data: Vec<Value>) -> Vec<u8> {
    let message = Value::Array(vec![
        Value::from("emitter"),
        Value::Map(vec![
            (Value::from("type"), Value::from(2)),
            (Value::from("data"), Value::Array(data)),
            (Value::from("nsp"), Value::from("/")),
        ]),
        Value::Map(vec![
            (Value::from("rooms"), Value::Array(vec![])),
            (Value::from("flags"), Value::Map(vec![])),
            (Value::from("except"), Value::Array(vec![])),
        ]),
    ]);
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, &message).expect("encodes");
    out
}

async fn publish(url: &str, channel: &str, payload: &[u8]) {
    let client = redis::Client::open(url).expect("redis url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis is up");
    let _: i64 = conn.publish(channel, payload).await.expect("publish");
}

/// Publishes `probe` until `client` receives it: the listener has subscribed.
async fn wait_subscribed(url: &str, prefix: &str, client: &mut SioClient) {
    for _ in 0..50 {
        publish(url, &format!("{prefix}#/#"), &broadcast("probe", vec![])).await;
        if tokio::time::timeout(Duration::from_millis(200), client.expect_event("probe"))
            .await
            .is_ok()
        {
            return;
        }
    }
    panic!("the emitter listener never delivered a probe");
}

#[tokio::test]
async fn malformed_emitter_messages_are_logged_counted_and_survived() {
    let port = free_port();
    let prefix = unique("emitter-bad");
    let ecos = process::start(&[
        ("PORT", port.to_string()),
        ("REDIS_URL", SHARED_REDIS.to_owned()),
        ("ECOS_REDIS__PREFIX", unique("emitter-bad-own")),
        ("ECOS_EMITTER__PREFIX", prefix.clone()),
    ]);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut client = SioClient::connect(addr, Transport::WebSocket)
        .await
        .expect("connects");
    client.expect_event("welcome").await;
    wait_subscribed(SHARED_REDIS, &prefix, &mut client).await;

    let on_broadcast = format!("{prefix}#/#");
    let on_room = format!("{prefix}#/#some-room#");
    let on_request = format!("{prefix}-request#/#");
    let deep_msgpack: Vec<u8> = std::iter::repeat_n(0x91u8, 5_000).chain([0xc0]).collect();
    let deep_json = format!("{{\"type\":2,\"opts\":{}}}", "[".repeat(5_000));
    let no_event = message_with_data(vec![Value::from(7), Value::from("x")]);
    let mut trailing = broadcast("x", vec![]);
    trailing.push(0xc0);
    let malformed: Vec<(&str, Vec<u8>)> = vec![
        (&on_broadcast, b"\xc1".to_vec()),
        (&on_broadcast, b"plain text".to_vec()),
        (&on_broadcast, b"\xa5hello".to_vec()),
        // An array claiming four billion elements: nothing is allocated for them.
        (&on_broadcast, vec![0xdd, 0xff, 0xff, 0xff, 0xff]),
        (&on_broadcast, deep_msgpack),
        (&on_broadcast, no_event),
        (&on_room, trailing),
        (&on_request, b"{not json".to_vec()),
        (&on_request, br#"{"type":"join"}"#.to_vec()),
        (&on_request, deep_json.into_bytes()),
        (
            &on_request,
            br#"{"type":2,"opts":{"rooms":[{}]},"rooms":["x"]}"#.to_vec(),
        ),
        (&on_request, b"\xc1".to_vec()),
    ];
    for (channel, payload) in &malformed {
        publish(SHARED_REDIS, channel, payload).await;
    }
    // Still delivering, in order, after all of them.
    let good = broadcast(
        "after",
        vec![Value::from("still here"), Value::Binary(vec![1, 2, 3])],
    );
    publish(SHARED_REDIS, &on_broadcast, &good).await;
    let event = client.expect_event("after").await;
    assert_eq!(event.args[0], json!("still here"));
    assert_eq!(event.binaries, vec![vec![1, 2, 3]]);
    assert!(client.is_open(), "the client stays connected");

    let logged = ecos
        .wait_logged(
            "emitter message ignored: it is not socket.io's Redis format",
            Duration::from_secs(5),
        )
        .expect("the first malformed message is logged");
    assert_eq!(logged["level"], json!("WARN"), "{logged}");
    assert_eq!(logged["fields"]["channel"], json!(on_broadcast), "{logged}");
    assert!(
        logged["fields"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("array [uid, packet, opts]")),
        "{logged}"
    );

    let metrics = crate::helpers::http_client()
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert_eq!(
        metric_value(&metrics, "ecos_emitter_messages_total{kind=\"malformed\""),
        malformed.len() as f64,
        "{metrics}"
    );
    assert!(metric_value(&metrics, "ecos_emitter_messages_total{kind=\"emit\"") >= 2.0);
    assert_eq!(metric_value(&metrics, "ecos_emitter_up"), 1.0);
}

#[tokio::test]
async fn the_emitter_listener_heals_after_a_redis_outage_and_leaves_on_shutdown() {
    let mut redis = RedisServer::start();
    let url = redis.url();
    let prefix = unique("emitter-outage");
    let (own, listen) = (unique("emitter-outage-own"), prefix.clone());
    let settings_url = url.clone();
    let mut app: TestApp = spawn_app_with(move |s| {
        s.redis.url = Some(settings_url);
        s.redis.prefix = own;
        s.redis.command_timeout = Duration::from_millis(500);
        s.redis.connect_timeout = Duration::from_millis(500);
        s.emitter.prefix = listen;
    })
    .await;
    let mut client = app.client(Transport::WebSocket).await;
    wait_subscribed(&url, &prefix, &mut client).await;
    app.wait_metric("ecos_emitter_up", 1.0).await;

    redis.stop();
    app.wait_metric("ecos_emitter_up", 0.0).await;
    assert!(
        client.is_open(),
        "clients stay connected through the outage"
    );

    redis.restart();
    eventually(
        "the emitter listener to resubscribe",
        Duration::from_secs(10),
        async || match app.metric("ecos_emitter_up").await {
            1.0 => Ok(()),
            other => Err(other),
        },
    )
    .await;
    publish(
        &url,
        &format!("{prefix}#/#"),
        &broadcast("back", vec![Value::from(1)]),
    )
    .await;
    assert_eq!(client.expect_event("back").await.args, vec![json!(1)]);
    assert!(app.metric("ecos_emitter_reconnects_total").await >= 1.0);

    // On shutdown the listener leaves Redis: nobody subscribes to its patterns.
    app.signal_shutdown();
    assert!(app.stopped(Duration::from_secs(10)).await.is_some());
    let client = redis::Client::open(url.as_str()).expect("url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    eventually(
        "the listener's patterns to be gone",
        Duration::from_secs(5),
        async || {
            let patterns: i64 = redis::cmd("PUBSUB")
                .arg("NUMPAT")
                .query_async(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
            if patterns == 0 {
                Ok(())
            } else {
                Err(format!("{patterns} patterns"))
            }
        },
    )
    .await;
}

#[tokio::test]
async fn with_the_emitter_off_nothing_listens() {
    let app = spawn_app_with(|s| {
        s.redis.url = Some(SHARED_REDIS.to_owned());
        s.redis.prefix = unique("emitter-off");
        s.emitter.enabled = ecos::config::EmitterMode::Off;
    })
    .await;
    let (_, metrics) = app.get_text("/metrics").await;
    assert!(!metrics.contains("ecos_emitter_"), "{metrics}");
    assert!(metrics.contains("ecos_redis_up"));
}
