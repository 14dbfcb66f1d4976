//! The streaming path: one delivery of any size, read in bounded chunks into one transaction.
//!
//! A validator thread (`Producer`) reads the source in chunks (`chunk_rows` at most), transforms
//! each with polars and sends it through a channel of capacity `CHUNK_CHANNEL_CAPACITY`, so a
//! slow database slows reading and memory stays bounded whatever the size. The writer
//! (`stage`) streams every chunk's readings into one COPY and the rejects beside it, then hands
//! the transaction to `commit::record_and_commit` (ledger row, aggregates, sensors, marks,
//! commit). Before a chunk is written, lines whose readings are already stored are sifted out
//! (`sift`). A delivery whose reject ratio is over the limit is rolled back and read again as a
//! whole rejection.
//!
//! Nothing of a delivery is visible before that commit; its source acts on the report after
//! it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use deadpool_postgres::Transaction;
use tokio::sync::mpsc;
use tracing::info;

use crate::config::Settings;
use crate::delivery::{ByteSource, Delivery};
use crate::error::{Error, Result};
use crate::pipeline::settle::{self, Concluded};
use crate::pipeline::{DeliveryReport, Job, PipelineCtx};
use crate::store::copy;
use crate::store::ledger::{ExistingFile, FileStatus};
use crate::store::StoreError;
use crate::transform::{transform_chunk, NormalizedBatch};
use crate::validate::quarantine::QuarantineWriter;
use crate::validate::reject::{RejectReason, RejectedRow, Violation};
use crate::validate::rejection::FileRejection;
use crate::validate::{FileValidator, Mode, RejectedLines, ValidatedChunk};

use super::admit::admit;
use super::commit::{self, Ending, NewDelivery};
use super::readings::{Frame, OnConflictLine, ReadingsWriter};
use super::sift::Conflict;
use super::tally::Tally;

/// Rejected rows for the lines sifted out as conflicts, located in the source.
pub(super) fn conflict_rows(
    writer: &QuarantineWriter,
    conflicts: Vec<Conflict>,
) -> Result<Vec<RejectedRow>> {
    let lines = conflicts
        .into_iter()
        .map(|(_, line, message)| {
            (
                u64::from(line),
                Violation::row(RejectReason::ConflictingReading, message),
            )
        })
        .collect();
    Ok(writer.rows_at_lines(lines)?)
}

/// Chunks in flight between the validator thread and the writer.
const CHUNK_CHANNEL_CAPACITY: usize = 2;

/// Processes one delivery once: streamed, committed, then settled.
///
/// # Errors
/// The source cannot be read, the database failed, or the transform failed.
pub async fn process(ctx: &PipelineCtx, delivery: &Delivery) -> Result<DeliveryReport> {
    process_in(ctx, delivery, Mode::Load).await
}

/// Records a delivery whose bytes are not in a form rows can be read from (a request body
/// that is not valid JSON): a ledger row `rejected` with `rejection`, the bytes in quarantine
/// as they came, no rows. The same bytes again are a duplicate of it.
///
/// # Errors
/// The source cannot be read or the database failed.
pub async fn process_unreadable(
    ctx: &PipelineCtx,
    delivery: &Delivery,
    rejection: FileRejection,
) -> Result<DeliveryReport> {
    process_in(ctx, delivery, Mode::Unreadable(rejection)).await
}

async fn process_in(
    ctx: &PipelineCtx,
    delivery: &Delivery,
    mut mode: Mode,
) -> Result<DeliveryReport> {
    let started = Instant::now();
    let taken = super::take_source(delivery)?;
    crate::faults::point("pipeline::taken");
    // From here every pass reads the file taken (`Delivery::take`), not its name.
    let delivery = &taken.0.clone();
    // The validator starts on the first chunks while the source is hashed: the database then
    // gets rows as soon as the ledger has been checked.
    let mut early_producer = Some(Producer::start(
        Arc::clone(&ctx.settings),
        delivery,
        mode.clone(),
    ));
    let job = tokio::task::spawn_blocking(move || Job::identify(taken))
        .await
        .expect("identity task does not panic")?;
    let report = loop {
        let producer = early_producer
            .take()
            .unwrap_or_else(|| Producer::start(Arc::clone(&ctx.settings), delivery, mode.clone()));
        match load_once(ctx, &job, mode.clone(), producer).await? {
            Outcome::Committed(report) => break *report,
            Outcome::Duplicate(existing) => break settle::after_duplicate(ctx, &job, existing)?,
            Outcome::RejectWhole(rejection) => {
                info!(
                    message = "Rejecting the delivery as a whole.",
                    file = %job.name(),
                    code = rejection.code.as_str(),
                    reason = %rejection.message
                );
                mode = Mode::RejectAll(rejection);
            }
        }
    };
    Ok(report.finished(started))
}

