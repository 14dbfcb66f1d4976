//! Quarantine output: rejected rows verbatim, their reasons, whole rejected files, and the
//! append-only error log.
//!
//! For a file with rejected rows, `quarantine/` receives `<stem>.<fp>.rejected.csv` (the
//! original header line and each rejected row byte-for-byte, ready to be fixed and dropped back
//! into `data/`) and `<stem>.<fp>.errors.jsonl` (one object per violation). A file rejected as a
//! whole is copied to `<stem>.<fp>.<ext>` with `<stem>.<fp>.reason.txt` beside it. `<fp>` is the
//! start of the content hash, so names are deterministic: processing the same bytes again after
//! a crash rewrites the same files instead of adding new ones. Every file is written to a
//! temporary name, synced, then renamed; `abort` removes the temporaries.

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::delivery::{ByteSource, RandomAccess};
use crate::validate::reject::{Position, RejectedRow, Violation, ViolationRecord};
use crate::validate::rejection::FileRejection;
use crate::validate::{Result, ValidateError};

/// Version of the JSON objects in `…errors.jsonl`.
pub const ERRORS_SCHEMA_VERSION: u32 = 1;

/// Identity of the file being quarantined.
#[derive(Debug, Clone)]
pub struct QuarantineTarget {
    /// Quarantine folder.
    pub dir: PathBuf,
    /// The delivery's bytes.
    pub source: ByteSource,
    /// Source file name.
    pub file_name: String,
    /// Hex SHA-256 of the source.
    pub fingerprint: String,
    /// Longest row copied into `rejected.csv`: a longer one is cut there.
    pub max_line_bytes: u64,
}

/// Bytes of a delivery's name kept in the names of its quarantine and archive files: with the
/// fingerprint, the longest suffix and a temporary name's decoration, a name stays well within
/// the 255 bytes a file name may have, however long the delivery's own name is.
const NAME_STEM_BYTES: usize = 150;

/// Bytes of an extension kept in such names.
const NAME_EXTENSION_BYTES: usize = 16;

/// `text` as a piece of a file name: control characters and `/` become `_`, and it is cut to
/// at most `max_bytes` at a character boundary.
pub fn name_piece(text: &str, max_bytes: usize) -> String {
    let mut piece = String::with_capacity(text.len().min(max_bytes));
    for c in text.chars() {
        let c = if c.is_control() || c == '/' { '_' } else { c };
        if piece.len() + c.len_utf8() > max_bytes {
            break;
        }
        piece.push(c);
    }
    piece
}

/// The stem and extension of a delivery's name, each bounded (see [`NAME_STEM_BYTES`]).
pub fn bounded_stem_and_extension(name: &str) -> (String, Option<String>) {
    let path = Path::new(name);
    let stem = path
        .file_stem()
        .map(|s| name_piece(&s.to_string_lossy(), NAME_STEM_BYTES))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "file".to_owned());
    let extension = path
        .extension()
        .map(|e| name_piece(&e.to_string_lossy(), NAME_EXTENSION_BYTES))
        .filter(|e| !e.is_empty());
    (stem, extension)
}

impl QuarantineTarget {
    /// `<stem>.<first 12 hex digits>` of the source, the stem bounded.
    pub fn base_name(&self) -> String {
        let (stem, _) = bounded_stem_and_extension(&self.file_name);
        format!(
            "{stem}.{}",
            &self.fingerprint[..12.min(self.fingerprint.len())]
        )
    }

    /// Path of `<base>.<suffix>` in the quarantine folder.
    pub fn path(&self, suffix: &str) -> PathBuf {
        self.dir.join(format!("{}.{suffix}", self.base_name()))
    }
}

/// Streams rejected rows and reasons to temporary files, published by `commit`.
pub struct QuarantineWriter {
    target: QuarantineTarget,
    source: RandomAccess,
    header: Vec<u8>,
    rows: Option<(PathBuf, BufWriter<File>)>,
    errors: Option<(PathBuf, BufWriter<File>)>,
    write_rows: bool,
}

