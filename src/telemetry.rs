//! Telemetry: tracing subscribers (readable terminal output plus daily-rotated JSON logs in
//! `logs/`), error-chain formatting, and the Prometheus metrics the pipeline records. It sits
//! at the bottom of the crate: it imports nothing of it, and takes plain values.
//!
//! `RUST_LOG` filters the file log (default `info`) and, for `Terminal::Narrate`, the terminal
//! too; `Terminal::Problems` shows only warnings and errors there. Colour only when stderr is
//! a terminal. Metric and label names are the
//! constants below; recording never fails and never blocks the pipeline. The Prometheus
//! recorder is installed once per process (`metrics_handle`).

use std::io::IsTerminal;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter, Layer};

/// Files processed, label `status` (loaded, partially_loaded, rejected, empty, duplicate, failed).
pub const FILES_TOTAL: &str = "sensor_etl_files_total";
/// Rows loaded.
pub const ROWS_LOADED_TOTAL: &str = "sensor_etl_rows_loaded_total";
/// Rows rejected.
pub const ROWS_REJECTED_TOTAL: &str = "sensor_etl_rows_rejected_total";
/// Violations of rejected rows, label `code` (the rule code).
pub const VIOLATIONS_TOTAL: &str = "sensor_etl_violations_total";
/// Retries of transient database errors.
pub const RETRIES_TOTAL: &str = "sensor_etl_retries_total";
/// Files waiting in the inbox.
pub const FILES_WAITING: &str = "sensor_etl_files_waiting";
/// Age of the oldest file waiting in the inbox, in seconds.
pub const OLDEST_WAITING_AGE_SECONDS: &str = "sensor_etl_oldest_waiting_file_age_seconds";
/// Per-file processing time, in seconds (histogram).
pub const FILE_PROCESSING_SECONDS: &str = "sensor_etl_file_processing_seconds";
/// 1 while the database is unreachable and work waits for it.
pub const DATABASE_WAITING: &str = "sensor_etl_database_waiting";
/// Files waiting out a local fault (disk full, permission denied, a source not final yet).
pub const LOCAL_FAULTS: &str = "sensor_etl_files_local_fault";

/// HTTP requests answered, label `status` (the code).
pub const HTTP_REQUESTS_TOTAL: &str = "sensor_etl_http_requests_total";
/// Request body bytes received (after decompression).
pub const HTTP_RECEIVED_BYTES_TOTAL: &str = "sensor_etl_http_received_bytes_total";
/// Time from a request to its answer, in seconds (histogram).
pub const HTTP_REQUEST_SECONDS: &str = "sensor_etl_http_request_seconds";

/// Request body bytes held by the HTTP API now.
pub const HTTP_IN_FLIGHT_BYTES: &str = "sensor_etl_http_in_flight_bytes";

/// Deliveries per group commit.
const GROUP_DELIVERIES: &str = "sensor_etl_group_deliveries";
/// Lake exports of `run`, by outcome (`ok`, `failed`).
pub const LAKE_EXPORTS_TOTAL: &str = "sensor_etl_lake_exports_total";
/// Rows added to the lake by `run`, by table.
pub const LAKE_ROWS_TOTAL: &str = "sensor_etl_lake_rows_exported_total";
/// The highest delivery in the lake.
pub const LAKE_HORIZON: &str = "sensor_etl_lake_horizon";

/// Bodies in the push journal waiting to be loaded.
pub const JOURNAL_BODIES: &str = "sensor_etl_journal_bodies";
/// Bytes of those bodies in the journal.
pub const JOURNAL_BYTES: &str = "sensor_etl_journal_bytes";
/// Seconds since the oldest body waiting in the journal was received.
pub const JOURNAL_OLDEST_AGE_SECONDS: &str = "sensor_etl_journal_oldest_age_seconds";
/// Bodies loaded from the journal (its rate is the drain rate).
pub const JOURNAL_LOADED_TOTAL: &str = "sensor_etl_journal_loaded_total";

/// Files waiting out a local fault now, for readiness.
static LOCAL_FAULT_FILES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// What the terminal shows of the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Terminal {
    /// Everything `RUST_LOG` lets through (default `info`): a long-running service.
    Narrate,
    /// Warnings and errors only: a one-shot command that prints its own results.
    Problems,
}

