use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use ecos::{Application, Settings, cli::Cli, config::Sources, shutdown, telemetry};

#[tokio::main]
async fn main() -> ExitCode {
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
    match run(settings).await {
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
    app.run_until_stopped(shutdown::signal())
        .await
        .context("server failed")?;
    Ok(())
}
