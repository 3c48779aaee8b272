//! Several instances sharing one real Redis behave as one server, and survive
//! Redis going away.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::{
    client::Transport,
    helpers::{TRANSPORTS, TestApp, eventually, readyz, spawn_app_with},
    redis_server::RedisServer,
};

/// The machine's Redis, shared by tests that do not stop it.
pub(crate) const SHARED_REDIS: &str = "redis://127.0.0.1:6379";
const QUIET: Duration = Duration::from_millis(400);

/// A channel/key prefix no other test (or run) uses.
pub(crate) fn unique_prefix(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!("ecos-test-{test}-{}-{nanos}", std::process::id())
}

/// One instance of a cluster: the given Redis URL and prefix, fast stats.
pub(crate) async fn spawn_node(url: &str, prefix: &str, name: &str) -> TestApp {
    spawn_node_with(url, prefix, name, |_| {}).await
}

/// Like `spawn_node`, with further settings.
pub(crate) async fn spawn_node_with(
    url: &str,
    prefix: &str,
    name: &str,
    tweak: impl FnOnce(&mut ecos::Settings),
) -> TestApp {
    let (url, prefix, name) = (url.to_owned(), prefix.to_owned(), name.to_owned());
    spawn_app_with(move |s| {
        s.instance_id = name;
        s.redis.url = Some(url);
        s.redis.prefix = prefix;
        s.redis.stats_interval = Duration::from_millis(200);
        s.redis.command_timeout = Duration::from_millis(500);
        s.redis.connect_timeout = Duration::from_millis(500);
        tweak(s);
    })
    .await
}

/// `n` ready instances on one Redis and prefix.
pub(crate) async fn spawn_cluster(n: usize, url: &str, prefix: &str) -> Vec<TestApp> {
    let mut nodes = Vec::new();
    for i in 0..n {
        nodes.push(spawn_node(url, prefix, &format!("node-{i}")).await);
    }
    for node in &nodes {
        wait_redis(node, "up", Duration::from_secs(10)).await;
    }
    nodes
}

/// Polls `/readyz` until it answers `status`; returns how long it took.
async fn wait_ready(app: &TestApp, status: u16, within: Duration) -> Duration {
    let started = Instant::now();
    eventually(
        &format!("readyz to answer {status}"),
        within,
        async || match readyz(app.addr.port()).await {
            (got, _) if got == status => Ok(()),
            (got, body) => Err(format!("{got} ({body})")),
        },
    )
    .await;
    started.elapsed()
}

/// Polls `/readyz` until its `redis` field says `state` (`up` or `down`);
/// returns how long it took. By default readiness stays 200 either way.
pub(crate) async fn wait_redis(app: &TestApp, state: &str, within: Duration) -> Duration {
    let started = Instant::now();
    eventually(
        &format!("readyz to report redis {state}"),
        within,
        async || match readyz(app.addr.port()).await {
            (200, body) if body["redis"] == json!(state) => Ok(()),
            (got, body) => Err(format!("{got} ({body})")),
        },
    )
    .await;
    started.elapsed()
}

#[tokio::test]
async fn a_message_reaches_clients_on_every_instance_but_not_the_sender() {
    let prefix = unique_prefix("fanout");
    let nodes = spawn_cluster(3, SHARED_REDIS, &prefix).await;
    for transport in TRANSPORTS {
        let mut sender = nodes[0].client(transport).await;
        let mut on_b = nodes[1].client(transport).await;
        let mut on_c = nodes[2].client(Transport::WebSocket).await;
        let mut beside_sender = nodes[0].client(Transport::Polling).await;

        let ack = sender
            .emit_with_ack("message", vec![json!({ "hello": "cluster" })])
            .await
            .expect("ack");
        assert_eq!(ack, vec![json!({ "ok": true })], "{transport:?}");
        for peer in [&mut on_b, &mut on_c, &mut beside_sender] {
            assert_eq!(
                peer.expect_event("message").await.args,
                vec![json!({ "hello": "cluster" })],
                "{transport:?}"
            );
        }
        sender.assert_no_event("message", QUIET).await;
    }
}

