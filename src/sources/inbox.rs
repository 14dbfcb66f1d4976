//! Which entries of a folder are inputs: visible `.csv` files with names that are not
//! temporary, regular files only, names in UTF-8. The watcher applies these rules to the inbox
//! and `ingest` to the folders it is given, so both take the same files.

use std::path::{Path, PathBuf};

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
