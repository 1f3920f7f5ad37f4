//! `pophost`: parse the command line, set up logging, run the command; errors are one line on
//! standard error and a non-zero exit.

use std::process::ExitCode;

use clap::Parser;
use pophost::cli::{Cli, Command};
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let settings = pophost::cli::settings(&cli)?;
    match cli.command {
        Command::Serve { no_migrate, .. } => {
            let telemetry = std::sync::Arc::new(pophost::telemetry::init(&settings.log)?);
            let listeners = pophost::bind(&settings).await?;
            let shutdown = CancellationToken::new();
            tokio::spawn(on_signal(shutdown.clone()));
            // A weak reference: at exit the exporter is taken back whole, to flush it.
            tokio::spawn(reload_log_filter_on_sighup(
                cli.config.clone(),
                std::sync::Arc::downgrade(&telemetry),
            ));
            let served = pophost::serve(settings, !no_migrate, listeners, shutdown).await;
            // The last spans (the drained sessions') go out before the process does; the
            // exporter's blocking flush runs off the runtime's workers.
            if let Ok(telemetry) = std::sync::Arc::try_unwrap(telemetry) {
                let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
            }
            served
        }
        command => {
            println!("{}", pophost::cli::provision(&settings, command).await?);
            Ok(())
        }
    }
}

/// SIGHUP re-reads the config file and applies its `log.filter` (the certificates are reloaded
/// by `pophost::serve`'s own SIGHUP handler). Nothing else in the file is applied: see README.
async fn reload_log_filter_on_sighup(
    config: Option<std::path::PathBuf>,
    telemetry: std::sync::Weak<pophost::telemetry::Telemetry>,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot install the SIGHUP handler: the log filter will not be reloaded");
        return;
    };
    while hup.recv().await.is_some() {
        let Some(telemetry) = telemetry.upgrade() else {
            return;
        };
        let reloaded = pophost::config::Settings::load(
            config.as_deref(),
            None,
            &pophost::config::Overrides::default(),
        )
        .and_then(|settings| telemetry.reload_filter(&settings.log));
        match reloaded {
            Ok(Some(filter)) => tracing::info!(%filter, "log filter reloaded"),
            Ok(None) => tracing::info!("log filter not reloaded: RUST_LOG sets it"),
            Err(e) => tracing::error!(error = format!("{e:#}"), "log filter not reloaded"),
        }
    }
}

/// SIGTERM or SIGINT starts a graceful shutdown.
async fn on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::warn!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("shutting down");
    shutdown.cancel();
}
