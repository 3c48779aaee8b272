//! Integration tests: the real ecos app, started in-process on port 0, driven
//! over real sockets by a small Engine.IO 4 / Socket.IO 5 client.

mod api;
mod auth;
mod backpressure;
mod client;
mod cluster;
mod config;
mod connections;
mod contract;
mod emitter;
mod fuzz;
mod hardening;
mod helpers;
mod hub;
mod overflow;
mod platform;
mod process;
mod protocol;
mod redis_server;
mod robustness;
mod shutdown;
mod webhooks;
