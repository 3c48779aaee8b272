//! ecos: a Socket.IO v5 / Engine.IO v4 server for twelve-factor platforms.
//!
//! It serves the official Socket.IO clients over WebSocket and HTTP
//! long-polling, keeps no state a restart must preserve, and exposes what a
//! platform router needs: liveness, readiness, Prometheus metrics, logs on
//! stdout and a graceful drain on SIGTERM.
//!
//! # Layout
//!
//! - [`config`]: every setting in one table (name, default, README text, parser); layering; validation.
//! - [`app`]: [`Application`]: bind, wire, serve, drain; the lifecycle and OS signals.
//! - [`net`]: the accept loop and its connection limits (header-read and keep-alive deadlines, the cap), and the slow-consumer policy that watches every connection.
//! - [`http`]: the demo page, `/healthz`, `/readyz`, `/metrics`, and the HTTP middleware.
//! - [`api`]: the HTTP server API for backends (`/api/v1/...`): emit, rooms, disconnect, listings, OpenAPI.
//! - [`auth`]: who may connect (JWT, JWKS), the user room, room permissions; `ecos token`.
//! - [`realtime`]: the Socket.IO event contract: the event table, one dispatch path, one file per event family.
//! - [`hub`]: the type-erased handle on the Socket.IO server that HTTP and the app use, whatever the adapter.
//! - [`cluster`]: the Redis adapter's self-healing driver, its supervisor, cluster stats, and the listener for the official Redis emitter.
//! - [`metrics`]: the Prometheus registry and the app's metrics.
//! - [`webhooks`]: signed HTTP calls to the team's backend: the connect hook, forwarded events with the answer as ack, disconnect notifications.
//! - [`telemetry`]: the tracing subscriber (text or JSON on stdout).
//! - [`healthcheck`]: the `ecos healthcheck` subcommand for container health checks.
//! - [`cli`]: command-line options.
//! - [`conformance`]: the protocol-conformance setup that the `ecos-conformance` binary serves.
//!
//! `main.rs` only parses the command line, loads the settings, installs
//! logging and runs the application; tests build the same application
//! in-process on port 0.

pub mod api;
pub mod app;
pub mod auth;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod conformance;
pub mod healthcheck;
pub mod http;
pub mod hub;
pub mod metrics;
pub mod net;
pub mod realtime;
pub mod telemetry;
pub mod webhooks;

pub use app::Application;
pub use config::Settings;
