//! Watch stage (`sensor-etl run`): finds complete files in the inbox, claims them against other
//! workers, and feeds them to the pipeline: small files in group commits, others one by one.
//! While a group's transaction is under way, the next group is claimed, read, validated and
//! transformed; one transaction is written at a time, and a group that fails for a reason of
//! its data is split until the file at fault goes alone (`pipeline::process_in_groups`).
//!
//! File-system events (notify) are hints that wake the loop early; a scan of the inbox, at
//! start-up and every `rescan_interval`, is the truth, so files that arrived while the watcher
//! was down, or whose events were lost, are still found. A file is complete once it was renamed
//! into place, or closed after writing and then quiet for `CLOSE_QUIET` (an appender closes
//! after every line), or, for writers that do neither, once its size and modification time
//! have been stable for the settle period; in every case, a file that some process still holds
//! open for writing is not complete (`writers`). Temporary names are ignored; other entries it does
//! not take are reported once each. Claims (`store::claims`) are leases a heartbeat extends; a dead worker's files are taken
//! over when they expire. On cancellation no new file is taken; the file in hand gets
//! `shutdown_grace` to finish, then is rolled back. A file that keeps failing (errors other
//! than database outages, or a crashed stage) is quarantined as poison after `poison_attempts`.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use notify::event::{AccessKind, AccessMode, ModifyKind, RenameMode};
use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::error::{Error, Result};
use crate::pipeline::committer::goes_in_group;
use crate::pipeline::IngestSummary;
use crate::pipeline::PipelineCtx;
use crate::sources::inbox::{classify_inbox_entry, InboxEntry};
use crate::store::claims::Claims;
use crate::validate::quarantine;

mod deferral;
mod handle;
pub mod tail;
mod writers;

use handle::{finish_group, handle_file, start_group, GroupInFlight, WatchState};

/// Capacity of the event-hint channel; hints beyond it are dropped (the scan still runs).
const HINT_CHANNEL_CAPACITY: usize = 16_384;

/// An event that says a file may be complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Hint {
    /// Closed after writing: complete once it also stays unchanged for `CLOSE_QUIET` (a writer
    /// that appends in open-append-close cycles is not done at its first close).
    Closed,
    /// Renamed into place: complete at once.
    Renamed,
}

/// How long a file closed after writing must stay unchanged before it is taken (at most the
/// settle period).
const CLOSE_QUIET: Duration = Duration::from_millis(250);

/// How soon a file held open for writing is looked at again (its close is also an event).
const WRITER_RECHECK: Duration = Duration::from_secs(1);

/// What the watcher last saw of a file.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Observation {
    size: u64,
    modified: SystemTime,
    /// The strongest completion event seen since this size was observed.
    complete_hint: Option<Hint>,
}

/// Files claimed at a time: a group-commit batch of small files.
const CLAIM_BATCH: i64 = 256;

/// A worker id unique across machines and restarts: host, process id and start time.
pub fn worker_id() -> String {
    let host = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "host".to_owned());
    let started = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("{host}:{}:{started:x}", std::process::id())
}

