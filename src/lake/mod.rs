//! The lake: what was loaded, as Delta Lake tables under a folder, for analytics engines
//! (DuckDB, Spark, Trino, polars). Depends on the store for its reads; nothing depends on it
//! but the commands that export (`export`, and `run` with `lake_dir`).
//!
//! Three tables, `readings`, `files` and `aggregates`, with the columns of `v_readings`,
//! `v_files` and `v_aggregates`; `readings` partitioned by the UTC date of `ts`; zstd Parquet.
//!
//! Guarantees:
//! - Exactly once and incremental: an export first reads the delivery horizon (see
//!   `store::export::horizon`: every delivery up to it is committed), then adds to each table
//!   the rows of the deliveries between the table's own horizon and that one, in one Delta
//!   commit that records the new horizon as Delta's application-transaction marker. A table's
//!   rows and its marker become visible together or not at all, so a crash at any moment
//!   leaves each table at its previous export or the new one, and the next export completes
//!   whatever is missing (and deletes the files the interrupted one left). Running it again
//!   adds nothing.
//! - One export at a time per database: an export holds a session advisory lock on a
//!   connection of its own, released when it ends or its process dies.
//! - Replaced readings leave: lines a delivery replaced (`on_conflict = "replace"`) after an
//!   export had them are taken out of the `readings` files that hold them, in the commit that
//!   adds their replacements (see `replaced`).
//! - Bounded memory: readings stream from PostgreSQL and at most a fixed number wait to be
//!   written (see `readings`).

mod columns;
mod deliveries;
mod readings;
mod replaced;
mod table;

use std::path::{Path, PathBuf};
use std::time::Duration;

use deadpool_postgres::Pool;
use deltalake::DeltaTableError;
use tokio_util::sync::CancellationToken;

use crate::store::export::{self as source, LedgerView};
use crate::store::StoreError;
use table::LakeTable;

/// Advisory lock key held by the export in progress.
const EXPORT_LOCK_KEY: i64 = 0x5345_4E53_4C41_4B45;

/// Failures of an export.
#[derive(Debug, thiserror::Error)]
pub enum LakeError {
    /// The database failed.
    #[error("reading the database failed")]
    Store(#[from] StoreError),
    /// The lake's folder cannot be made or read.
    #[error("cannot use the folder {path}")]
    Folder {
        /// The folder.
        path: PathBuf,
        /// What the file system said.
        #[source]
        source: std::io::Error,
    },
    /// A Delta table could not be opened, written or committed.
    #[error("the Delta table at {path} failed")]
    Delta {
        /// The table's folder.
        path: PathBuf,
        /// What delta-rs said.
        #[source]
        source: DeltaTableError,
    },
    /// A batch could not be built.
    #[error("building a batch failed")]
    Arrow(#[from] deltalake::arrow::error::ArrowError),
    /// The task writing Parquet files ended abnormally.
    #[error("the lake's writer task failed: {0}")]
    Writer(String),
    /// A stored row points outside the dictionaries read with it.
    #[error("the stored readings of delivery {file_id}, line {line} are inconsistent: {what}")]
    Inconsistent {
        /// The delivery.
        file_id: i64,
        /// The line.
        line: i32,
        /// What is wrong.
        what: String,
    },
    /// The lake holds deliveries this database has not got: it was written from another one.
    #[error(
        "the table at {path} holds deliveries up to {lake}, but this database has only {database}: \
         the lake was written from another database; export to a new folder"
    )]
    Ahead {
        /// The table's folder.
        path: PathBuf,
        /// The table's horizon.
        lake: i64,
        /// The database's.
        database: i64,
    },
}

/// What an export added to one table.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TableReport {
    /// The table.
    pub table: &'static str,
    /// The delivery the table held up to before.
    pub after: i64,
    /// Rows added.
    pub added: u64,
}

/// What one export did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ExportReport {
    /// The highest delivery now in every table.
    pub horizon: i64,
    /// Per table.
    pub tables: Vec<TableReport>,
}

/// The three tables and how each is filled.
#[derive(Debug, Clone, Copy)]
enum Table {
    Readings,
    Files,
    Aggregates,
}

impl Table {
    const ALL: [Table; 3] = [Table::Readings, Table::Files, Table::Aggregates];

