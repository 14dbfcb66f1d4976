//! The end of every delivery transaction, streamed or group: what is written after the
//! readings and rejects, then the commit, then what the process remembers of it. Both paths
//! call [`record_and_commit`], and nothing else in the pipeline commits a delivery, so what a
//! delivery leaves in the database cannot differ by the path it took.
//!
//! In order: the ledger rows of the new deliveries; the aggregates; the arrival of each
//! duplicate; sensors and locations first seen and the kept sensor state; the marks (journal
//! receipts, tail positions, devices); the latest values of sensors whose readings were
//! replaced and the placeholders no longer needed; a check that no file source changed while
//! it was read; the commit; then the sensors and locations are remembered as stored.

use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;

use crate::error::Result;
use crate::store::ledger::{self, FileRecord, LocationSeen};
use crate::store::state::SensorState;
use crate::store::{copy, once, StoreError};
use crate::transform::aggregate::AggregateRow;
use crate::validate::rejection::FileRejection;

use super::tally::Tally;
use super::{Job, PipelineCtx};

/// A delivery of the transaction with content not stored before.
pub(super) struct NewDelivery<'a> {
    /// Its ledger row.
    pub file_id: i64,
    /// The delivery.
    pub job: &'a Job,
    /// What was read of it.
    pub tally: &'a Tally,
    /// Why it was rejected as a whole, if it was.
    pub rejection: Option<&'a FileRejection>,
}

/// A delivery of the transaction whose content is stored already: the ledger row it repeats.
pub(super) type DuplicateDelivery<'a> = (&'a Job, i64);

/// What the transaction's reading of rows leaves for its end.
pub(super) struct Ending<'a> {
    /// When the deliveries were received.
    pub received_at: DateTime<Utc>,
    /// Sensors whose stored readings were replaced: their latest values are set again.
    pub replaced_sensors: &'a [i64],
    /// Placeholder sensor spans the sift created for this transaction.
    pub placeholders: &'a [i64],
}

/// Writes what follows the readings of `new` and `duplicates` in `tx`, commits it, and
/// remembers the sensors and locations stored.
///
/// # Errors
/// A statement or the commit failed, or a file source changed while it was read: nothing of
/// the transaction is then visible.
pub(super) async fn record_and_commit(
    tx: Transaction<'_>,
    ctx: &PipelineCtx,
    new: &[NewDelivery<'_>],
    duplicates: &[DuplicateDelivery<'_>],
    ending: Ending<'_>,
) -> Result<()> {
    let known = ctx.store.known();
    let errors: Vec<Option<String>> = new
        .iter()
        .map(|d| d.rejection.map(ToString::to_string))
        .collect();
    let origins: Vec<String> = new
        .iter()
        .map(|d| d.job.delivery.origin.to_string())
        .collect();
    let records: Vec<FileRecord<'_>> = new
        .iter()
        .zip(errors.iter().zip(&origins))
        .map(|(d, (error, origin))| {
            d.tally.record(
                d.job,
                origin,
                d.file_id,
                error.as_deref(),
                ending.received_at,
            )
        })
        .collect();
    ledger::insert_files(&tx, &records).await?;
    let aggregates: Vec<(i64, Vec<AggregateRow>)> = new
        .iter()
        .map(|d| (d.file_id, d.tally.aggregates.rows()))
        .collect();
    let aggregate_refs: Vec<(i64, &[AggregateRow])> = aggregates
        .iter()
        .map(|(id, rows)| (*id, rows.as_slice()))
        .collect();
    copy::copy_aggregates(&tx, &ctx.store, &aggregate_refs).await?;
    let tx_ref = &tx;
    let arrivals =
        futures_util::future::try_join_all(duplicates.iter().map(|(job, file_id)| {
            let origin = job.delivery.origin.to_string();
            async move {
                ledger::record_delivery(tx_ref, *file_id, job.name(), &origin, "duplicate").await
            }
        }));
    let sensors: Vec<(i64, String, i64)> = new
        .iter()
        .flat_map(|d| d.tally.sensors_of(d.file_id))
        .collect();
    let locations: Vec<LocationSeen> = new
        .iter()
        .flat_map(|d| d.tally.locations_of(d.file_id))
        .collect();
    let mut state = SensorState::default();
    for d in new {
        state.add(d.file_id, &d.tally.aggregates);
    }
    // Sent together, after the ledger rows they refer to.
    futures_util::try_join!(
        arrivals,
        ledger::upsert_sensors(&tx, known, &sensors),
        ledger::upsert_locations(&tx, known, &locations),
        state.write(&tx, &ctx.store),
    )?;
    let marked: Vec<super::marks::Marked<'_>> = new
        .iter()
        .map(|d| (&d.job.delivery, d.file_id, false))
        .chain(
            duplicates
                .iter()
                .map(|(job, file_id)| (&job.delivery, *file_id, true)),
        )
        .collect();
    super::marks::record(&tx, &marked).await?;
    once::recompute_latest(&tx, ending.replaced_sensors).await?;
    once::drop_empty_placeholders(&tx, &state.uncovered(ending.placeholders)).await?;
    // The transaction commits only if none of its file sources changed while it was read.
    for job in new
        .iter()
        .map(|d| d.job)
        .chain(duplicates.iter().map(|(job, _)| *job))
    {
        job.check_unchanged()?;
    }
    crate::faults::point("pipeline::before-commit");
    tx.commit().await.map_err(StoreError::from)?;
    if new.iter().any(|d| d.tally.rows.loaded > 0) {
        // Every page of the transaction is written now: the last ranges are summarized too.
        ctx.store.readings_copied();
    }
    let location_ids: Vec<i64> = locations.iter().map(|(id, _, _, _)| *id).collect();
    known.remember(&state.sensors(), &location_ids);
    crate::faults::point("pipeline::after-commit");
    Ok(())
}
