//! What a file source does with a file once its delivery committed (`Disposition::Consume`):
//! a rejected file (its copy is in quarantine) or, with `delete_after_load`, any file is
//! deleted; others move to `processed/`. Called by the watcher and by `ingest --consume` with
//! the pipeline's report, after the commit, and by tail mode for a file done growing
//! ([`retire`]).
//!
//! Guarantees: a file replaced or changed since it was taken is not the one committed, so it
//! stays, to be taken again. A file already gone (removed by its producer) is fine: its rows
//! are committed. A copy across file systems goes through a temporary name, so `processed/`
//! never holds a partial file; a failure (disk full) leaves the file where it is, and the next
//! attempt finds it committed (a duplicate) and moves it then. A crash between the commit and
//! the move does the same.

use std::fs;
use std::path::{Path, PathBuf};

use tracing::{info, warn};

use crate::config::Settings;
use crate::delivery::FileStamp;
use crate::error::{Error, Result};
use crate::pipeline::DeliveryReport;
use crate::store::ledger::FileStatus;
use crate::validate::quarantine::bounded_stem_and_extension;

/// What became of a committed file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposed {
    /// It left its folder: moved to this path under `processed/`, or deleted (`None`), or it
    /// was already gone.
    Gone(Option<PathBuf>),
    /// It stays: it changed after it was taken, so it is not what was committed.
    Stays,
}

impl Disposed {
    /// Whether the file left its folder.
    pub fn is_gone(&self) -> bool {
        matches!(self, Disposed::Gone(_))
    }
}

/// Moves the committed file of `report` out of its folder (see the module header).
///
/// # Errors
/// The file cannot be deleted, or moved into `processed/` (the file then stays).
pub fn dispose(settings: &Settings, report: &DeliveryReport) -> Result<Disposed> {
    let Some(path) = report.path.as_deref() else {
        return Ok(Disposed::Gone(None));
    };
    match FileStamp::of(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            info!(
                message = "The file left the inbox while it was loaded; its rows are committed.",
                file = %path.display()
            );
            return Ok(Disposed::Gone(None));
        }
        Err(e) => return Err(Error::io(path, e)),
        Ok(now) if report.taken.is_some_and(|taken| taken != now) => {
            warn!(
                message = "The file changed after it was taken; it stays to be taken again.",
                file = %path.display()
            );
            return Ok(Disposed::Stays);
        }
        Ok(_) => {}
    }
    // A rejected file already has its copy in quarantine.
    let delete = report.status == FileStatus::Rejected;
    let gone = retire(
        settings,
        path,
        &report.file_name,
        &report.fingerprint,
        delete,
    )?;
    Ok(Disposed::Gone(gone))
}

/// Takes a committed file out of its folder: deleted when `delete` or `delete_after_load` says
/// so (`None`), else moved into `processed/` under `name`, with `fingerprint`'s first 12
/// characters added when that name is taken; returns where it went.
///
/// # Errors
/// The file cannot be deleted or moved (it then stays where it is).
pub fn retire(
    settings: &Settings,
    path: &Path,
    name: &str,
    fingerprint: &str,
    delete: bool,
) -> Result<Option<PathBuf>> {
    if delete || settings.delete_after_load {
        fs::remove_file(path).map_err(|e| Error::io(path, e))?;
        return Ok(None);
    }
    fs::create_dir_all(&settings.processed_dir)
        .map_err(|e| Error::io(&settings.processed_dir, e))?;
    let mut destination = settings.processed_dir.join(name);
    if destination.exists() {
        let (stem, extension) = bounded_stem_and_extension(name);
        let extension = extension.map(|e| format!(".{e}")).unwrap_or_default();
        let short = fingerprint.get(..12).unwrap_or(fingerprint);
        destination = settings
            .processed_dir
            .join(format!("{stem}.{short}{extension}"));
    }
    if fs::rename(path, &destination).is_err() {
        // Another file system: copy to a temporary name, sync, rename, then remove.
        let temp = settings
            .processed_dir
            .join(format!(".{name}.{}.tmp", std::process::id()));
        let copied = fs::copy(path, &temp)
            .and_then(|_| fs::File::open(&temp)?.sync_all())
            .and_then(|()| fs::rename(&temp, &destination));
        if let Err(e) = copied {
            let _ = fs::remove_file(&temp);
            return Err(Error::io(&destination, e));
        }
        fs::remove_file(path).map_err(|e| Error::io(path, e))?;
    }
    Ok(Some(destination))
}
