//! What became of the bodies drained from the push journal (`journal_receipts`).
//!
//! A receipt row is written inside the transaction of its body's delivery (by the pipeline,
//! for a delivery that carries a journal mark), so the row exists exactly when the body's
//! effects are committed: the drain asks which of its records the database already holds and
//! never loads one twice. A body that failed for good gets a row of its own with the reason.

use deadpool_postgres::{GenericClient, Transaction};
use serde::Serialize;

use super::StoreError;
use crate::delivery::RowCounts;

/// A delivery's journal receipt and the ledger row it came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptRow<'a> {
    /// The receipt the client was given.
    pub receipt_id: &'a str,
    /// The delivery in the ledger (the first one, for a duplicate).
    pub file_id: i64,
    /// Whether the body was a duplicate of a stored delivery.
    pub duplicate: bool,
}

/// Records, inside the delivery's transaction, which ledger rows these receipts came to.
///
/// # Errors
/// The statement failed (a receipt recorded twice included: the transaction is then void).
pub async fn record(tx: &Transaction<'_>, rows: &[ReceiptRow<'_>]) -> Result<(), StoreError> {
    if rows.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = rows.iter().map(|r| r.receipt_id).collect();
    let files: Vec<i64> = rows.iter().map(|r| r.file_id).collect();
    let duplicates: Vec<bool> = rows.iter().map(|r| r.duplicate).collect();
    tx.execute(
        &tx.prepare_cached(
            "INSERT INTO journal_receipts (receipt_id, file_id, duplicate) \
             SELECT * FROM unnest($1::text[], $2::bigint[], $3::boolean[])",
        )
        .await?,
        &[&ids, &files, &duplicates],
    )
    .await?;
    Ok(())
}

/// Records that a journaled body is the stored delivery `file_id` (a device's cycle sent again
/// under the same `Idempotency-Key`), in a statement of its own.
///
/// # Errors
/// The statement failed.
pub async fn record_same_delivery(
    client: &impl GenericClient,
    receipt_id: &str,
    file_id: i64,
) -> Result<(), StoreError> {
    client
        .execute(
            "INSERT INTO journal_receipts (receipt_id, file_id, duplicate) VALUES ($1, $2, true) \
             ON CONFLICT (receipt_id) DO NOTHING",
            &[&receipt_id, &file_id],
        )
        .await?;
    Ok(())
}

/// Records that a journaled body could not be loaded, and why (its own transaction).
///
/// # Errors
/// The statement failed.
pub async fn record_failure(
    client: &impl GenericClient,
    receipt_id: &str,
    error: &str,
) -> Result<(), StoreError> {
    client
        .execute(
            "INSERT INTO journal_receipts (receipt_id, error) VALUES ($1, $2) \
             ON CONFLICT (receipt_id) DO NOTHING",
            &[&receipt_id, &error],
        )
        .await?;
    Ok(())
}

/// Which of `receipt_ids` the database holds already.
///
/// # Errors
/// The query failed.
pub async fn recorded(
    client: &impl GenericClient,
    receipt_ids: &[&str],
) -> Result<Vec<String>, StoreError> {
    let rows = client
        .query(
            "SELECT receipt_id FROM journal_receipts WHERE receipt_id = ANY($1)",
            &[&receipt_ids],
        )
        .await?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

/// Bodies loaded from the journal per second over the last 10 seconds.
///
/// # Errors
/// The query failed.
pub async fn drain_rate(client: &impl GenericClient) -> Result<f64, StoreError> {
    let row = client
        .query_one(
            "SELECT count(*) FROM journal_receipts WHERE loaded_at > now() - interval '10 s'",
            &[],
        )
        .await?;
    Ok(row.get::<_, i64>(0) as f64 / 10.0)
}

/// The final outcome of a drained body, as `GET /v1/receipts/{id}` gives it.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// The delivery in the ledger; none when the body failed.
    pub file_id: Option<i64>,
    /// `loaded`, `partially_loaded`, `rejected`, `empty`, `duplicate` or `failed`.
    pub status: String,
    /// What became of its rows (none for a duplicate or a failure).
    #[serde(flatten)]
    pub rows: RowCounts,
    /// Why the delivery was rejected, or why the body failed (`code: message`).
    pub error: Option<String>,
}

/// The outcome of the drained body `receipt_id`, if the database has it.
///
/// # Errors
/// The query failed.
pub async fn outcome(
    client: &impl GenericClient,
    receipt_id: &str,
) -> Result<Option<Outcome>, StoreError> {
    let row = client
        .query_opt(
            "SELECT r.file_id, r.duplicate, r.error, f.status, f.rows_read, f.rows_loaded, \
                    f.rows_rejected, f.rows_duplicate, f.error \
             FROM journal_receipts r LEFT JOIN v_files f ON f.file_id = r.file_id \
             WHERE r.receipt_id = $1",
            &[&receipt_id],
        )
        .await?;
    Ok(row.map(|row| {
        let file_id: Option<i64> = row.get(0);
        let duplicate: bool = row.get(1);
        let failure: Option<String> = row.get(2);
        let counts = |i: usize| -> u64 {
            if duplicate {
                0
            } else {
                row.get::<_, Option<i64>>(i)
                    .and_then(|n| u64::try_from(n).ok())
                    .unwrap_or(0)
            }
        };
        let status = match (&failure, duplicate) {
            (Some(_), _) => "failed".to_owned(),
            (None, true) => "duplicate".to_owned(),
            (None, false) => row
                .get::<_, Option<String>>(3)
                .unwrap_or_else(|| "failed".to_owned()),
        };
        Outcome {
            file_id,
            status,
            rows: RowCounts {
                read: counts(4),
                loaded: counts(5),
                rejected: counts(6),
                duplicate: counts(7),
            },
            error: failure.or_else(|| row.get(8)),
        }
    }))
}
