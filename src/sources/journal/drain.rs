//! The drain: loads the push journal into PostgreSQL, in order, in batches, exactly once.
//!
//! Each batch first asks the database which of its records it holds already (their receipts
//! were committed with their readings, `store::receipts`): those are only marked loaded, so a
//! crash between a commit and the journal's own bookkeeping repeats nothing. The rest become
//! deliveries carrying their journal mark, committed as one group (one transaction, each body
//! its own ledger row); a group that fails as a whole for a reason of its data (a conflicting
//! reading, a key that names other content) is split until the body at fault goes alone
//! (`pipeline::process_in_groups`), where each line gets its own verdict. While the database is away the drain backs
//! off and tries again, and it resumes by itself when the database is back. A body that fails
//! for good (its key was first given with other content) gets a receipt saying why, and its
//! bytes are kept in `quarantine/journal/`.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::delivery::{ByteSource, Delivery, DeviceMark, JournalMark};
use crate::error::Error;
use crate::pipeline::{process_in_groups, PipelineCtx};
use crate::store::{receipts, StoreError};

use super::record::Record;
use super::{Journal, JournalError, Slot};

/// Bodies loaded in one batch at most.
pub const BATCH_BODIES: usize = 256;

/// Bytes of the bodies of one batch, about.
const BATCH_BYTES: u64 = 16 * 1024 * 1024;

/// Why a batch stopped before its end.
#[derive(Debug, thiserror::Error)]
enum Stopped {
    #[error(transparent)]
    Pipeline(#[from] Error),
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("the database became unavailable during the batch")]
    Outage,
}

impl Stopped {
    fn is_outage(&self) -> bool {
        matches!(self, Stopped::Outage)
            || matches!(self, Stopped::Pipeline(error) if error.is_transient())
    }
}

impl From<StoreError> for Stopped {
    fn from(error: StoreError) -> Self {
        Stopped::Pipeline(Error::Store(error))
    }
}

/// Loads the journal until `cancel` fires (see the module header).
pub async fn run(journal: Arc<Journal>, ctx: PipelineCtx, cancel: CancellationToken) {
    let initial = ctx
        .settings
        .retry
        .initial_delay
        .max(Duration::from_millis(50));
    let mut delay = initial;
    let mut waiting_since_logged = false;
    loop {
        if cancel.is_cancelled() {
            return;
        }
        let batch = journal.next_batch(BATCH_BODIES, BATCH_BYTES);
        if batch.is_empty() {
            tokio::select! {
                () = cancel.cancelled() => return,
                () = journal.appended() => continue,
                // The depth's age and the drain rate stay current on /metrics.
                () = tokio::time::sleep(Duration::from_secs(1)) => {
                    journal.stats();
                    continue;
                }
            }
        }
        match load_batch(&journal, &ctx, &batch).await {
            Ok(()) => {
                journal.set_database_away(false);
                if waiting_since_logged {
                    tracing::info!(
                        message = "Loading the push journal again.",
                        waiting = journal.stats().bodies
                    );
                    crate::telemetry::record_database_available();
                }
                waiting_since_logged = false;
                delay = initial;
            }
            Err(stopped) => {
                if stopped.is_outage() {
                    journal.set_database_away(true);
                }
                if !waiting_since_logged {
                    tracing::warn!(
                        message = "The push journal waits; loading again with backoff.",
                        waiting = journal.stats().bodies,
                        error = %crate::telemetry::chain(&stopped)
                    );
                    waiting_since_logged = true;
                }
                crate::telemetry::record_retry();
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(ctx.settings.retry.max_delay);
            }
        }
    }
}