#[tokio::test]
async fn binary_payloads_cross_instances_intact() {
    let prefix = unique_prefix("binary");
    let nodes = spawn_cluster(2, SHARED_REDIS, &prefix).await;
    let blob: Vec<u8> = (0..=255u8).rev().collect();
    for transport in TRANSPORTS {
        let mut sender = nodes[0].client(transport).await;
        let mut remote = nodes[1].client(transport).await;
        let data = json!({ "blob": { "_placeholder": true, "num": 0 }, "tag": 7 });
        sender
            .emit_binary_with_ack("message", vec![data], vec![blob.clone()])
            .await
            .expect("ack");
        let event = remote.expect_event("message").await;
        assert_eq!(event.binaries, vec![blob.clone()], "{transport:?}");
        assert_eq!(event.args[0]["tag"], json!(7), "{transport:?}");
    }
}

#[tokio::test]
async fn rooms_span_instances() {
    let prefix = unique_prefix("rooms");
    let nodes = spawn_cluster(3, SHARED_REDIS, &prefix).await;
    for transport in TRANSPORTS {
        let mut sender = nodes[0].client(transport).await;
        let mut member_b = nodes[1].client(transport).await;
        let mut member_c = nodes[2].client(transport).await;
        let mut outsider_c = nodes[2].client(transport).await;
        for member in [&mut member_b, &mut member_c] {
            member
                .emit_with_ack("join", vec![json!("ops")])
                .await
                .expect("join");
        }
        let ack = sender
            .emit_with_ack("room:message", vec![json!("ops"), json!("deploying")])
            .await
            .expect("ack");
        assert_eq!(ack, vec![json!({ "ok": true })]);
        for member in [&mut member_b, &mut member_c] {
            assert_eq!(
                member.expect_event("room:message").await.args,
                vec![json!("ops"), json!("deploying")]
            );
        }
        outsider_c.assert_no_event("room:message", QUIET).await;

        member_b
            .emit_with_ack("leave", vec![json!("ops")])
            .await
            .expect("leave");
        sender
            .emit_with_ack("room:message", vec![json!("ops"), json!(2)])
            .await
            .expect("ack");
        assert_eq!(
            member_c.expect_event("room:message").await.args,
            vec![json!("ops"), json!(2)]
        );
        member_b.assert_no_event("room:message", QUIET).await;
    }
}

#[tokio::test]
async fn readyz_reports_the_cluster_wide_socket_count() {
    let prefix = unique_prefix("count");
    let nodes = spawn_cluster(3, SHARED_REDIS, &prefix).await;
    let mut clients = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        for _ in 0..=i {
            clients.push(node.client(Transport::WebSocket).await);
        }
    }
    eventually(
        "cluster totals to reach 3/6",
        Duration::from_secs(5),
        async || {
            let (status, body) = readyz(nodes[0].addr.port()).await;
            assert_eq!(status, 200);
            if body["cluster"] == json!({ "instances": 3, "connected_sockets": 6 }) {
                Ok(())
            } else {
                Err(body)
            }
        },
    )
    .await;
    assert_eq!(nodes[2].metric("ecos_cluster_connected_sockets").await, 6.0);
    assert_eq!(nodes[2].metric("ecos_cluster_instances").await, 3.0);
    assert_eq!(
        readyz(nodes[1].addr.port()).await.1["adapter"],
        json!("redis")
    );
}

