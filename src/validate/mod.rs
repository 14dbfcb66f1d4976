//! Validation stage: reads one delivery's bytes (a `ByteSource`, whatever it came from) in
//! bounded chunks and splits each chunk into accepted readings and rejected rows. It imports
//! only `config` and `delivery`; `ValidateError` is its own error.
//!
//! `FileValidator::open` sniffs the format from the header (a `FileRejection` ends the delivery
//! there: it is quarantined whole). `next_chunk` then yields `ValidatedChunk`s of at most
//! `chunk_rows` rows, so memory stays bounded whatever the file size; the transform stage
//! receives them through a bounded channel. Every rejected row keeps its position and all its
//! violations; nothing is dropped silently: `rows_read = rows_accepted + rows_rejected` per chunk.
//! Positions: `line` starts at 1 (the header); `record` and `byte` start at 0.

mod columns;
mod dry_run;
pub mod format;
pub mod keyset;
pub mod limit;
mod parser;
pub mod quarantine;
pub mod reject;
mod rejected_lines;
pub mod rejection;
pub mod rules;

pub use columns::{LineFields, ReadingColumns, ValidatedChunk};
pub use dry_run::{count_data_lines, dry_run, dry_run_source, whole_file_rejection, DryRun};
pub use rejected_lines::RejectedLines;

use foldhash::HashSet;
use std::io::Read;
use std::path::PathBuf;

use crate::config::Settings;
use crate::delivery::{ByteSource, SourceReader};
use format::FileFormat;
use keyset::KeySet;
use reject::{Position, RejectReason, RejectedRow, Violation};
use rejection::{FileRejection, RejectionCode};

/// `Result` of the validation stage.
pub type Result<T, E = ValidateError> = std::result::Result<T, E>;

/// An I/O failure of the validation stage: the delivery could not be read, or quarantine
/// output could not be written. Rejected rows are never errors (see [`reject`]).
#[derive(Debug, thiserror::Error)]
pub enum ValidateError {
    /// The delivery's bytes could not be read.
    #[error("cannot read {what}")]
    Read {
        /// The source, as a person would name it.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A local file (quarantine output, error log) could not be written.
    #[error("I/O error on {}", path.display())]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl ValidateError {
    /// A read of `source` failed.
    pub fn read(source: &ByteSource, cause: std::io::Error) -> Self {
        ValidateError::Read {
            what: source.to_string(),
            source: cause,
        }
    }

    /// An I/O operation on the local file `path` failed.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ValidateError::Io {
            path: path.into(),
            source,
        }
    }
}

/// How accepted rows are treated.
#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    /// Accepted rows become readings.
    Load,
    /// The file is rejected as a whole: accepted rows are rejected too, with this reason.
    RejectAll(FileRejection),
    /// The source is not in a form rows can be read from (a request body that is not valid
    /// JSON, say): rejected as a whole with this reason, no row read, kept in quarantine as
    /// it came.
    Unreadable(FileRejection),
}

impl Mode {
    /// Whether rows are read from the source at all.
    pub fn reads_rows(&self) -> bool {
        !matches!(self, Mode::Unreadable(_))
    }

    /// The reason every row is rejected, when the source is rejected as a whole.
    pub fn whole_rejection(&self) -> Option<&FileRejection> {
        match self {
            Mode::Load => None,
            Mode::RejectAll(rejection) | Mode::Unreadable(rejection) => Some(rejection),
        }
    }
}

/// Streams one file through the row rules.
pub struct FileValidator<'s> {
    settings: &'s Settings,
    format: FileFormat,
    source: ByteSource,
    reader: parser::Parser,
    cuts: std::sync::Arc<limit::Cuts>,
    record: csv::ByteRecord,
    values: Vec<(u32, f64)>,
    seen_keys: KeySet,
    seen_sensors: HashSet<(i64, usize)>,
    seen_locations: HashSet<i64>,
    /// The previous accepted row's sensor and location: consecutive rows usually share them.
    last_sensor: Option<(i64, usize)>,
    last_location: Option<i64>,
    mode: Mode,
    /// Records read so far, blank lines excluded (the header is record 0).
    record_count: u64,
    /// Chunks returned so far.
    chunks_read: u32,
    finished: bool,
}

