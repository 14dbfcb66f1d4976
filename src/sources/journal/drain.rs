//! The drain: loads the push journal into PostgreSQL, in order, in batches, exactly once.
//!
//! Each batch first asks the database which of its records it holds already (their receipts
//! were committed with their readings, `store::receipts`): those are only marked loaded, so a
//! crash between a commit and the journal's own bookkeeping repeats nothing. The rest become
//! deliveries carrying their journal mark, split in lanes (`pipeline::lanes`): bodies that share
//! a sensor, location, content, key or device go in the same lane, in journal order, and each
//! lane is committed as one group (one transaction, each body its own ledger row), the lanes
//! at the same time on their own connections. Lanes share nothing whose outcome depends on
//! order, so journal order holds whichever commits first. A group that fails as a whole for a
//! reason of its data (a conflicting reading, a key that names other content) is split until
//! the body at fault goes alone (`pipeline::process_in_groups`), where each line gets its own
//! verdict. While the database is away the drain backs
//! off and tries again, and it resumes by itself when the database is back. A body that fails
//! for good (its key was first given with other content) gets a receipt saying why, and its
//! bytes are kept in `quarantine/journal/`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::delivery::{ByteSource, Delivery, DeviceMark, JournalMark};
use crate::error::Error;
use crate::pipeline::{prepare_lanes, process_prepared_in_groups, PipelineCtx, PreparedGroup};
use crate::store::{receipts, StoreError};

use super::record::Record;
use super::{Journal, JournalError, Slot};

/// Bodies loaded in one batch at most.
pub const BATCH_BODIES: usize = 512;

/// Bytes of the bodies of one batch, about.
const BATCH_BYTES: u64 = 16 * 1024 * 1024;

/// A batch that is not full is taken this long after the batch before it was taken, not at
/// once: bodies arriving at a high rate are so loaded in large batches, each at a lower cost,
/// instead of in many small ones that take the processor from the answers. A body arriving
/// alone is taken at once.
const BATCH_INTERVAL: Duration = Duration::from_millis(200);

/// How often a batch waiting to fill looks whether it is full.
const FILL_POLL: Duration = Duration::from_millis(20);

/// Transactions writing one batch at once at most: a batch is split into lanes whose bodies
/// share no sensor, location, content, key or device with another lane's
/// (`pipeline::prepare_lanes`), so the lanes can commit in any order and journal order holds.
const LANES: usize = 2;

/// While pushes arrive faster than this (bodies a second), the drain writes one lane at a
/// time and leaves the processor to the answers; the lanes catch up when the rate falls.
const BUSY_ARRIVALS: f64 = 1_000.0;

/// How many lanes the next batch gets, from the rate bodies arrived at, measured over at
/// least [`BATCH_INTERVAL`].
struct Arrivals {
    at: Instant,
    sequence: u64,
    lanes: usize,
}

impl Arrivals {
    fn new(journal: &Journal) -> Self {
        Self {
            at: Instant::now(),
            sequence: journal.last_sequence(),
            lanes: LANES,
        }
    }

    fn lanes(&mut self, journal: &Journal) -> usize {
        let seconds = self.at.elapsed().as_secs_f64();
        if seconds >= BATCH_INTERVAL.as_secs_f64() {
            let sequence = journal.last_sequence();
            let rate = sequence.saturating_sub(self.sequence) as f64 / seconds;
            self.lanes = if rate > BUSY_ARRIVALS { 1 } else { LANES };
            self.at = Instant::now();
            self.sequence = sequence;
        }
        self.lanes
    }
}

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