#[tokio::test]
async fn apps_with_different_prefixes_on_one_redis_do_not_hear_each_other() {
    let app_one = spawn_cluster(2, SHARED_REDIS, &unique_prefix("app-one")).await;
    let app_two = spawn_cluster(1, SHARED_REDIS, &unique_prefix("app-two")).await;
    let mut sender = app_one[0].client(Transport::WebSocket).await;
    let mut same_app = app_one[1].client(Transport::WebSocket).await;
    let mut other_app = app_two[0].client(Transport::WebSocket).await;
    sender
        .emit_with_ack("message", vec![json!("private")])
        .await
        .expect("ack");
    assert_eq!(
        same_app.expect_event("message").await.args,
        vec![json!("private")]
    );
    other_app.assert_no_event("message", QUIET).await;
}

#[tokio::test]
async fn without_redis_at_start_up_ecos_serves_locally_then_joins_when_redis_appears() {
    let mut redis = RedisServer::reserve();
    let prefix = unique_prefix("late");
    let a = spawn_node(&redis.url(), &prefix, "a").await;
    let b = spawn_node(&redis.url(), &prefix, "b").await;

    // Up, alive and ready (it serves its own clients), and saying what is missing.
    assert_eq!(a.get_text("/healthz").await.0, 200);
    let (status, body) = readyz(a.addr.port()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], json!("ready"));
    assert_eq!(body["adapter"], json!("redis"));
    assert_eq!(body["redis"], json!("down"));
    assert!(
        body["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("redis"),
        "{body}"
    );
    assert_eq!(a.metric("ecos_redis_up").await, 0.0);

    // Local clients are served meanwhile.
    let mut a1 = a.client(Transport::WebSocket).await;
    let mut a2 = a.client(Transport::Polling).await;
    let mut b1 = b.client(Transport::WebSocket).await;
    a1.emit_with_ack("message", vec![json!("local only")])
        .await
        .expect("ack");
    assert_eq!(
        a2.expect_event("message").await.args,
        vec![json!("local only")]
    );
    b1.assert_no_event("message", QUIET).await;

    // Redis appears: both instances connect without a restart.
    redis.restart();
    wait_redis(&a, "up", Duration::from_secs(10)).await;
    wait_redis(&b, "up", Duration::from_secs(10)).await;
    let body = readyz(a.addr.port()).await.1;
    assert!(body.get("reason").is_none(), "{body}");
    a1.emit_with_ack("message", vec![json!("everyone")])
        .await
        .expect("ack");
    assert_eq!(
        b1.expect_event("message").await.args,
        vec![json!("everyone")]
    );
    assert_eq!(
        a2.expect_event("message").await.args,
        vec![json!("everyone")]
    );
}

