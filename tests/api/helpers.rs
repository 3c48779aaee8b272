//! `spawn_app` and the `TestApp` handle every test starts from, and the
//! waiting and probing helpers tests share.

use std::{
    fmt::Display,
    net::{SocketAddr, TcpListener},
    panic::Location,
    time::{Duration, Instant},
};

use ecos::{Application, Settings, app::StartupError};
use serde_json::Value;
use tokio::{sync::oneshot, task::JoinHandle};

use crate::client::{SioClient, Transport};

/// Settings for an in-process test app: the defaults, bound to `127.0.0.1:0`.
pub fn test_settings(instance_id: &str) -> Settings {
    let env = std::collections::HashMap::from([
        ("ECOS_PORT".to_owned(), "0".to_owned()),
        ("ECOS_BIND_ADDRESS".to_owned(), "127.0.0.1".to_owned()),
        ("ECOS_INSTANCE_ID".to_owned(), instance_id.to_owned()),
    ]);
    Settings::load(&ecos::config::Sources { file: None, env }).expect("test settings are valid")
}

/// Installs a text log subscriber when `TEST_LOG` is set (`TEST_LOG=1` or a
/// filter such as `ecos=debug`); silent otherwise. Only the first call installs.
///
/// Without `TEST_LOG`, only the layer that reads socketioxide's report of
/// full queues is installed, as ecos's own subscriber has it.
pub fn init_test_logs() {
    let Some(level) = std::env::var_os("TEST_LOG") else {
        use tracing_subscriber::prelude::*;
        let _ = tracing_subscriber::registry()
            .with(ecos::cluster::overflow::layer())
            .try_init();
        return;
    };
    let level = level.to_string_lossy().into_owned();
    let level = if level.is_empty() || level == "1" {
        "debug".to_owned()
    } else {
        level
    };
    let _ = ecos::telemetry::init(&ecos::config::LogSettings {
        format: ecos::config::LogFormat::Text,
        level,
    });
}

/// A running app and what a test needs to talk to it.
pub struct TestApp {
    /// Loopback address with the real port.
    pub addr: SocketAddr,
    /// Plain HTTP client for the platform routes.
    pub http: reqwest::Client,
    /// Fires the shutdown future passed to `run_until_stopped`.
    stop: Option<oneshot::Sender<()>>,
    /// The task running the server.
    task: Option<JoinHandle<Result<(), StartupError>>>,
}

/// Starts the app with test defaults (loopback, port 0, instance `test`).
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Starts the app after `tweak` has adjusted the test defaults.
pub async fn spawn_app_with(tweak: impl FnOnce(&mut Settings)) -> TestApp {
    crate::helpers::init_test_logs();
    let mut settings = crate::helpers::test_settings("test");
    tweak(&mut settings);
    let app = Application::build(settings).await.expect("app builds");
    spawn_built(app).await
}

