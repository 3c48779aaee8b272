//! Webhooks: signed HTTP calls from ecos to the team's backend, so a backend
//! in any language decides who connects, handles the app's own client
//! events, and learns who left (docs/webhooks.md).
//!
//! Every call is `POST webhooks.url` with one JSON object, signed with
//! `webhooks.secret` ([`sign`]). Calls share a pool of keep-alive
//! connections, at most `webhooks.max_concurrency` at once, each within
//! `webhooks.timeout_ms` (the wait for a free slot included), so a slow or
//! dead backend costs a socket one timeout and never blocks anything else.
//!
//! - [`connect`]: the connect hook, asked before CONNECT is answered;
//! - [`forward`]: client events listed in `webhooks.events`, the answer being the ack;
//! - [`disconnect`]: disconnect notifications, at least once, from a bounded queue;
//! - [`sign`]: the signature and delivery id;
//! - [`metrics`]: what is counted.

pub mod connect;
pub mod disconnect;
pub mod forward;
pub mod metrics;
pub mod sign;

use std::{
    collections::HashSet,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axum::http::{HeaderName, HeaderValue, header::CONTENT_TYPE};
use serde::Serialize;
use tokio::sync::Semaphore;

use crate::{config::WebhookSettings, metrics::MetricsError};

pub use connect::{Admission, Denial};
pub use metrics::WebhookMetrics;

/// Largest answer body read from the backend; a larger one is a backend error.
pub const MAX_ANSWER_BYTES: usize = 1024 * 1024;

/// Requests admitted at once (in flight or waiting for a slot), as a
/// multiple of `webhooks.max_concurrency`. Beyond it a request fails at once
/// as unavailable, so a dead backend cannot make ecos hold a growing pile of
/// waiting events.
const ADMITTED_PER_SLOT: usize = 16;

/// The kind of call, sent as `X-Ecos-Event` and the body's `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    /// May this socket connect, and as whom?
    Connect,
    /// A socket disconnected.
    Disconnect,
    /// A client event listed in `webhooks.events`.
    Event,
}

impl Hook {
    /// Every hook, for pre-created metric labels.
    pub const ALL: [Hook; 3] = [Hook::Connect, Hook::Disconnect, Hook::Event];

    /// The name on the wire and in metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Hook::Connect => "connect",
            Hook::Disconnect => "disconnect",
            Hook::Event => "event",
        }
    }
}

/// How a request ended, as the `outcome` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A 2xx answer ecos could use.
    Ok,
    /// The connect hook said no.
    Denied,
    /// A non-2xx status, or a 2xx answer ecos could not use.
    Error,
    /// No answer within `webhooks.timeout_ms`.
    Timeout,
    /// No connection to the backend, or no free slot.
    Unavailable,
}

impl Outcome {
    /// Every outcome, for pre-created metric labels.
    pub const ALL: [Outcome; 5] = [
        Outcome::Ok,
        Outcome::Denied,
        Outcome::Error,
        Outcome::Timeout,
        Outcome::Unavailable,
    ];

    /// The metrics label.
    pub const fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Denied => "denied",
            Outcome::Error => "error",
            Outcome::Timeout => "timeout",
            Outcome::Unavailable => "unavailable",
        }
    }
}

/// Why a request got no usable answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// No answer in time.
    #[error("no answer within the timeout")]
    Timeout,
    /// The backend could not be reached, or every slot was taken.
    #[error("backend unreachable: {0}")]
    Unavailable(String),
    /// The backend answered with a status other than 2xx.
    #[error("backend answered {0}")]
    Status(u16),
    /// The answer was larger than [`MAX_ANSWER_BYTES`].
    #[error("answer larger than {MAX_ANSWER_BYTES} bytes")]
    TooLarge,
}

impl Failure {
    /// The outcome label of this failure.
    pub fn outcome(&self) -> Outcome {
        match self {
            Failure::Timeout => Outcome::Timeout,
            Failure::Unavailable(_) => Outcome::Unavailable,
            Failure::Status(_) | Failure::TooLarge => Outcome::Error,
        }
    }
}

/// Why the webhooks could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The HTTP client could not be built.
    #[error("webhooks.url: cannot build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    /// The metrics could not be registered.
    #[error(transparent)]
    Metrics(#[from] MetricsError),
}

/// Who a call is about: the body's `socket` field.
#[derive(Debug, Clone, Serialize)]
pub struct SocketInfo {
    /// The socket id, as the client sees it.
    pub id: String,
    /// The instance holding the connection.
    pub instance: Arc<str>,
    /// The user id, from the JWT or the connect hook's answer.
    pub user: Option<Arc<str>>,
}