#[tokio::test]
async fn losing_redis_mid_run_keeps_local_delivery_and_heals_when_it_returns() {
    let mut redis = RedisServer::start();
    let prefix = unique_prefix("outage");
    let nodes = spawn_cluster(2, &redis.url(), &prefix).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let mut a1 = a.client(Transport::WebSocket).await;
    let mut a2 = a.client(Transport::Polling).await;
    let mut b1 = b.client(Transport::WebSocket).await;
    let mut b2 = b.client(Transport::Polling).await;
    a1.emit_with_ack("message", vec![json!("before")])
        .await
        .expect("ack");
    for peer in [&mut a2, &mut b1, &mut b2] {
        assert_eq!(
            peer.expect_event("message").await.args,
            vec![json!("before")]
        );
    }

    redis.stop();
    let took = wait_redis(a, "down", Duration::from_secs(5)).await;
    wait_redis(b, "down", Duration::from_secs(5)).await;
    assert!(
        took < Duration::from_secs(3),
        "readiness took {took:?} to notice"
    );
    // Both stay in rotation: the load balancer keeps sending them new clients.
    for node in [a, b] {
        let (status, body) = readyz(node.addr.port()).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["status"], json!("ready"), "{body}");
    }

    // During the outage: acks and local delivery go on; nobody is disconnected.
    for round in 0..3 {
        let ack = a1
            .emit_with_ack("message", vec![json!(round)])
            .await
            .expect("ack during outage");
        assert_eq!(ack, vec![json!({ "ok": true })]);
        assert_eq!(a2.expect_event("message").await.args, vec![json!(round)]);
    }
    b1.assert_no_event("message", QUIET).await;
    assert!(a.metric("ecos_redis_publish_failures_total").await >= 3.0);
    assert_eq!(a.metric("ecos_redis_up").await, 0.0);
    for client in [&a1, &a2, &b1, &b2] {
        assert!(
            client.is_open(),
            "clients stay connected through the outage"
        );
    }

    // A client that arrives during the outage is served by its instance.
    let mut a3 = a.client(Transport::WebSocket).await;
    a3.emit_with_ack("message", vec![json!("newcomer")])
        .await
        .expect("ack during outage");
    assert_eq!(
        a1.expect_event("message").await.args,
        vec![json!("newcomer")]
    );
    assert_eq!(
        a2.expect_event("message").await.args,
        vec![json!("newcomer")]
    );

    // Redis returns on the same port: the same clients hear each other again.
    redis.restart();
    wait_redis(a, "up", Duration::from_secs(10)).await;
    wait_redis(b, "up", Duration::from_secs(10)).await;
    a1.emit_with_ack("message", vec![json!("after")])
        .await
        .expect("ack");
    for peer in [&mut a2, &mut b1, &mut b2] {
        assert_eq!(
            peer.expect_event("message").await.args,
            vec![json!("after")]
        );
    }
    b2.emit_with_ack("message", vec![json!("and back")])
        .await
        .expect("ack");
    assert_eq!(
        a1.expect_event("message").await.args,
        vec![json!("and back")]
    );
    assert!(a.metric("ecos_redis_reconnects_total").await >= 1.0);
    assert_eq!(a.metric("ecos_redis_up").await, 1.0);
}

#[tokio::test]
async fn with_readiness_require_redis_readyz_is_503_degraded_while_redis_is_down() {
    let mut redis = RedisServer::reserve();
    let prefix = unique_prefix("strict");
    let strict = |s: &mut ecos::Settings| s.readiness.require_redis = true;
    let a = spawn_node_with(&redis.url(), &prefix, "strict-a", strict).await;
    let b = spawn_node(&redis.url(), &prefix, "lenient-b").await;

    // No Redis at start-up: the strict instance is out of rotation and says why.
    let (status, body) = readyz(a.addr.port()).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], json!("degraded"));
    assert_eq!(body["redis"], json!("down"));
    assert!(
        body["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("redis"),
        "{body}"
    );
    // The default instance beside it stays ready.
    assert_eq!(readyz(b.addr.port()).await.0, 200);

    redis.restart();
    wait_ready(&a, 200, Duration::from_secs(10)).await;
    let body = readyz(a.addr.port()).await.1;
    assert_eq!(body["redis"], json!("up"), "{body}");
    wait_redis(&b, "up", Duration::from_secs(10)).await;

    // Lost mid-run: 503 again within about a second, while b stays ready.
    redis.stop();
    let took = wait_ready(&a, 503, Duration::from_secs(5)).await;
    assert!(took < Duration::from_secs(3), "took {took:?} to notice");
    let body = readyz(a.addr.port()).await.1;
    assert_eq!(body["status"], json!("degraded"), "{body}");
    assert_eq!(body["redis"], json!("down"), "{body}");
    wait_redis(&b, "down", Duration::from_secs(5)).await;

    redis.restart();
    wait_ready(&a, 200, Duration::from_secs(10)).await;
}

