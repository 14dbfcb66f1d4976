//! The journal's folder: its lock (one process at a time), its id, its segment files, and a
//! read of every good record without the lock (for `sensor-etl status`).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use chrono::Utc;
use nix::fcntl::{Flock, FlockArg};

use super::{io_error, record, JournalError};

pub(super) fn open_segment(path: &Path, create: bool) -> Result<File, JournalError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(create)
        .mode(0o600)
        .open(path)
        .map_err(io_error(path))
}

/// A body found in a journal folder by [`inspect`].
#[derive(Debug, Clone)]
pub struct Found {
    /// Its receipt.
    pub receipt_id: String,
    /// Bytes of its record.
    pub bytes: u64,
    /// When it was received.
    pub received_at: chrono::DateTime<Utc>,
}

/// Every good record of a journal folder, read without its lock (for `sensor-etl status`,
/// while a server may be writing it): the caller asks the database which are loaded.
///
/// # Errors
/// The folder or a segment cannot be read.
pub fn inspect(dir: &Path) -> Result<Vec<Found>, JournalError> {
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let mut found = Vec::new();
    for (_, path) in segment_files(dir)? {
        let scanned = match record::scan(&path) {
            Ok(scanned) => scanned,
            // Loaded and deleted meanwhile.
            Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
            Err(error) => return Err(io_error(&path)(error)),
        };
        found.extend(scanned.records.into_iter().map(|located| Found {
            receipt_id: located.meta.receipt_id,
            bytes: u64::from(located.len),
            received_at: located.meta.received_at,
        }));
    }
    Ok(found)
}

/// The segments of a journal folder, by first sequence number.
pub(super) fn segment_files(dir: &Path) -> Result<Vec<(u64, PathBuf)>, JournalError> {
    let mut segments = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_error(dir))? {
        let path = entry.map_err(io_error(dir))?.path();
        let first = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".seg"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(first) = first {
            segments.push((first, path));
        }
    }
    segments.sort();
    Ok(segments)
}

/// Takes the folder's lock, writing this process's pid into it.
pub(super) fn take_lock(dir: &Path) -> Result<Flock<File>, JournalError> {
    let path = dir.join("lock");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(io_error(&path))?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => {
            lock.set_len(0).map_err(io_error(&path))?;
            (*lock)
                .write_all_at(std::process::id().to_string().as_bytes(), 0)
                .map_err(io_error(&path))?;
            Ok(lock)
        }
        Err((mut file, _)) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            let pid = pid.trim();
            Err(JournalError::Locked {
                dir: dir.display().to_string(),
                holder: if pid.is_empty() {
                    String::new()
                } else {
                    format!(" (pid {pid})")
                },
            })
        }
    }
}

/// The journal's id, made once when the folder is first used: receipts name it, so that a
/// receipt of one journal is never taken for one of another.
pub(super) fn journal_id(dir: &Path) -> Result<String, JournalError> {
    let path = dir.join("id");
    if let Ok(id) = std::fs::read_to_string(&path) {
        let id = id.trim();
        if !id.is_empty() {
            return Ok(id.to_owned());
        }
    }
    let mut random = [0u8; 8];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut random))
        .map_err(io_error(Path::new("/dev/urandom")))?;
    let id = hex::encode(random);
    let temp = dir.join(".id.tmp");
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temp)
        .map_err(io_error(&temp))?;
    file.write_all(id.as_bytes()).map_err(io_error(&temp))?;
    file.sync_all().map_err(io_error(&temp))?;
    std::fs::rename(&temp, &path).map_err(io_error(&path))?;
    Ok(id)
}
