//! The lake's `files` and `aggregates`: the rows of `v_files` and `v_aggregates` of the
//! deliveries after the table's horizon, read through a cursor a chunk at a time and appended
//! in one commit.

use tokio_postgres::Transaction;

use super::columns::{self, Column, RowColumn};
use super::table::LakeTable;
use super::LakeError;
use crate::store::export::{self, LedgerView};

/// Rows fetched, and written as one batch, at a time.
const FETCH_ROWS: usize = 50_000;

/// Appends the rows of `view` of the deliveries in `(after, up_to]`, read in `tx`'s snapshot,
/// to `table` (whose columns are `columns`), in one commit. Returns the number of rows added.
///
/// # Errors
/// The database or the table failed; nothing of this append is visible then.
pub async fn append(
    tx: &Transaction<'_>,
    mut table: LakeTable,
    view: LedgerView,
    columns: &[Column],
    after: i64,
    up_to: i64,
) -> Result<u64, LakeError> {
    let cursor = format!("lake_{}", view.name());
    let names: Vec<&str> = columns.iter().map(|c| c.name).collect();
    export::open_ledger_cursor(tx, &cursor, view, &names, after, up_to).await?;
    let schema = columns::arrow_schema(columns);
    let mut writer = table.writer(columns)?;
    let mut added = 0u64;
    loop {
        let rows = export::fetch(tx, &cursor, FETCH_ROWS).await?;
        if rows.is_empty() {
            break;
        }
        let mut builders: Vec<RowColumn> = columns.iter().map(RowColumn::new).collect();
        for row in &rows {
            for (index, builder) in builders.iter_mut().enumerate() {
                builder
                    .append(row, index)
                    .map_err(crate::store::StoreError::from)?;
            }
        }
        let arrays = builders.iter_mut().map(RowColumn::finish).collect();
        let batch = deltalake::arrow::record_batch::RecordBatch::try_new(schema.clone(), arrays)?;
        table.write(&mut writer, batch).await?;
        added += rows.len() as u64;
    }
    let files = table.close_files(&mut writer).await?;
    table.commit(files, Vec::new(), up_to).await?;
    Ok(added)
}
