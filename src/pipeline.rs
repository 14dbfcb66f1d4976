//! Per-file pipeline: fingerprint → validate (blocking thread) → transform (same thread) →
//! bounded channel → store (one transaction) → quarantine, error log, and the file's removal.
//!
//! The validator thread streams `chunk_rows`-sized chunks through a channel of capacity 2, so
//! a slow database slows reading and memory stays bounded. Everything a file changes in the
//! database (readings, rejects, aggregates, sensors, ledger row) commits in one transaction;
//! quarantine files are published (atomically, under deterministic names) just before that
//! commit, and the source leaves `data/` only after it. A file whose reject ratio is over the
//! limit is rolled back and processed again as a whole-file rejection. Transient database
//! errors are retried with exponential backoff and jitter; the file stays where it is.
//! `process_batch` is the group commit for small files: each is read whole in memory, the group
//! is transformed in one polars pass and written with one COPY per table in one transaction,
//! every file keeping its own ledger row, outcome and exactly-once guarantee.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};
use chrono::Utc;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_postgres::Transaction;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::Settings;
use crate::error::{Error, Result};
use crate::store::ledger::{self, ExistingFile, FileRecord, FileStatus};
use crate::store::{copy, Store, StoreError};
use crate::transform::aggregate::FileAggregates;
use crate::transform::{transform_chunk, transform_group, NormalizedBatch};
use crate::validate::format::FileRejection;
use crate::validate::quarantine::{self, QuarantineTarget, QuarantineWriter};
use crate::validate::reject::RejectedRow;
use crate::validate::{
    whole_file_rejection, FileValidator, Mode, ReadingColumns, RejectedLines, ValidatedChunk,
};

/// Chunks in flight between the validator thread and the writer.
const CHUNK_CHANNEL_CAPACITY: usize = 2;

/// What the pipeline shares across files.
#[derive(Clone)]
pub struct PipelineCtx {
    /// Validated configuration.
    pub settings: Arc<Settings>,
    /// The database.
    pub store: Store,
}

/// What happens to an input file once it is committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// `ingest`: inputs stay where they are; a rejected file is copied into quarantine.
    LeaveInPlace,
    /// `run`: the file leaves the inbox (to `processed/`, deleted, or into quarantine).
    Consume,
}

/// A file to process and its identity.
#[derive(Debug, Clone)]
pub struct FileJob {
    /// Path of the file.
    pub path: PathBuf,
    /// File name.
    pub file_name: String,
    /// Hex SHA-256 of the content.
    pub fingerprint: String,
    /// Size in bytes.
    pub size_bytes: u64,
}

impl FileJob {
    /// Hashes a file (streaming) into a job.
    ///
    /// # Errors
    /// The file cannot be read.
    pub fn fingerprint(path: &Path) -> Result<Self> {
        let mut file = fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let mut hasher = Sha256::new();
        let mut buffer = vec![0u8; 256 * 1024];
        let mut size_bytes = 0u64;
        loop {
            let n = file.read(&mut buffer).map_err(|e| Error::io(path, e))?;
            if n == 0 {
                break;
            }
            size_bytes += n as u64;
            hasher.update(&buffer[..n]);
        }
        Ok(Self {
            path: path.to_path_buf(),
            file_name: path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            fingerprint: hex::encode(hasher.finalize()),
            size_bytes,
        })
    }

    fn quarantine_target(&self, settings: &Settings) -> QuarantineTarget {
        QuarantineTarget {
            dir: settings.quarantine_dir.clone(),
            source: self.path.clone(),
            file_name: self.file_name.clone(),
            fingerprint: self.fingerprint.clone(),
        }
    }
}

/// The outcome of one file.
#[derive(Debug, Clone, Serialize)]
pub struct FileReport {
    /// Source path.
    pub path: PathBuf,
    /// File name.
    pub file_name: String,
    /// Hex SHA-256.
    pub fingerprint: String,
    /// Ledger id (the existing one for a duplicate).
    pub file_id: i64,
    /// Outcome.
    pub status: FileStatus,
    /// Data rows read.
    pub rows_read: u64,
    /// Rows loaded.
    pub rows_loaded: u64,
    /// Rows rejected.
    pub rows_rejected: u64,
    /// Readings loaded.
    pub reading_count: u64,
    /// File-level reason when rejected whole.
    pub rejection: Option<String>,
    /// Files written to quarantine.
    pub quarantine: Vec<PathBuf>,
    /// Where the source went (`run`).
    pub moved_to: Option<PathBuf>,
    /// Violations by rule code.
    pub violation_counts: BTreeMap<&'static str, u64>,
    /// Wall time.
    pub elapsed_ms: u64,
}

