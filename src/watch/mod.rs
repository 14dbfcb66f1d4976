//! Watch stage (`sensor-etl run`): finds complete files in the inbox and feeds them, one at a
//! time, to the per-file pipeline.
//!
//! File-system events (notify) are hints that wake the loop early; a scan of the inbox, at
//! start-up and every `rescan_interval`, is the truth, so files that arrived while the watcher
//! was down, or whose events were lost, are still found. A file is complete once it was closed
//! after writing or renamed into place, or, for writers that do neither, once its size and
//! modification time have been stable for the settle period. Temporary names are ignored.
//! On cancellation no new file is taken; the file in hand is finished (or rolled back) first.
//! A file that fails permanently is quarantined whole with the error as its reason.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use notify::event::{AccessKind, AccessMode, ModifyKind, RenameMode};
use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::error::{Error, Result};
use crate::ingest::{is_candidate, IngestSummary};
use crate::pipeline::{process_file_with_retry, Disposition, FileJob, PipelineCtx};
use crate::validate::format::FileRejection;
use crate::validate::quarantine;

/// Capacity of the event-hint channel; hints beyond it are dropped (the scan still runs).
const HINT_CHANNEL_CAPACITY: usize = 1024;

/// What the watcher last saw of a file.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Observation {
    size: u64,
    modified: SystemTime,
    /// A close-after-write or rename-into-place event was seen since this size was observed.
    complete_hint: bool,
}

/// Watches `settings.data_dir` until `cancel` fires; returns the totals.
///
/// # Errors
/// The inbox cannot be created or watched.
pub async fn run(ctx: PipelineCtx, cancel: CancellationToken) -> Result<IngestSummary> {
    let inbox = ctx.settings.data_dir.clone();
    std::fs::create_dir_all(&inbox).map_err(|e| Error::io(&inbox, e))?;
    let (hint_tx, mut hint_rx) = mpsc::channel::<(PathBuf, bool)>(HINT_CHANNEL_CAPACITY);
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        let complete = matches!(
            event.kind,
            EventKind::Access(AccessKind::Close(AccessMode::Write))
                | EventKind::Modify(ModifyKind::Name(RenameMode::To | RenameMode::Both))
        );
        for path in event.paths {
            // A full channel only delays the file to the next scan.
            let _ = hint_tx.try_send((path, complete));
        }
    })
    .map_err(|e| Error::io(&inbox, std::io::Error::other(e)))?;
    watcher
        .watch(&inbox, RecursiveMode::NonRecursive)
        .map_err(|e| Error::io(&inbox, std::io::Error::other(e)))?;
    info!(message = "Watching inbox.", folder = %inbox.display());

    let mut seen: HashMap<PathBuf, Observation> = HashMap::new();
    let mut hinted: HashSet<PathBuf> = HashSet::new();
    let mut summary = IngestSummary::default();
    let rescan = ctx.settings.rescan_interval;
    loop {
        tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            hint = hint_rx.recv() => {
                let Some((path, complete)) = hint else { break };
                if complete {
                    hinted.insert(path);
                }
                while let Ok((path, complete)) = hint_rx.try_recv() {
                    if complete {
                        hinted.insert(path);
                    }
                }
            }
            () = tokio::time::sleep(rescan) => {}
        }
        let ready = scan(&inbox, &mut seen, &mut hinted, ctx.settings.settle);
        for path in ready {
            if cancel.is_cancelled() {
                break;
            }
            handle_file(&ctx, &path, &cancel, &mut summary).await;
            seen.remove(&path);
        }
    }
    info!(
        message = "Watcher stopped.",
        files_loaded = summary.loaded + summary.partially_loaded
    );
    Ok(summary)
}

async fn handle_file(
    ctx: &PipelineCtx,
    path: &Path,
    cancel: &CancellationToken,
    summary: &mut IngestSummary,
) {
    match process_file_with_retry(ctx, path, Disposition::Consume, cancel).await {
        Ok(report) => summary.add(&report),
        Err(Error::Cancelled(_)) => {}
        Err(failure) if failure.is_transient() => {
            warn!(
                message = "File left in the inbox for a later attempt.",
                file = %path.display(),
                error = %crate::telemetry::chain(&failure)
            );
        }
        Err(failure) => {
            summary.failed += 1;
            crate::telemetry::record_failed_file();
            error!(
                message = "File failed; quarantining it whole.",
                file = %path.display(),
                error = %crate::telemetry::chain(&failure)
            );
            if let Err(q) = quarantine_failed(ctx, path, &failure) {
                error!(message = "Could not quarantine the file.", file = %path.display(), error = %crate::telemetry::chain(&q));
            }
        }
    }
}

/// Moves a file that cannot be processed (a permanent error) into quarantine with the error.
fn quarantine_failed(ctx: &PipelineCtx, path: &Path, failure: &Error) -> Result<()> {
    if !path.exists() {
        return Ok(());
    }
    let job = FileJob::fingerprint(path)?;
    let target = quarantine::QuarantineTarget {
        dir: ctx.settings.quarantine_dir.clone(),
        source: path.to_path_buf(),
        file_name: job.file_name.clone(),
        fingerprint: job.fingerprint.clone(),
    };
    let rejection = FileRejection::new("processing_failed", crate::telemetry::chain(failure));
    let copy = quarantine::quarantine_whole_file(&target, &rejection, "")?;
    quarantine::append_error_log(
        &ctx.settings.error_log_path(),
        &format!(
            "{} file={} sha256={} status=failed reason=\"{}\"\n  quarantine: {}",
            chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            job.file_name,
            job.fingerprint,
            rejection.message,
            copy.display()
        ),
    )?;
    std::fs::remove_file(path).map_err(|e| Error::io(path, e))
}

/// Lists the inbox and returns the files that are complete, oldest first.
fn scan(
    inbox: &Path,
    seen: &mut HashMap<PathBuf, Observation>,
    hinted: &mut HashSet<PathBuf>,
    settle: Duration,
) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(inbox) else {
        return Vec::new();
    };
    let now = SystemTime::now();
    let mut present = HashSet::new();
    let mut ready: Vec<(SystemTime, PathBuf)> = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if !is_candidate(&path) {
            continue;
        }
        let Ok(metadata) = entry.metadata() else {
            continue;
        };
        if !metadata.is_file() {
            continue;
        }
        present.insert(path.clone());
        let modified = metadata.modified().unwrap_or(now);
        let current = Observation {
            size: metadata.len(),
            modified,
            complete_hint: hinted.remove(&path),
        };
        let previous = seen.insert(path.clone(), current);
        let unchanged =
            previous.is_some_and(|p| p.size == current.size && p.modified == current.modified);
        let hinted_complete =
            current.complete_hint || (unchanged && previous.is_some_and(|p| p.complete_hint));
        let settled = now.duration_since(modified).unwrap_or_default() >= settle
            && (unchanged || previous.is_none());
        if hinted_complete || settled {
            if let Some(observation) = seen.get_mut(&path) {
                observation.complete_hint = hinted_complete;
            }
            ready.push((modified, path));
        }
    }
    let oldest = seen
        .values()
        .map(|o| now.duration_since(o.modified).unwrap_or_default())
        .max()
        .unwrap_or_default();
    crate::telemetry::record_inbox(present.len(), oldest);
    seen.retain(|path, _| present.contains(path));
    hinted.retain(|path| present.contains(path));
    ready.sort();
    ready.into_iter().map(|(_, path)| path).collect()
}