/// Libraries whose warnings are about their own workings, not the user's data: the Delta
/// kernel warns each time it stops reading a table's log early, as it is meant to.
const QUIET_LIBRARIES: &str = "delta_kernel=error";

/// Installs the global subscriber. Keep the guard alive until exit so the file log is flushed.
/// Without a writable `logs_dir`, only the terminal output is installed.
pub fn init(logs_dir: Option<&Path>, terminal: Terminal) -> Option<WorkerGuard> {
    let filter = || {
        EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| EnvFilter::new(format!("info,{QUIET_LIBRARIES}")))
    };
    let terminal_filter = match terminal {
        Terminal::Narrate => filter(),
        Terminal::Problems => EnvFilter::new(format!("warn,{QUIET_LIBRARIES}")),
    };
    let terminal = fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .with_filter(terminal_filter);
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
                .with_ansi(false)
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

/// The process's Prometheus recorder, installed on first use.
pub fn metrics_handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full(FILE_PROCESSING_SECONDS.to_owned()),
                &[
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                    300.0,
                ],
            )
            .expect("bucket list is not empty");
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (tests): the handle still renders ours.
        let _ = metrics::set_global_recorder(recorder);
        describe();
        handle
    })
}

fn describe() {
    metrics::describe_counter!(FILES_TOTAL, "Files processed, by outcome.");
    metrics::describe_counter!(ROWS_LOADED_TOTAL, "Rows loaded.");
    metrics::describe_counter!(ROWS_REJECTED_TOTAL, "Rows rejected.");
    metrics::describe_counter!(
        VIOLATIONS_TOTAL,
        "Violations of rejected rows, by rule code."
    );
    metrics::describe_counter!(RETRIES_TOTAL, "Retries of transient database errors.");
    metrics::describe_gauge!(FILES_WAITING, "Files waiting in the inbox.");
    metrics::describe_gauge!(
        OLDEST_WAITING_AGE_SECONDS,
        "Age of the oldest waiting file, in seconds."
    );
    metrics::describe_histogram!(
        FILE_PROCESSING_SECONDS,
        "Per-file processing time, in seconds."
    );
    metrics::describe_gauge!(DATABASE_WAITING, "1 while work waits for the database.");
    metrics::describe_counter!(
        HTTP_REQUESTS_TOTAL,
        "HTTP requests answered, by status code."
    );
    metrics::describe_counter!(
        HTTP_RECEIVED_BYTES_TOTAL,
        "Request body bytes received, after decompression."
    );
    metrics::describe_histogram!(
        HTTP_REQUEST_SECONDS,
        "Time to answer a request, in seconds."
    );
    metrics::describe_histogram!(
        GROUP_DELIVERIES,
        "Deliveries committed together in one transaction (group commit)."
    );
    metrics::describe_gauge!(
        LOCAL_FAULTS,
        "Files waiting out a local fault (disk full, permission denied, not final yet)."
    );
    metrics::describe_counter!(LAKE_EXPORTS_TOTAL, "Lake exports, by outcome.");
    metrics::describe_counter!(LAKE_ROWS_TOTAL, "Rows added to the lake, by table.");
    metrics::describe_gauge!(LAKE_HORIZON, "The highest delivery in the lake.");
}

/// A lake export that succeeded: rows added per table, and the delivery it reached.
pub fn record_lake_export(added: impl IntoIterator<Item = (&'static str, u64)>, horizon: i64) {
    metrics::counter!(LAKE_EXPORTS_TOTAL, "outcome" => "ok").increment(1);
    for (table, rows) in added {
        metrics::counter!(LAKE_ROWS_TOTAL, "table" => table).increment(rows);
    }
    metrics::gauge!(LAKE_HORIZON).set(horizon as f64);
}

/// A lake export that failed.
pub fn record_lake_export_failed() {
    metrics::counter!(LAKE_EXPORTS_TOTAL, "outcome" => "failed").increment(1);
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

/// What a processed delivery adds to the metrics.
#[derive(Debug, Clone, Copy)]
pub struct FileOutcome<'a> {
    /// Ledger status (`loaded`, `duplicate`, …).
    pub status: &'static str,
    /// What became of its rows.
    pub rows: crate::delivery::RowCounts,
    /// Violations by rule code.
    pub violations: &'a [(&'static str, u64)],
    /// Wall time.
    pub elapsed: Duration,
}

