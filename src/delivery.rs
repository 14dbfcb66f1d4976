//! A delivery, the unit of work: a name, a byte source, where it came from, what to do with the
//! source after the commit, and (once read) its identity.
//!
//! Every way in builds deliveries: the inbox watcher (`watch`) and `ingest` make them from
//! files, the HTTP API from request bodies and the push journal from bodies it kept. The stages below the pipeline
//! (`validate`, `transform`, `store`) see only a [`ByteSource`] and a name, never where the bytes
//! came from. A source can be opened any number of times and read at any offset: the validator
//! streams it, the quarantine copies rejected rows from it byte for byte.
//!
//! This module sits at the bottom of the crate with `config`: it imports nothing of the crate.

use std::fmt;
use std::fs::File;
use std::io::{self, Cursor, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use sha2::{Digest, Sha256};

/// Where a delivery's bytes are read from.
#[derive(Debug, Clone)]
pub enum ByteSource {
    /// A file, opened anew for each pass.
    File(PathBuf),
    /// A file opened once, when its delivery was taken ([`Delivery::take`]): every pass reads
    /// that open file, so a file removed or renamed while it loads is still read whole, and
    /// every pass reads the same file.
    Taken {
        /// Where the file was when it was taken.
        path: PathBuf,
        /// The open file, read by position.
        file: Arc<File>,
    },
    /// Bytes held in memory (a request body).
    Memory(Bytes),
    /// A CSV rendering of a body in another format (JSON, NDJSON), or of a block of a growing
    /// file behind its header: its line `n + line_shift` holds the body's line or element `n`
    /// (the file's line `n`), so positions are reported in the source's own terms.
    Rendered {
        /// The CSV text.
        bytes: Bytes,
        /// Lines to subtract from a CSV line number (negative: to add).
        line_shift: i64,
    },
    /// Such a rendering of a large body, in a file.
    RenderedFile {
        /// The CSV file.
        path: PathBuf,
        /// Lines to subtract from a CSV line number.
        line_shift: i64,
    },
}

/// An open pass over a source.
pub type SourceReader = Box<dyn Read + Send>;

/// The read buffer of a pass over a file.
const FILE_PASS_BUFFER: usize = 256 * 1024;

/// The smallest read buffer of a pass.
const MIN_PASS_BUFFER: usize = 8 * 1024;

impl ByteSource {
    /// Opens a new pass from the first byte.
    ///
    /// # Errors
    /// The file cannot be opened.
    pub fn open(&self) -> io::Result<SourceReader> {
        Ok(match self {
            ByteSource::File(path) | ByteSource::RenderedFile { path, .. } => {
                Box::new(File::open(path)?)
            }
            ByteSource::Taken { file, .. } => Box::new(FilePass {
                file: Arc::clone(file),
                at: 0,
            }),
            ByteSource::Memory(bytes) | ByteSource::Rendered { bytes, .. } => {
                Box::new(Cursor::new(bytes.clone()))
            }
        })
    }

    /// The read buffer a pass over this source needs: the source's length, at least 8 KiB
    /// and at most 256 KiB. A buffer is zeroed when it is first filled, so a body or a file of
    /// a few kilobytes does not pay for 256 KiB on every pass.
    pub fn pass_buffer(&self) -> usize {
        let len = match self {
            ByteSource::Memory(bytes) | ByteSource::Rendered { bytes, .. } => {
                Some(bytes.len() as u64)
            }
            ByteSource::Taken { file, .. } => file.metadata().ok().map(|m| m.len()),
            ByteSource::File(path) | ByteSource::RenderedFile { path, .. } => {
                std::fs::metadata(path).ok().map(|m| m.len())
            }
        };
        len.map_or(FILE_PASS_BUFFER, |len| {
            usize::try_from(len.saturating_add(1))
                .unwrap_or(FILE_PASS_BUFFER)
                .clamp(MIN_PASS_BUFFER, FILE_PASS_BUFFER)
        })
    }

    /// Lines to subtract from a line number read from this source (0 but for renderings).
    pub fn line_shift(&self) -> i64 {
        match self {
            ByteSource::Rendered { line_shift, .. }
            | ByteSource::RenderedFile { line_shift, .. } => *line_shift,
            _ => 0,
        }
    }

    /// Opens the source for reads at any offset.
    ///
    /// # Errors
    /// The file cannot be opened.
    pub fn random_access(&self) -> io::Result<RandomAccess> {
        Ok(match self {
            ByteSource::File(path) | ByteSource::RenderedFile { path, .. } => {
                RandomAccess::File(Arc::new(File::open(path)?))
            }
            ByteSource::Taken { file, .. } => RandomAccess::File(Arc::clone(file)),
            ByteSource::Memory(bytes) | ByteSource::Rendered { bytes, .. } => {
                RandomAccess::Memory(bytes.clone())
            }
        })
    }

    /// The file behind the source, if it is one.
    pub fn path(&self) -> Option<&Path> {
        match self {
            ByteSource::File(path)
            | ByteSource::Taken { path, .. }
            | ByteSource::RenderedFile { path, .. } => Some(path),
            ByteSource::Memory(_) | ByteSource::Rendered { .. } => None,
        }
    }
}

impl fmt::Display for ByteSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ByteSource::File(path) | ByteSource::Taken { path, .. } => {
                write!(f, "{}", path.display())
            }
            ByteSource::RenderedFile { path, .. } => {
                write!(f, "request body rendered as {}", path.display())
            }
            ByteSource::Memory(bytes) | ByteSource::Rendered { bytes, .. } => {
                write!(f, "request body of {} bytes", bytes.len())
            }
        }
    }
}

