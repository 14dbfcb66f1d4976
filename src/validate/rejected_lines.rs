//! The rows of a file rejected as a whole because its header could not be used.

use std::io::{BufRead, BufReader};

use super::reject::{Position, RejectReason, RejectedRow, Violation};
use super::rejection::FileRejection;
use super::{limit, open_text, shifted, Result, ValidateError, ValidatedChunk};
use crate::config::Settings;
use crate::delivery::{ByteSource, SourceReader};
/// Every data line of a file whose header could not be used, as rejected rows: the whole file
/// is rejected, and each of its rows still gets a line number and a reason so that
/// `rows_read = rows_rejected` holds in the database too.
pub struct RejectedLines {
    source: ByteSource,
    reader: BufReader<limit::LineLimiter<SourceReader>>,
    cuts: std::sync::Arc<limit::Cuts>,
    rejection: FileRejection,
    line: u64,
    record: u64,
    byte: u64,
    buffer: Vec<u8>,
    chunk_rows: usize,
    finished: bool,
}

impl RejectedLines {
    /// Opens `source`, positioned after its first line; chunks of `settings.chunk_rows`,
    /// lines cut at `settings.max_line_bytes`.
    ///
    /// # Errors
    /// The source cannot be read.
    pub fn open(
        source: &ByteSource,
        rejection: FileRejection,
        settings: &Settings,
    ) -> Result<Self> {
        let (pass, cuts) = limit::LineLimiter::new(open_text(source)?, settings.max_line_bytes);
        let chunk_rows = settings.chunk_rows;
        let mut lines = Self {
            source: source.clone(),
            reader: BufReader::with_capacity(source.pass_buffer(), pass),
            cuts,
            rejection,
            line: 0,
            record: 0,
            byte: 0,
            buffer: Vec::new(),
            chunk_rows,
            finished: false,
        };
        lines.read_line()?;
        Ok(lines)
    }

    fn read_line(&mut self) -> Result<usize> {
        self.buffer.clear();
        let n = self
            .reader
            .read_until(b'\n', &mut self.buffer)
            .map_err(|e| ValidateError::read(&self.source, e))?;
        self.line += 1;
        self.byte += n as u64;
        Ok(n)
    }

    /// The next chunk of rejected lines; `None` at the end.
    ///
    /// # Errors
    /// An I/O error while reading.
    pub fn next_chunk(&mut self) -> Result<Option<ValidatedChunk>> {
        if self.finished {
            return Ok(None);
        }
        let mut chunk = ValidatedChunk::default();
        while chunk.rejects.len() < self.chunk_rows {
            let start = self.byte;
            let n = self.read_line()?;
            if n == 0 {
                self.finished = true;
                break;
            }
            if self.buffer.iter().all(|b| matches!(b, b'\r' | b'\n')) {
                continue;
            }
            self.record += 1;
            chunk.rows_read += 1;
            chunk.rejects.push(RejectedRow {
                position: Position {
                    record: self.record,
                    line: shifted(self.line, self.source.line_shift()),
                    byte: self.cuts.source_offset(start),
                },
                byte_end: self.cuts.source_offset(self.byte),
                violations: vec![Violation::row(
                    RejectReason::FileRejected,
                    format!(
                        "the file was rejected as a whole ({}): {}",
                        self.rejection.code, self.rejection.message
                    ),
                )],
            });
        }
        if chunk.rows_read == 0 && self.finished {
            return Ok(None);
        }
        Ok(Some(chunk))
    }
}
