//! Integration tests: the real ecos app, started in-process on port 0, driven
//! over real sockets by a small Engine.IO 4 / Socket.IO 5 client.

mod client;
mod config;
mod contract;
mod helpers;
mod platform;
mod robustness;
mod shutdown;