/// What `commit` published.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QuarantineFiles {
    /// The rejected rows, when any were written.
    pub rows: Option<PathBuf>,
    /// The reasons, when any were written.
    pub errors: Option<PathBuf>,
}

impl QuarantineWriter {
    /// Prepares a writer; nothing is created until the first reject. With `write_rows` false
    /// only the reasons are written (the whole file is quarantined instead).
    ///
    /// # Errors
    /// The source cannot be opened.
    pub fn new(target: QuarantineTarget, write_rows: bool) -> Result<Self> {
        let source = target
            .source
            .random_access()
            .map_err(|e| ValidateError::read(&target.source, e))?;
        Ok(Self {
            target,
            source,
            header: Vec::new(),
            rows: None,
            errors: None,
            write_rows,
        })
    }

    /// Writes only the reasons from now on (the whole file is being quarantined).
    pub fn skip_rows(&mut self) {
        if self.rows.is_none() {
            self.write_rows = false;
        }
    }

    /// Rejected rows for lines found rejectable after validation (a conflict with a stored
    /// reading): each line's byte span is found by reading the source up to it. `lines`
    /// holds (1-based line, violation); the record index is counted in lines.
    ///
    /// # Errors
    /// Reading the source failed.
    pub fn rows_at_lines(&self, mut lines: Vec<(u64, Violation)>) -> Result<Vec<RejectedRow>> {
        lines.sort_by_key(|(line, _)| *line);
        let wanted: Vec<u64> = lines.iter().map(|(line, _)| *line).collect();
        let spans = line_spans(&self.source, &wanted)
            .map_err(|e| ValidateError::read(&self.target.source, e))?;
        Ok(lines
            .into_iter()
            .zip(spans)
            .map(|((line, violation), (byte, byte_end))| RejectedRow {
                position: Position {
                    record: line.saturating_sub(1),
                    line,
                    byte,
                },
                byte_end,
                violations: vec![violation],
            })
            .collect())
    }

    /// Appends rejected rows (verbatim) and their violations.
    ///
    /// # Errors
    /// Reading the source or writing the quarantine failed.
    pub fn record(&mut self, rejects: &[RejectedRow]) -> Result<()> {
        if rejects.is_empty() {
            return Ok(());
        }
        self.open_outputs()?;
        for row in rejects {
            if let Some((path, out)) = &mut self.rows {
                let max = self.target.max_line_bytes;
                let bytes = if row.byte_end.saturating_sub(row.position.byte) > max + 2 {
                    // A line over the limit (rejected as line_too_long): its start only.
                    self.source
                        .read_range(row.position.byte, row.position.byte + max)
                } else {
                    raw_row(&self.source, row.position.byte, row.byte_end)
                }
                .map_err(|e| ValidateError::read(&self.target.source, e))?;
                out.write_all(&bytes)
                    .map_err(|e| ValidateError::io(path.as_path(), e))?;
                if !bytes.ends_with(b"\n") && !bytes.ends_with(b"\r") {
                    // A truncated last line: terminate it so that rows appended later stay apart.
                    out.write_all(line_terminator(&self.header))
                        .map_err(|e| ValidateError::io(path.as_path(), e))?;
                }
            }
            let (path, out) = self.errors.as_mut().expect("opened above");
            for violation in &row.violations {
                let record = ViolationRecord {
                    schema_version: ERRORS_SCHEMA_VERSION,
                    file: &self.target.file_name,
                    fingerprint: &self.target.fingerprint,
                    record: row.position.record,
                    line: row.position.line,
                    byte: row.position.byte,
                    column: violation.column.as_deref(),
                    value: violation.value.as_deref(),
                    code: violation.reason.code(),
                    message: &violation.message,
                };
                serde_json::to_writer(&mut *out, &record)
                    .map_err(|e| ValidateError::io(path.as_path(), e.into()))?;
                out.write_all(b"\n")
                    .map_err(|e| ValidateError::io(path.as_path(), e))?;
            }
        }
        Ok(())
    }