/// Loads the journal until `cancel` fires (see the module header). While a batch is written,
/// the next one is read from the journal and prepared (validated, transformed), so the
/// process and the database work at the same time; after a batch that stopped, what was
/// prepared ahead is dropped and the journal is read again from its first waiting body.
pub async fn run(journal: Arc<Journal>, ctx: PipelineCtx, cancel: CancellationToken) {
    let initial = ctx
        .settings
        .retry
        .initial_delay
        .max(Duration::from_millis(50));
    let mut delay = initial;
    let mut waiting_since_logged = false;
    let mut ahead: Option<JoinHandle<Option<(Instant, StagedResult)>>> = None;
    let mut last_taken = Instant::now() - BATCH_INTERVAL;
    let mut arrivals = Arrivals::new(&journal);
    loop {
        if cancel.is_cancelled() {
            return;
        }
        let prepared_ahead = match ahead.take() {
            Some(handle) => handle.await.expect("preparing a batch does not panic"),
            None => None,
        };
        let staged = match prepared_ahead {
            Some((taken, staged)) => {
                last_taken = taken;
                staged
            }
            None => {
                let batch = journal.next_batch(BATCH_BODIES, BATCH_BYTES, None);
                let fill_until = last_taken + BATCH_INTERVAL;
                if batch.is_empty() || (batch.len() < BATCH_BODIES && Instant::now() < fill_until) {
                    tokio::select! {
                        () = cancel.cancelled() => return,
                        () = journal.appended(), if batch.is_empty() => continue,
                        () = tokio::time::sleep_until(fill_until.into()), if !batch.is_empty() => {
                            continue
                        }
                        // The depth's age and the drain rate stay current on /metrics.
                        () = tokio::time::sleep(Duration::from_secs(1)) => {
                            journal.stats();
                            continue;
                        }
                    }
                }
                last_taken = Instant::now();
                let lanes = arrivals.lanes(&journal);
                stage(Arc::clone(&journal), ctx.clone(), batch, lanes).await
            }
        };
        let loaded = match staged {
            Ok(staged) => {
                ahead = Some(tokio::spawn(stage_next(
                    Arc::clone(&journal),
                    ctx.clone(),
                    staged.last_sequence,
                    last_taken + BATCH_INTERVAL,
                    arrivals.lanes(&journal),
                )));
                write_staged(&journal, &ctx, staged).await
            }
            Err(stopped) => Err(stopped),
        };
        match loaded {
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
                if let Some(handle) = ahead.take() {
                    handle.abort();
                }
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

/// A batch read back from the journal and prepared, not yet written.
struct Staged {
    /// The last sequence of the batch: the next batch starts after it.
    last_sequence: Option<u64>,
    /// The records still to load (those whose receipts were in the database already are
    /// marked loaded when the batch is staged), by lane.
    lanes: Vec<Lane>,
}

/// Bodies of a batch written in one transaction, independent of the other lanes' bodies.
struct Lane {
    /// The records, in journal order.
    todo: Vec<(Slot, Record)>,
    /// Their deliveries, read, validated and transformed.
    group: PreparedGroup,
}

/// Reads a batch back, marks loaded what the database holds already (a crash between a
/// commit and the journal's bookkeeping), and prepares the rest in up to `lanes` lanes.
async fn stage(
    journal: Arc<Journal>,
    ctx: PipelineCtx,
    batch: Vec<Slot>,
    lanes: usize,
) -> Result<Staged, Stopped> {
    let last_sequence = batch.last().map(|slot| slot.sequence);
    let records = {
        let slots = batch.clone();
        let reader = journal_reader(&journal);
        tokio::task::spawn_blocking(move || slots.iter().map(reader).collect::<Result<Vec<_>, _>>())
            .await
            .expect("reading the journal does not panic")?
    };
    let client = ctx.store.pool().get().await.map_err(StoreError::from)?;
    let ids: Vec<&str> = batch.iter().map(|slot| slot.receipt_id.as_str()).collect();
    let held = receipts::recorded(&client, &ids).await?;
    drop(client);
    let (done, todo): (Vec<_>, Vec<_>) = batch
        .into_iter()
        .zip(records)
        .partition(|(slot, _)| held.contains(&slot.receipt_id));
    journal.loaded(
        &done
            .iter()
            .map(|(slot, _)| slot.sequence)
            .collect::<Vec<_>>(),
    );
    let deliveries: Vec<Delivery> = todo.iter().map(|(_, r)| delivery_of(r)).collect();
    let split = prepare_lanes(&ctx, &deliveries, lanes).await?;
    let mut todo: Vec<Option<(Slot, Record)>> = todo.into_iter().map(Some).collect();
    let lanes = split
        .into_iter()
        .map(|(positions, group)| Lane {
            todo: positions
                .iter()
                .filter_map(|&position| todo[position].take())
                .collect(),
            group,
        })
        .collect();
    Ok(Staged {
        last_sequence,
        lanes,
    })
}

/// A staged batch, or why it could not be staged.
type StagedResult = Result<Staged, Stopped>;

/// The batch after sequence `after`, taken once it is full or at `fill_until` (see
/// [`BATCH_INTERVAL`]), and staged, with the moment it was taken; `None` when no body waits
/// then.
async fn stage_next(
    journal: Arc<Journal>,
    ctx: PipelineCtx,
    after: Option<u64>,
    fill_until: Instant,
    lanes: usize,
) -> Option<(Instant, StagedResult)> {
    loop {
        let now = Instant::now();
        if now >= fill_until || journal.waiting_after(after, BATCH_BODIES) >= BATCH_BODIES {
            break;
        }
        tokio::time::sleep((fill_until - now).min(FILL_POLL)).await;
    }
    let batch = journal.next_batch(BATCH_BODIES, BATCH_BYTES, after);
    if batch.is_empty() {
        return None;
    }
    let taken = Instant::now();
    Some((taken, stage(journal, ctx, batch, lanes).await))
}

/// Writes a staged batch, its lanes at the same time; the first lane that stops stops the
/// batch, after every lane has ended.
async fn write_staged(
    journal: &Arc<Journal>,
    ctx: &PipelineCtx,
    staged: Staged,
) -> Result<(), Stopped> {
    let writing: Vec<JoinHandle<Result<(), Stopped>>> = staged
        .lanes
        .into_iter()
        .map(|lane| {
            let (journal, ctx) = (Arc::clone(journal), ctx.clone());
            tokio::spawn(async move { write_lane(&journal, &ctx, lane).await })
        })
        .collect();
    let mut ended = Ok(());
    for handle in writing {
        let written = handle.await.expect("writing a lane does not panic");
        if ended.is_ok() {
            ended = written;
        }
    }
    ended
}

/// Writes a lane; the records loaded are marked as such even when a later one stops it.
async fn write_lane(journal: &Journal, ctx: &PipelineCtx, lane: Lane) -> Result<(), Stopped> {
    let outcomes = process_prepared_in_groups(ctx, lane.group).await;
    // Loaded bodies are marked together: before a failure is settled, and whatever stops the
    // lane.
    let mut loaded = Vec::with_capacity(lane.todo.len());
    let mut ended = Ok(());
    for ((slot, record), (_, outcome)) in lane.todo.iter().zip(outcomes) {
        match outcome {
            Some(Ok(_)) => loaded.push(slot.sequence),
            Some(Err(error)) => {
                journal.loaded(&std::mem::take(&mut loaded));
                if let Err(stop) = settle_failure(journal, ctx, slot, record, error).await {
                    ended = Err(stop);
                    break;
                }
            }
            // An outage stopped the batch here: the rest is tried again.
            None => {
                ended = Err(Stopped::Outage);
                break;
            }
        }
    }
    journal.loaded(&loaded);
    ended
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