enum ProducerEvent {
    Chunk(Box<ValidatedChunk>, Option<NormalizedBatch>),
    HeaderRejected(FileRejection),
}

enum LoadOutcome {
    Committed(Box<FileReport>),
    Duplicate(ExistingFile),
    RejectWhole(FileRejection),
}

/// Processes one file, retrying transient database errors per the configured policy and
/// giving up early when `cancel` fires (the file then stays where it is).
///
/// # Errors
/// A permanent error, retries exhausted, or cancellation (as the last transient error).
pub async fn process_file_with_retry(
    ctx: &PipelineCtx,
    path: &Path,
    disposition: Disposition,
    cancel: &CancellationToken,
) -> Result<FileReport> {
    let policy = &ctx.settings.retry;
    let mut backoff = ExponentialBuilder::default()
        .with_min_delay(policy.initial_delay)
        .with_max_delay(policy.max_delay)
        .with_jitter();
    backoff = match policy.max_attempts {
        Some(attempts) => backoff.with_max_times(attempts),
        None => backoff.without_max_times(),
    };
    // The first attempt always runs to its end (commit or rollback); only the waits between
    // retries give way to shutdown.
    match process_file(ctx, path, disposition).await {
        Err(error) if error.is_transient() && !cancel.is_cancelled() => {
            warn!(
                message = "Database unavailable, will retry.",
                file = %path.display(),
                error = %crate::telemetry::chain(&error)
            );
        }
        other => return other,
    }
    let attempt = || async { process_file(ctx, path, disposition).await };
    let retrying = attempt
        .retry(backoff)
        .when(|error: &Error| error.is_transient() && !cancel.is_cancelled())
        .notify(|error: &Error, delay: Duration| {
            warn!(
                message = "Database unavailable, retrying.",
                file = %path.display(),
                delay_ms = delay.as_millis() as u64,
                error = %crate::telemetry::chain(error)
            );
            crate::telemetry::record_retry();
        });
    tokio::select! {
        biased;
        () = cancel.cancelled() => Err(Error::Cancelled(path.to_path_buf())),
        result = retrying => result,
    }
}

/// Processes one file once.
///
/// # Errors
/// The file cannot be read, the database failed, or the transform failed.
pub async fn process_file(
    ctx: &PipelineCtx,
    path: &Path,
    disposition: Disposition,
) -> Result<FileReport> {
    let started = Instant::now();
    let owned_path = path.to_path_buf();
    // The validator starts on the first chunks while the file is hashed: the database then
    // gets rows as soon as the ledger has been checked.
    let mut early_producer = Some(Producer::start(
        Arc::clone(&ctx.settings),
        path.to_path_buf(),
        Mode::Load,
    ));
    let job = tokio::task::spawn_blocking(move || FileJob::fingerprint(&owned_path))
        .await
        .expect("fingerprint task does not panic")?;
    let mut mode = Mode::Load;
    let report = loop {
        let producer = early_producer.take().unwrap_or_else(|| {
            Producer::start(Arc::clone(&ctx.settings), path.to_path_buf(), mode.clone())
        });
        match load_once(ctx, &job, mode.clone(), disposition, producer).await? {
            LoadOutcome::Committed(report) => break *report,
            LoadOutcome::Duplicate(existing) => {
                break finish_duplicate(ctx, &job, existing, disposition)?
            }
            LoadOutcome::RejectWhole(rejection) => {
                info!(
                    message = "Rejecting file as a whole.",
                    file = %job.file_name,
                    code = rejection.code,
                    reason = %rejection.message
                );
                mode = Mode::RejectAll(rejection);
            }
        }
    };
    Ok(finished(report, started))
}

