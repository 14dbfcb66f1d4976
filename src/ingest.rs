//! The second source of deliveries (`sensor-etl ingest PATH…`): files and folders given on the
//! command line (recursively), each made a [`Delivery`] and taken through the same pipeline as
//! the inbox's files, left in place unless asked to consume them. Also the input-file rules
//! the watcher shares (which names are inputs) and the summary both add up.
//!
//! Files are processed one after another in a stable (path) order; a file that fails (after
//! retries) is reported and the others go on. The summary adds up per status.

use std::path::{Path, PathBuf};

use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use crate::delivery::{Delivery, Disposition};
use crate::pipeline::{process_with_retry, DeliveryReport, PipelineCtx};
use crate::store::ledger::FileStatus;

/// Times `ingest` reads a file again that changed while it was read.
const SOURCE_CHANGED_RETRIES: usize = 3;

/// Whether a file name is a temporary or hidden one that is never read.
pub fn is_temporary_name(name: &str) -> bool {
    let lower = name.to_lowercase();
    name.starts_with('.')
        || name.starts_with('~')
        || name.ends_with('~')
        || [
            ".tmp",
            ".part",
            ".partial",
            ".crdownload",
            ".swp",
            ".filepart",
            ".download",
        ]
        .iter()
        .any(|suffix| lower.ends_with(suffix))
}

/// Whether a path names an input file (a visible, non-temporary `.csv`).
pub fn is_candidate(path: &Path) -> bool {
    let Some(name) = path.file_name().map(|n| n.to_string_lossy()) else {
        return false;
    };
    !is_temporary_name(&name)
        && path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("csv"))
}

/// What an entry of the inbox is to the watcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InboxEntry {
    /// A regular file with an input name: it waits to be taken.
    Input,
    /// A temporary or hidden name: expected, never read, never reported.
    Temporary,
    /// Something the watcher does not take, with the reason (reported once).
    Ignored(&'static str),
    /// An input file whose name is not UTF-8: the watcher gives it a UTF-8 name in the inbox
    /// (each byte that is not UTF-8 becomes `_`), then takes it like any other.
    NotUtf8Name,
}

/// Classifies one entry of the inbox without following symlinks. `status`, the watcher and
/// its `files_waiting` metric all count `Input` entries.
pub fn classify_inbox_entry(entry: &std::fs::DirEntry) -> InboxEntry {
    let name = entry.file_name();
    let utf8 = name.to_str().is_some();
    let name = name.to_string_lossy();
    if is_temporary_name(&name) {
        return InboxEntry::Temporary;
    }
    let Ok(kind) = entry.file_type() else {
        return InboxEntry::Ignored("it cannot be looked at");
    };
    if kind.is_symlink() {
        return InboxEntry::Ignored("symbolic links are not followed: move the file itself in");
    }
    if kind.is_dir() {
        return InboxEntry::Ignored("folders in the inbox are not read: move their files in");
    }
    if !kind.is_file() {
        return InboxEntry::Ignored("not a regular file (a FIFO, socket or device)");
    }
    if !is_candidate(Path::new(name.as_ref())) {
        return InboxEntry::Ignored("only .csv files are read: rename it to .csv");
    }
    if utf8 {
        InboxEntry::Input
    } else {
        InboxEntry::NotUtf8Name
    }
}

/// The UTF-8 name an inbox file whose name is not UTF-8 gets: each invalid byte sequence made
/// `_`, and `.1`, `.2`, … before the extension while that name is taken.
pub fn utf8_name_for(path: &Path) -> Option<PathBuf> {
    let name = path.file_name()?.to_string_lossy().replace('\u{FFFD}', "_");
    let dir = path.parent()?;
    let candidate = dir.join(&name);
    if !candidate.exists() {
        return Some(candidate);
    }
    let (stem, extension) = name.rsplit_once('.').unwrap_or((name.as_str(), "csv"));
    (1..1000)
        .map(|n| dir.join(format!("{stem}.{n}.{extension}")))
        .find(|path| !path.exists())
}

/// The inbox's input files, as `status` and the watcher count them.
pub fn inbox_inputs(inbox: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(inbox) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|entry| {
            matches!(
                classify_inbox_entry(entry),
                InboxEntry::Input | InboxEntry::NotUtf8Name
            )
        })
        .map(|entry| entry.path())
        .collect()
}