    fn open_outputs(&mut self) -> Result<()> {
        if self.errors.is_some() {
            return Ok(());
        }
        fs::create_dir_all(&self.target.dir).map_err(|e| ValidateError::io(&self.target.dir, e))?;
        self.errors = Some(create_temp(
            &self.target.path("errors.jsonl"),
            quarantine_mode(&self.target.source),
        )?);
        if self.write_rows {
            self.header = header_line(&self.source)
                .map_err(|e| ValidateError::read(&self.target.source, e))?;
            let (path, mut out) = create_temp(
                &self.target.path("rejected.csv"),
                quarantine_mode(&self.target.source),
            )?;
            out.write_all(&self.header)
                .map_err(|e| ValidateError::io(&path, e))?;
            if !self.header.ends_with(b"\n") && !self.header.ends_with(b"\r") {
                out.write_all(b"\n")
                    .map_err(|e| ValidateError::io(&path, e))?;
            }
            self.rows = Some((path, out));
        }
        Ok(())
    }

    /// Syncs and renames the temporary files into place.
    ///
    /// # Errors
    /// Flushing, syncing or renaming failed.
    pub fn commit(mut self) -> Result<QuarantineFiles> {
        let rows = match self.rows.take() {
            Some((temp, out)) => Some(publish(temp, out, &self.target.path("rejected.csv"))?),
            None => None,
        };
        let errors = match self.errors.take() {
            Some((temp, out)) => Some(publish(temp, out, &self.target.path("errors.jsonl"))?),
            None => None,
        };
        Ok(QuarantineFiles { rows, errors })
    }

    /// Removes the temporary files.
    pub fn abort(mut self) {
        for (temp, _) in self.rows.take().into_iter().chain(self.errors.take()) {
            let _ = fs::remove_file(temp);
        }
    }
}

impl Drop for QuarantineWriter {
    fn drop(&mut self) {
        for (temp, _) in self.rows.take().into_iter().chain(self.errors.take()) {
            let _ = fs::remove_file(temp);
        }
    }
}

/// Copies a whole rejected file into quarantine with a reason file beside it; returns the
/// path of the copy.
///
/// # Errors
/// Copying or writing failed.
pub fn quarantine_whole_file(
    target: &QuarantineTarget,
    rejection: &FileRejection,
    details: &str,
) -> Result<PathBuf> {
    fs::create_dir_all(&target.dir).map_err(|e| ValidateError::io(&target.dir, e))?;
    let (_, extension) = bounded_stem_and_extension(&target.file_name);
    let extension = extension.unwrap_or_else(|| "csv".to_owned());
    let copy_path = target.path(&extension);
    let (temp, mut out) = create_temp(&copy_path, quarantine_mode(&target.source))?;
    let copied = target
        .source
        .open()
        .map_err(|e| ValidateError::read(&target.source, e))
        .and_then(|mut source| {
            std::io::copy(&mut source, &mut out).map_err(|e| ValidateError::io(&temp, e))
        });
    if let Err(error) = copied {
        drop(out);
        let _ = fs::remove_file(&temp);
        return Err(error);
    }
    publish(temp, out, &copy_path)?;

    let reason_path = target.path("reason.txt");
    let (temp, mut out) = create_temp(&reason_path, quarantine_mode(&target.source))?;
    let text = format!(
        "file: {}\nsha256: {}\ncode: {}\nreason: {}\n{details}",
        quoted(&target.file_name),
        target.fingerprint,
        rejection.code,
        quoted(&rejection.message)
    );
    if let Err(e) = out.write_all(text.as_bytes()) {
        drop(out);
        let _ = fs::remove_file(&temp);
        return Err(ValidateError::io(&temp, e));
    }
    publish(temp, out, &reason_path)?;
    Ok(copy_path)
}

/// `text` in double quotes with JSON escapes: how names and reasons appear in the text logs,
/// so that a line break or a quote in a file name cannot forge an entry.
pub fn quoted(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| "\"?\"".to_owned())
}