/// A pass over an open file by positional reads: passes over the same open file do not move
/// each other.
struct FilePass {
    file: Arc<File>,
    at: u64,
}

impl Read for FilePass {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let read = self.file.read_at(buf, self.at)?;
        self.at += read as u64;
        Ok(read)
    }
}

/// A source opened for positional reads.
pub enum RandomAccess {
    /// A file read with `pread`.
    File(Arc<File>),
    /// Bytes in memory.
    Memory(Bytes),
}

impl RandomAccess {
    /// The bytes in `[start, end)`; fewer when the source is shorter.
    ///
    /// # Errors
    /// The read failed.
    pub fn read_range(&self, start: u64, end: u64) -> io::Result<Vec<u8>> {
        let len = usize::try_from(end.saturating_sub(start)).unwrap_or(usize::MAX);
        match self {
            RandomAccess::File(file) => {
                // No more than the file holds: a header read of a small file stays small.
                let left = file.metadata()?.len().saturating_sub(start);
                let len = len.min(usize::try_from(left).unwrap_or(usize::MAX));
                let mut bytes = vec![0u8; len];
                let mut filled = 0;
                while filled < len {
                    match file.read_at(&mut bytes[filled..], start + filled as u64)? {
                        0 => break,
                        n => filled += n,
                    }
                }
                bytes.truncate(filled);
                Ok(bytes)
            }
            RandomAccess::Memory(all) => {
                let from = usize::try_from(start).unwrap_or(usize::MAX).min(all.len());
                let to = from.saturating_add(len).min(all.len());
                Ok(all[from..to].to_vec())
            }
        }
    }
}

/// What a file looked like when it was taken (device, inode, size, modification time): a
/// later look tells whether it was replaced, appended to or truncated since.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    device: u64,
    inode: u64,
    size: u64,
    modified: Option<std::time::SystemTime>,
}

impl FileStamp {
    /// The stamp of `path` now.
    ///
    /// # Errors
    /// The file cannot be looked at (`NotFound` when it is gone).
    pub fn of(path: &Path) -> io::Result<Self> {
        Ok(Self::of_metadata(&std::fs::metadata(path)?))
    }

    /// The stamp of a file's metadata.
    pub fn of_metadata(metadata: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        Self {
            device: metadata.dev(),
            inode: metadata.ino(),
            size: metadata.len(),
            modified: metadata.modified().ok(),
        }
    }

    /// The modification time, when the file system keeps one.
    pub fn modified(&self) -> Option<std::time::SystemTime> {
        self.modified
    }
}

/// Where a delivery came from, as recorded in the ledger (`file_deliveries.origin`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A file found in the watched inbox.
    Inbox(PathBuf),
    /// A file given to `sensor-etl ingest`.
    Ingest(PathBuf),
    /// A request body from an HTTP client (its address or name).
    Http(String),
    /// A block of a file of the inbox read in tail mode.
    Tail(PathBuf),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Inbox(path) => write!(f, "inbox:{}", path.display()),
            Origin::Ingest(path) => write!(f, "ingest:{}", path.display()),
            Origin::Http(client) => write!(f, "http:{client}"),
            Origin::Tail(path) => write!(f, "tail:{}", path.display()),
        }
    }
}

