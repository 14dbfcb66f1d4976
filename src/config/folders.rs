//! The folders a configuration names: the inbox, the quarantine and the processed folder
//! must be apart, compared by their absolute paths with `.` and `..` resolved by name.

use std::path::{Path, PathBuf};

use super::{ConfigError, RawConfig};

/// The inbox, the quarantine, the processed folder and the lake must be apart: one inside
/// another would feed the pipeline its own output.
pub(super) fn check_folders_apart(raw: &RawConfig) -> Result<(), ConfigError> {
    let mut folders = vec![
        ("data_dir", &raw.data_dir),
        ("quarantine_dir", &raw.quarantine_dir),
        ("processed_dir", &raw.processed_dir),
    ];
    if let Some(lake) = &raw.lake_dir {
        folders.push(("lake_dir", lake));
    }
    let normalized: Vec<PathBuf> = folders
        .iter()
        .map(|(_, dir)| lexical_absolute(dir))
        .collect();
    for (i, (key, dir)) in folders.iter().enumerate() {
        for (j, (other_key, other)) in folders.iter().enumerate().skip(i + 1) {
            let (a, b) = (&normalized[i], &normalized[j]);
            if a.starts_with(b) || b.starts_with(a) {
                return Err(ConfigError::Value {
                    key,
                    message: format!(
                        "`{}` is the same folder as `{other_key}` (`{}`) or inside it, or holds it; \
                         the inbox, quarantine, processed and lake folders must be apart",
                        dir.display(),
                        other.display()
                    ),
                });
            }
        }
    }
    Ok(())
}

/// `path` made absolute with `.` and `..` resolved by name (the folders need not exist yet).
fn lexical_absolute(path: &Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut normalized = PathBuf::new();
    for component in absolute.components() {
        match component {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                normalized.pop();
            }
            other => normalized.push(other),
        }
    }
    normalized
}

#[cfg(test)]
mod folder_tests {
    use crate::config::{RawConfig, Settings};

    #[test]
    fn the_inbox_quarantine_and_processed_folders_must_be_apart() {
        for (quarantine, processed) in [
            ("data", "processed"),
            ("quarantine", "data"),
            ("data/quarantine", "processed"),
            ("quarantine", "./data/../data/done"),
            ("out", "out"),
            ("..", "processed"),
        ] {
            let raw = RawConfig {
                quarantine_dir: quarantine.into(),
                processed_dir: processed.into(),
                ..RawConfig::default()
            };
            let error = Settings::from_raw(raw).map(|_| ()).unwrap_err();
            assert!(
                error.to_string().contains("must be apart"),
                "{quarantine} {processed}: {error}"
            );
        }
        assert!(Settings::from_raw(RawConfig::default()).is_ok());
    }
}
