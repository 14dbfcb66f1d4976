//! The push journal (SPEC §10.2): pushes taken while the database is away (or, with
//! `http.acknowledge = "journal"`, every push) are kept on local disk and loaded into
//! PostgreSQL behind the answer.
//!
//! - Records ([`record`]) are appended to segment files under `state_dir/journal/` by one
//!   writer thread (`writer`), which takes every append waiting at that moment, writes them
//!   together and syncs once (group sync): an append returns only after its record is on disk,
//!   and a failed write is cut off again, so no body is acknowledged that is not on disk.
//! - Bounded: past `http.journal_max_bytes` on disk, or on a full disk, an append fails and the
//!   client gets 503. Files are `0600`, the folder `0700`.
//! - One process at a time: the folder is locked (`flock`, in `folder`); a second `serve` or
//!   `run` on the same `state_dir` is refused with the holder's pid.
//! - On open, every segment is scanned; a record torn by a crash (never acknowledged) is cut
//!   off and said once in the log.
//! - [`drain`] loads the records in order and in batches; each body's receipt is written in
//!   its delivery's own transaction (`store::receipts`), so the database says which records
//!   it holds and a crash at any moment neither loses nor repeats a body. A segment is deleted
//!   once every record of it is loaded.

pub mod drain;
mod folder;
pub mod record;
mod writer;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io;
use std::ops::Bound;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use nix::fcntl::Flock;
use tokio::sync::{oneshot, Notify};

pub use folder::{inspect, Found};
use folder::{journal_id, open_segment, segment_files, take_lock};
use record::{Answer, Located, Meta, Record};
use writer::{Append, Current, Writer};

/// A segment is closed and a new one started past this size (or a quarter of the journal's
/// bound, when that is smaller).
const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;

/// The size at which a segment is closed: past it, once everything in it is loaded, its space
/// is given back.
fn segment_limit(max_bytes: u64) -> u64 {
    (max_bytes / 4).clamp(4096, SEGMENT_BYTES)
}

/// Appends written and synced together at most.
const SYNC_GROUP_MAX: usize = 4096;

/// The window over which the drain rate is measured.
const RATE_WINDOW: Duration = Duration::from_secs(10);

/// Why the journal could not be opened or could not take a body.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// Another process holds the journal.
    #[error(
        "the push journal in {dir} is in use by another sensor-etl process{holder}: each `run` \
         or `serve` needs a state_dir (--state-dir) of its own"
    )]
    Locked {
        /// The journal folder.
        dir: String,
        /// ` (pid N)` when known.
        holder: String,
    },
    /// The journal is at `http.journal_max_bytes`.
    #[error("the push journal is full ({bytes} bytes on disk, the limit is {limit})")]
    Full {
        /// Bytes on disk.
        bytes: u64,
        /// `http.journal_max_bytes`.
        limit: u64,
    },
    /// A file operation failed (a full disk included).
    #[error("push journal {path}: {source}")]
    Io {
        /// The file or folder.
        path: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The writer thread has stopped.
    #[error("the push journal is closed")]
    Closed,
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> JournalError + '_ {
    move |source| JournalError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Where a record waiting to be loaded is.
#[derive(Debug, Clone)]
pub struct Slot {
    /// Its sequence number.
    pub sequence: u64,
    /// The segment (by its first sequence number).
    segment: u64,
    offset: u64,
    len: u32,
    /// The receipt its client was given.
    pub receipt_id: String,
    identity: String,
    received_at: chrono::DateTime<Utc>,
}

struct Segment {
    path: PathBuf,
    bytes: u64,
    /// Records not loaded yet.
    live: usize,
    /// Whether appends go to another segment now.
    sealed: bool,
}

#[derive(Default)]
struct State {
    pending: BTreeMap<u64, Slot>,
    by_identity: HashMap<String, u64>,
    segments: BTreeMap<u64, Segment>,
    disk_bytes: u64,
    pending_bytes: u64,
    /// (when, bodies) of recent drained batches, for the drain rate.
    drained: VecDeque<(Instant, usize)>,
    /// The bodies in `drained`.
    drained_bodies: usize,
    /// A body was refused for room, and no room was freed since.
    full: bool,
    /// The highest sequence taken in so far (appended, or found on opening).
    last_sequence: u64,
}

/// Depth and progress of the journal.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct JournalStats {
    /// Bodies waiting to be loaded.
    pub bodies: u64,
    /// Their bytes in the journal.
    pub bytes: u64,
    /// Seconds since the oldest waiting body was received (0 when none waits).
    pub oldest_age_seconds: f64,
    /// Bodies loaded per second over the last 10 seconds.
    pub drain_rate: f64,
}