/// What happens to a file source once its delivery is committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// The source stays where it is (`ingest`, request bodies); a rejected file is copied into
    /// quarantine.
    LeaveInPlace,
    /// The file leaves its folder once committed (`run`, `ingest --consume`): its source moves
    /// it to `processed/` or deletes it (`sources::dispose`).
    Consume,
}

/// One unit of work, before it is read.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The delivery's file name (the sensor type can follow from it).
    pub name: String,
    /// Its bytes.
    pub source: ByteSource,
    /// Where it came from.
    pub origin: Origin,
    /// What to do with the source after the commit.
    pub disposition: Disposition,
    /// A key the source gave the delivery (`Idempotency-Key`): the same key again with the
    /// same bytes is a duplicate, with other bytes a refusal.
    pub key: Option<String>,
    /// Set for a body drained from the push journal: the record it was read from, recorded in
    /// the delivery's own transaction so that it is loaded exactly once.
    pub journaled: Option<JournalMark>,
    /// Set for a block of a file read in tail mode: the byte range it covers, recorded in the
    /// delivery's own transaction so that each line is loaded exactly once.
    pub tail: Option<TailMark>,
    /// Set for a device push: the device its sensors belong to, recorded in the delivery's own
    /// transaction.
    pub device: Option<DeviceMark>,
    /// Set by a source whose files a writer may still be filling (the inbox): a reading with
    /// no data rows of a file younger than this is not final, so it is rolled back and taken
    /// again later.
    pub empty_grace: Option<std::time::Duration>,
}

/// The device a pushed body came from, and its sensors in that body: (sensor id, type).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceMark {
    /// The device, e.g. `esp8266-3654427`.
    pub device: String,
    /// Its sensors in this body.
    pub sensors: Vec<(i64, String)>,
}

/// Which block of a growing file a delivery is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TailMark {
    /// What identifies the file's content whatever its name: a hash of its first lines.
    pub fingerprint: String,
    /// Where the file is now.
    pub path: PathBuf,
    /// The byte offset the database holds for the file (where the last block ended): the block
    /// is recorded only from there. It starts there too, unless the file was truncated below it
    /// (then it starts after the header and its lines already stored are duplicates).
    pub from_byte: u64,
    /// The byte offset just past its last complete line.
    pub to_byte: u64,
    /// Lines of the file up to `to_byte`, the header included.
    pub to_line: u64,
    /// The last bytes before `to_byte` (up to 256), as `<length>:<sha-256>`: how the next pass
    /// tells that the file still holds what was loaded.
    pub check: String,
}

/// What became of a delivery's data rows: each row read was loaded, rejected (with its line
/// and reason), or a duplicate of readings already stored. Serialized with the ledger's
/// column names (`rows_read`, `rows_loaded`, `rows_rejected`, `rows_duplicate`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct RowCounts {
    /// Data rows read.
    #[serde(rename = "rows_read")]
    pub read: u64,
    /// Rows whose readings were stored.
    #[serde(rename = "rows_loaded")]
    pub loaded: u64,
    /// Rows rejected.
    #[serde(rename = "rows_rejected")]
    pub rejected: u64,
    /// Rows whose readings were already stored with the same values (not stored again).
    #[serde(rename = "rows_duplicate")]
    pub duplicate: u64,
}

impl std::ops::AddAssign for RowCounts {
    fn add_assign(&mut self, other: Self) {
        self.read += other.read;
        self.loaded += other.loaded;
        self.rejected += other.rejected;
        self.duplicate += other.duplicate;
    }
}

/// Where in the push journal a delivery was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalMark {
    /// The receipt the client was given (`<journal id>-<sequence>`).
    pub receipt_id: String,
}

impl Delivery {
    /// A file of the watched inbox; it leaves the inbox once committed. Read with no data
    /// rows while younger than `empty_grace`, it is not final.
    pub fn inbox_file(path: &Path, empty_grace: std::time::Duration) -> Self {
        Self {
            empty_grace: Some(empty_grace),
            ..Self::file(
                path,
                Origin::Inbox(path.to_path_buf()),
                Disposition::Consume,
            )
        }
    }

    /// A file given to `ingest`; `disposition` says whether it stays in place.
    pub fn input_file(path: &Path, disposition: Disposition) -> Self {
        Self::file(path, Origin::Ingest(path.to_path_buf()), disposition)
    }

