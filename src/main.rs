use std::{net::SocketAddr, process::ExitCode, time::Duration};

use anyhow::Context;
use clap::Parser;
use ecos::{
    Application, Settings, app,
    cli::{Cli, Command},
    config::Sources,
    healthcheck, telemetry,
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A bad setting is the operator's mistake, not a crash: one line, exit 2.
    let settings = match Settings::load(&Sources::from_process(cli.config.clone())) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("ecos: {error}");
            return ExitCode::from(2);
        }
    };
    if cli.print_config {
        print!("{}", settings.to_display_string());
        return ExitCode::SUCCESS;
    }
    // The runtime is built from the settings, so it comes after them.
    let runtime = match app::runtime(&settings.runtime) {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("ecos: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(Command::Healthcheck { timeout }) = cli.command {
        let addr = SocketAddr::from(([127, 0, 0, 1], settings.port));
        let timeout = Duration::try_from_secs_f64(timeout).unwrap_or(Duration::from_secs(3));
        return match runtime.block_on(healthcheck::check(addr, timeout)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("ecos: unhealthy: {error}");
                ExitCode::FAILURE
            }
        };
    }
    match runtime.block_on(run(settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("ecos: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(settings: Settings) -> anyhow::Result<()> {
    telemetry::init(&settings.log).context("cannot set up logging")?;
    let app = Application::build(settings).await.context("cannot start")?;
    app.run_until_stopped(app::signal())
        .await
        .context("server failed")?;
    Ok(())
}