/// Expands files and folders (recursively) into the input files, sorted and deduplicated.
/// Inside folders, symbolic links are not followed unless `follow_symlinks` (each one skipped
/// is logged); a path given by name is taken as it is. Paths that do not exist are returned in
/// the second list.
pub fn collect_inputs(paths: &[PathBuf], follow_symlinks: bool) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let mut files = Vec::new();
    let mut missing = Vec::new();
    for path in paths {
        if path.is_dir() {
            for entry in walkdir::WalkDir::new(path)
                .follow_links(follow_symlinks)
                .into_iter()
                .flatten()
            {
                let hidden_dir = entry.path().strip_prefix(path).ok().is_some_and(|rel| {
                    rel.components()
                        .any(|c| c.as_os_str().to_string_lossy().starts_with('.'))
                });
                if entry.path_is_symlink() && !follow_symlinks {
                    warn!(
                        message = "Symbolic link not followed (use --follow-symlinks).",
                        path = %crate::validate::quarantine::quoted(&entry.path().display().to_string())
                    );
                    continue;
                }
                if entry.file_type().is_file() && !hidden_dir && is_candidate(entry.path()) {
                    files.push(entry.into_path());
                }
            }
        } else if path.is_file() {
            files.push(path.clone());
        } else {
            missing.push(path.clone());
        }
    }
    files.sort();
    files.dedup();
    (files, missing)
}

/// Totals of an ingest run.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct IngestSummary {
    /// Files fully loaded.
    pub loaded: u64,
    /// Files partially loaded.
    pub partially_loaded: u64,
    /// Files rejected whole.
    pub rejected: u64,
    /// Files with a header and no rows.
    pub empty: u64,
    /// Re-deliveries of known content.
    pub duplicate: u64,
    /// Files that failed (I/O, database after retries).
    pub failed: u64,
    /// Rows read.
    pub rows_read: u64,
    /// Rows loaded.
    pub rows_loaded: u64,
    /// Rows rejected.
    pub rows_rejected: u64,
    /// Rows whose readings were already stored.
    pub rows_duplicate: u64,
}

impl IngestSummary {
    /// Adds one file's outcome.
    pub fn add(&mut self, report: &DeliveryReport) {
        match report.status {
            FileStatus::Loaded => self.loaded += 1,
            FileStatus::PartiallyLoaded => self.partially_loaded += 1,
            FileStatus::Rejected => self.rejected += 1,
            FileStatus::Empty => self.empty += 1,
            FileStatus::Duplicate => self.duplicate += 1,
        }
        self.rows_read += report.rows_read;
        self.rows_loaded += report.rows_loaded;
        self.rows_rejected += report.rows_rejected;
        self.rows_duplicate += report.rows_duplicate;
    }

    /// Whether anything was rejected (rows or whole files).
    pub fn has_rejects(&self) -> bool {
        self.rows_rejected > 0 || self.rejected > 0
    }
}

/// Processes `files` one after another; `on_file` sees each report (progress output).
pub async fn ingest_files(
    ctx: &PipelineCtx,
    files: &[PathBuf],
    disposition: Disposition,
    cancel: &CancellationToken,
    mut on_file: impl FnMut(&Path, Result<&DeliveryReport, &crate::error::Error>),
) -> IngestSummary {
    let mut summary = IngestSummary::default();
    for path in files {
        if cancel.is_cancelled() {
            break;
        }
        let delivery = Delivery::input_file(path, disposition);
        let mut outcome = process_with_retry(ctx, &delivery, cancel).await;
        // A file that changed while it was read was rolled back: read it again, a few times.
        for _ in 0..SOURCE_CHANGED_RETRIES {
            if !matches!(outcome, Err(crate::error::Error::SourceChanged(_))) {
                break;
            }
            outcome = process_with_retry(ctx, &delivery, cancel).await;
        }
        match outcome {
            Ok(report) => {
                summary.add(&report);
                on_file(path, Ok(&report));
            }
            Err(failure) => {
                summary.failed += 1;
                error!(
                    message = "File failed.",
                    file = %path.display(),
                    error = %crate::telemetry::chain(&failure)
                );
                on_file(path, Err(&failure));
            }
        }
    }
    summary
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_names_are_not_inputs() {
        for name in [".x.csv", "a.csv.tmp", "a.csv.part", "a.csv~", "a.txt", "a"] {
            assert!(!is_candidate(Path::new(name)), "{name}");
        }
        assert!(is_candidate(Path::new(
            "data/2019-01-17_sds011_sensor_5331.CSV"
        )));
    }
}