#[tokio::test]
async fn redis_metrics_count_traffic() {
    let prefix = unique_prefix("metrics");
    let nodes = spawn_cluster(2, SHARED_REDIS, &prefix).await;
    let mut sender = nodes[0].client(Transport::WebSocket).await;
    let mut remote = nodes[1].client(Transport::WebSocket).await;
    for i in 0..5 {
        sender
            .emit_with_ack("message", vec![json!(i)])
            .await
            .expect("ack");
        remote.expect_event("message").await;
    }
    assert!(nodes[0].metric("ecos_redis_published_total").await >= 5.0);
    assert!(nodes[1].metric("ecos_redis_received_total").await >= 5.0);
    assert_eq!(nodes[0].metric("ecos_redis_up").await, 1.0);
    // The health ping runs every second and is timed.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(nodes[0].metric("ecos_redis_ping_seconds_count").await >= 1.0);
}

#[tokio::test]
async fn draining_one_instance_leaves_the_cluster_count() {
    let prefix = unique_prefix("leave");
    let mut nodes = spawn_cluster(2, SHARED_REDIS, &prefix).await;
    let _c = nodes[1].client(Transport::WebSocket).await;
    let mut gone = nodes.remove(0);
    gone.signal_shutdown();
    assert!(
        gone.stopped(Duration::from_secs(5))
            .await
            .is_some_and(|r| r.is_ok())
    );
    eventually(
        "the drained instance to leave the cluster count",
        Duration::from_secs(5),
        async || {
            let body = readyz(nodes[0].addr.port()).await.1;
            if body["cluster"]["instances"] == json!(1) {
                Ok(())
            } else {
                Err(body)
            }
        },
    )
    .await;
}

#[tokio::test]
async fn room_members_and_room_ask_span_instances() {
    let prefix = unique_prefix("cluster-ops");
    let nodes = spawn_cluster(3, SHARED_REDIS, &prefix).await;
    for transport in TRANSPORTS {
        let mut asker = nodes[0].client(transport).await;
        let mut on_b = nodes[1].client(transport).await;
        let mut on_c = nodes[2].client(transport).await;
        let room = format!("crew-{transport:?}");
        for client in [&mut asker, &mut on_b, &mut on_c] {
            client
                .emit_with_ack("join", vec![json!(room)])
                .await
                .expect("join");
        }

        let members = asker
            .emit_with_ack("room:members", vec![json!(room)])
            .await
            .expect("ack");
        let mut expected = vec![
            asker.sid().to_owned(),
            on_b.sid().to_owned(),
            on_c.sid().to_owned(),
        ];
        expected.sort();
        assert_eq!(members[0]["count"], json!(3), "{transport:?}: {members:?}");
        assert_eq!(members[0]["members"], json!(expected), "{transport:?}");

        let answer_b = async {
            let q = on_b.expect_event("room:ask").await;
            on_b.ack(q.ack_id.expect("ack id"), vec![json!("from b")])
                .await
                .expect("ack");
        };
        let answer_c = async {
            let q = on_c.expect_event("room:ask").await;
            on_c.ack(q.ack_id.expect("ack id"), vec![json!("from c")])
                .await
                .expect("ack");
        };
        let (reply, (), ()) = tokio::join!(
            asker.emit_with_ack("room:ask", vec![json!(room), json!("status?")]),
            answer_b,
            answer_c
        );
        let reply = reply.expect("ack");
        let mut got: Vec<String> = reply[0]["answers"]
            .as_array()
            .expect("answers")
            .iter()
            .map(|a| a["answer"].as_str().unwrap_or_default().to_owned())
            .collect();
        got.sort();
        assert_eq!(got, vec!["from b", "from c"], "{transport:?}: {reply:?}");
        assert_eq!(reply[0]["missed"], json!(0), "{transport:?}");
    }
}

