//! The commands of the binary, one module each: what `main` dispatches to once the command
//! line is parsed. This is the top edge of the crate: commands build sources of deliveries
//! (`watch`, `ingest`) and the pipeline context, and print what a person reads on the terminal.
//! Nothing below imports this module.
//!
//! Output rules: results go to stdout (tables, summaries, JSON); warnings and errors reach the
//! terminal through the log's terminal layer; progress and detail go to the log file.

mod db;
mod export;
mod generate;
mod ingest;
mod migrate;
mod run;
mod status;
mod validate;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::cli::{exit, Cli, Command};
use crate::config::{RawConfig, Settings};
use crate::database;
use crate::pipeline::PipelineCtx;
use crate::store::Store;

/// Loads the configuration: defaults < file < environment < the command line's flags.
///
/// # Errors
/// The file or the environment is invalid, or a flag's value is.
pub fn load_settings(cli: &Cli) -> anyhow::Result<Settings> {
    let mut raw =
        RawConfig::load(cli.config.as_deref()).context("cannot load the configuration")?;
    if let Some(url) = &cli.database_url {
        raw.database_url = Some(url.clone());
    }
    let dirs: [(&Option<PathBuf>, &mut PathBuf); 5] = [
        (&cli.data_dir, &mut raw.data_dir),
        (&cli.quarantine_dir, &mut raw.quarantine_dir),
        (&cli.processed_dir, &mut raw.processed_dir),
        (&cli.logs_dir, &mut raw.logs_dir),
        (&cli.state_dir, &mut raw.state_dir),
    ];
    for (flag, field) in dirs {
        if let Some(dir) = flag {
            *field = dir.clone();
        }
    }
    let mut settings = Settings::from_raw(raw)?;
    if let Command::Run {
        http_addr: Some(addr),
    }
    | Command::Serve {
        http_addr: Some(addr),
    } = &cli.command
    {
        settings.http_addr = match addr.trim() {
            "" => None,
            text => Some(text.parse().with_context(|| {
                format!("--http-addr `{text}` is not an address like 127.0.0.1:9898")
            })?),
        };
    }
    Ok(settings)
}

/// Runs one command to its end; returns the exit code.
///
/// # Errors
/// A failure that ends the command (exit code 1).
pub async fn dispatch(command: Command, settings: Settings) -> anyhow::Result<u8> {
    match command {
        Command::Validate {
            paths,
            json,
            follow_symlinks,
        } => validate::run(&paths, json, follow_symlinks, &settings),
        Command::Run { .. } | Command::Serve { .. } => {
            let inbox = match command {
                Command::Run { .. } => run::Inbox::Watch,
                _ => run::Inbox::Ignore,
            };
            let cancel = CancellationToken::new();
            tokio::spawn(shutdown_on_signal(cancel.clone()));
            run::run(settings, inbox, cancel).await?;
            Ok(exit::OK)
        }
        Command::Ingest {
            paths,
            consume,
            follow_symlinks,
            json,
        } => ingest::run(settings, &paths, consume, follow_symlinks, json).await,
        Command::Status { json } => status::run(settings, json).await,
        Command::Export { to } => export::run(&settings, to.as_deref()).await,
        Command::Migrate => migrate::run(&settings).await,
        Command::Db { action } => db::run(&settings, action).await,
        Command::Generate(spec) => generate::run(spec).await,
    }
}

/// Connects to the configured (or embedded) database, migrated, as a pipeline context.
async fn connect(settings: Settings) -> anyhow::Result<PipelineCtx> {
    let target = database::resolve(&settings).await?;
    let store = Store::connect(&target.url, &settings)
        .await
        .with_context(|| format!("cannot use the database ({})", target.psql_command()))?;
    eprintln!("database: {}", target.psql_command());
    Ok(PipelineCtx {
        settings: Arc::new(settings),
        store,
    })
}

/// Cancels on SIGINT or SIGTERM: the owner of shutdown for every command.
async fn shutdown_on_signal(cancel: CancellationToken) {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
    tracing::info!(message = "Shutdown requested; finishing the delivery in hand.");
    cancel.cancel();
}