/// Watches `settings.data_dir` until `cancel` fires; returns the totals.
///
/// # Errors
/// The inbox cannot be created or watched.
pub async fn run(ctx: PipelineCtx, cancel: CancellationToken) -> Result<IngestSummary> {
    let inbox = ctx.settings.data_dir.clone();
    std::fs::create_dir_all(&inbox).map_err(|e| Error::io(&inbox, e))?;
    quarantine::remove_stale_temporaries(&ctx.settings.quarantine_dir);
    let (hint_tx, mut hint_rx) = mpsc::channel::<(OsString, Option<Hint>)>(HINT_CHANNEL_CAPACITY);
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        let complete = match event.kind {
            EventKind::Access(AccessKind::Close(AccessMode::Write)) => Some(Hint::Closed),
            EventKind::Modify(ModifyKind::Name(RenameMode::To | RenameMode::Both)) => {
                Some(Hint::Renamed)
            }
            EventKind::Create(_) | EventKind::Modify(ModifyKind::Data(_) | ModifyKind::Any) => None,
            // Opens and reads (the scans' own among them) and files leaving say nothing new.
            _ => return,
        };
        // Hints are keyed by file name: the watcher may report the inbox by another path
        // (absolute, resolved) than the one the scans list.
        for name in event.paths.iter().filter_map(|path| path.file_name()) {
            // A full channel only delays the file to the next scan.
            let _ = hint_tx.try_send((name.to_os_string(), complete));
        }
    })
    .map_err(|e| Error::io(&inbox, std::io::Error::other(e)))?;
    watcher
        .watch(&inbox, RecursiveMode::NonRecursive)
        .map_err(|e| Error::io(&inbox, std::io::Error::other(e)))?;

    let claims = Claims::new(
        ctx.store.pool().clone(),
        worker_id(),
        ctx.settings.claim_lease,
    );
    info!(message = "Watching inbox.", folder = %inbox.display(), worker = %claims.worker());
    let heartbeat_stop = CancellationToken::new();
    let heartbeat = tokio::spawn(heartbeat(
        claims.clone(),
        ctx.settings.claim_lease / 3,
        heartbeat_stop.clone(),
    ));

    // Files that grow for their whole life are read as they grow, by the tailer.
    let tailed = crate::config::tail_patterns(&ctx.settings.tail);
    if !ctx.settings.tail.is_empty() {
        tokio::spawn(tail::run(ctx.clone(), cancel.clone()));
    }
    let mut seen: HashMap<PathBuf, Observation> = HashMap::new();
    let mut hinted: HashMap<OsString, Hint> = HashMap::new();
    let mut next_due: Option<Duration> = None;
    let mut state = WatchState::default();
    let rescan = ctx.settings.rescan_interval;
    let mut database_down = false;
    let mut busy = false;
    let mut scan = Scan::default();
    let mut scanned_at = Instant::now();
    // The group whose transaction is under way while the next one is claimed and prepared.
    let mut in_flight: Option<GroupInFlight> = None;
    loop {
        // Nothing more to take at once: the group under way is finished before any wait.
        if !busy {
            if let Some(group) = in_flight.take() {
                let alone = finish_group(&ctx, &claims, &inbox, group, &mut state).await;
                handle_alone(&ctx, &claims, &inbox, alone, &cancel, &mut state, &mut seen).await;
            }
        }
        tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            hint = hint_rx.recv() => {
                let Some((name, complete)) = hint else { break };
                note_hint(&mut hinted, name, complete);
                while let Ok((name, complete)) = hint_rx.try_recv() {
                    note_hint(&mut hinted, name, complete);
                }
            }
            // After a round that took files, look again at once: events for a backlog have
            // already arrived and will not come again. A closed file is looked at again when
            // its quiet period ends.
            () = tokio::time::sleep(if busy {
                Duration::ZERO
            } else {
                next_due.map_or(rescan, |due| due.min(rescan))
            }) => {}
        }
        // While a backlog is taken, the next batch comes from the complete files the last scan
        // found rather than from another scan (whose cost grows with the inbox): the inbox is
        // scanned again when they run out, after a round that took nothing, and every
        // `rescan`. A file gone or changed since is caught where it is taken.
        let take_from_last_scan = busy && !scan.ready.is_empty() && scanned_at.elapsed() < rescan;
        busy = false;
        if !take_from_last_scan {
            scan = self::scan(
                &inbox,
                &mut seen,
                &mut hinted,
                &mut state.ignored,
                ctx.settings.settle,
                &tailed,
            );
            scanned_at = Instant::now();
            next_due = scan.next_due;
            state
                .deferrals
                .retain(|name| scan.present.iter().any(|p| p == name));
        }
        scan.ready.retain(|name| {
            !state.deferrals.is_waiting(name)
                && !in_flight.as_ref().is_some_and(|g| g.names().contains(name))
        });
        if scan.ready.is_empty() {
            continue;
        }
        // Offer the oldest few: claiming works on what it is offered, so a deep backlog costs
        // nothing extra per round.
        let offered = &scan.ready[..scan.ready.len().min(4 * CLAIM_BATCH as usize)];
        let claimed = match claims.claim(offered, CLAIM_BATCH).await {
            Ok(claimed) => {
                if database_down {
                    info!(message = "Database reachable again; resuming.");
                    crate::telemetry::record_database_available();
                    database_down = false;
                }
                claimed
            }
            Err(error) if error.is_transient() => {
                if !database_down {
                    warn!(
                        message = "Waiting for the database; files stay in the inbox.",
                        files_waiting = scan.present.len(),
                        error = %crate::telemetry::chain(&error)
                    );
                    database_down = true;
                }
                crate::telemetry::record_retry();
                continue;
            }
            Err(error) => {
                error!(message = "Cannot claim files.", error = %crate::telemetry::chain(&error));
                continue;
            }
        };
        busy = !claimed.is_empty();
        scan.ready.retain(|name| {
            claimed
                .binary_search_by(|(c, _)| c.as_str().cmp(name))
                .is_err()
        });
        if busy {
            crate::faults::point("watch::claimed");
        }
        // Small files never tried before go together in one transaction; the rest one by one.
        let (group, mut single): (Vec<_>, Vec<_>) =
            claimed.into_iter().partition(|(name, attempts)| {
                std::fs::metadata(inbox.join(name))
                    .is_ok_and(|m| goes_in_group(m.len(), *attempts > 0))
            });
        if group.len() > 1 && !cancel.is_cancelled() {
            let names: Vec<String> = group.into_iter().map(|(name, _)| name).collect();
            // This group is prepared while the one before it is written; then that one is
            // finished and this one's transaction starts.
            let started = start_group(&ctx, &inbox, names).await;
            if let Some(previous) = in_flight.take() {
                single.extend(finish_group(&ctx, &claims, &inbox, previous, &mut state).await);
            }
            match started {
                Ok(group) => in_flight = Some(group),
                Err(retry) => single.extend(retry.into_iter().map(|name| (name, 0))),
            }
        } else {
            single.extend(group);
        }
        if !single.is_empty() {
            // Files alone wait for the group under way: one transaction at a time.
            if let Some(previous) = in_flight.take() {
                single.extend(finish_group(&ctx, &claims, &inbox, previous, &mut state).await);
            }
            handle_alone(
                &ctx, &claims, &inbox, single, &cancel, &mut state, &mut seen,
            )
            .await;
        }
        if rand_tick() {
            let _ = claims.forget_missing(&scan.present).await;
        }
    }
    if let Some(group) = in_flight.take() {
        for (name, _) in finish_group(&ctx, &claims, &inbox, group, &mut state).await {
            let _ = claims.release(&name, false, None).await;
        }
    }
    heartbeat_stop.cancel();
    let _ = heartbeat.await;
    info!(
        message = "Watcher stopped.",
        files_loaded = state.summary.loaded + state.summary.partially_loaded
    );
    Ok(state.summary)
}

