//! Readings replaced after they were exported. With `on_conflict = "replace"`, a later delivery
//! stores its line in place of a stored one, which moves to `replaced_readings`; a lake that
//! already held the old line must lose it, or it would hold both. The export that adds the
//! replacing delivery also rewrites each data file of the dates those old lines fall on,
//! without them, and removes the old files in the same Delta commit as its additions: the lake
//! says what PostgreSQL says at every version, and a crash leaves the previous version whole
//! (the rewritten files are then orphans the next export deletes).

use std::collections::HashSet;
use std::fs::File;
use std::sync::Arc;

use deltalake::arrow::array::{Array, ArrayRef, BooleanArray, Date32Array, Int64Array};
use deltalake::arrow::array::{RecordBatch, TimestampMicrosecondArray};
use deltalake::arrow::compute::filter_record_batch;
use deltalake::kernel::{Add, Remove};
use deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use tokio_postgres::Transaction;

use super::columns::READINGS;
use super::table::LakeTable;
use super::LakeError;
use crate::store::export;

/// Microseconds in a day.
const DAY_MICROS: i64 = 86_400_000_000;

/// What replacing took out of the lake, for the commit that adds the replacements.
#[derive(Debug, Default)]
pub struct Rewrite {
    /// The files rewritten, to be removed.
    pub removed: Vec<Remove>,
    /// Their rewritten versions.
    pub files: Vec<Add>,
    /// Readings left out.
    pub dropped: u64,
}

/// Rewrites the files of `table` that hold lines replaced by the deliveries in
/// `(after, up_to]`, without those lines. Nothing is visible until the caller commits.
///
/// # Errors
/// The database failed, or a file cannot be read or written.
pub async fn rewrite(
    tx: &Transaction<'_>,
    table: &LakeTable,
    after: i64,
    up_to: i64,
) -> Result<Rewrite, LakeError> {
    let gone: HashSet<(i64, i64, i64)> = export::replaced_lines(tx, after, up_to)
        .await?
        .into_iter()
        .collect();
    if gone.is_empty() {
        return Ok(Rewrite::default());
    }
    let days: HashSet<i32> = gone
        .iter()
        .map(|&(_, ts, _)| ts.div_euclid(DAY_MICROS) as i32)
        .collect();
    let mut writer = table.writer(READINGS)?;
    let schema = writer.arrow_schema();
    let mut rewrite = Rewrite::default();
    for (day, path, remove) in table.files_of_days(&days).await? {
        let file = File::open(&path).map_err(|source| LakeError::Folder {
            path: path.clone(),
            source,
        })?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .and_then(|builder| builder.build())
            .map_err(|e| LakeError::Writer(format!("reading {}: {e}", path.display())))?;
        for batch in reader {
            let batch = batch?;
            let keep = kept_rows(&batch, &gone)?;
            rewrite.dropped += (batch.num_rows() - keep.true_count()) as u64;
            let kept = filter_record_batch(&batch, &keep)?;
            if kept.num_rows() == 0 {
                continue;
            }
            // Data files hold no partition column: it is added back for the writer.
            let mut columns: Vec<ArrayRef> = kept.columns().to_vec();
            columns.push(Arc::new(Date32Array::from(vec![day; kept.num_rows()])));
            let batch = RecordBatch::try_new(Arc::clone(&schema), columns)?;
            table.write_date(&mut writer, batch, day).await?;
        }
        rewrite.files.extend(table.close_files(&mut writer).await?);
        rewrite.removed.push(remove);
    }
    Ok(rewrite)
}

/// Which rows of `batch` to keep: those not among `gone` (sensor, µs, delivery).
fn kept_rows(
    batch: &RecordBatch,
    gone: &HashSet<(i64, i64, i64)>,
) -> Result<BooleanArray, LakeError> {
    let column = |name: &str| {
        batch.column_by_name(name).ok_or_else(|| {
            LakeError::Writer(format!(
                "a readings file of the lake has no `{name}` column"
            ))
        })
    };
    let (sensors, times, files) = (column("sensor_id")?, column("ts")?, column("file_id")?);
    let (Some(sensors), Some(times), Some(files)) = (
        sensors.as_any().downcast_ref::<Int64Array>(),
        times.as_any().downcast_ref::<TimestampMicrosecondArray>(),
        files.as_any().downcast_ref::<Int64Array>(),
    ) else {
        return Err(LakeError::Writer(
            "a readings file of the lake has columns of other types".to_owned(),
        ));
    };
    Ok((0..batch.num_rows())
        .map(|i| Some(!gone.contains(&(sensors.value(i), times.value(i), files.value(i)))))
        .collect())
}
