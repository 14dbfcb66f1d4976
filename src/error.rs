//! Crate error: one enum wrapping the error of each stage, with source chains kept.
//!
//! Rejected rows are never errors (they are outcomes, see `validate::reject`); an `Error` ends
//! one file (I/O, database) or the process (configuration). `Error::is_transient` tells the
//! retry loop which database failures are worth waiting out.

use std::path::PathBuf;

use crate::embedded_db::EmbeddedDbError;
use crate::store::StoreError;

/// `Result` with the crate error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Any failure that stops a file or the process.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is invalid.
    #[error("invalid configuration")]
    Config(#[from] ConfigError),
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
    /// Shutdown was requested while the file waited for the database; it stays in place.
    #[error("shutdown requested before {} could be processed", .0.display())]
    Cancelled(PathBuf),
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

/// Configuration problems, reported before anything runs.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The named file does not exist.
    #[error("configuration file {} not found", .0.display())]
    MissingFile(PathBuf),
    /// The file or environment does not match the schema (unknown key, wrong type).
    #[error("configuration is invalid")]
    Invalid(#[source] Box<figment::Error>),
    /// The built-in sensor catalogue does not parse (a bug).
    #[error("built-in sensor catalogue is invalid")]
    Builtin(#[source] toml::de::Error),
    /// A value is out of its domain.
    #[error("`{key}` {message}")]
    Value {
        /// The key.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
    /// A sensor type definition is inconsistent.
    #[error("sensor type `{sensor_type}`: {message}")]
    SensorType {
        /// The type.
        sensor_type: String,
        /// What is wrong.
        message: String,
    },
}