/// Stamps the elapsed time, records metrics and logs the outcome.
fn finished(report: FileReport, started: Instant) -> FileReport {
    let report = FileReport {
        elapsed_ms: started.elapsed().as_millis() as u64,
        ..report
    };
    let codes: Vec<(&'static str, u64)> = report
        .violation_counts
        .iter()
        .map(|(c, n)| (*c, *n))
        .collect();
    crate::telemetry::record_file(&report, &codes);
    crate::telemetry::record_database_available();
    info!(
        message = "File processed.",
        file = %report.file_name,
        fingerprint = %&report.fingerprint[..12],
        status = %report.status,
        rows_read = report.rows_read,
        rows_loaded = report.rows_loaded,
        rows_rejected = report.rows_rejected,
        elapsed_ms = report.elapsed_ms
    );
    report
}

/// A small file read, validated, transformed and quarantined in memory, ready to be written.
struct PreparedFile {
    job: FileJob,
    /// Accepted readings, untransformed: the group is transformed in one polars pass.
    readings: ReadingColumns,
    rejects: Vec<RejectedRow>,
    totals: Totals,
    rejection: Option<FileRejection>,
    quarantined: Vec<PathBuf>,
}

/// Reads a whole (small) file through the same stages as the streaming path, holding its
/// chunks in memory; a file over the reject ratio is read again as a whole-file rejection.
fn prepare_file(settings: &Settings, job: FileJob) -> Result<PreparedFile> {
    let target = job.quarantine_target(settings);
    let mut mode = Mode::Load;
    loop {
        let whole_file = match &mode {
            Mode::Load => None,
            Mode::RejectAll(rejection) => Some(rejection.clone()),
        };
        let mut writer = QuarantineWriter::new(target.clone(), whole_file.is_none())?;
        let mut totals = Totals::default();
        let mut accepted = ReadingColumns::default();
        let mut rejects = Vec::new();
        let mut header_rejection = None;
        let mut absorb = |mut chunk: ValidatedChunk,
                          totals: &mut Totals,
                          writer: &mut QuarantineWriter|
         -> Result<()> {
            let readings = std::mem::take(&mut chunk.readings);
            totals.reading_count += readings.reading_count() as u64;
            accepted.append(readings, 0);
            totals.absorb(&chunk, settings);
            writer.record(&chunk.rejects)?;
            rejects.extend(chunk.rejects);
            Ok(())
        };
        match FileValidator::open(&job.path, settings, mode.clone())? {
            Ok(mut validator) => {
                while let Some(chunk) = validator.next_chunk(&job.path)? {
                    absorb(chunk, &mut totals, &mut writer)?;
                }
            }
            Err(rejection) => {
                writer.skip_rows();
                let mut lines =
                    RejectedLines::open(&job.path, rejection.clone(), settings.chunk_rows)?;
                while let Some(chunk) = lines.next_chunk(&job.path)? {
                    absorb(chunk, &mut totals, &mut writer)?;
                }
                header_rejection = Some(rejection);
            }
        }
        let rejection = header_rejection.or(whole_file);
        if rejection.is_none() {
            if let Some(verdict) =
                whole_file_rejection(totals.rows_read, totals.rows_rejected, settings)
            {
                writer.abort();
                mode = Mode::RejectAll(verdict);
                continue;
            }
        }
        let quarantined = publish_quarantine(&target, rejection.as_ref(), &totals, writer)?;
        return Ok(PreparedFile {
            job,
            readings: accepted,
            rejects,
            totals,
            rejection,
            quarantined,
        });
    }
}

/// Group commit: processes several small files in one transaction and one COPY per table,
/// each file keeping its own ledger row, its own outcome and its exactly-once guarantee
/// (content locks and the ledger check cover every file of the group). A file that cannot be
/// read or transformed is returned with its error and left out; the others still commit. A
/// database error fails the whole group (`Err`), nothing committed: the caller then
/// processes the files one by one.
///
/// # Errors
/// A database error.
pub async fn process_batch(
    ctx: &PipelineCtx,
    paths: &[PathBuf],
    disposition: Disposition,
) -> Result<Vec<(PathBuf, Result<FileReport>)>> {
    let started = Instant::now();
    let settings = Arc::clone(&ctx.settings);
    let owned = paths.to_vec();
    let prepared = tokio::task::spawn_blocking(move || {
        owned
            .into_iter()
            .map(|path| {
                let prepared =
                    FileJob::fingerprint(&path).and_then(|job| prepare_file(&settings, job));
                (path, prepared)
            })
            .collect::<Vec<_>>()
    })
    .await
    .expect("validation does not panic");
    let mut outcomes = Vec::with_capacity(prepared.len());
    let mut ready = Vec::with_capacity(prepared.len());
    for (path, result) in prepared {
        match result {
            Ok(file) => ready.push(file),
            Err(error) => outcomes.push((path, Err(error))),
        }
    }
    if ready.is_empty() {
        return Ok(outcomes);
    }
    // One polars pass for the whole group: part i of the frame is file i of `ready`.
    let mut combined = ReadingColumns::default();
    for (part, file) in ready.iter_mut().enumerate() {
        combined.append(
            std::mem::take(&mut file.readings),
            u32::try_from(part).unwrap_or(u32::MAX),
        );
    }
    let settings = Arc::clone(&ctx.settings);
    let (frame, mut partials) =
        tokio::task::spawn_blocking(move || transform_group(combined, &settings))
            .await
            .expect("transform does not panic")?;
    for (part, file) in ready.iter_mut().enumerate() {
        if let Some(file_partials) = partials.remove(&(part as u32)) {
            file.totals.aggregates.merge(file_partials);
        }
    }

    let received_at = Utc::now();
    let mut client = ctx.store.pool().get().await.map_err(StoreError::from)?;
    let tx = client.transaction().await.map_err(StoreError::from)?;
    let hashes: Vec<String> = ready.iter().map(|f| f.job.fingerprint.clone()).collect();
    ledger::lock_contents(&tx, &hashes).await?;
    let mut known = ledger::find_files(&tx, &hashes).await?;
    let new_count = hashes
        .iter()
        .collect::<std::collections::HashSet<_>>()
        .iter()
        .filter(|h| !known.contains_key(h.as_str()))
        .count();
    let mut ids = ledger::next_file_ids(&tx, new_count).await?.into_iter();
    // Each file is new (with its id) or a duplicate of a known or earlier file of the group.
    let mut fates: Vec<std::result::Result<i64, ExistingFile>> = Vec::with_capacity(ready.len());
    for file in &ready {
        match known.get(&file.job.fingerprint) {
            Some(existing) => fates.push(Err(existing.clone())),
            None => {
                let file_id = ids.next().expect("one id per new content");
                known.insert(
                    file.job.fingerprint.clone(),
                    ExistingFile {
                        file_id,
                        status: file.totals.status(file.rejection.is_some()),
                        file_name: file.job.file_name.clone(),
                    },
                );
                fates.push(Ok(file_id));
            }
        }
    }
    let new_files: Vec<(i64, &PreparedFile)> = fates
        .iter()
        .zip(&ready)
        .filter_map(|(fate, file)| fate.as_ref().ok().map(|id| (*id, file)))
        .collect();
    let file_ids: Vec<Option<i64>> = fates
        .iter()
        .map(|fate| fate.as_ref().ok().copied())
        .collect();
    copy::copy_readings(&tx, &ctx.store, &frame, &file_ids).await?;
    let rejects: Vec<(i64, &[RejectedRow])> = new_files
        .iter()
        .map(|(id, file)| (*id, file.rejects.as_slice()))
        .collect();
    copy::copy_rejects(&tx, &rejects).await?;
    let errors: Vec<Option<String>> = new_files
        .iter()
        .map(|(_, file)| file.rejection.as_ref().map(ToString::to_string))
        .collect();
    let records: Vec<FileRecord<'_>> = new_files
        .iter()
        .zip(&errors)
        .map(|((id, file), error)| {
            file.totals
                .record(&file.job, *id, error.as_deref(), received_at)
        })
        .collect();
    ledger::insert_files(&tx, &records).await?;
    let aggregates: Vec<(i64, Vec<crate::transform::aggregate::AggregateRow>)> = new_files
        .iter()
        .map(|(id, file)| (*id, file.totals.aggregates.rows()))
        .collect();
    let aggregate_refs: Vec<(i64, &[crate::transform::aggregate::AggregateRow])> = aggregates
        .iter()
        .map(|(id, rows)| (*id, rows.as_slice()))
        .collect();
    copy::copy_aggregates(&tx, &ctx.store, &aggregate_refs).await?;
    for (fate, file) in fates.iter().zip(&ready) {
        if let Err(existing) = fate {
            ledger::record_delivery(&tx, existing.file_id, &file.job.file_name, "duplicate")
                .await?;
        }
    }
    let sensors: Vec<(i64, String, i64)> = new_files
        .iter()
        .flat_map(|(id, file)| file.totals.sensors_of(*id))
        .collect();
    ledger::upsert_sensors(&tx, &sensors).await?;
    let locations: Vec<ledger::LocationSeen> = new_files
        .iter()
        .flat_map(|(id, file)| file.totals.locations_of(*id))
        .collect();
    ledger::upsert_locations(&tx, &locations).await?;
    tx.commit().await.map_err(StoreError::from)?;

    for (fate, file) in fates.into_iter().zip(ready) {
        let path = file.job.path.clone();
        let report = match fate {
            Ok(file_id) => {
                let error = file.rejection.as_ref().map(ToString::to_string);
                let report = file
                    .totals
                    .report(&file.job, file_id, error, file.quarantined);
                after_commit(ctx, &file.job, report, disposition)
            }
            Err(existing) => finish_duplicate(ctx, &file.job, existing, disposition),
        };
        outcomes.push((path, report.map(|r| finished(r, started))));
    }
    Ok(outcomes)
}

/// A validator thread reading one file for one attempt, and the channel of its chunks.
/// Dropping it stops the thread at its next chunk.
struct Producer {
    chunks: mpsc::Receiver<Result<ProducerEvent>>,
    thread: tokio::task::JoinHandle<()>,
}

impl Producer {
    fn start(settings: Arc<Settings>, path: PathBuf, mode: Mode) -> Self {
        let (tx, chunks) = mpsc::channel(CHUNK_CHANNEL_CAPACITY);
        let thread = tokio::task::spawn_blocking(move || {
            let send = |event: Result<ProducerEvent>| tx.blocking_send(event).is_ok();
            let run = || -> Result<()> {
                match FileValidator::open(&path, &settings, mode)? {
                    Ok(mut validator) => {
                        while let Some(mut chunk) = validator.next_chunk(&path)? {
                            let readings = std::mem::take(&mut chunk.readings);
                            let batch = if readings.is_empty() {
                                None
                            } else {
                                Some(transform_chunk(readings, &settings)?)
                            };
                            if !send(Ok(ProducerEvent::Chunk(Box::new(chunk), batch))) {
                                return Ok(());
                            }
                        }
                    }
                    Err(rejection) => {
                        if !send(Ok(ProducerEvent::HeaderRejected(rejection.clone()))) {
                            return Ok(());
                        }
                        let mut lines = RejectedLines::open(&path, rejection, settings.chunk_rows)?;
                        while let Some(chunk) = lines.next_chunk(&path)? {
                            if !send(Ok(ProducerEvent::Chunk(Box::new(chunk), None))) {
                                return Ok(());
                            }
                        }
                    }
                }
                Ok(())
            };
            if let Err(error) = run() {
                send(Err(error));
            }
        });
        Self { chunks, thread }
    }
}

/// What a file added up to while it was read.
#[derive(Default)]
struct Totals {
    rows_read: u64,
    rows_loaded: u64,
    rows_rejected: u64,
    reading_count: u64,
    sensors: Vec<(i64, String)>,
    locations: Vec<(i64, Option<f64>, Option<f64>)>,
    aggregates: FileAggregates,
    violation_counts: BTreeMap<&'static str, u64>,
}

impl Totals {
    fn absorb(&mut self, chunk: &ValidatedChunk, settings: &Settings) {
        self.rows_read += chunk.rows_read;
        self.rows_loaded += chunk.rows_accepted;
        self.rows_rejected += chunk.rejects.len() as u64;
        for violation in chunk.rejects.iter().flat_map(|r| &r.violations) {
            *self
                .violation_counts
                .entry(violation.reason.code())
                .or_default() += 1;
        }
        for (sensor_id, type_index) in &chunk.sensors {
            self.sensors
                .push((*sensor_id, settings.sensor_types[*type_index].name.clone()));
        }
        self.locations.extend(chunk.locations.iter().copied());
    }

    /// The ledger status: `rejected_whole` when the file got a file-level rejection.
    fn status(&self, rejected_whole: bool) -> FileStatus {
        match (rejected_whole, self.rows_read, self.rows_rejected) {
            (true, _, _) => FileStatus::Rejected,
            (false, 0, _) => FileStatus::Empty,
            (false, _, 0) => FileStatus::Loaded,
            (false, _, _) => FileStatus::PartiallyLoaded,
        }
    }

    fn sensors_of(&self, file_id: i64) -> impl Iterator<Item = (i64, String, i64)> + '_ {
        self.sensors
            .iter()
            .map(move |(id, t)| (*id, t.clone(), file_id))
    }

    fn locations_of(&self, file_id: i64) -> impl Iterator<Item = ledger::LocationSeen> + '_ {
        self.locations
            .iter()
            .map(move |(id, lat, lon)| (*id, *lat, *lon, file_id))
    }

    fn record<'a>(
        &self,
        job: &'a FileJob,
        file_id: i64,
        rejection: Option<&'a str>,
        received_at: chrono::DateTime<Utc>,
    ) -> FileRecord<'a> {
        FileRecord {
            file_id,
            content_sha256: &job.fingerprint,
            file_name: &job.file_name,
            size_bytes: job.size_bytes,
            status: self.status(rejection.is_some()),
            rows_read: self.rows_read,
            rows_loaded: self.rows_loaded,
            rows_rejected: self.rows_rejected,
            reading_count: self.reading_count,
            received_at,
            error: rejection,
        }
    }

    fn report(
        self,
        job: &FileJob,
        file_id: i64,
        rejection: Option<String>,
        quarantine: Vec<PathBuf>,
    ) -> FileReport {
        FileReport {
            path: job.path.clone(),
            file_name: job.file_name.clone(),
            fingerprint: job.fingerprint.clone(),
            file_id,
            status: self.status(rejection.is_some()),
            rows_read: self.rows_read,
            rows_loaded: self.rows_loaded,
            rows_rejected: self.rows_rejected,
            reading_count: self.reading_count,
            rejection,
            quarantine,
            moved_to: None,
            violation_counts: self.violation_counts,
            elapsed_ms: 0,
        }
    }
}

