//! Tail mode: inbox files that grow for their whole life (a logger appending a line per
//! measurement, or keeping its file open) are read as they grow, never taken whole. The model
//! is vector's file source and Telegraf's tail input.
//!
//! - Which files: those matching the `tail` patterns (relative to the inbox, e.g. `*.log.csv`,
//!   `today/*.csv`); the inbox watcher leaves them to this module.
//! - Each pass (every `rescan_interval`), each new block of complete lines (up to the last line
//!   end) is one delivery: the file's header line and the block, with the file's own line
//!   numbers. A line not yet ended waits for its end.
//! - Exactly once per line: the byte offset a block reaches is recorded in the block's own
//!   transaction (`store::tail`), and only from the offset it started at; after a crash the
//!   next block starts where the database says.
//! - A file is known by its fingerprint, a hash of its first two lines (the header and the
//!   first data line): renamed (a logger's rotation at midnight), it keeps its place; a new
//!   file under an old name, or one truncated and written again, starts from its beginning
//!   (lines read again that were stored are duplicates, never stored twice).
//! - Once a file has been quiet for `tail_quiet` (the end of the logger's day) and every line
//!   is loaded (a last line without its line end included), it is disposed of like any inbox
//!   file: moved to `processed/`, or deleted with `delete_after_load`.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::tail_patterns;
use crate::delivery::{ByteSource, Delivery, Disposition, Origin, TailMark};
use crate::error::{Error, Result};
use crate::pipeline::{process_with_retry, PipelineCtx};
use crate::sources::inbox::is_temporary_name;
use crate::store::tail::{self, Position};
use crate::store::StoreError;

/// The first bytes of a file read for its fingerprint, at most.
const FINGERPRINT_MAX_BYTES: usize = 8 * 1024;

/// The bytes of one block, at most (a longer backlog is loaded in several blocks).
const BLOCK_MAX_BYTES: u64 = 64 * 1024 * 1024;

/// Follows the tailed files of the inbox until `cancel` (see the module header).
pub async fn run(ctx: PipelineCtx, cancel: CancellationToken) {
    let patterns = tail_patterns(&ctx.settings.tail);
    let inbox = ctx.settings.data_dir.clone();
    // The last problem said of each file: each is said once, not every pass.
    let mut problems: HashMap<PathBuf, String> = HashMap::new();
    info!(message = "Tailing inbox files.", patterns = ?ctx.settings.tail);
    loop {
        let files = {
            let (inbox, patterns) = (inbox.clone(), patterns.clone());
            tokio::task::spawn_blocking(move || tailed_files(&inbox, &patterns))
                .await
                .unwrap_or_default()
        };
        for path in files {
            if cancel.is_cancelled() {
                return;
            }
            match follow(&ctx, &path, &cancel).await {
                Ok(()) => {
                    problems.remove(&path);
                }
                Err(error) => {
                    let text = crate::telemetry::chain(&error);
                    if problems.get(&path) != Some(&text) {
                        warn!(
                            message = "A tailed file waits.",
                            file = %path.display(),
                            error = %text
                        );
                        problems.insert(path.clone(), text);
                    }
                    if error.is_transient() {
                        break;
                    }
                }
            }
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(ctx.settings.rescan_interval) => {}
        }
    }
}

/// The files under `inbox` the tail patterns match (temporary names left out).
pub fn tailed_files(inbox: &Path, patterns: &globset::GlobSet) -> Vec<PathBuf> {
    walkdir::WalkDir::new(inbox)
        .min_depth(1)
        .max_depth(8)
        .into_iter()
        .flatten()
        .filter(|entry| entry.file_type().is_file())
        .filter(|entry| !is_temporary_name(&entry.file_name().to_string_lossy()))
        .filter(|entry| {
            entry
                .path()
                .strip_prefix(inbox)
                .is_ok_and(|relative| patterns.is_match(relative))
        })
        .map(walkdir::DirEntry::into_path)
        .collect()
}

/// One look at a tailed file: loads its next block, or disposes of it when it is done.
async fn follow(ctx: &PipelineCtx, path: &Path, cancel: &CancellationToken) -> Result<()> {
    let owned = path.to_path_buf();
    let head = tokio::task::spawn_blocking(move || read_head(&owned))
        .await
        .map_err(|e| Error::io(path, std::io::Error::other(e)))?
        .map_err(|e| Error::io(path, e))?;
    let Some(head) = head else {
        // No data line ended yet: nothing to load, nothing to know the file by.
        return Ok(());
    };
    let stored = {
        let client = ctx.store.pool().get().await.map_err(StoreError::from)?;
        tail::position(&client, &head.fingerprint).await?
    };
    let beginning = Position {
        byte: head.header.len() as u64,
        line: 1,
        check: String::new(),
    };
    let recorded = stored.unwrap_or_else(|| beginning.clone());
    let metadata = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    let quiet = metadata
        .modified()
        .ok()
        .and_then(|m| m.elapsed().ok())
        .is_some_and(|age| age >= ctx.settings.tail_quiet);
    // Cut back below what was loaded, or rewritten (its first lines kept): read again from its
    // start; the lines already stored come back as duplicates, the new ones load.
    let rewritten = metadata.len() < recorded.byte || {
        let (owned, at, check) = (path.to_path_buf(), recorded.byte, recorded.check.clone());
        !tokio::task::spawn_blocking(move || still_holds(&owned, at, &check))
            .await
            .unwrap_or(false)
    };
    let start = if rewritten {
        info!(
            message = "A tailed file was truncated; reading it again from its start.",
            file = %path.display(),
            loaded_bytes = recorded.byte,
            bytes_now = metadata.len()
        );
        beginning
    } else {
        recorded.clone()
    };
    if metadata.len() > start.byte {
        let owned = path.to_path_buf();
        let block = tokio::task::spawn_blocking(move || read_block(&owned, start.byte, quiet))
            .await
            .map_err(|e| Error::io(path, std::io::Error::other(e)))?
            .map_err(|e| Error::io(path, e))?;
        if let Some(block) = block {
            let delivery = block_delivery(path, &head, recorded.byte, start, block);
            process_with_retry(ctx, &delivery, cancel).await?;
            return Ok(());
        }
    }
    if quiet && metadata.len() == recorded.byte {
        dispose(ctx, path, &head.fingerprint)?;
    }
    Ok(())
}

