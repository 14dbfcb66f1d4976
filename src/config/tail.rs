//! `tail`: which inbox files are read in tail mode, as glob patterns relative to the inbox
//! (`*` and `?` do not cross a `/`).

use super::ConfigError;

/// The tail patterns as one matcher (they were validated when the settings were made).
pub fn tail_patterns(patterns: &[String]) -> globset::GlobSet {
    let mut set = globset::GlobSetBuilder::new();
    for pattern in patterns {
        if let Ok(glob) = globset::GlobBuilder::new(pattern)
            .literal_separator(true)
            .build()
        {
            set.add(glob);
        }
    }
    set.build().unwrap_or_else(|_| globset::GlobSet::empty())
}

/// `tail` patterns, each checked.
pub(super) fn validated_patterns(patterns: Vec<String>) -> Result<Vec<String>, ConfigError> {
    for pattern in &patterns {
        globset::GlobBuilder::new(pattern)
            .literal_separator(true)
            .build()
            .map_err(|e| ConfigError::Value {
                key: "tail",
                message: format!("`{pattern}` is not a file pattern: {e}"),
            })?;
    }
    Ok(patterns)
}