/// Publishes a file's quarantine output (and, when it is rejected whole, its copy and reason
/// file) before the commit: the names are deterministic, so a crash between here and the
/// commit only means the same files are written again.
fn publish_quarantine(
    target: &QuarantineTarget,
    rejection: Option<&FileRejection>,
    totals: &Totals,
    writer: QuarantineWriter,
) -> Result<Vec<PathBuf>> {
    let mut quarantined = Vec::new();
    if let Some(rejection) = rejection {
        let details = format!(
            "rows read: {}\nrows rejected: {}\nper-row reasons: {}\n",
            totals.rows_read,
            totals.rows_rejected,
            target.path("errors.jsonl").display()
        );
        quarantined.push(quarantine::quarantine_whole_file(
            target, rejection, &details,
        )?);
        quarantined.push(target.path("reason.txt"));
    }
    let published = writer.commit()?;
    quarantined.extend(published.rows.into_iter().chain(published.errors));
    Ok(quarantined)
}

async fn load_once(
    ctx: &PipelineCtx,
    job: &FileJob,
    mode: Mode,
    disposition: Disposition,
    producer: Producer,
) -> Result<LoadOutcome> {
    let mut client = ctx.store.pool().get().await.map_err(StoreError::from)?;
    let tx = client.transaction().await.map_err(StoreError::from)?;
    match stage_file(&tx, ctx, job, mode, producer).await? {
        // Dropping the transaction rolls the file back.
        Staged::RejectWhole(rejection) => Ok(LoadOutcome::RejectWhole(rejection)),
        Staged::Duplicate(existing) => {
            tx.commit().await.map_err(StoreError::from)?;
            Ok(LoadOutcome::Duplicate(existing))
        }
        Staged::Loaded(report) => {
            tx.commit().await.map_err(StoreError::from)?;
            let report = after_commit(ctx, job, *report, disposition)?;
            Ok(LoadOutcome::Committed(Box::new(report)))
        }
    }
}

