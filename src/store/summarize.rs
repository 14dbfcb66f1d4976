//! Keeps the readings' BRIN index answering: page ranges written since the index last looked
//! are *unsummarized*, and a BRIN scan must read every such page. Right after a 1M-row load a
//! one-sensor read scanned the whole partition (249 ms; 3 ms once summarized). PostgreSQL's
//! `autosummarize` only queues the work for the next autovacuum round (up to a minute later),
//! so the store summarizes new ranges itself: a background task on a connection of its own,
//! woken each time a transaction copies readings (wake-ups in a burst coalesce into one pass),
//! and [`summarize_new_ranges`] for whoever must see it done (`sensor-etl ingest` before it
//! exits). A long load is summarized while it is written, chunk after chunk, so little is left
//! for its end, and more of its pages are still in PostgreSQL's buffers when they are read.
//!
//! Guarantees: correctness never depends on it (an unsummarized range is always read, never
//! skipped). A range may be summarized while the transaction that fills it is under way:
//! PostgreSQL summarizes the rows of transactions in progress too, and a row added to a range
//! already summarized widens its summary, so a summary never excludes a row it covers (rows
//! of a transaction rolled back only widen it). It takes no lock that a load waits on
//! (`ShareUpdateExclusiveLock` does not conflict with COPY), and waits at most `LOCK_WAIT` for
//! another summarizer or a vacuum before leaving the work to the next pass.

use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::sync::mpsc;

use crate::store::StoreError;

/// Commits within this time after a wake-up are covered by the same pass.
const COALESCE: Duration = Duration::from_millis(200);

/// Longest wait for the index while another session summarizes or vacuums it.
const LOCK_WAIT: &str = "2s";

/// The handle that wakes the background summarizer; the task ends when every handle is
/// dropped.
#[derive(Clone, Debug)]
pub struct RangeSummarizer {
    wake: mpsc::Sender<()>,
}

impl RangeSummarizer {
    /// Starts the background task on `pool` (needs a Tokio runtime).
    pub fn start(pool: Pool) -> Self {
        let (wake, mut woken) = mpsc::channel(1);
        tokio::spawn(async move {
            while woken.recv().await.is_some() {
                tokio::time::sleep(COALESCE).await;
                // Wake-ups that came while sleeping are covered by this pass.
                while woken.try_recv().is_ok() {}
                if let Err(error) = summarize_on(&pool).await {
                    tracing::debug!(
                        message = "Index ranges left for the next pass.",
                        error = %crate::telemetry::chain(&error)
                    );
                }
            }
        });
        Self { wake }
    }

    /// Readings were copied (their transaction committed or still under way): summarize
    /// their ranges soon.
    pub fn readings_copied(&self) {
        // A full channel means a pass is already due.
        let _ = self.wake.try_send(());
    }
}

async fn summarize_on(pool: &Pool) -> Result<i64, StoreError> {
    let mut client = pool.get().await?;
    summarize_new_ranges(&mut client).await
}

/// Summarizes every new page range of every partition of `readings`; returns how many.
///
/// # Errors
/// The database failed, or the index stayed locked longer than `LOCK_WAIT`.
pub async fn summarize_new_ranges(
    client: &mut deadpool_postgres::Client,
) -> Result<i64, StoreError> {
    let tx = client.transaction().await?;
    tx.batch_execute(&format!("SET LOCAL lock_timeout = '{LOCK_WAIT}'"))
        .await?;
    let summarized: i64 = tx
        .query_one(
            "SELECT coalesce(sum(brin_summarize_new_values(i.inhrelid::regclass)), 0)::int8 \
             FROM pg_inherits i WHERE i.inhparent = 'sensor_etl.readings_brin'::regclass",
            &[],
        )
        .await?
        .get(0);
    tx.commit().await?;
    Ok(summarized)
}