/// Records a processed file.
pub fn record_file(outcome: FileOutcome<'_>) {
    metrics::counter!(FILES_TOTAL, "status" => outcome.status).increment(1);
    metrics::counter!(ROWS_LOADED_TOTAL).increment(outcome.rows.loaded);
    metrics::counter!(ROWS_REJECTED_TOTAL).increment(outcome.rows.rejected);
    for (code, count) in outcome.violations {
        metrics::counter!(VIOLATIONS_TOTAL, "code" => *code).increment(*count);
    }
    metrics::histogram!(FILE_PROCESSING_SECONDS).record(outcome.elapsed.as_secs_f64());
}

/// Records a file that failed permanently.
pub fn record_failed_file() {
    metrics::counter!(FILES_TOTAL, "status" => "failed").increment(1);
}

/// Records a retry, and that work waits for the database.
pub fn record_retry() {
    metrics::counter!(RETRIES_TOTAL).increment(1);
    metrics::gauge!(DATABASE_WAITING).set(1.0);
}

/// Records that the database answers again.
pub fn record_database_available() {
    metrics::gauge!(DATABASE_WAITING).set(0.0);
}

/// Records the inbox backlog.
pub fn record_inbox(waiting: usize, oldest_age: Duration) {
    metrics::gauge!(FILES_WAITING).set(waiting as f64);
    metrics::gauge!(OLDEST_WAITING_AGE_SECONDS).set(oldest_age.as_secs_f64());
}

/// Records how many files wait out a local fault.
pub fn record_local_faults(files: usize) {
    LOCAL_FAULT_FILES.store(files, std::sync::atomic::Ordering::Relaxed);
    metrics::gauge!(LOCAL_FAULTS).set(files as f64);
}

/// How many files wait out a local fault.
pub fn local_faults() -> usize {
    LOCAL_FAULT_FILES.load(std::sync::atomic::Ordering::Relaxed)
}

/// Records one answered HTTP request.
pub fn record_http_request(status: u16, received_bytes: u64, elapsed: Duration) {
    metrics::counter!(HTTP_REQUESTS_TOTAL, "status" => status.to_string()).increment(1);
    metrics::counter!(HTTP_RECEIVED_BYTES_TOTAL).increment(received_bytes);
    metrics::histogram!(HTTP_REQUEST_SECONDS).record(elapsed.as_secs_f64());
}

/// Records the push journal's depth.
pub fn record_journal(bodies: u64, bytes: u64, oldest_age_seconds: f64) {
    metrics::gauge!(JOURNAL_BODIES).set(bodies as f64);
    metrics::gauge!(JOURNAL_BYTES).set(bytes as f64);
    metrics::gauge!(JOURNAL_OLDEST_AGE_SECONDS).set(oldest_age_seconds);
}

/// Records bodies loaded from the push journal.
pub fn record_journal_loaded(bodies: usize) {
    metrics::counter!(JOURNAL_LOADED_TOTAL).increment(bodies as u64);
}

/// Records the size of a group commit.
pub fn record_group_size(deliveries: usize) {
    metrics::histogram!(GROUP_DELIVERIES).record(deliveries as f64);
}

/// Counts a request body in `sensor_etl_http_in_flight_bytes` while it lives.
#[must_use = "the bytes count as in flight while the guard lives"]
pub struct InFlightBytes(u64);

impl InFlightBytes {
    /// Adds `bytes` to the gauge until the guard is dropped.
    pub fn hold(bytes: u64) -> Self {
        metrics::gauge!(HTTP_IN_FLIGHT_BYTES).increment(bytes as f64);
        Self(bytes)
    }
}

impl Drop for InFlightBytes {
    fn drop(&mut self) {
        metrics::gauge!(HTTP_IN_FLIGHT_BYTES).decrement(self.0 as f64);
    }
}