/// What a file's work inside a transaction came to, before the commit.
enum Staged {
    Loaded(Box<FileReport>),
    Duplicate(ExistingFile),
    RejectWhole(FileRejection),
}

/// Does all of one file's database work inside `tx` (a transaction or a savepoint) and
/// publishes its quarantine output; the caller commits.
async fn stage_file(
    tx: &Transaction<'_>,
    ctx: &PipelineCtx,
    job: &FileJob,
    mode: Mode,
    producer: Producer,
) -> Result<Staged> {
    let settings = &ctx.settings;
    let received_at = Utc::now();
    ledger::lock_content(tx, &job.fingerprint).await?;
    if let Some(existing) = ledger::find_file(tx, &job.fingerprint).await? {
        ledger::record_delivery(tx, existing.file_id, &job.file_name, "duplicate").await?;
        return Ok(Staged::Duplicate(existing));
    }
    let file_id = ledger::next_file_id(tx).await?;

    let whole_file = match &mode {
        Mode::Load => None,
        Mode::RejectAll(rejection) => Some(rejection.clone()),
    };
    let Producer {
        chunks: mut receiver,
        thread: producer,
    } = producer;
    let target = job.quarantine_target(settings);
    let mut writer = QuarantineWriter::new(target.clone(), whole_file.is_none())?;
    let mut header_rejection = None;
    let mut totals = Totals::default();

    // The chunks' readings stream into one COPY; rejects wait in `pending_rejects` (at most
    // `chunk_rows` of them) and are copied when the readings COPY pauses or ends.
    let mut readings_copy: Option<copy::ReadingsCopy> = None;
    let mut pending_rejects: Vec<RejectedRow> = Vec::new();
    while let Some(event) = receiver.recv().await {
        match event? {
            ProducerEvent::HeaderRejected(rejection) => {
                // The whole file goes to quarantine; only the reasons are written beside it.
                writer.skip_rows();
                header_rejection = Some(rejection);
            }
            ProducerEvent::Chunk(chunk, batch) => {
                totals.absorb(&chunk, settings);
                if let Some(batch) = batch {
                    if readings_copy.is_none() {
                        readings_copy = Some(copy::ReadingsCopy::start(tx).await?);
                    }
                    if let Some(copy) = readings_copy.as_mut() {
                        totals.reading_count += copy
                            .write(&ctx.store, &batch.frame, &[Some(file_id)])
                            .await?;
                    }
                    totals.aggregates.merge(batch.partials);
                }
                if !chunk.rejects.is_empty() {
                    writer.record(&chunk.rejects)?;
                    pending_rejects.extend(chunk.rejects);
                }
                if pending_rejects.len() >= settings.chunk_rows {
                    if let Some(copy) = readings_copy.take() {
                        copy.finish().await?;
                    }
                    copy::copy_rejects(tx, &[(file_id, &pending_rejects)]).await?;
                    pending_rejects.clear();
                }
            }
        }
    }
    producer.await.expect("validator thread does not panic");
    if let Some(copy) = readings_copy.take() {
        copy.finish().await?;
    }
    copy::copy_rejects(tx, &[(file_id, &pending_rejects)]).await?;

    let rejection = header_rejection.or(whole_file);
    if rejection.is_none() {
        if let Some(verdict) =
            whole_file_rejection(totals.rows_read, totals.rows_rejected, settings)
        {
            // Roll back (by dropping the transaction) and go again, rejecting every row.
            writer.abort();
            return Ok(Staged::RejectWhole(verdict));
        }
    }
    let quarantined = publish_quarantine(&target, rejection.as_ref(), &totals, writer)?;
    let error_text = rejection.as_ref().map(ToString::to_string);
    ledger::insert_file(
        tx,
        &totals.record(job, file_id, error_text.as_deref(), received_at),
    )
    .await?;
    ledger::upsert_sensors(tx, &totals.sensors_of(file_id).collect::<Vec<_>>()).await?;
    ledger::upsert_locations(tx, &totals.locations_of(file_id).collect::<Vec<_>>()).await?;
    copy::copy_aggregates(tx, &ctx.store, &[(file_id, &totals.aggregates.rows())]).await?;
    Ok(Staged::Loaded(Box::new(totals.report(
        job,
        file_id,
        error_text,
        quarantined,
    ))))
}