/// Processes claimed files one at a time, each in a transaction of its own; on cancellation the
/// files not begun are released.
async fn handle_alone(
    ctx: &PipelineCtx,
    claims: &Claims,
    inbox: &Path,
    files: Vec<(String, i32)>,
    cancel: &CancellationToken,
    state: &mut WatchState,
    seen: &mut HashMap<PathBuf, Observation>,
) {
    let mut files = files.into_iter();
    for (name, attempts) in files.by_ref() {
        if cancel.is_cancelled() {
            let _ = claims.release(&name, false, None).await;
            break;
        }
        let path = inbox.join(&name);
        handle_file(ctx, claims, &path, &name, attempts, cancel, state).await;
        seen.remove(&path);
    }
    for (name, _) in files {
        let _ = claims.release(&name, false, None).await;
    }
}

/// True about once in 20 calls: housekeeping that need not run on every scan.
fn rand_tick() -> bool {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() % 20 == 0)
        .unwrap_or(false)
}

async fn heartbeat(claims: Claims, period: Duration, stop: CancellationToken) {
    let period = period.max(Duration::from_millis(200));
    let mut failing = false;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(period) => {
                match claims.heartbeat().await {
                    Ok(_) => failing = false,
                    Err(error) if !failing => {
                        // Logged once per outage; the pipeline's retries say the rest.
                        warn!(message = "Cannot extend claims.", error = %crate::telemetry::chain(&error));
                        failing = true;
                    }
                    Err(_) => {}
                }
            }
        }
    }
}

/// Keeps the strongest completion event seen for a file.
fn note_hint(hinted: &mut HashMap<OsString, Hint>, name: OsString, hint: Option<Hint>) {
    if let Some(hint) = hint {
        let kept = hinted.entry(name).or_insert(hint);
        *kept = (*kept).max(hint);
    }
}

/// What one scan of the inbox found (file names).
#[derive(Default)]
struct Scan {
    /// Complete files, oldest first.
    ready: Vec<String>,
    /// When a file closed after writing ends its quiet period, if one waits.
    next_due: Option<Duration>,
    /// Every candidate file present.
    present: Vec<String>,
}

