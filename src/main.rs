//! Binary edge of sensor-etl: parses the command line, loads the configuration, installs
//! tracing and the signal handlers, runs the command and maps the outcome to an exit code.
//! Errors are printed with their whole cause chain.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use tokio_util::sync::CancellationToken;

use sensor_etl::cli::{exit, Cli, Command, DbAction};
use sensor_etl::config::{RawConfig, Settings};
use sensor_etl::ingest::{collect_inputs, ingest_files, IngestSummary};
use sensor_etl::pipeline::{Disposition, FileReport, PipelineCtx};
use sensor_etl::store::{self, Store};
use sensor_etl::{database, embedded_db, http, telemetry, validate, watch};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return ExitCode::from(if error.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            });
        }
    };
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(exit::FAILURE)
        }
    }
}

fn load_settings(cli: &Cli) -> anyhow::Result<Settings> {
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
    Ok(Settings::from_raw(raw)?)
}

fn run(cli: Cli) -> anyhow::Result<u8> {
    let mut settings = load_settings(&cli)?;
    if let Command::Run {
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
    let _log_guard = telemetry::init(Some(&settings.logs_dir));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(dispatch(cli.command, settings))
}

async fn dispatch(command: Command, settings: Settings) -> anyhow::Result<u8> {
    match command {
        Command::Validate { paths, json } => validate_command(&paths, json, &settings),
        Command::Run { .. } => {
            let cancel = CancellationToken::new();
            tokio::spawn(shutdown_on_signal(cancel.clone()));
            run_watcher(settings, cancel).await?;
            Ok(exit::OK)
        }
        Command::Ingest {
            paths,
            consume,
            json,
        } => ingest_command(settings, &paths, consume, json).await,
        Command::Status { json } => status_command(settings, json).await,
        Command::Migrate => {
            let target = database::resolve(&settings).await?;
            let pool = store::build_pool(&target.url, 1)?;
            let report = store::migrate(&pool).await.context("migration failed")?;
            println!(
                "{} migration(s) applied; database: {}",
                report.applied_migrations().len(),
                target.psql_command()
            );
            Ok(exit::OK)
        }
        Command::Db { action } => db_command(&settings, action).await,
        Command::Generate(spec) => {
            let written =
                tokio::task::spawn_blocking(move || sensor_etl::generate::generate(&spec))
                    .await?
                    .context("cannot write the generated files")?;
            println!("{} file(s) written", written.len());
            Ok(exit::OK)
        }
    }
}

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

/// `run`: serves the operator endpoints at once, then waits for the database (with backoff)
/// instead of failing when it is unreachable, then watches the inbox until `cancel` fires.
async fn run_watcher(settings: Settings, cancel: CancellationToken) -> anyhow::Result<()> {
    let target = database::resolve(&settings).await?;
    let pool = store::build_pool(&target.url, 8)?;
    let server = match settings.http_addr {
        Some(addr) => Some(http::serve(addr, pool.clone(), cancel.clone()).await?.1),
        None => None,
    };
    let mut delay = settings
        .retry
        .initial_delay
        .max(std::time::Duration::from_millis(50));
    let store = loop {
        match Store::from_pool(pool.clone(), &settings).await {
            Ok(store) => break Some(store),
            Err(error) if error.is_transient() => {
                tracing::warn!(
                    message = "Waiting for the database.",
                    database = %target.psql_command(),
                    retry_in_ms = delay.as_millis() as u64,
                    error = %telemetry::chain(&error)
                );
                telemetry::record_retry();
                tokio::select! {
                    () = cancel.cancelled() => break None,
                    () = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(settings.retry.max_delay);
            }
            Err(error) => {
                return Err(anyhow::Error::new(error).context(format!(
                    "cannot use the database ({})",
                    target.psql_command()
                )))
            }
        }
    };
    if let Some(store) = store {
        eprintln!("database: {}", target.psql_command());
        telemetry::record_database_available();
        let ctx = PipelineCtx {
            settings: Arc::new(settings),
            store,
        };
        watch::run(ctx, cancel.clone()).await?;
    }
    cancel.cancel();
    if let Some(server) = server {
        let _ = server.await;
    }
    Ok(())
}

/// Cancels on SIGINT or SIGTERM.
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
    tracing::info!(message = "Shutdown requested; finishing the current file.");
    cancel.cancel();
}

fn report_line(report: &FileReport) -> String {
    let mut line = format!(
        "{:<17} {}  rows read {}, loaded {}, rejected {}",
        report.status.as_str(),
        report.path.display(),
        report.rows_read,
        report.rows_loaded,
        report.rows_rejected
    );
    if let Some(reason) = &report.rejection {
        line.push_str(&format!("  ({reason})"));
    }
    line
}

fn print_summary(summary: &IngestSummary) {
    println!(
        "files: {} loaded, {} partially loaded, {} rejected, {} empty, {} duplicate, {} failed\n\
         rows: {} read, {} loaded, {} rejected",
        summary.loaded,
        summary.partially_loaded,
        summary.rejected,
        summary.empty,
        summary.duplicate,
        summary.failed,
        summary.rows_read,
        summary.rows_loaded,
        summary.rows_rejected
    );
}

async fn ingest_command(
    settings: Settings,
    paths: &[PathBuf],
    consume: bool,
    json: bool,
) -> anyhow::Result<u8> {
    let (files, missing) = collect_inputs(paths);
    for path in &missing {
        eprintln!("error: {} does not exist", path.display());
    }
    let ctx = connect(settings).await?;
    let cancel = CancellationToken::new();
    tokio::spawn(shutdown_on_signal(cancel.clone()));
    let disposition = if consume {
        Disposition::Consume
    } else {
        Disposition::LeaveInPlace
    };
    let mut reports = Vec::new();
    let progress = (!json && std::io::stdout().is_terminal()).then(|| {
        let bar = indicatif::ProgressBar::new(files.len() as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} files {elapsed} {wide_msg}",
            )
            .expect("valid template"),
        );
        bar
    });
    let summary = ingest_files(&ctx, &files, disposition, &cancel, |path, outcome| {
        let line = match outcome {
            Ok(report) => {
                reports.push(report.clone());
                report_line(report)
            }
            Err(error) => format!(
                "failed            {}  {}",
                path.display(),
                telemetry::chain(error)
            ),
        };
        match &progress {
            Some(bar) => {
                bar.println(line);
                bar.inc(1);
                bar.set_message(
                    path.file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                );
            }
            None if !json => println!("{line}"),
            None => {}
        }
    })
    .await;
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({ "files": reports, "summary": summary })
            )?
        );
    } else {
        print_summary(&summary);
    }
    Ok(if summary.failed > 0 || !missing.is_empty() {
        exit::FAILURE
    } else if summary.has_rejects() {
        exit::REJECTS
    } else {
        exit::OK
    })
}