#[tokio::test]
async fn rediss_with_tls_insecure_accepts_a_self_signed_certificate() {
    let redis = RedisServer::start_tls();
    assert!(redis.url().starts_with("rediss://"));
    let prefix = unique_prefix("tls");
    let insecure = |s: &mut ecos::Settings| {
        s.redis.tls_insecure = true;
        s.redis.connect_timeout = Duration::from_secs(5);
    };
    let a = spawn_node_with(&redis.url(), &prefix, "tls-a", insecure).await;
    let b = spawn_node_with(&redis.url(), &prefix, "tls-b", insecure).await;
    wait_redis(&a, "up", Duration::from_secs(10)).await;
    wait_redis(&b, "up", Duration::from_secs(10)).await;
    let mut sender = a.client(Transport::WebSocket).await;
    let mut remote = b.client(Transport::Polling).await;
    sender
        .emit_with_ack("message", vec![json!("over tls")])
        .await
        .expect("ack");
    assert_eq!(
        remote.expect_event("message").await.args,
        vec![json!("over tls")]
    );
}

#[tokio::test]
async fn rediss_verifies_certificates_by_default() {
    let redis = RedisServer::start_tls();
    let node = spawn_node_with(&redis.url(), &unique_prefix("tls-verify"), "strict", |s| {
        s.redis.connect_timeout = Duration::from_secs(5);
    })
    .await;
    // Wait for a failed attempt (the handshake fails at once); none may succeed.
    eventually(
        "a connection attempt to fail",
        Duration::from_secs(10),
        async || match node.metric("ecos_redis_connect_failures_total").await {
            failures if failures >= 1.0 => Ok(()),
            failures => Err(format!("{failures} failures")),
        },
    )
    .await;
    let (status, body) = readyz(node.addr.port()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["redis"], json!("down"), "{body}");
    let reason = body["reason"].as_str().unwrap_or_default().to_lowercase();
    assert!(
        reason.contains("certificate") || reason.contains("tls"),
        "{body}"
    );
    assert!(node.metric("ecos_redis_connect_failures_total").await >= 1.0);
}

#[tokio::test]
async fn rooms_lists_the_rooms_of_every_instance() {
    let prefix = unique_prefix("rooms-list");
    let nodes = spawn_cluster(3, SHARED_REDIS, &prefix).await;
    let mut asker = nodes[0].client(Transport::WebSocket).await;
    let mut on_b = nodes[1].client(Transport::Polling).await;
    let mut on_c = nodes[2].client(Transport::WebSocket).await;
    on_b.emit_with_ack("join", vec![json!("from-b")])
        .await
        .expect("join");
    on_c.emit_with_ack("join", vec![json!("from-c")])
        .await
        .expect("join");
    let ack = asker.emit_with_ack("rooms", vec![]).await.expect("ack");
    assert_eq!(
        ack,
        vec![json!({ "ok": true, "count": 2, "rooms": ["from-b", "from-c"] })]
    );
}

/// Two instances whose `room:ask` waits up to `ack_timeout` for answers.
async fn ask_pair(test: &str, ack_timeout: Duration) -> Vec<TestApp> {
    let prefix = unique_prefix(test);
    let mut nodes = Vec::new();
    for name in ["ask-a", "ask-b"] {
        nodes.push(
            spawn_node_with(SHARED_REDIS, &prefix, name, |s| {
                s.socketio.ack_timeout = ack_timeout;
            })
            .await,
        );
    }
    for node in &nodes {
        wait_redis(node, "up", Duration::from_secs(10)).await;
    }
    nodes
}

