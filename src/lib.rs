//! ecos: a Socket.IO v5 / Engine.IO v4 server for twelve-factor platforms.
//!
//! It serves the official Socket.IO clients over WebSocket and HTTP
//! long-polling, keeps no state a restart must preserve, and exposes what a
//! platform router needs: liveness, readiness, Prometheus metrics, logs on
//! stdout and a graceful drain on SIGTERM.
//!
//! # Layout
//!
//! - [`config`]: layered settings (defaults, file, `ECOS_*`, `PORT`), validated once.
//! - [`telemetry`]: the tracing subscriber (text or JSON on stdout).
//! - [`startup`]: [`startup::Application`]: bind, wire, serve, drain.
//! - [`realtime`]: the Socket.IO event contract (handlers, generic over the adapter).
//! - [`http`]: the demo page, `/healthz`, `/readyz`, `/metrics`, and HTTP middleware.
//! - [`backpressure`]: slow consumers: the listener that sees stalled writes and closes those clients.
//! - [`cluster`]: the Redis adapter and its self-healing driver, used when `REDIS_URL` is set.
//! - [`metrics`]: the Prometheus registry and every metric.
//! - [`shutdown`]: OS signals and the drain state.
//! - [`healthcheck`]: the `ecos healthcheck` subcommand for container health checks.
//! - [`cli`]: command-line options.
//! - [`conformance`]: the protocol-conformance mode (`ecos-conformance`) for the official Engine.IO / Socket.IO test suites.
//!
//! `main.rs` only parses the command line, loads the settings, installs
//! logging and runs the application; tests build the same application
//! in-process on port 0.

pub mod backpressure;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod conformance;
pub mod healthcheck;
pub mod http;
pub mod metrics;
pub mod realtime;
pub mod shutdown;
pub mod startup;
pub mod telemetry;

pub use config::Settings;
pub use startup::Application;
