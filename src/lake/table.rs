//! One Delta table of the lake: opened (or created with its schema), asked how far it got, and
//! appended to in one commit that also records the new horizon as Delta's
//! application-transaction marker (`txn`, app id `sensor-etl`). The Parquet files of an append
//! are written before the commit and are invisible until it; files of an append that never
//! committed are never read, and the next export deletes them.

use std::path::{Path, PathBuf};

use delta_kernel::expressions::Scalar;
use deltalake::arrow::record_batch::RecordBatch;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::kernel::{Action, Add, Remove, Transaction};
use deltalake::operations::vacuum::VacuumMode;
use deltalake::parquet::basic::{Compression, Encoding, ZstdLevel};
use deltalake::parquet::file::properties::WriterProperties;
use deltalake::parquet::schema::types::ColumnPath;
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::writer::{DeltaWriter, RecordBatchWriter, WriteMode};
use deltalake::{DeltaOps, DeltaTable, DeltaTableError};

use super::columns::{self, Column, Kind};
use super::LakeError;

/// The application id of sensor-etl's markers in the Delta log.
const APP_ID: &str = "sensor-etl";
/// zstd's level for the Parquet pages: 3 is its default, the knee of size against time.
const ZSTD_LEVEL: i32 = 3;

/// An open lake table.
pub struct LakeTable {
    path: PathBuf,
    table: DeltaTable,
    partition: Option<&'static str>,
}

impl LakeTable {
    /// Opens the table at `path`, creating it with `columns` (partitioned by `partition`) when
    /// there is none yet.
    ///
    /// # Errors
    /// The folder cannot be made or read, or holds something that is not a Delta table.
    pub async fn open(
        path: PathBuf,
        columns: &[Column],
        partition: Option<&'static str>,
    ) -> Result<LakeTable, LakeError> {
        std::fs::create_dir_all(&path).map_err(|source| LakeError::Folder {
            path: path.clone(),
            source,
        })?;
        let absolute = path.canonicalize().map_err(|source| LakeError::Folder {
            path: path.clone(),
            source,
        })?;
        let url = url::Url::from_directory_path(&absolute).map_err(|()| LakeError::Delta {
            path: path.clone(),
            source: DeltaTableError::Generic("not an absolute folder".into()),
        })?;
        let table = match deltalake::open_table(url.clone()).await {
            Ok(table) => table,
            Err(DeltaTableError::NotATable(_)) => DeltaOps::try_from_uri(url)
                .await
                .map_err(delta_error(&path))?
                .create()
                .with_columns(columns::delta_fields(columns))
                .with_partition_columns(partition)
                .await
                .map_err(delta_error(&path))?,
            Err(other) => return Err(delta_error(&path)(other)),
        };
        Ok(LakeTable {
            path,
            table,
            partition,
        })
    }

    /// Deletes the files of appends that never committed (an export killed or failed before
    /// its commit): Delta's full vacuum, which removes every data file the log does not
    /// reference. Nothing is ever removed from the log, so those are exactly the orphans.
    /// Call only under the export lock, when no other export can be writing files. Returns
    /// how many were deleted.
    ///
    /// # Errors
    /// The folder cannot be listed or a file cannot be deleted.
    pub async fn delete_uncommitted(&mut self) -> Result<usize, LakeError> {
        let vacuum = |table: DeltaTable, dry_run: bool| {
            DeltaOps::from(table)
                .vacuum()
                .with_mode(VacuumMode::Full)
                .with_retention_period(chrono::Duration::zero())
                .with_enforce_retention_duration(false)
                .with_dry_run(dry_run)
        };
        // A dry run first: a vacuum that deletes nothing would still add a version.
        let (table, found) = vacuum(self.table.clone(), true)
            .await
            .map_err(delta_error(&self.path))?;
        if found.files_deleted.is_empty() {
            self.table = table;
            return Ok(0);
        }
        let (table, deleted) = vacuum(table, false)
            .await
            .map_err(delta_error(&self.path))?;
        self.table = table;
        Ok(deleted.files_deleted.len())
    }

    /// The horizon of the last committed append (0 for a new table).
    ///
    /// # Errors
    /// The Delta log cannot be read.
    pub async fn horizon(&self) -> Result<i64, LakeError> {
        Ok(self
            .table
            .snapshot()
            .map_err(delta_error(&self.path))?
            .transaction_version(self.table.log_store().as_ref(), APP_ID)
            .await
            .map_err(delta_error(&self.path))?
            .unwrap_or(0))
    }

