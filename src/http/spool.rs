//! Receiving a request body within bounds. The body is counted after decompression and cut off
//! at `max_body_bytes` (`http_body_util::Limited`: a compression bomb ends at the limit, not in
//! memory). A small body stays in memory; past [`MEMORY_BYTES`] it is written to a spool file
//! under `<state_dir>/spool/<pid>/` as it arrives, so a body of any size holds at most that much
//! memory and is then read by the pipeline in the bounded chunks of a file.
//!
//! A spool file is deleted when its [`Received`] is dropped (answered or not); files of a
//! process that died are removed by the next server of the same state folder ([`sweep`]).

use std::path::{Path, PathBuf};

use axum::body::Body;
use axum::http::StatusCode;
use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use tokio::io::AsyncWriteExt;

use crate::http::error::ApiError;

/// Body bytes held in memory at most; beyond them the body goes to a spool file.
pub const MEMORY_BYTES: usize = 1024 * 1024;

/// A received body.
#[derive(Debug)]
pub enum Received {
    /// Small: held in memory.
    Memory(Bytes),
    /// Large: in a spool file, deleted on drop.
    Spooled {
        /// The file (deleted when dropped).
        path: tempfile::TempPath,
        /// Its length.
        len: u64,
    },
}

impl Received {
    /// The body's length in bytes.
    pub fn len(&self) -> u64 {
        match self {
            Received::Memory(bytes) => bytes.len() as u64,
            Received::Spooled { len, .. } => *len,
        }
    }

    /// Whether the body is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The spool folder of this process under `state_dir`.
pub fn spool_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("spool").join(std::process::id().to_string())
}

/// Removes the spool folders of processes that no longer run (bodies of a server that died
/// mid-request; never acknowledged, so nothing is lost).
pub fn sweep(state_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(state_dir.join("spool")) else {
        return;
    };
    for entry in entries.flatten() {
        let alive = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<i32>().ok())
            .is_some_and(|pid| {
                pid as u32 == std::process::id()
                    || nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
            });
        if !alive {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Reads `body` to its end, at most `limit` bytes after decompression (see the module header).
///
/// # Errors
/// 413 past the limit; 400 when the body cannot be read (a broken compressed stream, a client
/// gone); 503 when the spool file cannot be written.
pub async fn receive(body: Body, limit: u64, dir: &Path, pace: Pace) -> Result<Received, ApiError> {
    let mut body = Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX));
    let mut memory = BytesMut::new();
    let mut spool: Option<(tempfile::TempPath, tokio::fs::File)> = None;
    let mut len = 0u64;
    let started = std::time::Instant::now();
    loop {
        let Ok(frame) = tokio::time::timeout(pace.idle, body.frame()).await else {
            return Err(too_slow(format!(
                "no byte of the body arrived for {} s; nothing was stored",
                pace.idle.as_secs()
            )));
        };
        let Some(frame) = frame else {
            break;
        };
        // Past the idle period, a body must arrive at `min_rate` on average: a client that
        // trickles bytes holds no room others need.
        let elapsed = started.elapsed();
        if elapsed > pace.idle && len < pace.min_rate.saturating_mul(elapsed.as_secs()) {
            return Err(too_slow(format!(
                "the body arrives slower than {} bytes a second; nothing was stored",
                pace.min_rate
            )));
        }
        let frame = frame.map_err(|error| {
            if error.downcast_ref::<LengthLimitError>().is_some() {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    format!(
                        "the body is over max_body_bytes = {limit} bytes (counted after \
                         decompression); nothing was stored"
                    ),
                )
            } else {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "unreadable_body",
                    format!("the body could not be read: {error}"),
                )
            }
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        len += data.len() as u64;
        if spool.is_none() && memory.len() + data.len() > MEMORY_BYTES {
            spool = Some(open_spool(dir, &memory).await?);
            memory = BytesMut::new();
        }
        match &mut spool {
            Some((path, file)) => file
                .write_all(&data)
                .await
                .map_err(|e| spool_failed(path, &e))?,
            None => memory.extend_from_slice(&data),
        }
    }
    match spool {
        None => Ok(Received::Memory(memory.freeze())),
        Some((path, mut file)) => {
            file.flush().await.map_err(|e| spool_failed(&path, &e))?;
            Ok(Received::Spooled { path, len })
        }
    }
}

/// How fast a body must arrive.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    /// The longest wait for the next bytes (and the grace before `min_rate` applies).
    pub idle: std::time::Duration,
    /// Bytes a second, on average, after the grace.
    pub min_rate: u64,
}

/// 408: the body did not arrive in time.
fn too_slow(message: String) -> ApiError {
    ApiError::new(StatusCode::REQUEST_TIMEOUT, "body_too_slow", message)
}

/// A new spool file holding `start`.
async fn open_spool(
    dir: &Path,
    start: &[u8],
) -> Result<(tempfile::TempPath, tokio::fs::File), ApiError> {
    let failed = |e: std::io::Error| spool_failed(dir, &e);
    tokio::fs::create_dir_all(dir).await.map_err(failed)?;
    let named = tempfile::Builder::new()
        .prefix("body-")
        .suffix(".part")
        .tempfile_in(dir)
        .map_err(failed)?;
    let (std_file, path) = named.into_parts();
    let mut file = tokio::fs::File::from_std(std_file);
    file.write_all(start)
        .await
        .map_err(|e| spool_failed(&path, &e))?;
    Ok((path, file))
}

/// 503: a local fault (disk full, no permission) kept the body from being spooled.
fn spool_failed(path: &Path, error: &std::io::Error) -> ApiError {
    tracing::error!(message = "Cannot spool a request body.", path = %path.display(), error = %error);
    ApiError::unavailable(
        "spool_unavailable",
        format!("the body could not be spooled ({error}); nothing was stored"),
        30,
    )
}
