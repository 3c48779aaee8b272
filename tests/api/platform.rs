//! The platform surface: health, readiness, metrics, the demo page, CORS.

use std::time::Duration;

use serde_json::{Value, json};

use crate::{
    client::Transport,
    helpers::{TRANSPORTS, free_port, spawn_app, spawn_app_with},
};

#[tokio::test]
async fn healthz_and_readyz_answer_200_when_serving() {
    let app = spawn_app_with(|s| s.instance_id = "web.1".into()).await;
    let (status, _) = app.get_text("/healthz").await;
    assert_eq!(status, 200);
    let response = app.get("/readyz").await;
    assert_eq!(response.status().as_u16(), 200);
    let body: Value = response.json().await.expect("json");
    assert_eq!(
        body,
        json!({ "status": "ready", "instance": "web.1", "adapter": "memory" })
    );
}

#[tokio::test]
async fn socket_metrics_follow_connections_and_disconnections() {
    let app = spawn_app().await;
    assert_eq!(app.metric("ecos_connected_sockets").await, 0.0);

    let a = app.client(Transport::WebSocket).await;
    let b = app.client(Transport::Polling).await;
    app.wait_metric("ecos_connected_sockets", 2.0).await;
    assert_eq!(app.metric("ecos_connections_total").await, 2.0);

    a.disconnect().await.expect("disconnect");
    app.wait_metric("ecos_connected_sockets", 1.0).await;
    assert_eq!(
        app.metric("ecos_disconnections_total{reason=\"client_disconnect\"")
            .await,
        1.0
    );

    drop(b); // the polling client just goes away; the heartbeat or transport notices
    assert_eq!(app.metric("ecos_connections_total").await, 2.0);
}

#[tokio::test]
async fn event_and_broadcast_counters_move_with_traffic() {
    let app = spawn_app().await;
    let mut client = app.client(Transport::WebSocket).await;
    client
        .emit_with_ack("message", vec![json!(1)])
        .await
        .expect("ack");
    client
        .emit_with_ack("join", vec![json!("r")])
        .await
        .expect("ack");
    client
        .emit_with_ack("room:message", vec![json!("r"), json!(2)])
        .await
        .expect("ack");
    assert_eq!(
        app.metric("ecos_events_received_total{event=\"message\"")
            .await,
        1.0
    );
    assert_eq!(
        app.metric("ecos_events_received_total{event=\"join\"")
            .await,
        1.0
    );
    assert_eq!(
        app.metric("ecos_events_received_total{event=\"room:message\"")
            .await,
        1.0
    );
    assert_eq!(
        app.metric("ecos_broadcasts_total{event=\"message\"").await,
        1.0
    );
    assert_eq!(
        app.metric("ecos_broadcasts_total{event=\"room:message\"")
            .await,
        1.0
    );
}

#[tokio::test]
async fn metrics_carry_the_node_label_build_info_and_http_series() {
    let app = spawn_app_with(|s| s.instance_id = "web.2".into()).await;
    app.get("/healthz").await;
    app.get("/no-such-page").await;
    let (status, text) = app.get_text("/metrics").await;
    assert_eq!(status, 200);
    assert!(
        text.contains(&format!(
            "ecos_build_info{{version=\"{}\",node=\"web.2\"}} 1",
            env!("CARGO_PKG_VERSION")
        )),
        "{text}"
    );
    assert!(
        text.contains("ecos_connected_sockets{node=\"web.2\"} 0"),
        "{text}"
    );
    assert!(
        text.contains("ecos_http_requests_total{method=\"GET\",route=\"/healthz\",status=\"200\",node=\"web.2\"} 1"),
        "{text}"
    );
    // Unknown paths share one label so they cannot grow the series count.
    assert!(
        text.contains("route=\"unmatched\",status=\"404\""),
        "{text}"
    );
    assert!(
        text.contains(
            "ecos_http_request_duration_seconds_bucket{method=\"GET\",route=\"/healthz\""
        ),
        "{text}"
    );
    for line in text.lines().filter(|l| l.starts_with("ecos_")) {
        assert!(
            line.contains("node=\"web.2\""),
            "every series is labelled with the node: {line}"
        );
    }
}

