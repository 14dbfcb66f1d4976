//! The group commit: several small deliveries in one transaction and one COPY per table.
//!
//! Each delivery is read whole in memory through the same validator as the streaming path
//! (`prepare`), the group is transformed in one polars pass, its readings and rejects are
//! written with one COPY each, and the transaction ends as every delivery transaction does
//! (`commit::record_and_commit`); every delivery keeps its own ledger row, outcome and exactly-once guarantee
//! (content locks and the ledger check cover every delivery of the group, duplicates within the
//! group included). A delivery that cannot be read or transformed is returned with its error
//! and left out; a database error fails the whole group, nothing committed, and the caller
//! then processes the deliveries one by one.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;

use crate::config::Settings;
use crate::delivery::Delivery;
use crate::error::{Error, Result};
use crate::pipeline::settle::{self, Concluded};
use crate::pipeline::{DeliveryReport, Job, PipelineCtx};
use crate::store::copy;
use crate::store::StoreError;
use crate::transform::aggregate::PartialAggregates;
use crate::transform::normalize::NormalizedFrame;
use crate::transform::transform_group;
use crate::validate::quarantine::QuarantineWriter;
use crate::validate::reject::RejectedRow;
use crate::validate::rejection::FileRejection;
use crate::validate::{FileValidator, Mode, ReadingColumns, RejectedLines, ValidatedChunk};

use super::admit::{admit, Candidate, Fate};
use super::commit::{self, DuplicateDelivery, NewDelivery};
use super::lanes::{self, Tie};
use super::readings::{Frame, OnConflictLine, ReadingsWriter};
use super::tally::Tally;

/// A small delivery read, validated and quarantined in memory, ready to be written.
struct Prepared {
    job: Job,
    /// Accepted readings, untransformed: the group is transformed in one polars pass.
    readings: ReadingColumns,
    rejects: Vec<RejectedRow>,
    tally: Tally,
    rejection: Option<FileRejection>,
    quarantined: Vec<std::path::PathBuf>,
}

/// Reads a whole (small) delivery through the same stages as the streaming path, holding its
/// chunks in memory; one over the reject ratio is read again as a whole rejection.
fn prepare(settings: &Settings, mut job: Job) -> Result<Prepared> {
    let target = job.quarantine_target(settings);
    let source = &job.delivery.source;
    let mut mode = Mode::Load;
    loop {
        let whole_file = mode.whole_rejection().cloned();
        let mut writer = QuarantineWriter::new(target.clone(), whole_file.is_none())?;
        let mut tally = Tally::default();
        let mut accepted = ReadingColumns::default();
        let mut rejects = Vec::new();
        let mut header_rejection = None;
        let mut absorb = |mut chunk: ValidatedChunk,
                          tally: &mut Tally,
                          writer: &mut QuarantineWriter|
         -> Result<()> {
            let readings = std::mem::take(&mut chunk.readings);
            tally.reading_count += readings.reading_count() as u64;
            accepted.append(readings, 0);
            tally.absorb(&chunk, settings);
            writer.record(&chunk.rejects)?;
            rejects.extend(chunk.rejects);
            Ok(())
        };
        let reads_rows = mode.reads_rows();
        match FileValidator::open(source, job.name(), settings, mode.clone())? {
            Ok(mut validator) => {
                while let Some(chunk) = validator.next_chunk()? {
                    crate::faults::point("pipeline::chunk-read");
                    absorb(chunk, &mut tally, &mut writer)?;
                }
            }
            Err(rejection) => {
                writer.skip_rows();
                if reads_rows {
                    let mut lines = RejectedLines::open(source, rejection.clone(), settings)?;
                    while let Some(chunk) = lines.next_chunk()? {
                        absorb(chunk, &mut tally, &mut writer)?;
                    }
                }
                header_rejection = Some(rejection);
            }
        }
        let concluded = settle::conclude(
            &job,
            settings,
            header_rejection.or(whole_file),
            &tally,
            writer,
        )?;
        let (rejection, quarantined) = match concluded {
            Concluded::RejectWhole(verdict) => {
                mode = Mode::RejectAll(verdict);
                continue;
            }
            Concluded::Published {
                rejection,
                quarantined,
            } => (rejection, quarantined),
        };
        // Every pass over the source is done: a group holds no open file while it is written.
        job.delivery.release();
        return Ok(Prepared {
            job,
            readings: accepted,
            rejects,
            tally,
            rejection,
            quarantined,
        });
    }
}

/// Outcomes of a group, one per delivery, in the order given.
pub type GroupOutcomes = Vec<(Delivery, Result<DeliveryReport>)>;