    /// A writer of this table's Parquet files: zstd, delta encoding for the columns that
    /// ascend (times, line numbers), a dictionary for measured values only.
    ///
    /// # Errors
    /// The table's schema cannot be read.
    pub fn writer(&self, columns: &[Column]) -> Result<RecordBatchWriter, LakeError> {
        let level = ZstdLevel::try_new(ZSTD_LEVEL).unwrap_or_default();
        let mut properties = WriterProperties::builder().set_compression(Compression::ZSTD(level));
        for column in columns {
            let path = ColumnPath::from(column.name);
            properties = match (column.kind, column.name) {
                // Sorted times and ascending line numbers: small deltas.
                (Kind::Timestamp, _) | (Kind::Int, "line") => properties
                    .set_column_dictionary_enabled(path.clone(), false)
                    .set_column_encoding(path, Encoding::DELTA_BINARY_PACKED),
                // Measured values repeat (a sensor's resolution): a dictionary pays.
                (_, "value") => properties,
                // The rest comes in runs (one sensor, its type, place, delivery; the three
                // measurements of a line in turn), which zstd takes as well as a dictionary
                // would, for less than a dictionary costs to build.
                _ => properties.set_column_dictionary_enabled(path, false),
            };
        }
        Ok(RecordBatchWriter::for_table(&self.table)
            .map_err(delta_error(&self.path))?
            .with_writer_properties(properties.build()))
    }

    /// Writes `batch` through `writer`, into the files of the partitions its rows belong to.
    ///
    /// # Errors
    /// The batch does not fit the table, or a file cannot be written.
    pub async fn write(
        &self,
        writer: &mut RecordBatchWriter,
        batch: RecordBatch,
    ) -> Result<(), LakeError> {
        writer.write(batch).await.map_err(delta_error(&self.path))
    }

    /// Writes `batch`, all of whose rows have `date`, into that date's file: no sorting out.
    ///
    /// # Errors
    /// The batch does not fit the table, or a file cannot be written.
    pub async fn write_date(
        &self,
        writer: &mut RecordBatchWriter,
        batch: RecordBatch,
        date: i32,
    ) -> Result<(), LakeError> {
        let partition = self.partition.unwrap_or("date");
        let values = indexmap::IndexMap::from([(partition.to_owned(), Scalar::Date(date))]);
        writer
            .write_partition(batch, &values, WriteMode::Default)
            .await
            .map(|_| ())
            .map_err(delta_error(&self.path))
    }

    /// Closes the files `writer` has open, returning them for the commit.
    ///
    /// # Errors
    /// A file cannot be written.
    pub async fn close_files(&self, writer: &mut RecordBatchWriter) -> Result<Vec<Add>, LakeError> {
        writer.flush().await.map_err(delta_error(&self.path))
    }

    /// The data files of the date partitions `days` (days since 1970-01-01): each with its
    /// date, its place on disk and the action that removes it.
    ///
    /// # Errors
    /// The Delta log cannot be read.
    pub async fn files_of_days(
        &self,
        days: &std::collections::HashSet<i32>,
    ) -> Result<Vec<(i32, PathBuf, Remove)>, LakeError> {
        use futures_util::TryStreamExt;
        let partition = self.partition.unwrap_or("date");
        let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default();
        let snapshot = self.table.snapshot().map_err(delta_error(&self.path))?;
        let views: Vec<_> = snapshot
            .snapshot()
            .file_views(self.table.log_store().as_ref(), None)
            .try_collect()
            .await
            .map_err(delta_error(&self.path))?;
        let mut found = Vec::new();
        for view in views {
            let remove = view.remove_action(true);
            let day = remove
                .partition_values
                .as_ref()
                .and_then(|values| values.get(partition).cloned().flatten())
                .and_then(|text| chrono::NaiveDate::parse_from_str(&text, "%Y-%m-%d").ok())
                .map(|date| (date - epoch).num_days() as i32);
            if let Some(day) = day.filter(|day| days.contains(day)) {
                found.push((day, self.path.join(view.path().as_ref()), remove));
            }
        }
        Ok(found)
    }

    /// Makes `files` visible, `removed` invisible, and records `horizon`, in one commit.
    ///
    /// # Errors
    /// The commit failed; nothing of it is visible then.
    pub async fn commit(
        &mut self,
        files: Vec<Add>,
        removed: Vec<Remove>,
        horizon: i64,
    ) -> Result<(), LakeError> {
        let operation = DeltaOperation::Write {
            mode: if removed.is_empty() {
                SaveMode::Append
            } else {
                SaveMode::Overwrite
            },
            partition_by: self.partition.map(|p| vec![p.to_owned()]),
            predicate: None,
        };
        crate::faults::point("lake::before-commit");
        let marker = Transaction::new(APP_ID, horizon);
        let actions = removed
            .into_iter()
            .map(Action::Remove)
            .chain(files.into_iter().map(Action::Add))
            .collect();
        CommitBuilder::from(CommitProperties::default().with_application_transaction(marker))
            .with_actions(actions)
            .build(
                Some(self.table.snapshot().map_err(delta_error(&self.path))?),
                self.table.log_store(),
                operation,
            )
            .await
            .map_err(delta_error(&self.path))?;
        self.table.update().await.map_err(delta_error(&self.path))
    }
}

fn delta_error(path: &Path) -> impl Fn(DeltaTableError) -> LakeError + '_ {
    move |source| LakeError::Delta {
        path: path.to_path_buf(),
        source,
    }
}