/// What one attempt at a delivery came to.
enum Outcome {
    Committed(Box<DeliveryReport>),
    Duplicate(ExistingFile),
    RejectWhole(FileRejection),
}

/// One transaction: stage the delivery, commit (or roll back by dropping), settle.
async fn load_once(
    ctx: &PipelineCtx,
    job: &Job,
    mode: Mode,
    producer: Producer,
) -> Result<Outcome> {
    let mut client = ctx.store.pool().get().await.map_err(StoreError::from)?;
    let tx = client.transaction().await.map_err(StoreError::from)?;
    Ok(match stage(tx, ctx, job, mode, producer).await? {
        Outcome::Committed(report) => {
            Outcome::Committed(Box::new(settle::after_commit(ctx, job, *report)?))
        }
        other => other,
    })
}

/// Does all of one delivery's database work inside `transaction`, publishes its quarantine
/// output and commits (`commit::record_and_commit`); a delivery to be rejected as a whole is
/// rolled back instead (the transaction is dropped).
async fn stage(
    transaction: Transaction<'_>,
    ctx: &PipelineCtx,
    job: &Job,
    mode: Mode,
    producer: Producer,
) -> Result<Outcome> {
    let tx = &transaction;
    let settings = &ctx.settings;
    let received_at = Utc::now();
    // The status a new delivery will have matters only to a later one of the same
    // transaction, and a streamed delivery is alone in its.
    let file_id = match admit(tx, &[(job, FileStatus::Loaded)]).await? {
        Err(other) => return Err(Error::KeyReused(other.file_id.unwrap_or_default())),
        Ok(fates) => match fates.into_iter().next().expect("one fate per delivery") {
            Ok(file_id) => file_id,
            Err(existing) => {
                let ending = Ending {
                    received_at,
                    replaced_sensors: &[],
                    placeholders: &[],
                };
                let duplicate = [(job, existing.file_id)];
                commit::record_and_commit(transaction, ctx, &[], &duplicate, ending).await?;
                return Ok(Outcome::Duplicate(existing));
            }
        },
    };

    let whole_file = mode.whole_rejection().cloned();
    let Producer {
        chunks: mut receiver,
        thread: producer,
    } = producer;
    let target = job.quarantine_target(settings);
    let mut writer = QuarantineWriter::new(target.clone(), whole_file.is_none())?;
    let mut header_rejection = None;
    let mut tally = Tally::default();
    let mut readings = ReadingsWriter::new(tx, ctx);

    // The chunks' readings stream into one COPY; rejects wait in `pending_rejects` (at most
    // `chunk_rows` of them) and are copied when the readings COPY pauses or ends.
    let mut pending_rejects: Vec<RejectedRow> = Vec::new();
    while let Some(event) = receiver.recv().await {
        match event? {
            ProducerEvent::HeaderRejected(rejection) => {
                // The whole delivery goes to quarantine; only the reasons are written beside it.
                writer.skip_rows();
                header_rejection = Some(rejection);
            }
            ProducerEvent::Chunk(chunk, batch) => {
                tally.absorb(&chunk, settings);
                if let Some(batch) = batch {
                    let frame = Frame {
                        frame: batch.frame,
                        partials: HashMap::from([(0, batch.partials)]),
                        hours: Some(batch.hours),
                    };
                    let ids = [Some(file_id)];
                    let mut written = readings
                        .write(ctx, frame, &ids, &[job.name()], OnConflictLine::Reject)
                        .await?;
                    if written.readings > 0 {
                        crate::faults::point("pipeline::copy-chunk");
                    }
                    let sifted = std::mem::take(&mut written.sifted);
                    tally.sifted(sifted.duplicates_of(0), sifted.conflicts_of(0));
                    tally.reading_count += written.readings;
                    tally
                        .aggregates
                        .merge(written.partials.remove(&0).unwrap_or_default());
                    if !sifted.conflicts.is_empty() {
                        let conflicts = conflict_rows(&writer, sifted.conflicts)?;
                        writer.record(&conflicts)?;
                        pending_rejects.extend(conflicts);
                    }
                }
                if !chunk.rejects.is_empty() {
                    writer.record(&chunk.rejects)?;
                    pending_rejects.extend(chunk.rejects);
                }
                if pending_rejects.len() >= settings.chunk_rows {
                    let tx = readings.statement().await?;
                    copy::copy_rejects(tx, &[(file_id, &pending_rejects)]).await?;
                    pending_rejects.clear();
                }
            }
        }
    }
    producer.await.expect("validator thread does not panic");
    let tx = readings.statement().await?;
    copy::copy_rejects(tx, &[(file_id, &pending_rejects)]).await?;
    let finished = readings.finish().await?;

    let (rejection, quarantined) = match settle::conclude(
        job,
        settings,
        header_rejection.or(whole_file),
        &tally,
        writer,
    )? {
        // Rolled back (the transaction is dropped), to be read again rejecting every row.
        Concluded::RejectWhole(verdict) => return Ok(Outcome::RejectWhole(verdict)),
        Concluded::Published {
            rejection,
            quarantined,
        } => (rejection, quarantined),
    };
    let new = [NewDelivery {
        file_id,
        job,
        tally: &tally,
        rejection: rejection.as_ref(),
    }];
    let ending = finished.ending(received_at);
    commit::record_and_commit(transaction, ctx, &new, &[], ending).await?;
    Ok(Outcome::Committed(Box::new(tally.report(
        job,
        file_id,
        rejection.as_ref(),
        quarantined,
        false,
    ))))
}