/// Rows in a file's first chunk; each next chunk doubles, up to `chunk_rows`.
const FIRST_CHUNK_ROWS: usize = 4096;

/// Rows a chunk holds for each sensor the file has carried so far, at least
/// [`FEW_SENSORS_CHUNK_ROWS`] and at most `chunk_rows`: a file of few sensors is read in
/// smaller chunks (less memory at the same speed), one of many sensors in larger ones, since
/// much of a chunk's work in the database is per sensor it touches.
const CHUNK_ROWS_PER_SENSOR: usize = 25;

/// Rows of a chunk of a file of few sensors (at most `chunk_rows`).
const FEW_SENSORS_CHUNK_ROWS: usize = 25_000;

/// Longest header line read when sniffing the format.
const MAX_HEADER_BYTES: u64 = 64 * 1024;

impl<'s> FileValidator<'s> {
    /// Opens the delivery `name` from `source` and detects its format.
    ///
    /// # Errors
    /// `Err` when the source cannot be read; `Ok(Err(rejection))` when its header cannot be used.
    pub fn open(
        source: &ByteSource,
        name: &str,
        settings: &'s Settings,
        mode: Mode,
    ) -> Result<std::result::Result<Self, FileRejection>> {
        if let Mode::Unreadable(rejection) = mode {
            return Ok(Err(rejection));
        }
        let mut header = read_start(source)?;
        let bare_cr = ends_in_bare_cr(&header);
        // The first line, its end included (a bare `\r` read as `\n`, as the pass reads it).
        let end = if bare_cr {
            memchr::memchr(b'\r', &header)
        } else {
            memchr::memchr(b'\n', &header)
        };
        if let Some(end) = end {
            header.truncate(end + 1);
            header[end] = b'\n';
        }
        if header.is_empty() {
            return Ok(Err(FileRejection::new(
                RejectionCode::EmptyFile,
                "the file is empty",
            )));
        }
        if !header.ends_with(b"\n") && header.len() as u64 == MAX_HEADER_BYTES {
            return Ok(Err(FileRejection::new(
                RejectionCode::NotText,
                format!("no line break in the first {MAX_HEADER_BYTES} bytes: not a CSV file"),
            )));
        }
        let format = match FileFormat::detect(&header, name, settings) {
            Ok(format) => format,
            Err(rejection) => return Ok(Err(rejection)),
        };
        let (text, cuts) = limit::LineLimiter::with_buffer(
            open_pass(source, bare_cr)?,
            settings.max_line_bytes,
            source.pass_buffer(),
        );
        // Records end at `\n` only: a `\r` before it stays in the last field (and is trimmed),
        // which keeps byte offsets and physical line numbers exact for CRLF files.
        let mut reader =
            parser::Parser::open(text, format.delimiter).map_err(|e| csv_error(source, e))?;
        let mut record = csv::ByteRecord::new();
        // Skip the header record; its format is already known.
        reader
            .read_byte_record(&mut record)
            .map_err(|e| csv_error(source, e))?;
        Ok(Ok(Self {
            settings,
            source: source.clone(),
            cuts,
            format,
            reader,
            record,
            values: Vec::new(),
            seen_keys: KeySet::default(),
            seen_sensors: HashSet::default(),
            seen_locations: HashSet::default(),
            last_sensor: None,
            last_location: None,
            mode,
            record_count: 0,
            chunks_read: 0,
            finished: false,
        }))
    }

    /// The detected format.
    pub fn format(&self) -> &FileFormat {
        &self.format
    }