/// After the commit: the error-log entry and the file's removal from the inbox.
fn after_commit(
    ctx: &PipelineCtx,
    job: &FileJob,
    report: FileReport,
    disposition: Disposition,
) -> Result<FileReport> {
    if report.rows_rejected > 0 {
        append_error_log(
            &ctx.settings,
            &report,
            &job.quarantine_target(&ctx.settings),
        )?;
    }
    let moved_to = dispose(&ctx.settings, job, report.status, disposition)?;
    Ok(FileReport { moved_to, ..report })
}

fn finish_duplicate(
    ctx: &PipelineCtx,
    job: &FileJob,
    existing: ExistingFile,
    disposition: Disposition,
) -> Result<FileReport> {
    let settings = &ctx.settings;
    info!(
        message = "Duplicate content, nothing loaded.",
        file = %job.file_name,
        fingerprint = %&job.fingerprint[..12],
        file_id = existing.file_id,
        first_name = %existing.file_name
    );
    let mut quarantined = Vec::new();
    if existing.status == FileStatus::Rejected && disposition == Disposition::Consume {
        // A crash may have come between the commit and the move: make sure the quarantine copy
        // exists before the source goes.
        let target = job.quarantine_target(settings);
        let extension = Path::new(&job.file_name)
            .extension()
            .map(|e| e.to_string_lossy().into_owned());
        let copy = target.path(extension.as_deref().unwrap_or("csv"));
        if !copy.exists() {
            let rejection = FileRejection::new(
                "duplicate_of_rejected",
                "same content as a file rejected earlier",
            );
            quarantined.push(quarantine::quarantine_whole_file(&target, &rejection, "")?);
        }
    }
    let moved_to = dispose(settings, job, FileStatus::Duplicate, disposition)?;
    Ok(FileReport {
        path: job.path.clone(),
        file_name: job.file_name.clone(),
        fingerprint: job.fingerprint.clone(),
        file_id: existing.file_id,
        status: FileStatus::Duplicate,
        rows_read: 0,
        rows_loaded: 0,
        rows_rejected: 0,
        reading_count: 0,
        rejection: None,
        quarantine: quarantined,
        moved_to,
        violation_counts: BTreeMap::new(),
        elapsed_ms: 0,
    })
}

