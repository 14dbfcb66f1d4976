//! sensor-etl: a file-watching ETL pipeline for sensor.community CSV files into PostgreSQL.
//!
//! The crate map, in pipeline order:
//!
//! - [`watch`]: finds complete files in the inbox (notify events as hints, periodic scans as
//!   the truth), claims them against other workers ([`store::claims`]) and hands them to the
//!   [`pipeline`]: small files in group commits, large ones streamed in chunks; [`ingest`] does
//!   the same once over given paths.
//! - [`validate`]: sniffs the format ([`validate::format`]), checks every row against the rules
//!   ([`validate::rules`]) in bounded chunks, and writes rejected rows and reasons to quarantine
//!   ([`validate::quarantine`]).
//! - [`transform`]: polars normalization to canonical units and per-file aggregates, merged
//!   exactly across chunks.
//! - [`store`]: the PostgreSQL pool, migrations, binary COPY and the ingest ledger; one
//!   transaction per file.
//! - [`config`] (defaults < file < environment < flags), [`cli`], [`database`] /
//!   [`embedded_db`] (the configured or the embedded default database), [`http`] (metrics,
//!   health, readiness), [`telemetry`], [`generate`] (test data) and [`error`].
//!
//! Shutdown is owned by the caller: [`watch::run`] takes a `CancellationToken` and stops taking
//! files when it fires, after finishing or rolling back the file in hand.
//!
//! ```no_run
//! # async fn example() -> sensor_etl::error::Result<()> {
//! use std::sync::Arc;
//! use sensor_etl::{config::Settings, pipeline::{PipelineCtx, Disposition}, store::Store};
//!
//! let settings = Arc::new(Settings::builtin());
//! let store = Store::connect("postgres://postgres@127.0.0.1/sensor_etl", &settings).await?;
//! let ctx = PipelineCtx { settings, store };
//! let report = sensor_etl::pipeline::process_file(
//!     &ctx,
//!     "data/2019-01-17_sds011_sensor_5331.csv".as_ref(),
//!     Disposition::LeaveInPlace,
//! ).await?;
//! println!("{} rows loaded, {} rejected", report.rows_loaded, report.rows_rejected);
//! # Ok(()) }
//! ```

#![deny(missing_docs)]

pub mod cli;
pub mod config;
pub mod database;
pub mod embedded_db;
pub mod error;
pub mod generate;
pub mod http;
pub mod ingest;
pub mod pipeline;
pub mod store;
pub mod telemetry;
pub mod transform;
pub mod validate;
pub mod watch;