/// Appends one entry to the append-only error log (one write per entry, so concurrent
/// writers do not interleave within an entry).
///
/// # Errors
/// The log cannot be opened or written.
pub fn append_error_log(path: &Path, entry: &str) -> Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(|e| ValidateError::io(parent, e))?;
    }
    let mut log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| ValidateError::io(path, e))?;
    let mut text = entry.to_owned();
    if !text.ends_with('\n') {
        text.push('\n');
    }
    log.write_all(text.as_bytes())
        .map_err(|e| ValidateError::io(path, e))
}

/// Removes temporary files left in the quarantine folder by processes that died mid-write.
pub fn remove_stale_temporaries(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(stem) = name.strip_prefix('.').and_then(|n| n.strip_suffix(".tmp")) else {
            continue;
        };
        let alive = stem
            .rsplit('.')
            .next()
            .and_then(|pid| pid.parse::<u32>().ok())
            .is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
        if !alive {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// Permission bits for quarantine files of `source`: never more readable than the source
/// (its bits, without execute); bytes in memory get owner and group read/write.
fn quarantine_mode(source: &ByteSource) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    source
        .path()
        .and_then(|path| fs::metadata(path).ok())
        .map_or(0o640, |m| m.permissions().mode() & 0o666)
}

fn create_temp(final_path: &Path, mode: u32) -> Result<(PathBuf, BufWriter<File>)> {
    let name = final_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = final_path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let file = {
        use std::os::unix::fs::OpenOptionsExt;
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&temp)
            .map_err(|e| ValidateError::io(&temp, e))?
    };
    // A temporary file left by an earlier run keeps its bits: set them again.
    fs::set_permissions(&temp, std::os::unix::fs::PermissionsExt::from_mode(mode))
        .map_err(|e| ValidateError::io(&temp, e))?;
    Ok((temp, BufWriter::new(file)))
}

/// Flushes, syncs and renames a temporary file into place; on any failure (a full disk) the
/// temporary file is removed, so no partial file is ever left behind.
fn publish(temp: PathBuf, out: BufWriter<File>, final_path: &Path) -> Result<PathBuf> {
    let placed = out
        .into_inner()
        .map_err(|e| ValidateError::io(&temp, e.into_error()))
        .and_then(|file| file.sync_all().map_err(|e| ValidateError::io(&temp, e)))
        .and_then(|()| fs::rename(&temp, final_path).map_err(|e| ValidateError::io(final_path, e)));
    if let Err(error) = placed {
        let _ = fs::remove_file(&temp);
        return Err(error);
    }
    if let Some(dir) = final_path.parent() {
        // Make the rename itself durable.
        if let Ok(dir) = File::open(dir) {
            let _ = dir.sync_all();
        }
    }
    Ok(final_path.to_path_buf())
}

/// The (first byte, byte past the terminator) of each of `lines` (1-based, ascending): line
/// ends are `\n`, `\r\n` or a bare `\r`. A line past the end is empty at the end.
fn line_spans(source: &RandomAccess, lines: &[u64]) -> std::io::Result<Vec<(u64, u64)>> {
    const BLOCK: u64 = 1 << 16;
    struct Walk<'l> {
        wanted: std::iter::Peekable<std::iter::Copied<std::slice::Iter<'l, u64>>>,
        spans: Vec<(u64, u64)>,
        line: u64,
        line_start: u64,
    }
    impl Walk<'_> {
        fn line_ends(&mut self, end: u64) {
            while self.wanted.next_if_eq(&self.line).is_some() {
                self.spans.push((self.line_start, end));
            }
            self.line += 1;
            self.line_start = end;
        }
    }
    let mut walk = Walk {
        wanted: lines.iter().copied().peekable(),
        spans: Vec::with_capacity(lines.len()),
        line: 1,
        line_start: 0,
    };
    // A `\r` just seen: the line ends after it unless a `\n` follows.
    let mut after_cr: Option<u64> = None;
    let mut offset = 0u64;
    while walk.wanted.peek().is_some() {
        let block = source.read_range(offset, offset + BLOCK)?;
        if block.is_empty() {
            break;
        }
        for (i, &byte) in block.iter().enumerate() {
            let at = offset + i as u64;
            if let Some(end) = after_cr.take() {
                if byte == b'\n' {
                    walk.line_ends(at + 1);
                    continue;
                }
                walk.line_ends(end);
            }
            match byte {
                b'\n' => walk.line_ends(at + 1),
                b'\r' => after_cr = Some(at + 1),
                _ => {}
            }
        }
        offset += block.len() as u64;
    }
    if let Some(end) = after_cr {
        walk.line_ends(end);
    }
    let (start, end) = (walk.line_start, offset);
    walk.spans
        .extend(walk.wanted.map(|_| (start.min(end), end)));
    Ok(walk.spans)
}

