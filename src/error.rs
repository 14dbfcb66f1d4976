//! Crate error: one enum above the stages, wrapping each stage's own error type with its
//! source chain kept.
//!
//! Each stage owns its error (`config::ConfigError`, `validate::ValidateError`,
//! `store::StoreError`, `embedded_db::EmbeddedDbError`, polars' error for `transform`); only
//! the pipeline, the sources and the commands use this one. Rejected rows are never errors
//! (they are outcomes, see `validate::reject`); an `Error` ends one delivery (I/O, database)
//! or the process (configuration). `Error::is_transient` tells the retry loop which database
//! failures are worth waiting out.

use std::path::PathBuf;

use crate::config::ConfigError;
use crate::embedded_db::EmbeddedDbError;
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
    /// The embedded PostgreSQL cluster could not be set up.
    #[error("embedded PostgreSQL")]
    EmbeddedDb(#[from] EmbeddedDbError),
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
}