/// Bytes before an offset that its check covers, at most.
const CHECK_BYTES: usize = 256;

/// The check of the bytes that end a block: `<length>:<sha-256>` of its last bytes.
fn check_of(bytes: &[u8]) -> String {
    let last = &bytes[bytes.len().saturating_sub(CHECK_BYTES)..];
    format!("{}:{}", last.len(), hex::encode(Sha256::digest(last)))
}

/// Whether the file still holds, just before `at`, the bytes `check` describes (an empty check,
/// before any block was loaded, holds).
fn still_holds(path: &Path, at: u64, check: &str) -> bool {
    use std::os::unix::fs::FileExt;
    let Some((len, _)) = check.split_once(':') else {
        return true;
    };
    let Ok(len) = len.parse::<usize>() else {
        return true;
    };
    let mut bytes = vec![0; len];
    let Some(from) = at.checked_sub(len as u64) else {
        return false;
    };
    std::fs::File::open(path)
        .and_then(|file| file.read_exact_at(&mut bytes, from))
        .is_ok_and(|()| check_of(&bytes) == check)
}

/// What a file is known by: its header line and the fingerprint of its first two lines.
struct Head {
    header: Vec<u8>,
    fingerprint: String,
}

/// The head of a file once its first data line is complete.
fn read_head(path: &Path) -> std::io::Result<Option<Head>> {
    let mut bytes = Vec::with_capacity(FINGERPRINT_MAX_BYTES);
    std::fs::File::open(path)?
        .take(FINGERPRINT_MAX_BYTES as u64)
        .read_to_end(&mut bytes)?;
    let mut ends = memchr::memchr_iter(b'\n', &bytes);
    let (Some(header_end), Some(second_end)) = (ends.next(), ends.next()) else {
        return Ok(None);
    };
    Ok(Some(Head {
        header: bytes[..=header_end].to_vec(),
        fingerprint: hex::encode(&Sha256::digest(&bytes[..=second_end])[..16]),
    }))
}

/// A block of complete lines from `from`, with its line count; past a quiet period, a last line
/// without its line end counts as complete.
struct Block {
    bytes: Vec<u8>,
    /// Bytes of the file the block covers.
    len: u64,
    lines: u64,
}

fn read_block(path: &Path, from: u64, quiet: bool) -> std::io::Result<Option<Block>> {
    let mut file = std::fs::File::open(path)?;
    file.seek(SeekFrom::Start(from))?;
    let mut bytes = Vec::new();
    file.take(BLOCK_MAX_BYTES).read_to_end(&mut bytes)?;
    let len = match memchr::memrchr(b'\n', &bytes) {
        Some(end) => end + 1,
        None if quiet && !bytes.is_empty() => {
            let len = bytes.len();
            bytes.push(b'\n');
            return Ok(Some(Block {
                lines: 1,
                bytes,
                len: len as u64,
            }));
        }
        None => return Ok(None),
    };
    bytes.truncate(len);
    let lines = memchr::memchr_iter(b'\n', &bytes).count() as u64;
    Ok(Some(Block {
        bytes,
        len: len as u64,
        lines,
    }))
}

/// The delivery of one block: the header and the block, numbered as the file's own lines.
fn block_delivery(
    path: &Path,
    head: &Head,
    recorded: u64,
    start: Position,
    block: Block,
) -> Delivery {
    let mut bytes = head.header.clone();
    bytes.extend_from_slice(&block.bytes);
    Delivery {
        name: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        // CSV line 2 holds the file's line `start.line + 1`.
        source: ByteSource::Rendered {
            bytes: Bytes::from(bytes),
            line_shift: 1 - start.line as i64,
        },
        origin: Origin::Tail(path.to_path_buf()),
        disposition: Disposition::LeaveInPlace,
        key: None,
        journaled: None,
        tail: Some(TailMark {
            fingerprint: head.fingerprint.clone(),
            path: path.to_path_buf(),
            from_byte: recorded,
            to_byte: start.byte + block.len,
            to_line: start.line + block.lines,
            check: check_of(&block.bytes[..block.len as usize]),
        }),
        device: None,
        empty_grace: None,
    }
}

/// A tailed file that is done: out of the inbox, as any loaded inbox file.
fn dispose(ctx: &PipelineCtx, path: &Path, fingerprint: &str) -> Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let moved = crate::sources::dispose::retire(&ctx.settings, path, &name, fingerprint, false)?;
    info!(
        message = "Tailed file done: every line loaded and quiet.",
        file = %path.display(),
        moved_to = %moved.map_or_else(|| "(deleted)".to_owned(), |to| to.display().to_string())
    );
    Ok(())
}
