//! Command-line options. Everything else comes from the configuration layers.

use std::path::PathBuf;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::config::keys;

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

impl Cli {
    /// Parses the process's arguments. `--help` ends with every setting, taken
    /// from the key table so it cannot drift from what the loader reads; `-h`
    /// says where to find them.
    pub fn try_parse_args() -> Result<Self, clap::Error> {
        let matches = Self::command()
            .after_help("Settings: `ecos --help` lists them all; README.md's \"Configuration\" table explains them.")
            .after_long_help(keys::help_table())
            .try_get_matches()?;
        Self::from_arg_matches(&matches)
    }
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
    /// Print an HS256 connection token signed with the first of
    /// `auth.jwt.secrets`, for development and tests (production tokens come
    /// from your backend: docs/auth.md).
    Token {
        /// The user id (the `sub` claim, or `auth.jwt.user_claim`).
        #[arg(long)]
        sub: String,
        /// Rooms the token allows, comma-separated; a trailing `*` matches a prefix.
        #[arg(long, default_value = "", value_name = "LIST")]
        rooms: String,
        /// Lifetime: seconds, or a number with s, m, h or d (`15m`, `1h`).
        #[arg(long, default_value = "1h")]
        ttl: String,
        /// Allow the global `message` broadcast (the `broadcast` claim).
        #[arg(long)]
        broadcast: bool,
    },
}
