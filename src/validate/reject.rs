//! Reject vocabulary: where a row is (`Position`), why it is rejected (`RejectReason` with a
//! stable code) and the report of one rejected row (`RejectedRow`).
//!
//! A rejected row is an outcome, never an `Err`: validation records it and keeps reading.
//! Codes are a bounded, stable set used by logs, metrics, quarantine files and the database;
//! messages are for people. Position bases: `line` starts at 1 (the header is line 1);
//! `record` and `byte` start at 0.

use std::fmt;

use serde::Serialize;

/// Where a row starts in its source file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Position {
    /// 0-based record index, the header being record 0.
    pub record: u64,
    /// 1-based physical line on which the row starts.
    pub line: u64,
    /// 0-based byte offset of the row's first byte.
    pub byte: u64,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "record {} (line {}, byte {})",
            self.record, self.line, self.byte
        )
    }
}

/// Why a row was rejected. `code()` is stable across releases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RejectReason {
    /// The row has another number of fields than the header.
    FieldCount,
    /// A required field (sensor id, timestamp) is empty.
    MissingField,
    /// A numeric field does not hold a number.
    NotANumber,
    /// A value is outside the valid range of its sensor type and measurement.
    OutOfRange,
    /// The timestamp is not ISO 8601.
    BadTimestamp,
    /// The same (sensor, timestamp) was already loaded from this file.
    DuplicateKey,
    /// Every measurement of the row is empty.
    AllMeasurementsEmpty,
    /// The row is not valid UTF-8.
    InvalidUtf8,
    /// The `sensor_type` value names no configured sensor type.
    UnknownSensorType,
    /// The row was fine but its file was rejected as a whole.
    FileRejected,
    /// The line is longer than `max_line_bytes`.
    LineTooLong,
    /// The sensor already has a stored reading at this time with other values (store stage,
    /// `on_conflict = "keep_first"`).
    ConflictingReading,
}

impl RejectReason {
    /// Every reason, for listings and metrics.
    pub const ALL: [RejectReason; 12] = [
        RejectReason::FieldCount,
        RejectReason::MissingField,
        RejectReason::NotANumber,
        RejectReason::OutOfRange,
        RejectReason::BadTimestamp,
        RejectReason::DuplicateKey,
        RejectReason::AllMeasurementsEmpty,
        RejectReason::InvalidUtf8,
        RejectReason::UnknownSensorType,
        RejectReason::FileRejected,
        RejectReason::LineTooLong,
        RejectReason::ConflictingReading,
    ];

    /// The stable machine-readable code.
    pub const fn code(self) -> &'static str {
        match self {
            RejectReason::FieldCount => "field_count",
            RejectReason::MissingField => "missing_field",
            RejectReason::NotANumber => "not_a_number",
            RejectReason::OutOfRange => "out_of_range",
            RejectReason::BadTimestamp => "bad_timestamp",
            RejectReason::DuplicateKey => "duplicate_key",
            RejectReason::AllMeasurementsEmpty => "all_measurements_empty",
            RejectReason::InvalidUtf8 => "invalid_utf8",
            RejectReason::UnknownSensorType => "unknown_sensor_type",
            RejectReason::FileRejected => "file_rejected",
            RejectReason::LineTooLong => "line_too_long",
            RejectReason::ConflictingReading => "conflicting_reading",
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// One rule broken by one row.
#[derive(Debug, Clone, PartialEq)]
pub struct Violation {
    /// Which rule.
    pub reason: RejectReason,
    /// The column concerned, if one is.
    pub column: Option<String>,
    /// The offending value as found (lossy UTF-8), if one is.
    pub value: Option<String>,
    /// A sentence a person understands.
    pub message: String,
}

impl Violation {
    /// A violation tied to a column and its value (both cut to `MAX_TEXT_CHARS`).
    pub fn at(reason: RejectReason, column: &str, value: &str, message: String) -> Self {
        Self {
            reason,
            column: Some(cut(column)),
            value: Some(cut(value)),
            message: cut(&message),
        }
    }

    /// A violation of the row as a whole.
    pub fn row(reason: RejectReason, message: String) -> Self {
        Self {
            reason,
            column: None,
            value: None,
            message: cut(&message),
        }
    }
}

/// Longest value, column name or message kept in a violation (quarantine reasons, the
/// database, the terminal); longer ones are cut with a note of their length.
pub const MAX_TEXT_CHARS: usize = 1024;

/// `text` cut to `MAX_TEXT_CHARS` characters, with the length it had.
pub fn cut(text: &str) -> String {
    match text.char_indices().nth(MAX_TEXT_CHARS) {
        None => text.to_owned(),
        Some((end, _)) => format!("{}… ({} bytes in all)", &text[..end], text.len()),
    }
}

/// A rejected row: where it is, its byte span in the source, and every rule it broke.
#[derive(Debug, Clone, PartialEq)]
pub struct RejectedRow {
    /// Start of the row.
    pub position: Position,
    /// Byte offset just past the row (its line terminator included).
    pub byte_end: u64,
    /// All violations, never empty.
    pub violations: Vec<Violation>,
}

/// The JSON object written per violation to `…errors.jsonl`.
#[derive(Debug, Serialize)]
pub struct ViolationRecord<'a> {
    /// Format version of this record.
    pub schema_version: u32,
    /// Source file name.
    pub file: &'a str,
    /// SHA-256 of the source file.
    pub fingerprint: &'a str,
    /// 0-based record index.
    pub record: u64,
    /// 1-based physical line.
    pub line: u64,
    /// 0-based byte offset.
    pub byte: u64,
    /// Column, if any.
    pub column: Option<&'a str>,
    /// Offending value, if any.
    pub value: Option<&'a str>,
    /// Stable rule code.
    pub code: &'static str,
    /// Explanation.
    pub message: &'a str,
}
