//! sensor-etl: an ETL pipeline for sensor.community readings into PostgreSQL.
//!
//! The unit of work is a [`delivery::Delivery`]: a name, a byte source, where it came from and
//! what to do with the source after the commit. Dependencies point one way, from the edges
//! down (`docs/architecture.md` draws the whole path):
//!
//! - edges: [`commands`] (one module per command, dispatched by `main`), [`cli`], [`http`];
//! - [`sources`] of deliveries, each taking, acknowledging and disposing of its own: the
//!   watched inbox, files given on the command line, and the push journal (pushes kept on
//!   local disk while the database is away, drained behind the answer);
//! - [`pipeline`]: a delivery through the stages in one transaction, streamed or in a group
//!   commit, then settled (quarantine, error log) and reported to its source;
//! - stages: [`validate`] (format sniffing, row rules, quarantine output), [`transform`]
//!   (polars normalization and aggregates), [`store`] (pool, migrations, COPY, ledger, claims);
//! - consumers: [`lake`] (Delta Lake tables of what was loaded);
//! - bottom: [`config`], [`delivery`], [`telemetry`], [`database`] (which database: a
//!   configured one, or the embedded cluster), [`generate`] (test data), [`faults`] (named fault points for the tests), and
//!   [`error`], the crate-wide error above the stages' own.
//!
//! Shutdown is owned by the commands: they fire a `CancellationToken` on SIGINT/SIGTERM;
//! [`sources::watch::run`] then stops taking files and finishes or rolls back the one in hand.
//!
//! ```no_run
//! # async fn example() -> sensor_etl::error::Result<()> {
//! use std::sync::Arc;
//! use sensor_etl::config::Settings;
//! use sensor_etl::delivery::{Delivery, Disposition};
//! use sensor_etl::pipeline::{self, PipelineCtx};
//! use sensor_etl::store::Store;
//!
//! let settings = Arc::new(Settings::builtin());
//! let store = Store::connect("postgres://postgres@127.0.0.1/sensor_etl", &settings).await?;
//! let ctx = PipelineCtx { settings, store };
//! let delivery = Delivery::input_file(
//!     "data/2019-01-17_sds011_sensor_5331.csv".as_ref(),
//!     Disposition::LeaveInPlace,
//! );
//! let report = pipeline::process(&ctx, &delivery).await?;
//! println!("{} rows loaded, {} rejected", report.rows.loaded, report.rows.rejected);
//! # Ok(()) }
//! ```

#![deny(missing_docs)]

pub mod cli;
pub mod commands;
pub mod config;
pub mod database;
pub mod delivery;
pub mod error;
pub mod faults;
pub mod generate;
pub mod http;
pub mod lake;
pub mod pipeline;
pub mod sources;
pub mod store;
pub mod telemetry;
pub mod transform;
pub mod validate;
