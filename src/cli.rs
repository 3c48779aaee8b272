//! Command-line options. Everything else comes from the configuration layers.

use std::path::PathBuf;

use clap::Parser;

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
}
