//! The second source of deliveries (`sensor-etl ingest PATH…`): files and folders given on the
//! command line (recursively, by the rules of `inbox`), each made a [`Delivery`] and taken
//! through the same pipeline as the inbox's files, left in place unless asked to consume them.
//!
//! Files are processed one after another in a stable (path) order; a file that fails (after
//! retries) is reported and the others go on. The summary adds up per status.

use std::path::{Path, PathBuf};

use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use crate::delivery::{Delivery, Disposition};
use crate::pipeline::{process_with_retry, DeliveryReport, IngestSummary, PipelineCtx};
use crate::sources::dispose::{dispose, Disposed};
use crate::sources::inbox::is_candidate;

/// Times `ingest` reads a file again that changed while it was read.
const SOURCE_CHANGED_RETRIES: usize = 3;

/// Expands files and folders (recursively) into the input files, sorted and deduplicated.
/// Inside folders, symbolic links are not followed unless `follow_symlinks` (each one skipped
/// is logged); a path given by name is taken as it is. Paths that do not exist are returned in
/// the second list.
pub fn collect_inputs(paths: &[PathBuf], follow_symlinks: bool) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let mut files = Vec::new();
    let mut missing = Vec::new();
    for path in paths {
        if path.is_dir() {
            for entry in walkdir::WalkDir::new(path)
                .follow_links(follow_symlinks)
                .into_iter()
                .flatten()
            {
                let hidden_dir = entry.path().strip_prefix(path).ok().is_some_and(|rel| {
                    rel.components()
                        .any(|c| c.as_os_str().to_string_lossy().starts_with('.'))
                });
                if entry.path_is_symlink() && !follow_symlinks {
                    warn!(
                        message = "Symbolic link not followed (use --follow-symlinks).",
                        path = %crate::validate::quarantine::quoted(&entry.path().display().to_string())
                    );
                    continue;
                }
                if entry.file_type().is_file() && !hidden_dir && is_candidate(entry.path()) {
                    files.push(entry.into_path());
                }
            }
        } else if path.is_file() {
            files.push(path.clone());
        } else {
            missing.push(path.clone());
        }
    }
    files.sort();
    files.dedup();
    (files, missing)
}

/// Processes `files` one after another; `on_file` sees each report (progress output).
pub async fn ingest_files(
    ctx: &PipelineCtx,
    files: &[PathBuf],
    disposition: Disposition,
    cancel: &CancellationToken,
    mut on_file: impl FnMut(&Path, Result<&DeliveryReport, &crate::error::Error>),
) -> IngestSummary {
    let mut summary = IngestSummary::default();
    for path in files {
        if cancel.is_cancelled() {
            break;
        }
        let delivery = Delivery::input_file(path, disposition);
        let mut outcome = process_with_retry(ctx, &delivery, cancel).await;
        // A file that changed while it was read was rolled back: read it again, a few times.
        for _ in 0..SOURCE_CHANGED_RETRIES {
            if !matches!(outcome, Err(crate::error::Error::SourceChanged(_))) {
                break;
            }
            outcome = process_with_retry(ctx, &delivery, cancel).await;
        }
        if disposition == Disposition::Consume {
            // Consumed: the committed file leaves its folder, as the inbox's files do.
            outcome = outcome.and_then(|report| {
                let moved_to = match dispose(&ctx.settings, &report)? {
                    Disposed::Gone(moved_to) => moved_to,
                    Disposed::Stays => None,
                };
                Ok(DeliveryReport { moved_to, ..report })
            });
        }
        match outcome {
            Ok(report) => {
                summary.add(&report);
                on_file(path, Ok(&report));
            }
            Err(failure) => {
                summary.failed += 1;
                error!(
                    message = "File failed.",
                    file = %path.display(),
                    error = %crate::telemetry::chain(&failure)
                );
                on_file(path, Err(&failure));
            }
        }
    }
    summary
}