#[tokio::test]
async fn polling_requests_are_counted_under_the_engine_path() {
    let app = spawn_app().await;
    let _client = app.client(Transport::Polling).await;
    let requests = app
        .metric("ecos_http_requests_total{method=\"GET\",route=\"/socket.io\",status=\"200\"")
        .await;
    assert!(requests >= 1.0, "got {requests}");
}

#[tokio::test]
async fn demo_page_loads_the_pinned_cdn_client_by_default() {
    let app = spawn_app().await;
    let response = app.get("/").await;
    assert_eq!(response.status().as_u16(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap_or_default()
            .starts_with("text/html")
    );
    let page = response.text().await.expect("page");
    assert!(page.contains("https://cdn.socket.io/"), "CDN script tag");
    assert!(page.contains("integrity=\"sha384-"), "SRI hash");
    assert!(!page.contains("ECOS_CLIENT_SCRIPT"), "placeholder replaced");
    // The hint shown when the CDN script cannot load (tests/browser checks it shows).
    assert!(
        page.contains("ECOS_DEMO__CLIENT_SCRIPT_PATH"),
        "offline hint"
    );
    for id in [
        "id=\"status\"",
        "id=\"messages\"",
        "id=\"input\"",
        "id=\"send\"",
    ] {
        assert!(page.contains(id), "page has {id}");
    }
    // Without a local copy configured, the script path is not served.
    let (status, _) = app.get_text("/socket.io/socket.io.min.js").await;
    assert_ne!(status, 200);
}

#[tokio::test]
async fn favicon_is_answered_not_a_404_and_keeps_its_own_route_label() {
    let app = spawn_app().await;
    let response = app.get("/favicon.ico").await;
    assert_eq!(response.status().as_u16(), 204);
    assert!(
        response.headers()["cache-control"]
            .to_str()
            .unwrap_or_default()
            .contains("max-age="),
        "cached, so a browser asks once"
    );
    let (_, text) = app.get_text("/metrics").await;
    assert!(
        text.contains("route=\"/favicon.ico\",status=\"204\""),
        "{text}"
    );
    assert!(!text.contains("route=\"unmatched\""), "{text}");
}

#[tokio::test]
async fn demo_page_uses_a_local_client_copy_when_configured() {
    let path = std::env::temp_dir().join(format!("ecos-client-{}.js", std::process::id()));
    std::fs::write(&path, "/* stand-in client */ window.io = function () {};").expect("write");
    let configured = path.clone();
    let app = spawn_app_with(move |s| s.demo.client_script_path = Some(configured)).await;

    let page = app.get_text("/").await.1;
    assert!(
        page.contains("src=\"/socket.io/socket.io.min.js\""),
        "local script tag"
    );
    assert!(!page.contains("cdn.socket.io"));
    let response = app.get("/socket.io/socket.io.min.js").await;
    assert_eq!(response.status().as_u16(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap_or_default()
            .contains("javascript")
    );
    assert_eq!(
        response.text().await.expect("body"),
        "/* stand-in client */ window.io = function () {};"
    );

    // Socket.IO still works beside the served file.
    let _client = app.client(Transport::Polling).await;
    let _ = std::fs::remove_file(path);
}

#[tokio::test]
async fn a_missing_local_client_copy_stops_start_up_with_the_setting_name() {
    let mut settings = crate::helpers::test_settings("test");
    settings.demo.client_script_path = Some("/nonexistent/socket.io.min.js".into());
    let error = ecos::Application::build(settings)
        .await
        .err()
        .expect("build fails")
        .to_string();
    assert!(error.contains("demo.client_script_path"), "{error}");
    assert!(error.contains("/nonexistent/socket.io.min.js"), "{error}");
}

#[tokio::test]
async fn cors_allows_localhost_by_default_and_configured_origins_only() {
    let app = spawn_app().await;
    let handshake = "/socket.io/?EIO=4&transport=polling";
    let allowed = app
        .http
        .get(app.url(handshake))
        .header("origin", "http://localhost:5173")
        .send()
        .await
        .expect("get");
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "http://localhost:5173"
    );
    assert_eq!(
        allowed.headers()["access-control-allow-credentials"],
        "true"
    );
    let foreign = app
        .http
        .get(app.url(handshake))
        .header("origin", "https://evil.example")
        .send()
        .await
        .expect("get");
    assert!(
        foreign
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );

    let app = spawn_app_with(|s| {
        s.cors = ecos::config::CorsPolicy::List(vec!["https://app.example.com".into()])
    })
    .await;
    let preflight = app
        .http
        .request(reqwest::Method::OPTIONS, app.url(handshake))
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .expect("preflight");
    assert!(preflight.status().is_success());
    assert_eq!(
        preflight.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    let local = app
        .http
        .get(app.url(handshake))
        .header("origin", "http://localhost:3000")
        .send()
        .await
        .expect("get");
    assert!(
        local.headers().get("access-control-allow-origin").is_none(),
        "a list replaces the localhost default"
    );
}

#[tokio::test]
async fn handshake_advertises_the_configured_heartbeat_and_payload_limit() {
    let app = spawn_app_with(|s| {
        s.socketio.ping_interval = Duration::from_millis(1500);
        s.socketio.ping_timeout = Duration::from_millis(1000);
        s.limits.max_http_payload_bytes = 4096;
    })
    .await;
    for transport in TRANSPORTS {
        let client = crate::client::SioClient::connect(app.addr, transport)
            .await
            .expect("connects");
        let open = client.handshake();
        assert_eq!(open["pingInterval"], json!(1500), "{transport:?}");
        assert_eq!(open["pingTimeout"], json!(1000), "{transport:?}");
        assert_eq!(open["maxPayload"], json!(4096), "{transport:?}");
    }
}

#[tokio::test]
async fn the_heartbeat_keeps_an_idle_client_connected() {
    let app = spawn_app_with(|s| {
        s.socketio.ping_interval = Duration::from_millis(200);
        s.socketio.ping_timeout = Duration::from_millis(300);
    })
    .await;
    for transport in TRANSPORTS {
        let mut client = app.client(transport).await;
        // Several ping intervals pass; the client answers pings automatically.
        assert!(
            !client.wait_closed(Duration::from_millis(1200)).await,
            "{transport:?}"
        );
        let ack = client
            .emit_with_ack("join", vec![json!("r")])
            .await
            .expect("ack");
        assert_eq!(ack[0]["ok"], json!(true), "{transport:?}");
    }
}

#[tokio::test]
async fn the_healthcheck_subcommand_exits_0_on_a_healthy_server_and_1_otherwise() {
    let app = spawn_app().await;
    let run = |port: u16| {
        std::process::Command::new(env!("CARGO_BIN_EXE_ecos"))
            .arg("healthcheck")
            .env_clear()
            .env("PORT", port.to_string())
            .output()
            .expect("runs")
    };
    let healthy = tokio::task::spawn_blocking(move || run(app.addr.port()))
        .await
        .expect("join");
    assert_eq!(
        healthy.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&healthy.stderr)
    );

    let down = tokio::task::spawn_blocking(move || run(free_port()))
        .await
        .expect("join");
    assert_eq!(down.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&down.stderr).contains("unhealthy"));
}