/// Processes several small deliveries in one transaction (see the module header).
///
/// # Errors
/// A database error: nothing of the group committed.
pub async fn process_group(ctx: &PipelineCtx, deliveries: &[Delivery]) -> Result<GroupOutcomes> {
    let prepared = prepare_group(ctx, deliveries).await?;
    write_prepared(ctx, prepared).await
}

/// A group read, validated and transformed, not yet written: what [`prepare_group`] does
/// before any statement, so that a caller can prepare the next group while one is written.
pub struct PreparedGroup {
    started: Instant,
    /// The deliveries given, in order.
    deliveries: Vec<Delivery>,
    /// Deliveries that could not be read or transformed: (position, outcome).
    failed: Vec<(usize, (Delivery, Result<DeliveryReport>))>,
    /// The deliveries read, with their positions.
    ready: Vec<(usize, Prepared)>,
    /// The group's lines (part `i` is `ready[i]`) and partial aggregates by part.
    transformed: Option<(NormalizedFrame, HashMap<u32, PartialAggregates>)>,
}

/// Reads, validates and transforms a group (on blocking threads); writes nothing.
///
/// # Errors
/// The transform failed.
pub async fn prepare_group(ctx: &PipelineCtx, deliveries: &[Delivery]) -> Result<PreparedGroup> {
    let started = Instant::now();
    let read = read_group(ctx, deliveries.to_vec()).await;
    assemble(ctx, started, read).await
}

/// [`prepare_group`] split into at most `lanes` groups that can be written at the same time,
/// each in its own transaction, with the outcomes of the order given (`pipeline::lanes`). Each
/// lane comes with the positions of its deliveries in `deliveries`.
///
/// # Errors
/// The transform of a lane failed.
pub async fn prepare_lanes(
    ctx: &PipelineCtx,
    deliveries: &[Delivery],
    lanes: usize,
) -> Result<Vec<(Vec<usize>, PreparedGroup)>> {
    let started = Instant::now();
    let read = read_group(ctx, deliveries.to_vec()).await;
    let split = if lanes <= 1 {
        // One lane keeps the order given: nothing to find out.
        std::iter::once((0..read.len()).collect::<Vec<_>>())
            .filter(|lane| !lane.is_empty())
            .collect()
    } else {
        let ties: Vec<Vec<Tie<'_>>> = read
            .iter()
            .map(|(delivery, prepared)| ties_of(delivery, prepared.as_ref().ok()))
            .collect();
        let weights: Vec<u64> = read
            .iter()
            .map(|(_, prepared)| {
                prepared
                    .as_ref()
                    .map_or(1, |p| p.readings.sensor_id.len() as u64 + 1)
            })
            .collect();
        lanes::split(&ties, &weights, lanes)
    };
    let mut read: Vec<Option<Read>> = read.into_iter().map(Some).collect();
    let assembled = split.iter().map(|positions| {
        let part: Vec<Read> = positions
            .iter()
            .filter_map(|&position| read[position].take())
            .collect();
        assemble(ctx, started, part)
    });
    let groups = futures_util::future::try_join_all(assembled.collect::<Vec<_>>()).await?;
    Ok(split.into_iter().zip(groups).collect())
}

/// A delivery of a group, read and validated (or the reason it could not be).
type Read = (Delivery, Result<Prepared>);

/// Reads and validates each delivery of a group on a blocking thread.
async fn read_group(ctx: &PipelineCtx, deliveries: Vec<Delivery>) -> Vec<Read> {
    let settings = Arc::clone(&ctx.settings);
    tokio::task::spawn_blocking(move || {
        deliveries
            .into_iter()
            .map(|delivery| {
                let prepared = super::take_source(&delivery)
                    .inspect(|_| crate::faults::point("pipeline::taken"))
                    .and_then(Job::identify)
                    .and_then(|job| prepare(&settings, job));
                (delivery, prepared)
            })
            .collect()
    })
    .await
    .expect("validation does not panic")
}

/// What orders a delivery against others (`pipeline::lanes`); one that could not be read
/// writes nothing that another's outcome depends on.
fn ties_of<'a>(delivery: &'a Delivery, prepared: Option<&'a Prepared>) -> Vec<Tie<'a>> {
    let Some(prepared) = prepared else {
        return Vec::new();
    };
    let readings = &prepared.readings;
    let mut sensors = readings.sensor_id.clone();
    sensors.sort_unstable();
    sensors.dedup();
    let mut locations: Vec<i64> = readings.location_id.iter().flatten().copied().collect();
    locations.sort_unstable();
    locations.dedup();
    let mut ties: Vec<Tie<'a>> = sensors.into_iter().map(Tie::Sensor).collect();
    ties.extend(locations.into_iter().map(Tie::Location));
    ties.push(Tie::Content(&prepared.job.identity.content_sha256));
    ties.extend(delivery.key.as_deref().map(Tie::Key));
    ties.extend(
        delivery
            .device
            .as_ref()
            .map(|mark| Tie::Device(&mark.device)),
    );
    ties
}