    /// Reads and checks up to `chunk_rows` rows (see [`CHUNK_ROWS_PER_SENSOR`]); `None` at the
    /// end of the file. The first chunks are smaller (`FIRST_CHUNK_ROWS`, doubling), so the
    /// database starts on a file's rows while the rest is still being read.
    ///
    /// # Errors
    /// An I/O error while reading.
    pub fn next_chunk(&mut self) -> Result<Option<ValidatedChunk>> {
        if self.finished {
            return Ok(None);
        }
        let mut chunk = ValidatedChunk::default();
        let by_sensors = self
            .seen_sensors
            .len()
            .saturating_mul(CHUNK_ROWS_PER_SENSOR)
            .max(FEW_SENSORS_CHUNK_ROWS)
            .min(self.settings.chunk_rows);
        let limit = by_sensors.min(FIRST_CHUNK_ROWS << self.chunks_read.min(16)) as u64;
        self.chunks_read += 1;
        while chunk.rows_read < limit {
            let more = self
                .reader
                .read_byte_record(&mut self.record)
                .map_err(|e| csv_error(&self.source, e))?;
            if !more {
                self.finished = true;
                break;
            }
            if is_blank(&self.record) {
                continue;
            }
            let start = self
                .record
                .position()
                .cloned()
                .unwrap_or_else(csv::Position::new);
            self.record_count += 1;
            // The CSV reader starts a record where it began reading, before the empty lines
            // it skipped there, and does not count those as lines (it counts the ones it
            // skipped before earlier records).
            let first_byte = self.cuts.after_empty_lines(start.byte());
            let skipped_here = self.cuts.empty_lines_before(first_byte)
                - self.cuts.empty_lines_before(start.byte());
            let position = Position {
                record: self.record_count,
                line: shifted(start.line() + skipped_here, self.source.line_shift()),
                byte: self.cuts.source_offset(first_byte),
            };
            let byte_end = self.cuts.source_offset(self.reader.position().byte());
            chunk.rows_read += 1;
            self.check(position, byte_end, &mut chunk);
        }
        if chunk.rows_read == 0 && self.finished {
            return Ok(None);
        }
        Ok(Some(chunk))
    }

    fn check(&mut self, position: Position, byte_end: u64, chunk: &mut ValidatedChunk) {
        if let Some(length) = self.cuts.cut_line(
            position
                .line
                .saturating_add_signed(self.source.line_shift()),
        ) {
            chunk.rejects.push(RejectedRow {
                position,
                byte_end,
                violations: vec![Violation::row(
                    RejectReason::LineTooLong,
                    format!(
                        "line {} is {length} bytes long, over max_line_bytes = {}",
                        position.line, self.settings.max_line_bytes
                    ),
                )],
            });
            return;
        }
        let outcome = rules::check_row(&self.record, &self.format, self.settings, &mut self.values);
        let mut reject = |violations: Vec<Violation>| {
            chunk.rejects.push(RejectedRow {
                position,
                byte_end,
                violations,
            });
        };
        let duplicate_of = |record: &csv::ByteRecord, format: &FileFormat, sensor_id: i64| {
            let column = &format.columns[format.timestamp];
            let value = String::from_utf8_lossy(&record[format.timestamp])
                .trim()
                .to_owned();
            Violation::at(
                RejectReason::DuplicateKey,
                column,
                &value,
                format!("sensor {sensor_id} already has a reading at {value} earlier in this file"),
            )
        };
        let row = match outcome {
            Ok(row) => row,
            Err((mut violations, key)) => {
                if let Some(key) = key {
                    if self.seen_keys.contains(key) {
                        violations.push(duplicate_of(&self.record, &self.format, key.0));
                    }
                }
                return reject(violations);
            }
        };
        let key = (row.sensor_id, row.ts_micros);
        // A valid row of a file being loaded takes its key in the same lookup.
        let duplicate = match &self.mode {
            Mode::Load => !self.seen_keys.insert_if_absent(key),
            Mode::RejectAll(_) | Mode::Unreadable(_) => self.seen_keys.contains(key),
        };
        if duplicate {
            return reject(vec![duplicate_of(&self.record, &self.format, key.0)]);
        }
        if let Some(rejection) = self.mode.whole_rejection() {
            return reject(vec![Violation::row(
                RejectReason::FileRejected,
                format!(
                    "the row is valid but its file was rejected as a whole: {}",
                    rejection.message
                ),
            )]);
        }
        if self.last_sensor != Some((row.sensor_id, row.sensor_type))
            && self.seen_sensors.insert((row.sensor_id, row.sensor_type))
        {
            chunk.sensors.push((row.sensor_id, row.sensor_type));
        }
        self.last_sensor = Some((row.sensor_id, row.sensor_type));
        if let Some(location_id) = row.location_id {
            if self.last_location != Some(location_id) && self.seen_locations.insert(location_id) {
                chunk.locations.push((location_id, row.lat, row.lon));
            }
            self.last_location = Some(location_id);
        }
        chunk.rows_accepted += 1;
        let fields = LineFields {
            line: u32::try_from(position.line).unwrap_or(u32::MAX),
            sensor_id: row.sensor_id,
            location_id: row.location_id,
            lat: row.lat,
            lon: row.lon,
            ts_micros: row.ts_micros,
        };
        chunk.readings.push(fields, &self.values);
    }
}