/// The bytes of a row: from its first byte through its line terminator, excluding blank lines
/// that the CSV reader skipped after it.
fn raw_row(source: &RandomAccess, start: u64, end: u64) -> std::io::Result<Vec<u8>> {
    let mut bytes = source.read_range(start, end.saturating_add(2))?;
    let span = (end - start) as usize;
    let content_end = bytes[..span.min(bytes.len())]
        .iter()
        .rposition(|b| !matches!(b, b'\r' | b'\n'))
        .map_or(0, |i| i + 1);
    let terminator = match &bytes[content_end..] {
        [b'\r', b'\n', ..] => 2,
        [b'\n', ..] | [b'\r', ..] => 1,
        _ => 0,
    };
    bytes.truncate(content_end + terminator);
    Ok(bytes)
}

fn header_line(source: &RandomAccess) -> std::io::Result<Vec<u8>> {
    const BLOCK: u64 = 4096;
    let mut header = Vec::new();
    loop {
        let start = header.len() as u64;
        let block = source.read_range(start, start + BLOCK + 1)?;
        let body = &block[..block.len().min(BLOCK as usize)];
        // The line ends at `\n`, `\r\n`, or a bare `\r` (classic Mac line ends).
        if let Some(end) = body.iter().position(|&b| b == b'\n' || b == b'\r') {
            let crlf = body[end] == b'\r' && block.get(end + 1) == Some(&b'\n');
            header.extend_from_slice(&block[..end + 1 + usize::from(crlf)]);
            break;
        }
        header.extend_from_slice(body);
        if (body.len() as u64) < BLOCK {
            break;
        }
    }
    Ok(header)
}

fn line_terminator(header: &[u8]) -> &'static [u8] {
    if header.ends_with(b"\r\n") {
        b"\r\n"
    } else if header.ends_with(b"\r") {
        b"\r"
    } else {
        b"\n"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source_with(bytes: &[u8]) -> (tempfile::TempDir, RandomAccess) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.csv");
        fs::write(&path, bytes).unwrap();
        let file = ByteSource::File(path).random_access().unwrap();
        (dir, file)
    }

    #[test]
    fn the_header_line_is_read_across_blocks() {
        let mut bytes = vec![b'h'; 5000];
        bytes.extend_from_slice(b"\r\nrow\n");
        let (_dir, file) = source_with(&bytes);
        assert_eq!(header_line(&file).unwrap(), bytes[..5002].to_vec());
    }

    #[test]
    fn raw_rows_keep_their_terminator_and_skip_blank_lines() {
        let (_dir, file) = source_with(b"h\r\na;b\r\n\r\n\nc;d");
        assert_eq!(raw_row(&file, 3, 8).unwrap(), b"a;b\r\n");
        assert_eq!(raw_row(&file, 3, 11).unwrap(), b"a;b\r\n");
        assert_eq!(raw_row(&file, 3, 7).unwrap(), b"a;b\r\n");
        assert_eq!(raw_row(&file, 11, 14).unwrap(), b"c;d");
    }
}
