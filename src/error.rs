//! Crate error: one enum above the stages, wrapping each stage's own error type with its
//! source chain kept.
//!
//! Each stage owns its error (`config::ConfigError`, `validate::ValidateError`,
//! `store::StoreError`, polars' error for `transform`); only
//! the pipeline, the sources and the commands use this one. Rejected rows are never errors
//! (they are outcomes, see `validate::reject`); an `Error` ends one delivery (I/O, database)
//! or the process (configuration). `Error::is_transient` tells the retry loop which database
//! failures are worth waiting out.

use std::path::PathBuf;

use crate::config::ConfigError;
use crate::store::StoreError;
use crate::validate::ValidateError;

/// `Result` with the crate error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Any failure that stops a file or the process.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is invalid.
    #[error("invalid configuration")]
    Config(#[from] ConfigError),
    /// A delivery's source could not be read.
    #[error("cannot read {0}")]
    Read(String, #[source] std::io::Error),
    /// The validation stage failed to read a delivery or to write quarantine output.
    #[error(transparent)]
    Validate(#[from] ValidateError),
    /// A file source changed (replaced, appended to, truncated) while it was read: nothing of
    /// it was committed, and it is taken again later.
    #[error("{0} changed while it was read; rolled back, to be taken again")]
    SourceChanged(String),
    /// A file of a group conflicts with a stored reading or another file of the group: the
    /// group goes file by file, where each conflict is settled in delivery order (and a
    /// rejected line reaches quarantine).
    #[error("a reading of the group conflicts with another ({0}); loading the files one by one")]
    GroupConflict(String),
    /// A file source holds no data rows yet and is young: a writer may still be at work.
    #[error("{0} holds no data rows yet and was written {1} s ago; waiting for more")]
    NotFinal(String, u64),
    /// An `Idempotency-Key` given again with other content.
    #[error("the idempotency key was first given with other content (delivery {0})")]
    KeyReused(i64),
    /// A file could not be read or written.
    #[error("I/O error on {}", path.display())]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The database failed.
    #[error("database error")]
    Store(#[from] StoreError),
    /// Shutdown was requested while the delivery waited for the database; its source stays
    /// in place.
    #[error("shutdown requested before {0} could be processed")]
    Cancelled(String),
    /// The polars stage failed on a chunk.
    #[error("transform failed")]
    Transform(#[from] polars::error::PolarsError),
}

impl Error {
    /// Wraps an I/O error with the path it happened on.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// Whether waiting and trying again may succeed (database unreachable, pool timeout …).
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Store(store) if store.is_transient())
    }

    /// Whether the failure lies with the local disk or the source file, not the data: disk
    /// full, permission denied, a read-only or failing file system, a source that vanished,
    /// changed while read or is not final yet. The file stays where it is and is tried
    /// again after a pause; it never becomes poison for it.
    pub fn is_local_fault(&self) -> bool {
        let io = match self {
            Error::SourceChanged(_) | Error::NotFinal(..) => return true,
            Error::Read(_, io) | Error::Io { source: io, .. } => io,
            Error::Validate(ValidateError::Read { source, .. })
            | Error::Validate(ValidateError::Io { source, .. }) => source,
            _ => return false,
        };
        is_local_io_fault(io)
    }
}

/// I/O errors that come from the machine rather than from the data.
pub fn is_local_io_fault(error: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    if matches!(
        error.kind(),
        ErrorKind::NotFound
            | ErrorKind::PermissionDenied
            | ErrorKind::StorageFull
            | ErrorKind::ReadOnlyFilesystem
            | ErrorKind::QuotaExceeded
            | ErrorKind::FileTooLarge
    ) {
        return true;
    }
    matches!(
        error.raw_os_error(),
        Some(code) if code == nix::libc::EIO || code == nix::libc::ENOSPC || code == nix::libc::EDQUOT
    )
}