/// Runs an application the test built itself (e.g. with `Application::build_with`
/// and another setup), the way `spawn_app_with` runs the default one.
pub async fn spawn_built(app: Application) -> TestApp {
    crate::helpers::init_test_logs();
    let addr = SocketAddr::from(([127, 0, 0, 1], app.port()));
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(app.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    TestApp {
        addr,
        http: http_client(),
        stop: Some(stop),
        task: Some(task),
    }
}

impl TestApp {
    /// `http://127.0.0.1:PORT` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// GET `path`.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .send()
            .await
            .expect("GET succeeds")
    }

    /// GET `path` and return status and body text.
    pub async fn get_text(&self, path: &str) -> (u16, String) {
        let response = self.get(path).await;
        let status = response.status().as_u16();
        (status, response.text().await.expect("body"))
    }

    /// The value of one metric series, e.g. `ecos_connected_sockets` or
    /// `ecos_disconnections_total{reason="transport_close"`; 0 when absent.
    pub async fn metric(&self, series: &str) -> f64 {
        let (_, text) = self.get_text("/metrics").await;
        metric_value(&text, series)
    }

    /// Polls `series` until it equals `want` (metrics move asynchronously after a disconnect).
    pub async fn wait_metric(&self, series: &str, want: f64) {
        eventually(
            &format!("{series} to be {want}"),
            Duration::from_secs(5),
            async || {
                let got = self.metric(series).await;
                if got == want { Ok(()) } else { Err(got) }
            },
        )
        .await;
    }

    /// A connected Socket.IO client on namespace `/`, with its `welcome` consumed.
    pub async fn client(&self, transport: Transport) -> SioClient {
        let mut client = SioClient::connect(self.addr, transport)
            .await
            .expect("client connects");
        client.expect_event("welcome").await;
        client
    }

    /// Fires the shutdown signal.
    pub fn signal_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Waits for the server future to complete; returns its result, or None if it did not within `within`.
    pub async fn stopped(&mut self, within: Duration) -> Option<Result<(), StartupError>> {
        let task = self.task.as_mut()?;
        match tokio::time::timeout(within, task).await {
            Ok(joined) => {
                self.task = None;
                Some(joined.expect("server task did not panic"))
            }
            Err(_) => None,
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Finds `series` (name plus optional leading labels) in Prometheus text and parses its value.
pub fn metric_value(text: &str, series: &str) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find(|line| line.starts_with(series) && line[series.len()..].starts_with(['{', ' ', ',']))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Both transports, for tests that must hold on each.
pub const TRANSPORTS: [Transport; 2] = [Transport::WebSocket, Transport::Polling];

/// The HTTP client tests use for the platform routes; its timeout keeps a
/// hung server from hanging the test.
pub fn http_client() -> reqwest::Client {
    // reqwest's TLS (enabled by ecos's own use of it) needs the provider first.
    ecos::app::install_crypto_provider();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("http client")
}

/// GET `/readyz` on the loopback `port`: the status and the JSON body.
pub async fn readyz(port: u16) -> (u16, Value) {
    let response = http_client()
        .get(format!("http://127.0.0.1:{port}/readyz"))
        .send()
        .await
        .expect("GET /readyz succeeds");
    let status = response.status().as_u16();
    (status, response.json().await.expect("readyz json"))
}

/// A loopback port nothing listens on right now (the OS picked it; someone
/// else may take it before the caller binds it, which tests accept).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// How often `eventually` and `eventually_blocking` probe.
const POLL_EVERY: Duration = Duration::from_millis(25);

/// Calls `probe` every [`POLL_EVERY`] until it returns `Ok`, and returns that
/// value. `Err` carries what the probe saw instead: if `within` passes
/// without an `Ok`, the panic names the calling line and `what` it waited
/// for, and shows the last `Err`. The last probe starts at the deadline,
/// never later, so the wait is never longer than `within` plus one probe.
// Not an `async fn`: those cannot see their caller.
#[track_caller]
pub fn eventually<T, E: Display>(
    what: &str,
    within: Duration,
    mut probe: impl AsyncFnMut() -> Result<T, E>,
) -> impl Future<Output = T> {
    let caller = Location::caller();
    async move {
        // tokio's clock, so the deadline and the sleeps agree.
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let last = match probe().await {
                Ok(value) => return value,
                Err(last) => last,
            };
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                gave_up(caller, what, within, last);
            }
            tokio::time::sleep(POLL_EVERY.min(left)).await;
        }
    }
}

/// `eventually` for code that cannot await: sleeps the thread between probes.
#[track_caller]
pub fn eventually_blocking<T, E: Display>(
    what: &str,
    within: Duration,
    mut probe: impl FnMut() -> Result<T, E>,
) -> T {
    let caller = Location::caller();
    let deadline = Instant::now() + within;
    loop {
        let last = match probe() {
            Ok(value) => return value,
            Err(last) => last,
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            gave_up(caller, what, within, last);
        }
        std::thread::sleep(POLL_EVERY.min(left));
    }
}

/// The panic of `eventually` and `eventually_blocking`, naming the line that waited.
fn gave_up(caller: &Location, what: &str, within: Duration, last: impl Display) -> ! {
    panic!("{caller}: waited {within:?} for {what}; last seen: {last}")
}