/// A group of read deliveries transformed in one polars pass (on a blocking thread).
async fn assemble(ctx: &PipelineCtx, started: Instant, read: Vec<Read>) -> Result<PreparedGroup> {
    let deliveries: Vec<Delivery> = read.iter().map(|(delivery, _)| delivery.clone()).collect();
    let mut failed = Vec::new();
    let mut ready = Vec::with_capacity(read.len());
    for (position, (delivery, result)) in read.into_iter().enumerate() {
        match result {
            Ok(file) => ready.push((position, file)),
            Err(error) => failed.push((position, (delivery, Err(error)))),
        }
    }
    let transformed = if ready.is_empty() {
        None
    } else {
        // One polars pass for the whole group: part i of the frame is delivery i of `ready`.
        let mut combined = ReadingColumns::default();
        for (part, (_, file)) in ready.iter_mut().enumerate() {
            combined.append(
                std::mem::take(&mut file.readings),
                u32::try_from(part).unwrap_or(u32::MAX),
            );
        }
        let settings = Arc::clone(&ctx.settings);
        let transformed = tokio::task::spawn_blocking(move || transform_group(combined, &settings))
            .await
            .expect("transform does not panic")
            .map_err(Error::Transform)?;
        Some(transformed)
    };
    Ok(PreparedGroup {
        started,
        deliveries,
        failed,
        ready,
        transformed,
    })
}

/// Writes a prepared group in one transaction and commits it; outcomes in the order given.
///
/// # Errors
/// A database error: nothing of the group committed.
async fn write_prepared(ctx: &PipelineCtx, group: PreparedGroup) -> Result<GroupOutcomes> {
    let PreparedGroup {
        started,
        failed: mut outcomes,
        ready,
        transformed,
        ..
    } = group;
    let Some((frame, partials)) = transformed else {
        return Ok(in_order(outcomes));
    };
    let (positions, mut ready): (Vec<usize>, Vec<Prepared>) = ready.into_iter().unzip();
    let fates = write_group(ctx, &mut ready, frame, partials).await?;

    for ((fate, file), position) in fates.into_iter().zip(ready).zip(positions) {
        let delivery = file.job.delivery.clone();
        let report = match fate {
            Ok(file_id) => {
                let report = file.tally.report(
                    &file.job,
                    file_id,
                    file.rejection.as_ref(),
                    file.quarantined,
                    false,
                );
                settle::after_commit(ctx, &file.job, report)
            }
            Err(existing) => settle::after_duplicate(ctx, &file.job, existing),
        };
        outcomes.push((position, (delivery, report.map(|r| r.finished(started)))));
    }
    Ok(in_order(outcomes))
}

/// What became of each delivery handed to [`process_in_groups`]: its outcome, or `None` when an
/// outage stopped the work before it (nothing of it was committed).
pub type SplitOutcomes = Vec<(Delivery, Option<Result<DeliveryReport>>)>;

/// Processes deliveries as one group; a group that fails for a reason of its data (a reading
/// that conflicts with a stored one, a key that names other content) is split in halves, down to
/// single deliveries, which take the streamed path where each line gets its own verdict. One
/// such delivery so costs a few more group attempts, not the group commit of all the others.
/// Outcomes keep the order given; an outage stops the work, and what it did not reach is `None`.
pub async fn process_in_groups(ctx: &PipelineCtx, deliveries: &[Delivery]) -> SplitOutcomes {
    split_until_written(ctx, deliveries, None).await
}

/// [`process_in_groups`] for a group prepared already (see [`prepare_group`]).
pub async fn process_prepared_in_groups(
    ctx: &PipelineCtx,
    mut group: PreparedGroup,
) -> SplitOutcomes {
    // Writing a prepared group needs only what was prepared of it.
    let deliveries = std::mem::take(&mut group.deliveries);
    split_until_written(ctx, &deliveries, Some(group)).await
}