/// Lists the inbox and returns the files that are complete, oldest first.
fn scan(
    inbox: &Path,
    seen: &mut HashMap<PathBuf, Observation>,
    hinted: &mut HashMap<OsString, Hint>,
    ignored: &mut HashSet<OsString>,
    settle: Duration,
    tailed: &globset::GlobSet,
) -> Scan {
    let Ok(entries) = std::fs::read_dir(inbox) else {
        return Scan {
            ready: Vec::new(),
            next_due: None,
            present: Vec::new(),
        };
    };
    let now = SystemTime::now();
    let mut next_due = None;
    let mut present = HashSet::new();
    let mut ready: Vec<(SystemTime, PathBuf)> = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if tailed.is_match(Path::new(&name))
            || (entry.file_type().is_ok_and(|t| t.is_dir())
                && tailed.is_match(Path::new(&name).join("x.csv")))
        {
            // The tailer's: read as it grows, never taken whole.
            continue;
        }
        match classify_inbox_entry(&entry) {
            InboxEntry::Input => {}
            InboxEntry::Temporary => continue,
            InboxEntry::NotUtf8Name => {
                // Paths are bytes: the file keeps its bytes and gets a name that can be told,
                // logged and recorded; the next scan takes it.
                match crate::sources::inbox::utf8_name_for(&path)
                    .map(|to| (std::fs::rename(&path, &to), to))
                {
                    Some((Ok(()), to)) => warn!(
                        message = "Inbox file renamed: its name was not UTF-8.",
                        from = %quarantine::quoted(&path.display().to_string()),
                        to = %to.display()
                    ),
                    _ => {
                        if ignored.insert(entry.file_name()) {
                            warn!(
                                message = "Inbox entry not taken: its name is not UTF-8 and it \
                                           could not be renamed.",
                                entry = %quarantine::quoted(&path.display().to_string())
                            );
                        }
                    }
                }
                continue;
            }
            InboxEntry::Ignored(reason) => {
                if ignored.insert(entry.file_name()) {
                    warn!(
                        message = "Inbox entry not taken.",
                        entry = %quarantine::quoted(&path.display().to_string()),
                        reason
                    );
                }
                continue;
            }
        }
        let Ok(metadata) = entry.metadata() else {
            continue;
        };
        present.insert(path.clone());
        let modified = metadata.modified().unwrap_or(now);
        let current = Observation {
            size: metadata.len(),
            modified,
            complete_hint: hinted.remove(&entry.file_name()),
        };
        let previous = seen.insert(path.clone(), current);
        let unchanged =
            previous.is_some_and(|p| p.size == current.size && p.modified == current.modified);
        let hint = current
            .complete_hint
            .max(previous.filter(|_| unchanged).and_then(|p| p.complete_hint));
        if let Some(observation) = seen.get_mut(&path) {
            observation.complete_hint = hint;
        }
        let age = now.duration_since(modified).unwrap_or_default();
        let quiet = CLOSE_QUIET.min(settle);
        let hinted_complete = match hint {
            Some(Hint::Renamed) => true,
            Some(Hint::Closed) if age >= quiet => true,
            Some(Hint::Closed) => {
                let due = quiet - age;
                next_due = Some(next_due.map_or(due, |d: Duration| d.min(due)));
                false
            }
            None => false,
        };
        let settled = age >= settle && (unchanged || previous.is_none());
        if hinted_complete || settled {
            ready.push((modified, path));
        }
    }
    // A file some process still holds open for writing is not complete, however quiet.
    if !ready.is_empty() {
        let writing = writers::open_for_writing(inbox);
        if !writing.is_empty() {
            ready.retain(|(_, path)| {
                let held = path.file_name().is_some_and(|n| writing.contains(n));
                if held {
                    next_due = Some(next_due.map_or(WRITER_RECHECK, |d| d.min(WRITER_RECHECK)));
                }
                !held
            });
        }
    }
    // Only what is still there: a file taken since the last scan is no longer waiting.
    seen.retain(|path, _| present.contains(path));
    let oldest = seen
        .values()
        .map(|o| now.duration_since(o.modified).unwrap_or_default())
        .max()
        .unwrap_or_default();
    crate::telemetry::record_inbox(present.len(), oldest);
    hinted.retain(|name, _| present.contains(&inbox.join(name)));
    ready.sort();
    let name = |path: &Path| {
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    Scan {
        ready: ready.iter().map(|(_, path)| name(path)).collect(),
        next_due,
        present: present.iter().map(|path| name(path)).collect(),
    }
}