/// Loads one batch; the records loaded are marked as such even when a later one stops it.
async fn load_batch(journal: &Journal, ctx: &PipelineCtx, batch: &[Slot]) -> Result<(), Stopped> {
    let records = {
        let slots = batch.to_vec();
        let reader = journal_reader(journal);
        tokio::task::spawn_blocking(move || slots.iter().map(reader).collect::<Result<Vec<_>, _>>())
            .await
            .expect("reading the journal does not panic")?
    };
    let client = ctx.store.pool().get().await.map_err(StoreError::from)?;
    let ids: Vec<&str> = batch.iter().map(|slot| slot.receipt_id.as_str()).collect();
    let held = receipts::recorded(&client, &ids).await?;
    let (done, todo): (Vec<_>, Vec<_>) = batch
        .iter()
        .zip(records)
        .partition(|(slot, _)| held.contains(&slot.receipt_id));
    journal.loaded(
        &done
            .iter()
            .map(|(slot, _)| slot.sequence)
            .collect::<Vec<_>>(),
    );
    drop(client);
    if todo.is_empty() {
        return Ok(());
    }
    let deliveries: Vec<Delivery> = todo.iter().map(|(_, r)| delivery_of(r)).collect();
    let outcomes = process_in_groups(ctx, &deliveries).await;
    for ((slot, record), (_, outcome)) in todo.iter().zip(outcomes) {
        match outcome {
            Some(Ok(_)) => journal.loaded(&[slot.sequence]),
            Some(Err(error)) => settle_failure(journal, ctx, slot, record, error).await?,
            // An outage stopped the batch here: the rest is tried again.
            None => return Err(Stopped::Outage),
        }
    }
    Ok(())
}

/// A reader of journal records that can move to a blocking thread.
fn journal_reader(journal: &Journal) -> impl Fn(&Slot) -> Result<Record, JournalError> + Send {
    let shared = Arc::clone(&journal.shared);
    move |slot| shared.read(slot)
}

/// A body that could not be loaded: an outage or a local fault stops the batch (it is tried
/// again); any other error is final: the body's bytes go to `quarantine/journal/` and its
/// receipt says why.
async fn settle_failure(
    journal: &Journal,
    ctx: &PipelineCtx,
    slot: &Slot,
    record: &Record,
    error: Error,
) -> Result<(), Stopped> {
    if error.is_transient() || error.is_local_fault() {
        return Err(error.into());
    }
    if let (Error::KeyReused(file_id), Some(_)) = (&error, &record.meta.device) {
        // A device's cycle sent again under its key: the same delivery (see http::ingest).
        let client = ctx.store.pool().get().await.map_err(StoreError::from)?;
        receipts::record_same_delivery(&client, &slot.receipt_id, *file_id).await?;
        journal.loaded(&[slot.sequence]);
        return Ok(());
    }
    let reason = match &error {
        Error::KeyReused(file_id) => format!(
            "idempotency_key_reused: this Idempotency-Key was first given with another body \
             (delivery {file_id})"
        ),
        other => format!("load_failed: {}", crate::telemetry::chain(other)),
    };
    let kept = ctx.settings.quarantine_dir.join("journal");
    let body_path = kept.join(format!("{}.body", slot.receipt_id));
    let written = std::fs::create_dir_all(&kept)
        .and_then(|()| std::fs::write(&body_path, &record.body))
        .and_then(|()| {
            std::fs::write(
                kept.join(format!("{}.reason.txt", slot.receipt_id)),
                &reason,
            )
        });
    if let Err(cause) = written {
        return Err(Error::io(&body_path, cause).into());
    }
    tracing::error!(
        message = "A journaled body could not be loaded; its bytes are kept in quarantine.",
        receipt_id = %slot.receipt_id,
        kept = %body_path.display(),
        reason = %reason
    );
    let client = ctx.store.pool().get().await.map_err(StoreError::from)?;
    receipts::record_failure(&client, &slot.receipt_id, &reason).await?;
    journal.loaded(&[slot.sequence]);
    Ok(())
}

/// The delivery a journal record stands for.
fn delivery_of(record: &Record) -> Delivery {
    let meta = &record.meta;
    let source = match meta.line_shift {
        Some(line_shift) => ByteSource::Rendered {
            bytes: record.body.clone(),
            line_shift,
        },
        None => ByteSource::Memory(record.body.clone()),
    };
    Delivery {
        journaled: Some(JournalMark {
            receipt_id: meta.receipt_id.clone(),
        }),
        device: meta.device.as_ref().map(|device| DeviceMark {
            device: device.device.clone(),
            sensors: device.sensors.clone(),
        }),
        ..Delivery::pushed(
            meta.name.clone(),
            source,
            meta.client.clone(),
            meta.key.clone(),
        )
    }
}