fn validate_command(paths: &[PathBuf], json: bool, settings: &Settings) -> anyhow::Result<u8> {
    let (files, missing) = collect_inputs(paths);
    for path in &missing {
        eprintln!("error: {} does not exist", path.display());
    }
    let mut any_rejects = false;
    let mut out = Vec::new();
    for path in &files {
        let run = validate::dry_run(path, settings)
            .with_context(|| format!("cannot read {}", path.display()))?;
        any_rejects |= run.file_rejection.is_some() || !run.rejects.is_empty();
        if json {
            out.push(serde_json::json!({
                "file": path,
                "rows_read": run.rows_read,
                "rows_would_load": if run.file_rejection.is_some() { 0 } else { run.rows_accepted },
                "readings_would_load": if run.file_rejection.is_some() { 0 } else { run.reading_count },
                "rows_rejected": run.rejects.len(),
                "file_rejection": run.file_rejection.as_ref().map(|r| serde_json::json!({"code": r.code, "message": r.message})),
                "rejects": run.rejects.iter().flat_map(|r| r.violations.iter().map(move |v| serde_json::json!({
                    "line": r.position.line, "column": v.column, "value": v.value, "code": v.reason.code(), "message": v.message,
                }))).collect::<Vec<_>>(),
            }));
            continue;
        }
        match &run.file_rejection {
            Some(rejection) => println!(
                "{}: would be REJECTED whole ({}): {} [{} rows read, {} with violations]",
                path.display(),
                rejection.code,
                rejection.message,
                run.rows_read,
                run.rejects.len()
            ),
            None => println!(
                "{}: {} rows read, {} would load ({} readings), {} would be rejected",
                path.display(),
                run.rows_read,
                run.rows_accepted,
                run.reading_count,
                run.rejects.len()
            ),
        }
        for reject in &run.rejects {
            for violation in &reject.violations {
                println!(
                    "  line {}: {} column={} value={:?}: {}",
                    reject.position.line,
                    violation.reason.code(),
                    violation.column.as_deref().unwrap_or("-"),
                    violation.value.as_deref().unwrap_or(""),
                    violation.message
                );
            }
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    Ok(if !missing.is_empty() {
        exit::FAILURE
    } else if any_rejects {
        exit::REJECTS
    } else {
        exit::OK
    })
}

async fn status_command(settings: Settings, json: bool) -> anyhow::Result<u8> {
    let target = database::resolve(&settings).await?;
    let pool = store::build_pool(&target.url, 1)?;
    store::migrate(&pool)
        .await
        .context("cannot prepare the database")?;
    let client = pool.get().await.context("cannot connect to the database")?;
    let summary = store::ledger::summary(&client, 10).await?;
    let (waiting, _) = collect_inputs(std::slice::from_ref(&settings.data_dir));
    if json {
        let value = serde_json::json!({
            "database": target.psql_command(),
            "files_by_status": summary.by_status,
            "duplicate_deliveries": summary.duplicate_deliveries,
            "reading_count": summary.reading_count,
            "files_waiting": waiting.len(),
            "recent_problems": summary.recent_problems,
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(exit::OK);
    }
    println!("database: {}", target.psql_command());
    println!(
        "{:<17} {:>7} {:>12} {:>12} {:>12}",
        "status", "files", "rows read", "loaded", "rejected"
    );
    for s in &summary.by_status {
        println!(
            "{:<17} {:>7} {:>12} {:>12} {:>12}",
            s.status, s.files, s.rows_read, s.rows_loaded, s.rows_rejected
        );
    }
    println!("duplicate deliveries: {}", summary.duplicate_deliveries);
    println!("readings stored: {}", summary.reading_count);
    println!(
        "files waiting in {}: {}",
        settings.data_dir.display(),
        waiting.len()
    );
    if !summary.recent_problems.is_empty() {
        println!("recent problems:");
        for p in &summary.recent_problems {
            println!(
                "  #{} {} {} ({} rows rejected){}",
                p.file_id,
                p.file_name,
                p.status,
                p.rows_rejected,
                p.error
                    .as_deref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            );
        }
    }
    Ok(exit::OK)
}

async fn db_command(settings: &Settings, action: DbAction) -> anyhow::Result<u8> {
    match action {
        DbAction::Start | DbAction::Url => {
            let target = database::resolve(settings).await?;
            println!("{}", target.psql_command());
        }
        DbAction::Stop => {
            let cluster = embedded_db::EmbeddedCluster::new(&settings.state_dir.join("postgres"))?;
            cluster.stop()?;
            println!(
                "embedded PostgreSQL in {} stopped",
                cluster.root().display()
            );
        }
    }
    Ok(exit::OK)
}
