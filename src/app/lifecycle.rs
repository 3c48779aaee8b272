//! Shutdown: the OS signals that start a drain, and the state that tells the
//! rest of the app a drain is under way.
//!
//! Heroku sends SIGTERM (possibly several times) and SIGKILL 30 s later; Fly
//! sends SIGINT by default; Kubernetes sends SIGTERM. All of them start the
//! same drain, and repeated signals change nothing.

use std::sync::atomic::{AtomicBool, Ordering};

/// Where the process is in its life, shared by the HTTP routes and the server loop.
#[derive(Debug, Default)]
pub struct Lifecycle {
    /// Set once the listener is serving; `/readyz` stays 503 before that.
    serving: AtomicBool,
    /// Set once a drain has begun; never cleared.
    draining: AtomicBool,
}

impl Lifecycle {
    /// A lifecycle in the `starting` state.
    pub fn new() -> Self {
        Self::default()
    }

    /// Marks the listener as serving.
    pub fn set_serving(&self) {
        self.serving.store(true, Ordering::SeqCst);
    }

    /// Whether the listener is serving.
    pub fn is_serving(&self) -> bool {
        self.serving.load(Ordering::SeqCst)
    }

    /// Begins the drain; returns false if one had already begun.
    pub fn start_drain(&self) -> bool {
        !self.draining.swap(true, Ordering::SeqCst)
    }

    /// Whether a drain has begun.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
}

/// Resolves on the first SIGTERM or SIGINT.
///
/// If a handler cannot be installed (which only happens in unusual sandboxes)
/// the error is logged and that signal is simply not awaited.
pub async fn signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
        "SIGINT"
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut stream) => {
                stream.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
        "SIGTERM"
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<&str>();

    let name = tokio::select! {
        name = ctrl_c => name,
        name = terminate => name,
    };
    tracing::info!(signal = name, "shutdown signal received");
}
