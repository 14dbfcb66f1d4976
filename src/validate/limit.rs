//! Bounded lines: a reader that keeps at most `max_line_bytes` of each line of a source, so that
//! one enormous line (hundreds of megabytes without a line break) costs bounded memory, and the
//! record of what it cut, so that positions map back to the source and the cut line is
//! rejected with `line_too_long` under its own line number.
//!
//! Line ends are always kept; byte offsets are mapped back through `Cuts::source_offset`. The
//! limiter also notes where empty lines are: the CSV reader skips them without counting them,
//! and `Cuts::empty_lines_before` restores the physical line numbers.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// What a `LineLimiter` cut, shared with the validator that reads through it.
#[derive(Debug, Default)]
pub struct Cuts {
    any: AtomicBool,
    inner: Mutex<CutsInner>,
}

#[derive(Debug, Default)]
struct CutsInner {
    /// Line number (1-based) → its full length in bytes, line end excluded.
    lines: BTreeMap<u64, u64>,
    /// (offset in the limited stream where a cut ended, bytes removed up to there).
    shifts: Vec<(u64, u64)>,
    /// Offsets in the limited stream of empty lines (a line end at the start of a line).
    empty_lines: Vec<u64>,
}

impl Cuts {
    /// The offset in the source of `offset` in the limited stream.
    pub fn source_offset(&self, offset: u64) -> u64 {
        if !self.any.load(Ordering::Relaxed) {
            return offset;
        }
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let index = inner.shifts.partition_point(|(at, _)| *at <= offset);
        offset + index.checked_sub(1).map_or(0, |i| inner.shifts[i].1)
    }

    /// Empty lines before `offset` in the limited stream.
    pub fn empty_lines_before(&self, offset: u64) -> u64 {
        if !self.any.load(Ordering::Relaxed) {
            return 0;
        }
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.empty_lines.partition_point(|at| *at < offset) as u64
    }

    /// The first offset at or after `offset` that does not start an empty line.
    pub fn after_empty_lines(&self, offset: u64) -> u64 {
        if !self.any.load(Ordering::Relaxed) {
            return offset;
        }
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let first = inner.empty_lines.partition_point(|at| *at < offset);
        let mut at = offset;
        for empty in &inner.empty_lines[first..] {
            if *empty != at {
                break;
            }
            at += 1;
        }
        at
    }

    /// The full length of `line` when it was cut.
    pub fn cut_line(&self, line: u64) -> Option<u64> {
        if !self.any.load(Ordering::Relaxed) {
            return None;
        }
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.lines.get(&line).copied()
    }
}

/// Bytes a limiter reads from its source at a time, at most.
const READ_BUFFER: usize = 64 * 1024;

/// Passes a text through, keeping at most `max` bytes of each line and every line end.
pub struct LineLimiter<R> {
    inner: R,
    max: u64,
    cuts: Arc<Cuts>,
    buffer: Vec<u8>,
    /// Unread part of `buffer`.
    start: usize,
    end: usize,
    /// Bytes of the current line seen so far (kept or not), line number, bytes handed out,
    /// bytes removed so far.
    in_line: u64,
    line: u64,
    out: u64,
    removed: u64,
}

impl<R: Read> LineLimiter<R> {
    /// Limits `inner` to `max` bytes a line; what it cuts is recorded in the returned `Cuts`.
    pub fn new(inner: R, max: u64) -> (Self, Arc<Cuts>) {
        Self::with_buffer(inner, max, READ_BUFFER)
    }

    /// As [`LineLimiter::new`], reading `inner` through a buffer of `buffer` bytes (at most
    /// 64 KiB): a small source needs no more than its length.
    pub fn with_buffer(inner: R, max: u64, buffer: usize) -> (Self, Arc<Cuts>) {
        let cuts = Arc::new(Cuts::default());
        let limiter = Self {
            inner,
            max: max.max(1),
            cuts: Arc::clone(&cuts),
            buffer: vec![0; buffer.clamp(1, READ_BUFFER)],
            start: 0,
            end: 0,
            in_line: 0,
            line: 1,
            out: 0,
            removed: 0,
        };
        (limiter, cuts)
    }