    fn name(self) -> &'static str {
        match self {
            Table::Readings => "readings",
            Table::Files => "files",
            Table::Aggregates => "aggregates",
        }
    }

    async fn open(self, dir: &Path) -> Result<LakeTable, LakeError> {
        let path = dir.join(self.name());
        match self {
            Table::Readings => LakeTable::open(path, columns::READINGS, Some("date")).await,
            Table::Files => LakeTable::open(path, columns::FILES, None).await,
            Table::Aggregates => LakeTable::open(path, columns::AGGREGATES, None).await,
        }
    }

    async fn append(
        self,
        tx: &tokio_postgres::Transaction<'_>,
        table: LakeTable,
        after: i64,
        up_to: i64,
    ) -> Result<u64, LakeError> {
        match self {
            Table::Readings => readings::append(tx, table, after, up_to).await,
            Table::Files => {
                let (view, columns) = (LedgerView::Files, columns::FILES);
                deliveries::append(tx, table, view, columns, after, up_to).await
            }
            Table::Aggregates => {
                let (view, columns) = (LedgerView::Aggregates, columns::AGGREGATES);
                deliveries::append(tx, table, view, columns, after, up_to).await
            }
        }
    }
}

/// Adds to the tables under `dir` everything delivered since the previous export.
///
/// # Errors
/// The database or a table failed, or the lake was written from another database. Each table
/// is then at its previous export or this one, never in between.
pub async fn export(pool: &Pool, dir: &Path) -> Result<ExportReport, LakeError> {
    // Dropping the detached connection ends its session and with it the lock.
    let exclusive = deadpool_postgres::Object::take(pool.get().await.map_err(StoreError::from)?);
    exclusive
        .execute("SELECT pg_advisory_lock($1)", &[&EXPORT_LOCK_KEY])
        .await
        .map_err(StoreError::from)?;
    let horizon = source::horizon(pool).await?;
    let mut client = pool.get().await.map_err(StoreError::from)?;
    let tx = crate::store::snapshot_transaction(&mut client).await?;
    let mut report = ExportReport {
        horizon,
        tables: Vec::new(),
    };
    for kind in Table::ALL {
        let mut table = kind.open(dir).await?;
        let orphans = table.delete_uncommitted().await?;
        if orphans > 0 {
            tracing::info!(
                message = "Deleted the files of an export that did not commit.",
                table = %dir.join(kind.name()).display(),
                files = orphans
            );
        }
        let after = table.horizon().await?;
        if after > horizon {
            return Err(LakeError::Ahead {
                path: dir.join(kind.name()),
                lake: after,
                database: horizon,
            });
        }
        let added = if after < horizon {
            kind.append(&tx, table, after, horizon).await?
        } else {
            0
        };
        report.tables.push(TableReport {
            table: kind.name(),
            after,
            added,
        });
    }
    tx.commit().await.map_err(StoreError::from)?;
    drop(exclusive);
    Ok(report)
}

/// Keeps the lake under `dir` up to date until `cancel`: every `interval`, when something was
/// delivered since the last export, exports it. Failures are logged and retried at the next
/// interval; they never stop the pipeline.
pub async fn keep_up_to_date(
    pool: Pool,
    dir: PathBuf,
    interval: Duration,
    cancel: CancellationToken,
) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut exported = None;
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = ticks.tick() => {}
        }
        match source::latest_delivery(&pool).await {
            Ok(latest) if Some(latest) == exported => continue,
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(
                    message = "Cannot check the lake for new deliveries; trying again later.",
                    lake = %dir.display(),
                    error = %crate::telemetry::chain(&error)
                );
                continue;
            }
        }
        let outcome = tokio::select! {
            () = cancel.cancelled() => return,
            outcome = export(&pool, &dir) => outcome,
        };
        match outcome {
            Ok(report) => {
                exported = Some(report.horizon);
                crate::telemetry::record_lake_export(
                    report.tables.iter().map(|t| (t.table, t.added)),
                    report.horizon,
                );
                let added = |name: &str| {
                    report
                        .tables
                        .iter()
                        .find(|t| t.table == name)
                        .map_or(0, |t| t.added)
                };
                tracing::info!(
                    message = "Lake updated.",
                    lake = %dir.display(),
                    horizon = report.horizon,
                    readings = added("readings"),
                    files = added("files"),
                    aggregates = added("aggregates")
                );
            }
            Err(error) => {
                crate::telemetry::record_lake_export_failed();
                tracing::warn!(
                    message = "Lake export failed; trying again at the next interval.",
                    lake = %dir.display(),
                    error = %crate::telemetry::chain(&error)
                );
            }
        }
    }
}