enum ProducerEvent {
    Chunk(Box<ValidatedChunk>, Option<NormalizedBatch>),
    HeaderRejected(FileRejection),
}

/// A validator thread reading one delivery for one attempt, and the channel of its chunks.
/// Dropping it stops the thread at its next chunk.
struct Producer {
    chunks: mpsc::Receiver<Result<ProducerEvent>>,
    thread: tokio::task::JoinHandle<()>,
}

impl Producer {
    fn start(settings: Arc<Settings>, delivery: &Delivery, mode: Mode) -> Self {
        let (tx, chunks) = mpsc::channel(CHUNK_CHANNEL_CAPACITY);
        let (source, name) = (delivery.source.clone(), delivery.name.clone());
        let thread = tokio::task::spawn_blocking(move || {
            let send = |event: Result<ProducerEvent>| tx.blocking_send(event).is_ok();
            if let Err(error) = produce(&settings, &source, &name, mode, send) {
                send(Err(error));
            }
        });
        Self { chunks, thread }
    }
}

/// Reads, validates and transforms every chunk of `source`, handing each to `send`; stops
/// early when `send` says the receiver is gone.
fn produce(
    settings: &Settings,
    source: &ByteSource,
    name: &str,
    mode: Mode,
    send: impl Fn(Result<ProducerEvent>) -> bool,
) -> Result<()> {
    let reads_rows = mode.reads_rows();
    match FileValidator::open(source, name, settings, mode)? {
        Ok(mut validator) => {
            while let Some(mut chunk) = validator.next_chunk()? {
                crate::faults::point("pipeline::chunk-read");
                let readings = std::mem::take(&mut chunk.readings);
                let batch = if readings.is_empty() {
                    None
                } else {
                    Some(transform_chunk(readings, settings).map_err(Error::Transform)?)
                };
                if !send(Ok(ProducerEvent::Chunk(Box::new(chunk), batch))) {
                    return Ok(());
                }
            }
        }
        Err(rejection) => {
            if !send(Ok(ProducerEvent::HeaderRejected(rejection.clone()))) || !reads_rows {
                return Ok(());
            }
            let mut lines = RejectedLines::open(source, rejection, settings)?;
            while let Some(chunk) = lines.next_chunk()? {
                if !send(Ok(ProducerEvent::Chunk(Box::new(chunk), None))) {
                    return Ok(());
                }
            }
        }
    }
    Ok(())
}