/// Opens a pass over `source` as text whose lines end in `\n`. A source whose first line ends
/// in a bare `\r` (a spreadsheet's "CSV (Macintosh)") is read with each `\r` as `\n`: byte for
/// byte, so offsets, line numbers and the quarantined bytes stay those of the source.
fn open_text(source: &ByteSource) -> Result<SourceReader> {
    let bare_cr = ends_in_bare_cr(&read_start(source)?);
    open_pass(source, bare_cr)
}

/// The first bytes of `source`, enough for its header line.
fn read_start(source: &ByteSource) -> Result<Vec<u8>> {
    source
        .random_access()
        .and_then(|access| access.read_range(0, MAX_HEADER_BYTES))
        .map_err(|e| ValidateError::read(source, e))
}

/// Whether the first line of `start` ends in a bare `\r`.
fn ends_in_bare_cr(start: &[u8]) -> bool {
    memchr::memchr2(b'\r', b'\n', start)
        .is_some_and(|i| start[i] == b'\r' && start.get(i + 1) != Some(&b'\n'))
}

/// A pass over `source`, each `\r` read as `\n` when its lines end in bare `\r`s.
fn open_pass(source: &ByteSource, bare_cr: bool) -> Result<SourceReader> {
    let pass = source.open().map_err(|e| ValidateError::read(source, e))?;
    Ok(if bare_cr {
        Box::new(CrAsLf(pass))
    } else {
        pass
    })
}

/// A reader that turns every `\r` into `\n`.
struct CrAsLf(SourceReader);

impl Read for CrAsLf {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.0.read(buf)?;
        for byte in &mut buf[..n] {
            if *byte == b'\r' {
                *byte = b'\n';
            }
        }
        Ok(n)
    }
}

/// A line with nothing but blanks (e.g. the `\r` of an empty CRLF line) is not a row.
fn is_blank(record: &csv::ByteRecord) -> bool {
    record.len() <= 1
        && record
            .iter()
            .all(|field| field.iter().all(u8::is_ascii_whitespace))
}

fn csv_error(source: &ByteSource, error: csv::Error) -> ValidateError {
    match error.into_kind() {
        csv::ErrorKind::Io(cause) => ValidateError::read(source, cause),
        other => ValidateError::read(source, std::io::Error::other(format!("{other:?}"))),
    }
}

