//! `ecos-conformance`: ecos in protocol-conformance mode.
//!
//! Serves the handlers the official Engine.IO v4 and Socket.IO v5 test suites
//! expect ([`ecos::conformance`]) on the real application, on port 3000 unless
//! `PORT` (or any other ecos setting) says otherwise. The heartbeat, payload and
//! connect-timeout settings are forced to the suites' values.
//!
//! ```sh
//! cargo run --release --bin ecos-conformance
//! cargo run --release --bin ecos-conformance -- --current-thread
//! ```
//!
//! By default it runs on the same multi-threaded runtime as `ecos`.
//! `--current-thread` runs everything on one thread, so that requests arriving
//! on different connections are handled in arrival order, as on the reference
//! Node.js server; a few suite tests depend on that order (see
//! `docs/conformance.md`).

use std::process::ExitCode;

use anyhow::Context;
use ecos::{
    Application, Settings, app,
    config::Sources,
    conformance::{self, Conformance},
    telemetry,
};

const HELP: &str = "\
ecos-conformance: ecos with the handlers of the official Engine.IO v4 and
Socket.IO v5 protocol test suites (see docs/conformance.md).

Options:
  --current-thread   run on a single-threaded runtime (requests in arrival order)
  -h, --help         print this help

ecos settings (PORT, ECOS_*, ECOS_CONFIG) apply, except the heartbeat, payload
and connect-timeout values, which are set to what the suites expect.";

fn main() -> ExitCode {
    let mut current_thread = false;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--current-thread" => current_thread = true,
            "-h" | "--help" => {
                println!("{HELP}");
                return ExitCode::SUCCESS;
            }
            other => {
                eprintln!("ecos-conformance: unknown argument {other:?}; see --help");
                return ExitCode::from(2);
            }
        }
    }
    let settings = match Settings::load(&Sources::from_process(None)) {
        Ok(settings) => conformance::settings(settings),
        Err(error) => {
            eprintln!("ecos-conformance: {error}");
            return ExitCode::from(2);
        }
    };
    let runtime = if current_thread {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    }
    .enable_all()
    .build();
    let result = match runtime {
        Ok(runtime) => runtime.block_on(run(settings, current_thread)),
        Err(error) => Err(anyhow::Error::new(error).context("cannot start the runtime")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("ecos-conformance: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(settings: Settings, current_thread: bool) -> anyhow::Result<()> {
    telemetry::init(&settings.log).context("cannot set up logging")?;
    tracing::info!(
        engine_io = conformance::ENGINE_IO_PATH,
        socket_io = ecos::app::ENGINE_PATH,
        namespaces = ?conformance::NAMESPACES,
        runtime = if current_thread { "current_thread" } else { "multi_thread" },
        "conformance mode: serving the protocol test suites' handlers"
    );
    let setup = Conformance::new(&settings);
    let app = Application::build_with(settings, setup)
        .await
        .context("cannot start")?;
    app.run_until_stopped(app::signal())
        .await
        .context("server failed")?;
    Ok(())
}