fn append_error_log(
    settings: &Settings,
    report: &FileReport,
    target: &QuarantineTarget,
) -> Result<()> {
    let mut entry = format!(
        "{} file={} sha256={} status={} rows_read={} rows_loaded={} rows_rejected={}",
        Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        report.file_name,
        report.fingerprint,
        report.status,
        report.rows_read,
        report.rows_loaded,
        report.rows_rejected,
    );
    if let Some(reason) = &report.rejection {
        entry.push_str(&format!(" file_rejected=\"{reason}\""));
    }
    entry.push_str(&format!(
        " details={}",
        target.path("errors.jsonl").display()
    ));
    for path in &report.quarantine {
        entry.push_str(&format!("\n  quarantine: {}", path.display()));
    }
    quarantine::append_error_log(&settings.error_log_path(), &entry)
}

/// Moves a committed file out of the inbox (`run`); leaves it in place for `ingest`.
fn dispose(
    settings: &Settings,
    job: &FileJob,
    status: FileStatus,
    disposition: Disposition,
) -> Result<Option<PathBuf>> {
    if disposition == Disposition::LeaveInPlace {
        return Ok(None);
    }
    if status == FileStatus::Rejected || settings.delete_after_load {
        // A rejected file already has its copy in quarantine.
        fs::remove_file(&job.path).map_err(|e| Error::io(&job.path, e))?;
        return Ok(None);
    }
    fs::create_dir_all(&settings.processed_dir)
        .map_err(|e| Error::io(&settings.processed_dir, e))?;
    let mut destination = settings.processed_dir.join(&job.file_name);
    if destination.exists() {
        let stem = Path::new(&job.file_name)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let extension = Path::new(&job.file_name)
            .extension()
            .map(|e| format!(".{}", e.to_string_lossy()))
            .unwrap_or_default();
        destination = settings
            .processed_dir
            .join(format!("{stem}.{}{extension}", &job.fingerprint[..12]));
    }
    if fs::rename(&job.path, &destination).is_err() {
        // Another file system: copy, sync, then remove.
        fs::copy(&job.path, &destination).map_err(|e| Error::io(&destination, e))?;
        fs::File::open(&destination)
            .and_then(|f| f.sync_all())
            .map_err(|e| Error::io(&destination, e))?;
        fs::remove_file(&job.path).map_err(|e| Error::io(&job.path, e))?;
    }
    Ok(Some(destination))
}
