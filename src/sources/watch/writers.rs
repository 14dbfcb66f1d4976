//! Which inbox files some process still holds open for writing: such a file is not complete,
//! however long it has been quiet (a logger that keeps its file open and writes a line every
//! few seconds).
//!
//! Linux tells it in `/proc`: every process's open files are the links in `/proc/<pid>/fd/`,
//! and `/proc/<pid>/fdinfo/<fd>` gives each one's open flags. One pass reads every link
//! (`readlink`, no file is opened) and, only for links into the inbox, their flags. It runs
//! when files are ready to be taken, not on every event: its cost is one `readlink` per open
//! file descriptor on the machine (a few milliseconds for tens of thousands), whatever the number
//! of inbox files. A process of another user is seen only when sensor-etl runs as root (or with
//! `CAP_SYS_PTRACE`); without `/proc` nothing is seen and the settle rule alone decides.

use std::collections::HashSet;
use std::ffi::OsString;
use std::path::Path;

/// Names of the files directly in `inbox` that a process holds open for writing.
pub fn open_for_writing(inbox: &Path) -> HashSet<OsString> {
    let mut found = HashSet::new();
    let Ok(inbox) = std::fs::canonicalize(inbox) else {
        return found;
    };
    let Ok(processes) = std::fs::read_dir("/proc") else {
        return found;
    };
    for process in processes.flatten() {
        let pid = process.file_name();
        if !pid.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(descriptors) = std::fs::read_dir(process.path().join("fd")) else {
            continue;
        };
        for descriptor in descriptors.flatten() {
            let Ok(target) = std::fs::read_link(descriptor.path()) else {
                continue;
            };
            if target.parent() != Some(inbox.as_path()) {
                continue;
            }
            let info = process.path().join("fdinfo").join(descriptor.file_name());
            if opened_for_writing(&info) {
                if let Some(name) = target.file_name() {
                    found.insert(name.to_os_string());
                }
            }
        }
    }
    found
}

/// Whether the `flags:` line of an fdinfo file says write-only or read-write.
fn opened_for_writing(fdinfo: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(fdinfo) else {
        return false;
    };
    text.lines()
        .find_map(|line| line.strip_prefix("flags:"))
        .and_then(|flags| u32::from_str_radix(flags.trim(), 8).ok())
        .is_some_and(|flags| flags & 0o3 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_open_for_writing_is_seen_and_one_open_for_reading_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let written = dir.path().join("logger.csv");
        let read = dir.path().join("done.csv");
        std::fs::write(&read, "x").unwrap();
        let writer = std::fs::File::create(&written).unwrap();
        let reader = std::fs::File::open(&read).unwrap();
        let open = open_for_writing(dir.path());
        assert!(open.contains(&OsString::from("logger.csv")), "{open:?}");
        assert!(!open.contains(&OsString::from("done.csv")), "{open:?}");
        drop(writer);
        drop(reader);
        assert!(open_for_writing(dir.path()).is_empty());
    }
}