struct Shared {
    dir: PathBuf,
    id: String,
    max_bytes: u64,
    state: Mutex<State>,
    wake: Notify,
    /// The database was found away and has not taken a body since.
    database_away: AtomicBool,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn read(&self, slot: &Slot) -> Result<Record, JournalError> {
        let path = self
            .state()
            .segments
            .get(&slot.segment)
            .map(|segment| segment.path.clone())
            .ok_or(JournalError::Closed)?;
        let file = File::open(&path).map_err(io_error(&path))?;
        record::read_at(&file, slot.offset, slot.len).map_err(io_error(&path))
    }
}

/// The push journal of one `state_dir` (see the module header).
pub struct Journal {
    shared: Arc<Shared>,
    appends: mpsc::Sender<Append>,
    _lock: Flock<File>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("dir", &self.shared.dir)
            .field("id", &self.shared.id)
            .finish_non_exhaustive()
    }
}

/// The journal folder of a `state_dir`.
pub fn journal_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("journal")
}

impl Journal {
    /// Opens (or creates) the journal in `dir`, takes its lock, cuts off a torn tail and
    /// starts the writer thread.
    ///
    /// # Errors
    /// Another process holds it, or its files cannot be read or written.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Arc<Self>, JournalError> {
        std::fs::create_dir_all(dir).map_err(io_error(dir))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io_error(dir))?;
        let lock = take_lock(dir)?;
        let id = journal_id(dir)?;
        let mut state = State::default();
        let mut next_sequence = 1;
        let mut last: Option<(u64, u64)> = None;
        for (first, path) in segment_files(dir)? {
            let scanned = record::scan(&path).map_err(io_error(&path))?;
            if let Some(problem) = &scanned.tail_problem {
                tracing::warn!(
                    message = "Cut off the torn end of the push journal; it was never \
                               acknowledged.",
                    segment = %path.display(),
                    at_byte = scanned.good_len,
                    bytes_cut = scanned.file_len - scanned.good_len,
                    problem = %problem
                );
                let file = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(io_error(&path))?;
                file.set_len(scanned.good_len).map_err(io_error(&path))?;
                file.sync_all().map_err(io_error(&path))?;
            }
            if let Some(located) = scanned.records.last() {
                next_sequence = next_sequence.max(located.sequence + 1);
            }
            state.disk_bytes += scanned.good_len;
            state.segments.insert(
                first,
                Segment {
                    path: path.clone(),
                    bytes: scanned.good_len,
                    live: scanned.records.len(),
                    sealed: true,
                },
            );
            for located in scanned.records {
                state.insert(first, &located);
            }
            last = Some((first, scanned.good_len));
        }
        // Appends continue the last segment while it is small, else a new one.
        let current = match last {
            Some((first, bytes)) if bytes < segment_limit(max_bytes) => {
                let segment = state.segments.get_mut(&first).expect("listed above");
                segment.sealed = false;
                let file = open_segment(&segment.path, false)?;
                Current {
                    first,
                    file,
                    len: bytes,
                }
            }
            _ => Current::create(dir, &mut state, next_sequence)?,
        };
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            id,
            max_bytes,
            state: Mutex::new(state),
            wake: Notify::new(),
            database_away: AtomicBool::new(false),
        });
        shared.state().publish();
        let (appends, queue) = mpsc::channel();
        let writer = Writer {
            shared: Arc::clone(&shared),
            current,
            next_sequence,
        };
        std::thread::Builder::new()
            .name("journal-writer".to_owned())
            .spawn(move || writer.run(queue))
            .map_err(io_error(dir))?;
        Ok(Arc::new(Self {
            shared,
            appends,
            _lock: lock,
        }))
    }

    /// Appends a body and returns its receipt id once it is synced to disk.
    ///
    /// # Errors
    /// The journal is full, the write or sync failed (nothing of the body stays), or the
    /// writer stopped.
    pub async fn append(&self, meta: Meta, body: Bytes) -> Result<String, JournalError> {
        let (reply, answer) = oneshot::channel();
        self.appends
            .send(Append { meta, body, reply })
            .map_err(|_| JournalError::Closed)?;
        answer.await.map_err(|_| JournalError::Closed)?
    }

    /// The receipt of a waiting body with this identity (key or content), if one waits.
    pub fn waiting_receipt(&self, identity: &str) -> Option<String> {
        let state = self.shared.state();
        let sequence = state.by_identity.get(identity)?;
        state
            .pending
            .get(sequence)
            .map(|slot| slot.receipt_id.clone())
    }

    /// The answer given for a body still waiting, with its receipt id, if `receipt_id` is
    /// one of them.
    ///
    /// # Errors
    /// The record cannot be read back.
    pub fn waiting_answer(&self, receipt_id: &str) -> Result<Option<Answer>, JournalError> {
        let Some(sequence) = self.sequence_of(receipt_id) else {
            return Ok(None);
        };
        let Some(slot) = self.shared.state().pending.get(&sequence).cloned() else {
            return Ok(None);
        };
        let record = self.read(&slot)?;
        let mut answer = record.meta.answer;
        if let Some(body) = answer.body.as_object_mut() {
            body.insert("receipt_id".to_owned(), receipt_id.into());
        }
        Ok(Some(answer))
    }

    fn sequence_of(&self, receipt_id: &str) -> Option<u64> {
        let (id, sequence) = receipt_id.rsplit_once('-')?;
        (id == self.shared.id).then(|| sequence.parse().ok())?
    }

    /// The first waiting bodies in order (after sequence `after`, when given): at most `bodies`
    /// of them and about `bytes`.
    pub fn next_batch(&self, bodies: usize, bytes: u64, after: Option<u64>) -> Vec<Slot> {
        let state = self.shared.state();
        let mut taken = 0u64;
        let mut batch = Vec::new();
        let from = after.map_or(Bound::Unbounded, Bound::Excluded);
        for slot in state
            .pending
            .range((from, Bound::Unbounded))
            .map(|(_, slot)| slot)
        {
            if batch.len() >= bodies || (taken >= bytes && !batch.is_empty()) {
                break;
            }
            taken += u64::from(slot.len);
            batch.push(slot.clone());
        }
        batch
    }

    /// The highest sequence taken in so far: how many bodies arrived, as a running count.
    pub fn last_sequence(&self) -> u64 {
        self.shared.state().last_sequence
    }

    /// How many bodies wait after sequence `after` (all when `None`), counted up to `at_most`.
    pub fn waiting_after(&self, after: Option<u64>, at_most: usize) -> usize {
        let from = after.map_or(Bound::Unbounded, Bound::Excluded);
        self.shared
            .state()
            .pending
            .range((from, Bound::Unbounded))
            .take(at_most)
            .count()
    }

    /// Reads a waiting record back.
    ///
    /// # Errors
    /// The segment cannot be read, or the record does not match its checksum.
    pub fn read(&self, slot: &Slot) -> Result<Record, JournalError> {
        self.shared.read(slot)
    }

    /// Marks records as loaded (their receipts are in the database): they leave the depth,
    /// and a closed segment with nothing left to load is deleted.
    pub fn loaded(&self, sequences: &[u64]) {
        if sequences.is_empty() {
            return;
        }
        let mut state = self.shared.state();
        for sequence in sequences {
            let Some(slot) = state.pending.remove(sequence) else {
                continue;
            };
            if state.by_identity.get(&slot.identity) == Some(sequence) {
                state.by_identity.remove(&slot.identity);
            }
            state.pending_bytes -= u64::from(slot.len);
            if let Some(segment) = state.segments.get_mut(&slot.segment) {
                segment.live -= 1;
            }
        }
        state.drained.push_back((Instant::now(), sequences.len()));
        state.drained_bodies += sequences.len();
        state.remove_finished_segments();
        state.publish();
        crate::telemetry::record_journal_loaded(sequences.len());
    }

    /// Whether the database was found away and has not taken a body since: pushes then go to
    /// the journal at once instead of each waiting `http.db_wait_ms` first.
    pub fn database_away(&self) -> bool {
        self.shared.database_away.load(Ordering::Relaxed)
    }

    /// Says whether the database is away (set by a push that could not commit, cleared by the
    /// drain once it loads again).
    pub fn set_database_away(&self, away: bool) {
        self.shared.database_away.store(away, Ordering::Relaxed);
    }

    /// Whether the journal takes bodies now (it is under its bound).
    pub fn accepts(&self) -> bool {
        let state = self.shared.state();
        // Nothing waiting: the next append closes the loaded segment and gives its room back.
        (!state.full || state.pending.is_empty()) && state.disk_bytes < self.shared.max_bytes
    }

    /// Depth and progress now (also published to the metrics).
    pub fn stats(&self) -> JournalStats {
        let mut state = self.shared.state();
        state.publish();
        state.stats()
    }

    /// Waits until a body is appended (returns at once if one was since the last call).
    pub async fn appended(&self) {
        self.shared.wake.notified().await;
    }
}