    /// Ends the current line: records it when it was cut.
    fn end_line(&mut self) {
        if self.in_line > self.max {
            self.removed += self.in_line - self.max;
            self.cuts.any.store(true, Ordering::Relaxed);
            let mut inner = self.cuts.inner.lock().unwrap_or_else(|e| e.into_inner());
            inner.lines.insert(self.line, self.in_line);
            inner.shifts.push((self.out, self.removed));
        }
        self.in_line = 0;
        self.line += 1;
    }
}

impl<R: Read> Read for LineLimiter<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let mut written = 0;
        while written < out.len() {
            if self.start == self.end {
                if written > 0 {
                    break;
                }
                let n = self.inner.read(&mut self.buffer)?;
                if n == 0 {
                    if self.in_line > 0 {
                        self.end_line();
                    }
                    break;
                }
                self.start = 0;
                self.end = n;
            }
            let available = &self.buffer[self.start..self.end];
            let segment = memchr::memchr(b'\n', available).unwrap_or(available.len());
            if segment == 0 {
                // A line end: always kept; an empty line is noted.
                if self.in_line == 0 {
                    self.cuts.any.store(true, Ordering::Relaxed);
                    let mut inner = self.cuts.inner.lock().unwrap_or_else(|e| e.into_inner());
                    inner.empty_lines.push(self.out);
                }
                self.end_line();
                out[written] = b'\n';
                written += 1;
                self.out += 1;
                self.start += 1;
                continue;
            }
            let room = usize::try_from(self.max.saturating_sub(self.in_line)).unwrap_or(usize::MAX);
            let keepable = segment.min(room);
            let keep = keepable.min(out.len() - written);
            out[written..written + keep].copy_from_slice(&available[..keep]);
            written += keep;
            self.out += keep as u64;
            self.in_line += keep as u64;
            self.start += keep;
            if keep < keepable {
                break;
            }
            // Past the line's room: the rest of this segment is dropped.
            let skip = segment - keep;
            self.in_line += skip as u64;
            self.start += skip;
        }
        Ok(written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lines_are_cut_and_positions_map_back() {
        let text = b"ab\nabcdefgh\nxy\nlong-long-long\n";
        let (mut limiter, cuts) = LineLimiter::new(&text[..], 4);
        let mut kept = Vec::new();
        limiter.read_to_end(&mut kept).unwrap();
        assert_eq!(kept, b"ab\nabcd\nxy\nlong\n");
        assert_eq!(cuts.cut_line(2), Some(8));
        assert_eq!(cuts.cut_line(4), Some(14));
        assert_eq!(cuts.cut_line(3), None);
        // "xy" starts at 8 in the limited stream, at 12 in the source.
        assert_eq!(cuts.source_offset(8), 12);
        assert_eq!(cuts.source_offset(2), 2);
        assert_eq!(cuts.source_offset(16), 30);
    }

    #[test]
    fn a_source_without_long_lines_passes_unchanged_in_small_reads() {
        let text = b"sensor_id;x\n1;2\n3;4";
        let (mut limiter, cuts) = LineLimiter::new(&text[..], 100);
        let mut kept = Vec::new();
        let mut one = [0u8; 3];
        loop {
            let n = limiter.read(&mut one).unwrap();
            if n == 0 {
                break;
            }
            kept.extend_from_slice(&one[..n]);
        }
        assert_eq!(kept, text);
        assert_eq!(cuts.source_offset(15), 15);
        assert_eq!(cuts.empty_lines_before(15), 0);
    }

    #[test]
    fn empty_lines_are_noted() {
        let text = b"h\n\n1\n\n\n2\n";
        let (mut limiter, cuts) = LineLimiter::new(&text[..], 100);
        std::io::copy(&mut limiter, &mut std::io::sink()).unwrap();
        assert_eq!(cuts.empty_lines_before(4), 1, "before `1`");
        assert_eq!(cuts.empty_lines_before(7), 3, "before `2`");
        assert_eq!(cuts.after_empty_lines(4), 4);
        assert_eq!(
            cuts.after_empty_lines(5),
            7,
            "the record after two empty lines"
        );
    }
}