/// `ecos healthcheck` with a clean environment plus `env`, and `args` after it.
fn healthcheck(env: &[(&str, String)], args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_ecos"))
        .arg("healthcheck")
        .args(args)
        .env_clear()
        .envs(env.iter().cloned())
        .output()
        .expect("runs")
}

#[tokio::test]
async fn the_healthcheck_probes_the_configured_bind_address() {
    // 127.0.0.2 is loopback on Linux, but not 127.0.0.1: a probe of the
    // wrong address finds nothing there.
    let app = spawn_app_with(|s| s.bind_address = [127, 0, 0, 2].into()).await;
    let port = app.addr.port().to_string();
    let on = |bind: &str| {
        let env = [
            ("PORT", port.clone()),
            ("ECOS_BIND_ADDRESS", bind.to_owned()),
        ];
        tokio::task::spawn_blocking(move || healthcheck(&env, &["--timeout", "2"]))
    };
    let healthy = on("127.0.0.2").await.expect("join");
    assert_eq!(
        healthy.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&healthy.stderr)
    );
    // The unspecified address is probed on loopback: 127.0.0.1 here, where
    // nothing listens on this port, so it fails, and says where it looked.
    let elsewhere = on("0.0.0.0").await.expect("join");
    assert_eq!(elsewhere.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&elsewhere.stderr);
    assert!(stderr.contains(&format!("127.0.0.1:{port}")), "{stderr}");
}

