//! Read side of the store: the questions the read API answers (sensors, latest values, a
//! sensor's readings page by page, windowed statistics, the ledger), one module per kind of
//! question ([`catalogue`], [`readings`], [`series`], [`deliveries`]). They are asked of the
//! public views (`v_sensors`, `v_latest`, `v_files`, `v_aggregates`, `v_rejects`,
//! `v_deliveries`), except the row questions: readings and series read the `readings` table
//! narrowed to the asked measurement first, which answers what `v_readings` answers (the tests
//! compare them) without unpacking every row.
//!
//! Guarantees: read-only statements, every value bound as a parameter (the SQL text is
//! chosen from fixed pieces, never built from input); time ranges are half-open
//! `[start, end)`; pages follow one total order, `(ts, file_id, line)` for readings and `line`
//! for rejects, so paging visits every row once. The caller validates parameters; the rows
//! returned here are the store's, and the HTTP API answers with its own types built from them
//! (`http::answers`).

mod catalogue;
mod deliveries;
mod readings;
mod series;

use deadpool_postgres::GenericClient;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use crate::store::StoreError;

pub use catalogue::*;
pub use deliveries::*;
pub use readings::*;
pub use series::*;

// Statements are planned with their parameters each time (not cached): a cached statement
// falls back to a generic plan after five runs, which cannot prune the yearly partitions by
// the asked range (measured: a 2-day series of one sensor, 40 -> 75 ms).

/// The rows of `sql`.
async fn query(
    client: &impl GenericClient,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<Row>, StoreError> {
    Ok(client.query(sql, params).await?)
}

/// The one row of `sql`.
async fn query_one(
    client: &impl GenericClient,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Row, StoreError> {
    Ok(client.query_one(sql, params).await?)
}

/// The row of `sql`, if any.
async fn query_opt(
    client: &impl GenericClient,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Option<Row>, StoreError> {
    Ok(client.query_opt(sql, params).await?)
}