    /// A request body pushed by `client` over HTTP (under `key`, when it gave one); it is
    /// left where it is (memory or a spool file the request owns).
    pub fn pushed(name: String, source: ByteSource, client: String, key: Option<String>) -> Self {
        Self {
            name,
            source,
            origin: Origin::Http(client),
            disposition: Disposition::LeaveInPlace,
            key,
            journaled: None,
            tail: None,
            device: None,
            empty_grace: None,
        }
    }

    fn file(path: &Path, origin: Origin, disposition: Disposition) -> Self {
        Self {
            name: path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            source: ByteSource::File(path.to_path_buf()),
            origin,
            disposition,
            key: None,
            journaled: None,
            tail: None,
            device: None,
            empty_grace: None,
        }
    }

    /// The file behind the delivery, if it is one.
    pub fn path(&self) -> Option<&Path> {
        self.source.path()
    }

    /// Takes a file source: opens it once and stamps that open file. The delivery returned
    /// reads that open file in every pass ([`ByteSource::Taken`]), so its identity, its rows
    /// and its quarantined bytes come from the same file even if the name is removed or
    /// replaced meanwhile. Other sources are returned as they are, with no stamp.
    ///
    /// # Errors
    /// The file cannot be opened.
    pub fn take(&self) -> io::Result<(Delivery, Option<FileStamp>)> {
        let ByteSource::File(path) = &self.source else {
            return Ok((self.clone(), None));
        };
        let file = File::open(path)?;
        let stamp = FileStamp::of_metadata(&file.metadata()?);
        let taken = Delivery {
            source: ByteSource::Taken {
                path: path.clone(),
                file: Arc::new(file),
            },
            ..self.clone()
        };
        Ok((taken, Some(stamp)))
    }

    /// Closes a taken file once every pass over it is done: the source is its path again.
    pub fn release(&mut self) {
        if let ByteSource::Taken { path, .. } = &self.source {
            self.source = ByteSource::File(path.clone());
        }
    }

    /// Reads the whole source once and returns its identity.
    ///
    /// # Errors
    /// The source cannot be read.
    pub fn identify(&self) -> io::Result<Identity> {
        match &self.source {
            ByteSource::Memory(bytes) | ByteSource::Rendered { bytes, .. } => {
                Ok(Identity::of_bytes(bytes))
            }
            source => Identity::of(source.open()?, source.pass_buffer()),
        }
    }
}

impl Identity {
    /// The identity of everything `reader` yields, read through a buffer of `buffer` bytes.
    ///
    /// # Errors
    /// The read failed.
    pub fn of(mut reader: impl Read, buffer: usize) -> io::Result<Self> {
        let mut hasher = Sha256::new();
        let mut reader = io::BufReader::with_capacity(buffer, &mut reader);
        let size_bytes = io::copy(&mut reader, &mut hasher)?;
        Ok(Identity {
            content_sha256: hex::encode(hasher.finalize()),
            size_bytes,
        })
    }

    /// The identity of bytes in memory, hashed where they are.
    pub fn of_bytes(bytes: &[u8]) -> Self {
        Identity {
            content_sha256: hex::encode(Sha256::digest(bytes)),
            size_bytes: bytes.len() as u64,
        }
    }
}

/// What makes a delivery the same as another: the SHA-256 of its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Hex SHA-256 of the content.
    pub content_sha256: String,
    /// Size in bytes.
    pub size_bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_and_file_sources_read_the_same_ranges_and_identity() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.csv");
        let content = b"sensor_id;timestamp\n1;2020-01-01T00:00:00\n";
        std::fs::write(&path, content).unwrap();
        let file = Delivery::input_file(&path, Disposition::LeaveInPlace);
        let memory = Delivery {
            source: ByteSource::Memory(Bytes::from_static(content)),
            ..file.clone()
        };
        assert_eq!(file.identify().unwrap(), memory.identify().unwrap());
        assert_eq!(file.identify().unwrap().size_bytes, content.len() as u64);
        for source in [&file.source, &memory.source] {
            let access = source.random_access().unwrap();
            assert_eq!(access.read_range(20, 22).unwrap(), b"1;");
            assert_eq!(access.read_range(40, 100).unwrap(), b"0\n");
        }
        assert_eq!(file.name, "a.csv");
        assert_eq!(
            file.origin.to_string(),
            format!("ingest:{}", path.display())
        );
    }
}