/// The halving of [`process_in_groups`]; the whole group's first attempt may come prepared.
async fn split_until_written(
    ctx: &PipelineCtx,
    deliveries: &[Delivery],
    mut prepared: Option<PreparedGroup>,
) -> SplitOutcomes {
    let mut outcomes: Vec<Option<Result<DeliveryReport>>> = std::iter::repeat_with(|| None)
        .take(deliveries.len())
        .collect();
    let mut parts = vec![(0, deliveries.len())];
    while let Some((start, end)) = parts.pop() {
        let part = &deliveries[start..end];
        if part.len() == 1 {
            let outcome = super::stream::process(ctx, &part[0]).await;
            let outage = matches!(&outcome, Err(error) if error.is_transient());
            outcomes[start] = Some(outcome);
            if outage {
                break;
            }
            continue;
        }
        let attempt = match prepared.take() {
            Some(group) => write_prepared(ctx, group).await,
            None => process_group(ctx, part).await,
        };
        match attempt {
            Ok(done) => {
                for (i, (_, outcome)) in done.into_iter().enumerate() {
                    outcomes[start + i] = Some(outcome);
                }
            }
            Err(error) if error.is_transient() => break,
            Err(_) => {
                let middle = start + part.len() / 2;
                parts.push((middle, end));
                parts.push((start, middle));
            }
        }
    }
    deliveries.iter().cloned().zip(outcomes).collect()
}

/// The outcomes sorted back into the order the deliveries were given.
fn in_order(mut outcomes: Vec<(usize, (Delivery, Result<DeliveryReport>))>) -> GroupOutcomes {
    outcomes.sort_by_key(|(position, _)| *position);
    outcomes.into_iter().map(|(_, outcome)| outcome).collect()
}

/// Writes a prepared group in one transaction and commits it.
async fn write_group(
    ctx: &PipelineCtx,
    ready: &mut [Prepared],
    frame: NormalizedFrame,
    partials: HashMap<u32, PartialAggregates>,
) -> Result<Vec<Fate>> {
    let received_at = Utc::now();
    let mut client = ctx.store.pool().get().await.map_err(StoreError::from)?;
    let tx = client.transaction().await.map_err(StoreError::from)?;
    // A key that names other content (stored, or of another delivery of the group) sends
    // the group delivery by delivery, where that one is refused with its reason.
    let candidates: Vec<Candidate<'_>> = ready
        .iter()
        .map(|f| (&f.job, f.tally.status(f.rejection.is_some())))
        .collect();
    let fates = match admit(&tx, &candidates).await? {
        Ok(fates) => fates,
        Err(other) => {
            return Err(Error::GroupConflict(format!(
                "Idempotency-Key `{}` names other content",
                other.key
            )))
        }
    };
    let file_ids: Vec<Option<i64>> = fates
        .iter()
        .map(|fate| fate.as_ref().ok().copied())
        .collect();
    // Readings already stored are sifted out; a conflict sends the group file by file, where
    // the rejected line reaches quarantine with its reason.
    let names: Vec<String> = ready.iter().map(|f| f.job.name().to_owned()).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut readings = ReadingsWriter::new(&tx, ctx);
    let frame = Frame {
        frame,
        partials,
        hours: None,
    };
    let mut written = readings
        .write(ctx, frame, &file_ids, &names, OnConflictLine::FailGroup)
        .await?;
    for (part, file) in ready.iter_mut().enumerate() {
        let part = part as u32;
        file.tally.sifted(written.sifted.duplicates_of(part), 0);
        if let Some(readings) = written.readings_of(part) {
            file.tally.reading_count = readings;
        }
        if let Some(file_partials) = written.partials.remove(&part) {
            file.tally.aggregates.merge(file_partials);
        }
    }
    let finished = readings.finish().await?;
    let ready: &[Prepared] = ready;
    let new_files: Vec<(i64, &Prepared)> = fates
        .iter()
        .zip(ready)
        .filter_map(|(fate, file)| fate.as_ref().ok().map(|id| (*id, file)))
        .collect();
    let rejects: Vec<(i64, &[RejectedRow])> = new_files
        .iter()
        .map(|(id, file)| (*id, file.rejects.as_slice()))
        .collect();
    copy::copy_rejects(&tx, &rejects).await?;
    let new: Vec<NewDelivery<'_>> = new_files
        .iter()
        .map(|(id, file)| NewDelivery {
            file_id: *id,
            job: &file.job,
            tally: &file.tally,
            rejection: file.rejection.as_ref(),
        })
        .collect();
    let duplicates: Vec<DuplicateDelivery<'_>> = fates
        .iter()
        .zip(ready)
        .filter_map(|(fate, file)| fate.as_ref().err().map(|e| (&file.job, e.file_id)))
        .collect();
    let ending = finished.ending(received_at);
    commit::record_and_commit(tx, ctx, &new, &duplicates, ending).await?;
    Ok(fates)
}