/// A line number of a rendering in its source's terms (see `ByteSource::line_shift`).
fn shifted(line: u64, shift: i64) -> u64 {
    line.saturating_add_signed(shift.saturating_neg())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dry_run_of(bytes: &[u8]) -> (DryRun, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("2020-01-01_dht22_sensor_1.csv");
        std::fs::write(&path, bytes).unwrap();
        (dry_run(&path, &Settings::builtin()).unwrap(), dir)
    }

    #[test]
    fn lines_after_empty_lines_keep_their_physical_numbers() {
        let (run, _dir) = dry_run_of(
            b"sensor_id;timestamp;temperature;humidity\n1;2020-01-01T00:00:00;20;50\n\n\n\
              1;2020-01-01T00:01:00;abc;50\n",
        );
        let lines: Vec<u64> = run.rejects.iter().map(|r| r.position.line).collect();
        assert_eq!(lines, vec![5]);
        // Rows further on keep theirs too: the empty lines are counted once.
        let (run, _dir) = dry_run_of(
            b"sensor_id;timestamp;temperature;humidity\n1;2020-01-01T00:00:00;20;50\n\n\
              1;2020-01-01T00:00:30;20;50\n1;2020-01-01T00:00:40;x;50\n\n\n\
              1;2020-01-01T00:00:50;20;50\n1;2020-01-01T00:01:00;y;50\n",
        );
        let lines: Vec<u64> = run.rejects.iter().map(|r| r.position.line).collect();
        assert_eq!(lines, vec![5, 9]);
    }

    #[test]
    fn bare_cr_line_ends_read_like_lf_with_the_same_line_numbers() {
        let lf = b"sensor_id;timestamp;temperature;humidity\n\
                   1;2020-01-01T00:00:00;20;50\n\
                   1;2020-01-01T00:01:00;abc;50\n\
                   \n\
                   1;2020-01-01T00:02:00;21;50\n";
        let cr: Vec<u8> = lf
            .iter()
            .map(|&b| if b == b'\n' { b'\r' } else { b })
            .collect();
        let (from_lf, _a) = dry_run_of(lf);
        let (from_cr, _b) = dry_run_of(&cr);
        assert_eq!(from_lf.file_rejection, None);
        assert_eq!(from_cr.file_rejection, None);
        assert_eq!((from_cr.rows_read, from_cr.rows_accepted), (3, 2));
        assert_eq!(from_cr.reading_count, from_lf.reading_count);
        let lines =
            |run: &DryRun| -> Vec<u64> { run.rejects.iter().map(|r| r.position.line).collect() };
        assert_eq!(lines(&from_cr), vec![3]);
        assert_eq!(lines(&from_cr), lines(&from_lf));
        assert_eq!(
            from_cr.rejects[0].position.byte,
            from_lf.rejects[0].position.byte
        );
    }

    /// The sizes of the chunks a file of `rows` lines over `sensors` sensors is read in, with
    /// `chunk_rows` = 100,000.
    fn chunk_sizes(rows: usize, sensors: usize) -> Vec<u64> {
        let mut text = String::from("sensor_id;timestamp;temperature;humidity\n");
        for row in 0..rows {
            let second = row / sensors;
            text.push_str(&format!(
                "{};2020-01-01T{:02}:{:02}:{:02};20;50\n",
                1 + row % sensors,
                second / 3600,
                second / 60 % 60,
                second % 60
            ));
        }
        let mut settings = Settings::builtin();
        settings.chunk_rows = 100_000;
        let source = ByteSource::Memory(bytes::Bytes::from(text));
        let mut validator = FileValidator::open(&source, "a_dht22.csv", &settings, Mode::Load)
            .unwrap()
            .unwrap();
        let mut sizes = Vec::new();
        while let Some(chunk) = validator.next_chunk().unwrap() {
            assert_eq!(chunk.rows_accepted, chunk.rows_read);
            sizes.push(chunk.rows_read);
        }
        assert_eq!(sizes.iter().sum::<u64>(), rows as u64);
        sizes
    }

    #[test]
    fn a_file_of_few_sensors_is_read_in_smaller_chunks_than_one_of_many() {
        assert_eq!(chunk_sizes(120_000, 2).into_iter().max(), Some(25_000));
        // 25 rows for each of 2,000 sensors.
        assert_eq!(chunk_sizes(120_000, 2_000).into_iter().max(), Some(50_000));
    }
}