/// The webhook client of one instance.
pub struct Webhooks {
    url: reqwest::Url,
    signer: sign::Signer,
    client: reqwest::Client,
    /// One permit per request in flight.
    slots: Semaphore,
    /// Requests in flight or waiting for a slot.
    admitted: AtomicUsize,
    /// Most requests admitted at once.
    max_admitted: usize,
    timeout: Duration,
    connect: bool,
    fail_open: bool,
    forward_headers: Vec<HeaderName>,
    events: HashSet<String>,
    disconnect: Option<disconnect::Queue>,
    /// What is counted.
    pub metrics: WebhookMetrics,
}

impl Webhooks {
    /// The webhook client `settings` describe, or `None` when `webhooks.url` is unset.
    pub fn new(
        settings: &WebhookSettings,
        metrics: &crate::metrics::Metrics,
    ) -> Result<Option<Arc<Self>>, WebhookError> {
        let (Some(url), Some(secret)) = (&settings.url, &settings.secret) else {
            return Ok(None);
        };
        // The settings checked the URL; a failure here would be a bug there.
        let Ok(url) = reqwest::Url::parse(url) else {
            return Ok(None);
        };
        let client = reqwest::Client::builder()
            .user_agent(concat!("ecos/", env!("CARGO_PKG_VERSION")))
            .pool_max_idle_per_host(settings.max_concurrency)
            // Keep connections for a while between bursts, well under the
            // idle timeouts backends commonly have (60 s and more).
            .pool_idle_timeout(Duration::from_secs(30))
            .connect_timeout(settings.timeout)
            // A backend's redirect would make ecos send signed bodies elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let metrics = WebhookMetrics::new(metrics)?;
        let disconnect = settings
            .disconnect
            .then(|| disconnect::Queue::new(settings.disconnect_queue, settings.retry_for));
        Ok(Some(Arc::new(Self {
            url,
            signer: sign::Signer::new(secret.expose()),
            client,
            slots: Semaphore::new(settings.max_concurrency),
            admitted: AtomicUsize::new(0),
            max_admitted: settings.max_concurrency.saturating_mul(ADMITTED_PER_SLOT),
            timeout: settings.timeout,
            connect: settings.connect,
            fail_open: settings.fail_open,
            forward_headers: settings
                .forward_headers
                .iter()
                .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok())
                .collect(),
            events: settings.events.iter().cloned().collect(),
            disconnect,
            metrics,
        })))
    }

    /// Whether connections are put to the connect hook.
    pub fn asks_on_connect(&self) -> bool {
        self.connect
    }

    /// Whether the client event `name` is forwarded.
    pub fn forwards(&self, name: &str) -> bool {
        self.events.contains(name)
    }

    /// Whether disconnections are notified.
    pub fn notifies_disconnect(&self) -> bool {
        self.disconnect.is_some()
    }

    /// POSTs `body` as a `hook` call with the delivery id `delivery`, and
    /// returns the 2xx answer's body. Times the call; the caller counts the
    /// outcome, which may depend on what the answer says.
    pub async fn post(&self, hook: Hook, delivery: &str, body: &[u8]) -> Result<Vec<u8>, Failure> {
        let timer = self.metrics.duration(hook).start_timer();
        let admitted = self.admitted.fetch_add(1, Ordering::AcqRel);
        let result = if admitted >= self.max_admitted {
            Err(Failure::Unavailable(
                "too many requests waiting for a slot".to_owned(),
            ))
        } else {
            tokio::time::timeout(self.timeout, self.post_in_slot(hook, delivery, body))
                .await
                .unwrap_or(Err(Failure::Timeout))
        };
        self.admitted.fetch_sub(1, Ordering::AcqRel);
        timer.observe_duration();
        result
    }

    async fn post_in_slot(
        &self,
        hook: Hook,
        delivery: &str,
        body: &[u8],
    ) -> Result<Vec<u8>, Failure> {
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| Failure::Unavailable("closed".to_owned()))?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let request = self
            .client
            .post(self.url.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header("x-ecos-event", hook.name())
            .header("x-ecos-delivery", delivery)
            .header("x-ecos-signature", self.signer.header(now, body))
            .body(body.to_vec());
        let mut response = request.send().await.map_err(|e| {
            if e.is_timeout() {
                Failure::Timeout
            } else {
                Failure::Unavailable(error_chain(&e))
            }
        })?;
        let status = response.status();
        if !status.is_success() {
            return Err(Failure::Status(status.as_u16()));
        }
        if response
            .content_length()
            .is_some_and(|n| n > MAX_ANSWER_BYTES as u64)
        {
            return Err(Failure::TooLarge);
        }
        let mut answer = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| Failure::Unavailable(error_chain(&e)))?
        {
            if answer.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(Failure::TooLarge);
            }
            answer.extend_from_slice(&chunk);
        }
        Ok(answer)
    }
}

/// An error and its causes on one line (reqwest's own message says little).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
