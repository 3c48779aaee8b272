//! Command-line options. Everything else comes from the configuration layers.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// ecos: a Socket.IO server for twelve-factor platforms.
///
/// Settings come from defaults, then the TOML file given with --config (or
/// ECOS_CONFIG), then ECOS_* environment variables (nested keys with `__`,
/// e.g. ECOS_LOG__FORMAT=json), then PORT and REDIS_URL.
#[derive(Debug, Parser)]
#[command(name = "ecos", version, about, long_about)]
pub struct Cli {
    /// Path of a TOML configuration file.
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Print the effective settings (secrets masked) and exit.
    #[arg(long)]
    pub print_config: bool,
    /// What to do; without a command, ecos serves.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Commands other than serving.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// GET /healthz on the local server (the configured bind address, or
    /// loopback when that is 0.0.0.0 or ::, and port) and exit 0 if it
    /// answers 200, else 1 (a bad setting too: Docker reserves 2). Needs no
    /// shell tools: for container HEALTHCHECKs in distroless images.
    Healthcheck {
        /// Seconds to wait for the answer.
        #[arg(long, default_value_t = 3.0)]
        timeout: f64,
    },
}