impl State {
    fn insert(&mut self, segment: u64, located: &Located) {
        self.pending.insert(
            located.sequence,
            Slot {
                sequence: located.sequence,
                segment,
                offset: located.offset,
                len: located.len,
                receipt_id: located.meta.receipt_id.clone(),
                identity: located.meta.identity.clone(),
                received_at: located.meta.received_at,
            },
        );
        self.by_identity
            .insert(located.meta.identity.clone(), located.sequence);
        self.pending_bytes += u64::from(located.len);
        self.last_sequence = self.last_sequence.max(located.sequence);
    }

    fn remove_finished_segments(&mut self) {
        let finished: Vec<u64> = self
            .segments
            .iter()
            .filter(|(_, segment)| segment.sealed && segment.live == 0)
            .map(|(first, _)| *first)
            .collect();
        for first in finished {
            if let Some(segment) = self.segments.remove(&first) {
                match std::fs::remove_file(&segment.path) {
                    Ok(()) => {
                        self.disk_bytes -= segment.bytes;
                        self.full = false;
                    }
                    Err(error) => {
                        tracing::warn!(
                            message = "Could not delete a loaded push journal segment.",
                            segment = %segment.path.display(),
                            error = %error
                        );
                        self.segments.insert(first, segment);
                    }
                }
            }
        }
    }

