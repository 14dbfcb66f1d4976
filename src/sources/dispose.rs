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
//! the move does the same. A file moved into `processed/` never replaces another: a name
//! already there gets the content's fingerprint added, in one atomic step where the file system
//! offers it.

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
    let destination = settings.processed_dir.join(name);
    let moved = match rename_unless_taken(path, &destination) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !settings.processed_dir.is_dir() => {
            fs::create_dir_all(&settings.processed_dir)
                .map_err(|e| Error::io(&settings.processed_dir, e))?;
            rename_unless_taken(path, &destination)
        }
        moved => moved,
    };
    // A taken name gets this content's fingerprint: a file already there under that name
    // holds the same bytes, so replacing it loses nothing.
    let fingerprinted = || {
        let (stem, extension) = bounded_stem_and_extension(name);
        let extension = extension.map(|e| format!(".{e}")).unwrap_or_default();
        let short = fingerprint.get(..12).unwrap_or(fingerprint);
        settings
            .processed_dir
            .join(format!("{stem}.{short}{extension}"))
    };
    let destination = match moved {
        Ok(Moved::To) => return Ok(Some(destination)),
        Ok(Moved::NameTaken) => {
            let destination = fingerprinted();
            if fs::rename(path, &destination).is_ok() {
                return Ok(Some(destination));
            }
            destination
        }
        Err(_) if destination.exists() => fingerprinted(),
        Err(_) => destination,
    };
    copy_across(settings, path, name, &destination)?;
    Ok(Some(destination))
}

/// Moves `path` to `destination` on another file system: a copy under a temporary name,
/// synced, renamed into place, then the original removed.
fn copy_across(settings: &Settings, path: &Path, name: &str, destination: &Path) -> Result<()> {
    let temp = settings
        .processed_dir
        .join(format!(".{name}.{}.tmp", std::process::id()));
    let copied = fs::copy(path, &temp)
        .and_then(|_| fs::File::open(&temp)?.sync_all())
        .and_then(|()| fs::rename(&temp, destination));
    if let Err(e) = copied {
        let _ = fs::remove_file(&temp);
        return Err(Error::io(destination, e));
    }
    fs::remove_file(path).map_err(|e| Error::io(path, e))
}

/// What [`rename_unless_taken`] did.
#[derive(Debug, PartialEq, Eq)]
enum Moved {
    /// The file is at its new name.
    To,
    /// Another file has that name; nothing moved.
    NameTaken,
}

/// Renames `from` to `to` unless `to` exists, in one step where the kernel and file system
/// offer it (`renameat2` with `RENAME_NOREPLACE`): a file another worker moved to the same name
/// a moment before is never replaced. Elsewhere, a check and then a rename.
///
/// # Errors
/// The rename failed (another file system, `from` gone, no permission).
fn rename_unless_taken(from: &Path, to: &Path) -> std::io::Result<Moved> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use nix::errno::Errno;
        use nix::fcntl::{renameat2, RenameFlags, AT_FDCWD};
        match renameat2(AT_FDCWD, from, AT_FDCWD, to, RenameFlags::RENAME_NOREPLACE) {
            Ok(()) => return Ok(Moved::To),
            Err(Errno::EEXIST) => return Ok(Moved::NameTaken),
            // Not offered by this file system or kernel: the check below.
            Err(Errno::EINVAL | Errno::ENOSYS) => {}
            Err(errno) => return Err(errno.into()),
        }
    }
    if to.exists() {
        return Ok(Moved::NameTaken);
    }
    fs::rename(from, to).map(|()| Moved::To)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RawConfig;

    fn settings_in(dir: &Path) -> Settings {
        Settings::from_raw(RawConfig {
            processed_dir: dir.join("processed"),
            ..RawConfig::default()
        })
        .unwrap()
    }

    #[test]
    fn a_moved_file_never_replaces_one_of_its_name_and_processed_is_made_when_missing() {
        let dir = tempfile::tempdir().unwrap();
        let settings = settings_in(dir.path());
        let fingerprint = "0123456789abcdef0123";
        let first = dir.path().join("a_sds011.csv");
        fs::write(&first, "first").unwrap();
        let moved = retire(&settings, &first, "a_sds011.csv", fingerprint, false).unwrap();
        assert_eq!(moved, Some(dir.path().join("processed/a_sds011.csv")));

        let second = dir.path().join("a_sds011.csv");
        fs::write(&second, "second").unwrap();
        let moved = retire(&settings, &second, "a_sds011.csv", fingerprint, false).unwrap();
        let renamed = dir.path().join("processed/a_sds011.0123456789ab.csv");
        assert_eq!(moved, Some(renamed.clone()));
        assert_eq!(
            fs::read_to_string(dir.path().join("processed/a_sds011.csv")).unwrap(),
            "first"
        );
        assert_eq!(fs::read_to_string(renamed).unwrap(), "second");
        assert!(!second.exists());
    }

    #[test]
    fn the_name_is_taken_only_when_nothing_has_it() {
        let dir = tempfile::tempdir().unwrap();
        let (from, to) = (dir.path().join("from"), dir.path().join("to"));
        fs::write(&from, "new").unwrap();
        fs::write(&to, "kept").unwrap();
        assert_eq!(rename_unless_taken(&from, &to).unwrap(), Moved::NameTaken);
        assert_eq!(fs::read_to_string(&to).unwrap(), "kept");
        fs::remove_file(&to).unwrap();
        assert_eq!(rename_unless_taken(&from, &to).unwrap(), Moved::To);
        assert_eq!(fs::read_to_string(&to).unwrap(), "new");
        assert!(!from.exists());
    }
}