#[test]
fn the_healthcheck_exits_1_not_2_on_a_bad_setting_or_argument() {
    // Docker reserves exit code 2 for health checks.
    let bad_setting = healthcheck(&[("PORT", "abc".to_owned())], &[]);
    assert_eq!(bad_setting.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&bad_setting.stderr);
    assert!(stderr.contains("`port` (from PORT)"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");

    let bad_argument = healthcheck(&[], &["--timeout", "soon"]);
    assert_eq!(bad_argument.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&bad_argument.stderr).contains("--timeout"),
        "{}",
        String::from_utf8_lossy(&bad_argument.stderr)
    );

    // Serving keeps exit 2 for the same bad setting.
    let serve = std::process::Command::new(env!("CARGO_BIN_EXE_ecos"))
        .env_clear()
        .env("PORT", "abc")
        .output()
        .expect("runs");
    assert_eq!(serve.status.code(), Some(2));
}

/// Connects to `addr` `attempts` times at once; returns how many completed
/// the TCP handshake within `wait` (the app is not accepting, so the
/// kernel's listen queue is all that can hold them).
async fn handshakes_completed(
    addr: std::net::SocketAddr,
    attempts: usize,
    wait: Duration,
) -> usize {
    let tries =
        (0..attempts).map(|_| tokio::time::timeout(wait, tokio::net::TcpStream::connect(addr)));
    let results = futures_util::future::join_all(tries).await;
    // Keep the streams until all are counted so none frees a queue slot early.
    results.iter().filter(|r| matches!(r, Ok(Ok(_)))).count()
}

#[tokio::test]
async fn the_listen_backlog_is_the_configured_one() {
    crate::helpers::init_test_logs();
    // Built but not running: nothing accepts, so completed handshakes wait in
    // the listen queue and the rest of the SYNs are dropped until it frees up.
    let mut settings = crate::helpers::test_settings("backlog");
    settings.listen_backlog = 4;
    let small = ecos::Application::build(settings).await.expect("builds");
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], small.port()));
    // Linux queues one more than the backlog. A dropped SYN is retried after
    // 1 s, so anything beyond the queue is still pending at the deadline.
    let queued = handshakes_completed(addr, 20, Duration::from_millis(500)).await;
    assert!(
        (4..=6).contains(&queued),
        "{queued} of 20 queued with a backlog of 4"
    );

    // The kernel caps any backlog at net.core.somaxconn (4096 on current
    // kernels, 128 on old ones), so the burst stays within it.
    let somaxconn: usize = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(128);
    let burst = 200.min(somaxconn);
    let large = ecos::Application::build(crate::helpers::test_settings("backlog"))
        .await
        .expect("builds");
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], large.port()));
    let queued = handshakes_completed(addr, burst, Duration::from_millis(500)).await;
    assert_eq!(
        queued, burst,
        "the default backlog (1024) queues a burst of {burst}"
    );
}