    fn stats(&mut self) -> JournalStats {
        while let Some((when, bodies)) = self.drained.front() {
            if when.elapsed() <= RATE_WINDOW {
                break;
            }
            self.drained_bodies -= bodies;
            self.drained.pop_front();
        }
        let recent = self.drained_bodies;
        let oldest = self.pending.values().next().map_or(0.0, |slot| {
            (Utc::now() - slot.received_at).num_milliseconds().max(0) as f64 / 1000.0
        });
        JournalStats {
            bodies: self.pending.len() as u64,
            bytes: self.pending_bytes,
            oldest_age_seconds: oldest,
            drain_rate: recent as f64 / RATE_WINDOW.as_secs_f64(),
        }
    }

    fn publish(&mut self) {
        let stats = self.stats();
        crate::telemetry::record_journal(stats.bodies, stats.bytes, stats.oldest_age_seconds);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use record::Answer;

    fn meta(identity: &str) -> Meta {
        Meta {
            receipt_id: String::new(),
            received_at: Utc::now(),
            name: "request.csv".to_owned(),
            client: "127.0.0.1".to_owned(),
            key: None,
            line_shift: None,
            identity: identity.to_owned(),
            device: None,
            answer: Answer {
                status: 202,
                body: serde_json::json!({"status": "journaled"}),
            },
        }
    }

    #[tokio::test]
    async fn appends_survive_a_reopen_a_second_opener_is_refused_and_loaded_segments_go() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        let journal = Journal::open(&path, 1 << 20).unwrap();
        let first = journal
            .append(meta("a"), Bytes::from_static(b"one"))
            .await
            .unwrap();
        let second = journal
            .append(meta("b"), Bytes::from_static(b"two"))
            .await
            .unwrap();
        assert_ne!(first, second);
        assert_eq!(journal.waiting_receipt("a"), Some(first.clone()));
        let answer = journal.waiting_answer(&first).unwrap().unwrap();
        assert_eq!(answer.body["receipt_id"], first.as_str());
        let locked = Journal::open(&path, 1 << 20).unwrap_err();
        assert!(
            locked.to_string().contains(&std::process::id().to_string()),
            "{locked}"
        );
        for entry in std::fs::read_dir(&path).unwrap() {
            let mode = entry.unwrap().metadata().unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "journal files are 0600");
        }
        drop(journal);
        // Reopened: both wait, in order, with their bytes.
        let journal = Journal::open(&path, 1 << 20).unwrap();
        let batch = journal.next_batch(10, 1 << 20, None);
        let rest = journal.next_batch(10, 1 << 20, Some(batch[0].sequence));
        assert_eq!(rest.len(), 1, "only the records after the one given");
        assert_eq!(rest[0].receipt_id, batch[1].receipt_id);
        assert_eq!(batch.len(), 2);
        assert_eq!(batch[0].receipt_id, first);
        assert_eq!(&journal.read(&batch[1]).unwrap().body[..], b"two");
        journal.loaded(&[batch[0].sequence]);
        assert_eq!(journal.stats().bodies, 1);
        // A body past the bound is refused, and nothing of it stays.
        let small = tempfile::tempdir().unwrap();
        let bounded = Journal::open(small.path(), 600).unwrap();
        bounded
            .append(meta("c"), Bytes::from(vec![b'x'; 100]))
            .await
            .unwrap();
        let full = bounded
            .append(meta("d"), Bytes::from(vec![b'x'; 500]))
            .await
            .unwrap_err();
        assert!(matches!(full, JournalError::Full { .. }), "{full}");
        assert_eq!(bounded.stats().bodies, 1);
    }
}
