//! Validation without the database (`sensor-etl validate`, a push checked while the database
//! is away): what a file would load and reject, and the verdict on the whole file.

use std::io::{BufRead, BufReader};
use std::path::Path;

use super::reject::RejectedRow;
use super::rejection::{FileRejection, RejectionCode};
use super::{limit, open_text, FileValidator, Mode, Result, ValidateError};
use crate::config::Settings;
use crate::delivery::ByteSource;
/// Outcome of a dry run over one file (`sensor-etl validate`).
#[derive(Debug, Clone)]
pub struct DryRun {
    /// Data rows.
    pub rows_read: u64,
    /// Rows that would load.
    pub rows_accepted: u64,
    /// Readings that would load.
    pub reading_count: u64,
    /// Rejected rows with their violations.
    pub rejects: Vec<RejectedRow>,
    /// Set when the file would be rejected whole.
    pub file_rejection: Option<FileRejection>,
}

/// Validates a whole file without any database, applying the same rules and reject ratio as
/// a real load.
///
/// # Errors
/// An I/O error while reading.
pub fn dry_run(path: &Path, settings: &Settings) -> Result<DryRun> {
    let source = ByteSource::File(path.to_path_buf());
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dry_run_source(&source, &name, settings)
}

/// `dry_run` of the delivery `name` read from `source` (any bytes: the fuzz targets and
/// their replay use this).
///
/// # Errors
/// An I/O error while reading.
pub fn dry_run_source(source: &ByteSource, name: &str, settings: &Settings) -> Result<DryRun> {
    let source = source.clone();
    let mut validator = match FileValidator::open(&source, name, settings, Mode::Load)? {
        Ok(validator) => validator,
        Err(rejection) => {
            return Ok(DryRun {
                rows_read: count_data_lines(&source, settings.max_line_bytes)?,
                rows_accepted: 0,
                reading_count: 0,
                rejects: Vec::new(),
                file_rejection: Some(rejection),
            })
        }
    };
    let mut run = DryRun {
        rows_read: 0,
        rows_accepted: 0,
        reading_count: 0,
        rejects: Vec::new(),
        file_rejection: None,
    };
    while let Some(chunk) = validator.next_chunk()? {
        run.rows_read += chunk.rows_read;
        run.rows_accepted += chunk.rows_accepted;
        run.reading_count += chunk.readings.reading_count() as u64;
        run.rejects.extend(chunk.rejects);
    }
    run.file_rejection = whole_file_rejection(run.rows_read, run.rejects.len() as u64, settings);
    Ok(run)
}

/// The file-level verdict once every row has been checked: every row bad, or a reject ratio
/// above the configured limit.
pub fn whole_file_rejection(
    rows_read: u64,
    rows_rejected: u64,
    settings: &Settings,
) -> Option<FileRejection> {
    if rows_read == 0 || rows_rejected == 0 {
        return None;
    }
    if rows_rejected == rows_read {
        return Some(FileRejection::new(
            RejectionCode::NoValidRows,
            format!("all {rows_read} data rows were rejected"),
        ));
    }
    let ratio = rows_rejected as f64 / rows_read as f64;
    (ratio > settings.max_reject_ratio).then(|| {
        FileRejection::new(
            RejectionCode::TooManyRejects,
            format!(
                "{rows_rejected} of {rows_read} data rows were rejected ({:.1} %), above the limit \
                 max_reject_ratio = {}",
                ratio * 100.0,
                settings.max_reject_ratio
            ),
        )
    })
}

/// Non-blank lines after the first: the data rows of a file whose header could not be used.
///
/// # Errors
/// An I/O error while reading.
pub fn count_data_lines(source: &ByteSource, max_line_bytes: u64) -> Result<u64> {
    let (pass, _) = limit::LineLimiter::new(open_text(source)?, max_line_bytes);
    let mut reader = BufReader::with_capacity(source.pass_buffer(), pass);
    let mut line = Vec::new();
    let mut count = 0u64;
    let mut first = true;
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(|e| ValidateError::read(source, e))?;
        if n == 0 {
            break;
        }
        if first {
            first = false;
            continue;
        }
        if line.iter().any(|b| !matches!(b, b'\r' | b'\n')) {
            count += 1;
        }
    }
    Ok(count)
}
