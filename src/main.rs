use std::{process::ExitCode, time::Duration};

use anyhow::Context;
use clap::error::ErrorKind;
use ecos::{
    Application, Settings, app, auth,
    cli::{Cli, Command},
    config::Sources,
    healthcheck, telemetry,
};

fn main() -> ExitCode {
    let cli = match Cli::try_parse_args() {
        Ok(cli) => cli,
        Err(error) => return command_line_error(error),
    };
    let is_healthcheck = matches!(cli.command, Some(Command::Healthcheck { .. }));
    // A bad setting is the operator's mistake, not a crash: one line, exit 2.
    // Except for the health check: Docker reserves 2 there, so it exits 1.
    let settings = match Settings::load(&Sources::from_process(cli.config.clone())) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("ecos: {error}");
            return if is_healthcheck {
                ExitCode::FAILURE
            } else {
                ExitCode::from(2)
            };
        }
    };
    if cli.print_config {
        print!("{}", settings.to_display_string());
        return ExitCode::SUCCESS;
    }
    match cli.command {
        Some(Command::Healthcheck { timeout }) => return check_health(&settings, timeout),
        Some(Command::Token {
            sub,
            rooms,
            ttl,
            broadcast,
        }) => return print_token(&settings, sub, &rooms, &ttl, broadcast),
        None => {}
    }
    // The runtime is built from the settings, so it comes after them.
    let runtime = match app::runtime(&settings.runtime) {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("ecos: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("ecos: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// `ecos healthcheck`: GET `/healthz` on the configured address; 0 or 1.
fn check_health(settings: &Settings, timeout_secs: f64) -> ExitCode {
    let addr = healthcheck::probe_addr(settings.bind_address, settings.port);
    let timeout = Duration::try_from_secs_f64(timeout_secs).unwrap_or(Duration::from_secs(3));
    // One request: a single thread does, whatever `runtime.worker_threads` says.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("ecos: unhealthy: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(healthcheck::check(addr, timeout)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("ecos: unhealthy: {error}");
            ExitCode::FAILURE
        }
    }
}

/// `ecos token`: prints a development token; a missing secret or a bad `--ttl` exits 2.
fn print_token(
    settings: &Settings,
    sub: String,
    rooms: &str,
    ttl: &str,
    broadcast: bool,
) -> ExitCode {
    let request = auth::mint::parse_ttl(ttl).map(|ttl| auth::mint::TokenRequest {
        sub,
        rooms: rooms
            .split(',')
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .map(str::to_owned)
            .collect(),
        ttl,
        broadcast,
    });
    match request.and_then(|request| auth::mint::mint(&settings.auth.jwt, &request)) {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("ecos: {error}");
            ExitCode::from(2)
        }
    }
}

/// Prints a command-line error and exits as clap does (2), except for
/// `ecos healthcheck`, which exits 1: Docker reserves 2 for health checks.
fn command_line_error(error: clap::Error) -> ExitCode {
    let informational = matches!(
        error.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    );
    let is_healthcheck = std::env::args_os().skip(1).any(|arg| arg == "healthcheck");
    if is_healthcheck && !informational {
        let _ = error.print();
        return ExitCode::FAILURE;
    }
    error.exit()
}

async fn run(settings: Settings) -> anyhow::Result<()> {
    telemetry::init(&settings.log).context("cannot set up logging")?;
    let app = Application::build(settings).await.context("cannot start")?;
    app.run_until_stopped(app::signal())
        .await
        .context("server failed")?;
    Ok(())
}
