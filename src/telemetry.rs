//! Telemetry: tracing subscribers (readable terminal output plus daily-rotated JSON logs in
//! `logs/`), error-chain formatting, and the process-wide counters the pipeline updates.
//!
//! `RUST_LOG` filters both outputs (default `info`). Counters are plain atomics read by
//! `status`-style reporting; they never fail and never block the pipeline.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter, Layer};

use crate::pipeline::FileReport;
use crate::store::ledger::FileStatus;

/// Installs the global subscriber. Keep the guard alive until exit so the file log is flushed.
/// Without a writable `logs_dir`, only the terminal output is installed.
pub fn init(logs_dir: Option<&Path>) -> Option<WorkerGuard> {
    let filter = || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let terminal = fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_filter(filter());
    let file = logs_dir.and_then(|dir| {
        std::fs::create_dir_all(dir).ok()?;
        let appender = tracing_appender::rolling::Builder::new()
            .rotation(tracing_appender::rolling::Rotation::DAILY)
            .filename_prefix("sensor-etl")
            .filename_suffix("log")
            .max_log_files(14)
            .build(dir)
            .ok()?;
        Some(tracing_appender::non_blocking(appender))
    });
    match file {
        Some((writer, guard)) => {
            let json = fmt::layer()
                .json()
                .with_writer(writer)
                .with_filter(filter());
            let _ = tracing_subscriber::registry()
                .with(terminal)
                .with(json)
                .try_init();
            Some(guard)
        }
        None => {
            let _ = tracing_subscriber::registry().with(terminal).try_init();
            None
        }
    }
}

/// An error and all its causes, `outer: inner: innermost`.
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Process-wide counters.
#[derive(Debug, Default)]
pub struct Counters {
    /// Files by outcome: loaded, partially loaded, rejected, empty, duplicate.
    pub files: [AtomicU64; 5],
    /// Rows loaded.
    pub rows_loaded: AtomicU64,
    /// Rows rejected.
    pub rows_rejected: AtomicU64,
    /// Retries of transient database errors.
    pub retries: AtomicU64,
}

/// The counters of this process.
pub static COUNTERS: Counters = Counters {
    files: [
        AtomicU64::new(0),
        AtomicU64::new(0),
        AtomicU64::new(0),
        AtomicU64::new(0),
        AtomicU64::new(0),
    ],
    rows_loaded: AtomicU64::new(0),
    rows_rejected: AtomicU64::new(0),
    retries: AtomicU64::new(0),
};

fn status_index(status: FileStatus) -> usize {
    match status {
        FileStatus::Loaded => 0,
        FileStatus::PartiallyLoaded => 1,
        FileStatus::Rejected => 2,
        FileStatus::Empty => 3,
        FileStatus::Duplicate => 4,
    }
}

/// Counts a processed file.
pub fn record_file(report: &FileReport) {
    COUNTERS.files[status_index(report.status)].fetch_add(1, Ordering::Relaxed);
    COUNTERS
        .rows_loaded
        .fetch_add(report.rows_loaded, Ordering::Relaxed);
    COUNTERS
        .rows_rejected
        .fetch_add(report.rows_rejected, Ordering::Relaxed);
}

/// Counts a retry.
pub fn record_retry() {
    COUNTERS.retries.fetch_add(1, Ordering::Relaxed);
}
