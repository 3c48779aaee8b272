//! Logging: one subscriber, writing to stdout, in text or JSON.
//!
//! Platforms (Heroku's Logplex, Kubernetes, Fly) collect a process's stdout,
//! so ecos never writes log files.

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::config::{LogFormat, LogSettings};

/// Why the subscriber could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The filter string is not a valid `RUST_LOG` directive.
    #[error("invalid log filter {0:?}: {1}")]
    Filter(String, String),
    /// A global subscriber was already installed (a second call in one process).
    #[error("a global tracing subscriber is already installed")]
    AlreadyInstalled,
}

/// Installs the global subscriber described by `settings`.
pub fn init(settings: &LogSettings) -> Result<(), TelemetryError> {
    let filter = EnvFilter::try_new(&settings.level)
        .map_err(|e| TelemetryError::Filter(settings.level.clone(), e.to_string()))?;
    let registry = tracing_subscriber::registry().with(filter);
    let result = match settings.format {
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(false)
                    .with_current_span(true)
                    .with_span_list(false),
            )
            .try_init(),
        LogFormat::Text => registry.with(fmt::layer().with_target(false)).try_init(),
    };
    result.map_err(|_| TelemetryError::AlreadyInstalled)
}