#[tokio::test]
async fn room_ask_ends_as_soon_as_every_member_answered_across_instances() {
    // A long ack timeout, so an ask that waits for it cannot pass for a fast one.
    let ack_timeout = Duration::from_secs(10);
    let nodes = ask_pair("ask-early", ack_timeout).await;
    for transport in TRANSPORTS {
        let room = format!("early-{transport:?}");
        let mut asker = nodes[0].client(transport).await;
        let mut remote = nodes[1].client(transport).await;
        let mut local = nodes[0].client(transport).await;
        for client in [&mut asker, &mut remote] {
            client
                .emit_with_ack("join", vec![json!(room)])
                .await
                .expect("join");
        }
        // The only other member is on the other instance, and answers at once.
        let answer = async {
            let q = remote.expect_event("room:ask").await;
            remote
                .ack(q.ack_id.expect("ack id"), vec![json!("here")])
                .await
                .expect("ack");
        };
        let started = Instant::now();
        let (reply, ()) = tokio::join!(
            asker.request("room:ask", vec![json!(room), json!("who?")]),
            answer
        );
        let took = started.elapsed();
        let reply = reply.expect("ack");
        assert_eq!(
            reply[0],
            json!({ "ok": true, "answers": [{ "id": remote.sid(), "answer": "here" }], "missed": 0 }),
            "{transport:?}"
        );
        assert!(
            took < ack_timeout / 2,
            "{transport:?}: the ask took {took:?}"
        );

        // A member on each instance, both answering at once.
        local
            .emit_with_ack("join", vec![json!(room)])
            .await
            .expect("join");
        let answer_remote = async {
            let q = remote.expect_event("room:ask").await;
            remote
                .ack(q.ack_id.expect("ack id"), vec![json!("b")])
                .await
                .expect("ack");
        };
        let answer_local = async {
            let q = local.expect_event("room:ask").await;
            local
                .ack(q.ack_id.expect("ack id"), vec![json!("a")])
                .await
                .expect("ack");
        };
        let started = Instant::now();
        let (reply, (), ()) = tokio::join!(
            asker.request("room:ask", vec![json!(room), json!("who?")]),
            answer_remote,
            answer_local
        );
        let took = started.elapsed();
        let reply = reply.expect("ack");
        let mut got: Vec<&str> = reply[0]["answers"]
            .as_array()
            .expect("answers")
            .iter()
            .filter_map(|a| a["answer"].as_str())
            .collect();
        got.sort_unstable();
        assert_eq!(got, ["a", "b"], "{transport:?}: {reply:?}");
        assert_eq!(reply[0]["missed"], json!(0), "{transport:?}");
        assert!(
            took < ack_timeout / 2,
            "{transport:?}: the ask took {took:?}"
        );

        // Nobody else in the room, on either instance: an empty answer at once.
        let started = Instant::now();
        let reply = asker
            .request(
                "room:ask",
                vec![json!(format!("{room}-empty")), json!("anyone?")],
            )
            .await
            .expect("ack");
        assert_eq!(reply[0], json!({ "ok": true, "answers": [], "missed": 0 }));
        assert!(
            started.elapsed() < ack_timeout / 2,
            "{transport:?}: {:?}",
            started.elapsed()
        );
    }
}

#[tokio::test]
async fn room_ask_counts_a_silent_member_on_another_instance_as_missed() {
    let ack_timeout = Duration::from_secs(1);
    let nodes = ask_pair("ask-silent", ack_timeout).await;
    let room = "silent";
    let mut asker = nodes[0].client(Transport::WebSocket).await;
    let mut answers = nodes[1].client(Transport::WebSocket).await;
    let mut silent = nodes[1].client(Transport::Polling).await;
    for client in [&mut asker, &mut answers, &mut silent] {
        client
            .emit_with_ack("join", vec![json!(room)])
            .await
            .expect("join");
    }
    let answer = async {
        let q = answers.expect_event("room:ask").await;
        answers
            .ack(q.ack_id.expect("ack id"), vec![json!("yes")])
            .await
            .expect("ack");
    };
    let started = Instant::now();
    let (reply, ()) = tokio::join!(
        asker.request("room:ask", vec![json!(room), json!("ready?")]),
        answer
    );
    let took = started.elapsed();
    assert_eq!(
        reply.expect("ack")[0],
        json!({ "ok": true, "answers": [{ "id": answers.sid(), "answer": "yes" }], "missed": 1 })
    );
    // The silent member is given the whole ack timeout, not much more.
    assert!(took >= ack_timeout, "{took:?}");
    assert!(took < ack_timeout * 4, "{took:?}");
    assert_eq!(
        silent.expect_event("room:ask").await.args[1],
        json!("ready?")
    );
}
