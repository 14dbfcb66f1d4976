//! The ledger in brief, for `sensor-etl status` and `/v1/summary`: deliveries by status with
//! their row counts, and the latest deliveries with rejected rows. Read-only.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::store::StoreError;

/// Files per status and their row counts, for `sensor-etl status`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StatusCount {
    /// Status.
    pub status: String,
    /// Files.
    pub files: i64,
    /// Rows read.
    pub rows_read: i64,
    /// Rows loaded.
    pub rows_loaded: i64,
    /// Rows rejected.
    pub rows_rejected: i64,
    /// Rows whose readings were already stored (not stored again).
    pub rows_duplicate: i64,
}

/// A recent file with a problem.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RecentProblem {
    /// File id.
    pub file_id: i64,
    /// Name.
    pub file_name: String,
    /// Status.
    pub status: String,
    /// Rows rejected.
    pub rows_rejected: i64,
    /// File-level reason, if any.
    pub error: Option<String>,
    /// When it finished.
    pub finished_at: DateTime<Utc>,
}

/// The ledger in brief.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct LedgerSummary {
    /// Per status.
    pub by_status: Vec<StatusCount>,
    /// Re-deliveries of known content.
    pub duplicate_deliveries: i64,
    /// Readings stored.
    pub reading_count: i64,
    /// Latest files with rejected rows or rejected whole.
    pub recent_problems: Vec<RecentProblem>,
}

/// Whether the ledger exists (the migrations ran at least once), read without changing
/// anything.
///
/// # Errors
/// The statement failed.
pub async fn exists(client: &tokio_postgres::Client) -> Result<bool, StoreError> {
    Ok(client
        .query_one("SELECT to_regclass('v_files') IS NOT NULL", &[])
        .await?
        .get(0))
}

/// Reads the ledger summary.
///
/// # Errors
/// A query failed.
pub async fn summary(
    client: &tokio_postgres::Client,
    recent: i64,
) -> Result<LedgerSummary, StoreError> {
    let by_status = client
        .query(
            "SELECT status, count(*), coalesce(sum(rows_read), 0)::int8, \
             coalesce(sum(rows_loaded), 0)::int8, coalesce(sum(rows_rejected), 0)::int8, \
             coalesce(sum(rows_duplicate), 0)::int8 \
             FROM v_files GROUP BY status ORDER BY status",
            &[],
        )
        .await?
        .into_iter()
        .map(|row| StatusCount {
            status: row.get(0),
            files: row.get(1),
            rows_read: row.get(2),
            rows_loaded: row.get(3),
            rows_rejected: row.get(4),
            rows_duplicate: row.get(5),
        })
        .collect();
    let duplicate_deliveries: i64 = client
        .query_one(
            "SELECT count(*) FROM v_deliveries WHERE outcome = 'duplicate'",
            &[],
        )
        .await?
        .get(0);
    let reading_count: i64 = client
        .query_one(
            "SELECT coalesce(sum(reading_count), 0)::int8 FROM v_files",
            &[],
        )
        .await?
        .get(0);
    let recent_problems = client
        .query(
            "SELECT file_id, file_name, status, rows_rejected, error, finished_at FROM v_files \
             WHERE rows_rejected > 0 OR status = 'rejected' ORDER BY finished_at DESC, file_id DESC LIMIT $1",
            &[&recent],
        )
        .await?
        .into_iter()
        .map(|row| RecentProblem {
            file_id: row.get(0),
            file_name: row.get(1),
            status: row.get(2),
            rows_rejected: row.get(3),
            error: row.get(4),
            finished_at: row.get(5),
        })
        .collect();
    Ok(LedgerSummary {
        by_status,
        duplicate_deliveries,
        reading_count,
        recent_problems,
    })
}
