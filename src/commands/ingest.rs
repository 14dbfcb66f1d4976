//! `sensor-etl ingest PATH…`: the given files through the pipeline once, with a progress bar
//! on a terminal, one line per file and a summary (or JSON), and the documented exit codes.

use std::io::IsTerminal;
use std::path::PathBuf;

use tokio_util::sync::CancellationToken;

use crate::cli::exit;
use crate::config::Settings;
use crate::delivery::Disposition;
use crate::pipeline::DeliveryReport;
use crate::pipeline::IngestSummary;
use crate::sources::files::{collect_inputs, ingest_files};
use crate::telemetry;

use super::{connect, shutdown_on_signal};

/// Loads `paths`; `consume` moves committed files like `run` does.
///
/// # Errors
/// The database cannot be used.
pub async fn run(
    settings: Settings,
    paths: &[PathBuf],
    consume: bool,
    follow_symlinks: bool,
    json: bool,
) -> anyhow::Result<u8> {
    let (files, missing) = collect_inputs(paths, follow_symlinks);
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
    // Reads of what was just loaded use the index at once (see `store::summarize`). Files
    // whose every line was stored already added no range.
    if summary.rows.loaded > 0 {
        if let Err(error) = ctx.store.summarize_readings_index().await {
            tracing::warn!(
                message = "The readings index was not summarized; reads stay correct and the next load or autovacuum does it.",
                error = %telemetry::chain(&error)
            );
        }
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

fn report_line(report: &DeliveryReport) -> String {
    let source = report
        .path
        .as_ref()
        .map_or_else(|| report.file_name.clone(), |p| p.display().to_string());
    let mut line = format!(
        "{:<17} {}  rows read {}, loaded {}, rejected {}",
        report.status.as_str(),
        source,
        report.rows.read,
        report.rows.loaded,
        report.rows.rejected
    );
    if report.rows.duplicate > 0 {
        line.push_str(&format!(", already stored {}", report.rows.duplicate));
    }
    if let Some(reason) = &report.rejection {
        line.push_str(&format!("  ({reason})"));
    }
    line
}

fn print_summary(summary: &IngestSummary) {
    println!(
        "files: {} loaded, {} partially loaded, {} rejected, {} empty, {} duplicate, {} failed\n\
         rows: {} read, {} loaded, {} rejected, {} already stored",
        summary.loaded,
        summary.partially_loaded,
        summary.rejected,
        summary.empty,
        summary.duplicate,
        summary.failed,
        summary.rows.read,
        summary.rows.loaded,
        summary.rows.rejected,
        summary.rows.duplicate
    );
}
