//! Logging: one subscriber, writing to stdout, in text or JSON, with the
//! layer that reads socketioxide's report of full queues
//! ([`crate::cluster::overflow`]).
//!
//! Platforms (Heroku's Logplex, Kubernetes, Fly) collect a process's stdout,
//! so ecos never writes log files. They read it through a pipe, where ANSI
//! colour codes arrive as literal `^[[2m` noise: text logs are coloured only
//! when stdout is a terminal and `NO_COLOR` is unset or empty.

use std::{ffi::OsStr, io::IsTerminal};

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

/// Whether text logs may carry ANSI colour codes: only on a terminal, and
/// never when `NO_COLOR` holds a non-empty value (<https://no-color.org>).
pub fn use_colour(stdout_is_terminal: bool, no_color: Option<&OsStr>) -> bool {
    stdout_is_terminal && no_color.is_none_or(OsStr::is_empty)
}

/// Installs the global subscriber described by `settings`.
pub fn init(settings: &LogSettings) -> Result<(), TelemetryError> {
    let filter = EnvFilter::try_new(&settings.level)
        .map_err(|e| TelemetryError::Filter(settings.level.clone(), e.to_string()))?;
    let colour = use_colour(
        std::io::stdout().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    // The filter is the log's alone: the overflow layer reads its one
    // target whatever the log level lets through.
    let registry = tracing_subscriber::registry().with(crate::cluster::overflow::layer());
    let result = match settings.format {
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .with_ansi(false)
                    .flatten_event(false)
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_filter(filter),
            )
            .try_init(),
        LogFormat::Text => registry
            .with(
                fmt::layer()
                    .with_target(false)
                    .with_ansi(colour)
                    .with_filter(filter),
            )
            .try_init(),
    };
    result.map_err(|_| TelemetryError::AlreadyInstalled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(use_colour(true, None));
        // An empty NO_COLOR counts as unset, as no-color.org says.
        assert!(use_colour(true, Some(OsStr::new(""))));
        assert!(!use_colour(true, Some(OsStr::new("1"))));
        assert!(!use_colour(true, Some(OsStr::new("0"))));
        assert!(!use_colour(false, None));
        assert!(!use_colour(false, Some(OsStr::new("1"))));
    }
}
