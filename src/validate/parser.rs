//! The CSV parser a validator reads its rows with, kept per thread and delimiter and reset for
//! each pass. Building one (the csv crate's state machine and read buffer) costs more than
//! reading a request body of 100 lines, and a server reads every journaled body twice (the
//! answer's check, then the load).
//!
//! Guarantee: a parser taken back is reset to the start of its new text with the state of a
//! new one (`csv::Reader::seek_raw` to position 0 of a pass not begun), so no byte, line count
//! or position of an earlier pass reaches the next.

use std::cell::RefCell;
use std::io::{self, Read, Seek, SeekFrom};
use std::ops::{Deref, DerefMut};

use super::limit::LineLimiter;
use crate::delivery::SourceReader;

/// Bytes the parser reads from its text at a time.
const READ_BUFFER: usize = 64 * 1024;

/// Parsers a thread keeps between passes: one per delimiter in use.
const KEPT_PER_THREAD: usize = 4;

thread_local! {
    static KEPT: RefCell<Vec<(u8, csv::Reader<Pass>)>> = const { RefCell::new(Vec::new()) };
}

/// The text of one pass; nothing between passes.
pub struct Pass(Option<LineLimiter<SourceReader>>);

impl Read for Pass {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.0 {
            Some(text) => text.read(buf),
            None => Ok(0),
        }
    }
}

impl Seek for Pass {
    /// Only to the start, before a pass begins: the reset of a parser taken back.
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        match (to, &self.0) {
            (SeekFrom::Start(0), None) => Ok(0),
            _ => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "a pass is read forward only",
            )),
        }
    }
}

/// A parser reading one pass; back to its thread's keep when dropped.
pub struct Parser {
    delimiter: u8,
    reader: Option<csv::Reader<Pass>>,
}

impl Parser {
    /// A parser over `text` (records end at `\n`, fields of any count), kept or new.
    ///
    /// # Errors
    /// Never in practice: the reset reads nothing.
    pub fn open(text: LineLimiter<SourceReader>, delimiter: u8) -> csv::Result<Self> {
        let kept = KEPT.with(|kept| {
            let mut kept = kept.borrow_mut();
            let at = kept.iter().position(|(d, _)| *d == delimiter)?;
            Some(kept.swap_remove(at).1)
        });
        let mut reader = kept.unwrap_or_else(|| {
            csv::ReaderBuilder::new()
                .has_headers(false)
                .flexible(true)
                .terminator(csv::Terminator::Any(b'\n'))
                .delimiter(delimiter)
                .buffer_capacity(READ_BUFFER)
                .from_reader(Pass(None))
        });
        reader.seek_raw(SeekFrom::Start(0), csv::Position::new())?;
        reader.get_mut().0 = Some(text);
        Ok(Self {
            delimiter,
            reader: Some(reader),
        })
    }
}

impl Deref for Parser {
    type Target = csv::Reader<Pass>;

    fn deref(&self) -> &Self::Target {
        self.reader
            .as_ref()
            .expect("a parser holds its reader until dropped")
    }
}

impl DerefMut for Parser {
    fn deref_mut(&mut self) -> &mut Self::Target {
        self.reader
            .as_mut()
            .expect("a parser holds its reader until dropped")
    }
}

impl Drop for Parser {
    fn drop(&mut self) {
        let Some(mut reader) = self.reader.take() else {
            return;
        };
        reader.get_mut().0 = None;
        let delimiter = self.delimiter;
        // A thread being torn down keeps nothing.
        let _ = KEPT.try_with(|kept| {
            if let Ok(mut kept) = kept.try_borrow_mut() {
                if kept.len() < KEPT_PER_THREAD {
                    kept.push((delimiter, reader));
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(parser: &mut Parser) -> Vec<(Vec<String>, u64, u64)> {
        let mut record = csv::ByteRecord::new();
        let mut out = Vec::new();
        while parser.read_byte_record(&mut record).unwrap() {
            let position = record.position().unwrap().clone();
            let fields = record
                .iter()
                .map(|f| String::from_utf8_lossy(f).into_owned())
                .collect();
            out.push((fields, position.line(), position.byte()));
        }
        out
    }

    fn text(bytes: &'static [u8]) -> LineLimiter<SourceReader> {
        LineLimiter::with_buffer(Box::new(bytes) as SourceReader, 1024, 4096).0
    }

    #[test]
    fn a_parser_taken_back_reads_as_a_new_one_would() {
        let first = b"a;b\n\"open quote;1\n2;3\n";
        let second = b"x;y\n1;2\n\n3;4\n";
        let alone = records(&mut Parser::open(text(second), b';').unwrap());
        // The first pass ends inside a quoted field and is dropped before its end.
        let mut parser = Parser::open(text(first), b';').unwrap();
        let mut record = csv::ByteRecord::new();
        assert!(parser.read_byte_record(&mut record).unwrap());
        drop(parser);
        let again = records(&mut Parser::open(text(second), b';').unwrap());
        assert_eq!(again, alone);
        assert_eq!(again[0].0, ["x", "y"]);
        assert_eq!(again[2].0, ["3", "4"]);
        // Another delimiter gets a parser of its own.
        let commas = records(&mut Parser::open(text(b"p,q\n5,6\n"), b',').unwrap());
        assert_eq!(commas[1].0, ["5", "6"]);
    }
}
