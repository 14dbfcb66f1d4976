//! Around the commit: quarantine output published just before it, then the error-log entry
//! and the source's disposition after it.
//!
//! Quarantine names are deterministic (name stem and content hash), so a crash between the
//! publication and the commit only means the same files are written again. A file source
//! leaves the inbox only after its delivery committed; a crash between the commit and the move
//! leaves it in place, and the next attempt finds it in the ledger as a duplicate and moves
//! it then.

use std::fs;
use std::path::{Path, PathBuf};

use chrono::Utc;
use tracing::{info, warn};

use crate::config::Settings;
use crate::delivery::{Disposition, FileStamp};
use crate::error::{Error, Result};
use crate::pipeline::{DeliveryReport, Job, PipelineCtx};
use crate::store::ledger::{ExistingFile, FileStatus};
use crate::validate::quarantine::{
    self, bounded_stem_and_extension, QuarantineTarget, QuarantineWriter,
};
use crate::validate::rejection::{FileRejection, RejectionCode};

use super::tally::Tally;

/// Publishes a delivery's quarantine output (and, when it is rejected whole, its copy and
/// reason file) before the commit; returns the paths written.
pub(super) fn publish_quarantine(
    target: &QuarantineTarget,
    rejection: Option<&FileRejection>,
    tally: &Tally,
    writer: QuarantineWriter,
) -> Result<Vec<PathBuf>> {
    let published = writer.commit()?;
    let mut quarantined = Vec::new();
    if let Some(rejection) = rejection {
        // The reason file points to the per-row reasons only when there are some.
        let per_row = published.errors.as_ref().map_or_else(
            || "none (no data rows could be read)".to_owned(),
            |path| quarantine::quoted(&path.display().to_string()),
        );
        let details = format!(
            "rows read: {}\nrows rejected: {}\nper-row reasons: {per_row}\n",
            tally.rows_read, tally.rows_rejected,
        );
        quarantined.push(quarantine::quarantine_whole_file(
            target, rejection, &details,
        )?);
        quarantined.push(target.path("reason.txt"));
    }
    quarantined.extend(published.rows.into_iter().chain(published.errors));
    Ok(quarantined)
}

/// After the commit of a new delivery: the error-log entry and the source's disposition.
pub(super) fn after_commit(
    ctx: &PipelineCtx,
    job: &Job,
    report: DeliveryReport,
) -> Result<DeliveryReport> {
    if report.rows_rejected > 0 || report.rejection.is_some() {
        append_error_log(
            &ctx.settings,
            &report,
            &job.quarantine_target(&ctx.settings),
        )?;
    }
    let moved_to = dispose(&ctx.settings, job, report.status)?;
    Ok(DeliveryReport { moved_to, ..report })
}

/// After the commit of a delivery whose content was already known: nothing loaded; a consumed
/// file source is disposed of (with its quarantine copy made sure of when the first delivery
/// of these bytes was rejected).
pub(super) fn after_duplicate(
    ctx: &PipelineCtx,
    job: &Job,
    existing: ExistingFile,
) -> Result<DeliveryReport> {
    let settings = &ctx.settings;
    info!(
        message = "Duplicate content, nothing loaded.",
        file = %job.name(),
        fingerprint = %&job.fingerprint()[..12],
        file_id = existing.file_id,
        first_name = %existing.file_name
    );
    let mut quarantined = Vec::new();
    if existing.status == FileStatus::Rejected && job.delivery.disposition == Disposition::Consume {
        // A crash may have come between the commit and the move: make sure the quarantine copy
        // exists before the source goes.
        let target = job.quarantine_target(settings);
        let extension = Path::new(job.name())
            .extension()
            .map(|e| e.to_string_lossy().into_owned());
        let copy = target.path(extension.as_deref().unwrap_or("csv"));
        if !copy.exists() {
            let rejection = FileRejection::new(
                RejectionCode::DuplicateOfRejected,
                "same content as a file rejected earlier",
            );
            quarantined.push(quarantine::quarantine_whole_file(&target, &rejection, "")?);
        }
    }
    let moved_to = dispose(settings, job, FileStatus::Duplicate)?;
    Ok(DeliveryReport {
        moved_to,
        ..DeliveryReport::duplicate(job, &existing, quarantined)
    })
}

fn append_error_log(
    settings: &Settings,
    report: &DeliveryReport,
    target: &QuarantineTarget,
) -> Result<()> {
    // Names are quoted and escaped: a name with a line break cannot forge log lines.
    let mut entry = format!(
        "{} file={} sha256={} status={} rows_read={} rows_loaded={} rows_rejected={}",
        Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        quarantine::quoted(&report.file_name),
        report.fingerprint,
        report.status,
        report.rows_read,
        report.rows_loaded,
        report.rows_rejected,
    );
    if let Some(reason) = &report.rejection {
        entry.push_str(&format!(
            " file_rejected={}",
            quarantine::quoted(&reason.to_string())
        ));
    }
    let details = target.path("errors.jsonl");
    if report.quarantine.contains(&details) {
        entry.push_str(&format!(
            " details={}",
            quarantine::quoted(&details.display().to_string())
        ));
    }
    for path in &report.quarantine {
        entry.push_str(&format!(
            "\n  quarantine: {}",
            quarantine::quoted(&path.display().to_string())
        ));
    }
    Ok(quarantine::append_error_log(
        &settings.error_log_path(),
        &entry,
    )?)
}

/// Moves a committed file source out of the inbox (`Consume`); leaves anything else in place.
///
/// A file replaced or changed since it was taken is not the one committed: it stays, to be
/// taken again. A file already gone (removed by its producer) is fine: its rows are committed.
/// A copy across file systems goes through a temporary name, so `processed/` never holds a
/// partial file; a failure (disk full) leaves the source in the inbox, and the next attempt
/// finds it committed and moves it then.
fn dispose(settings: &Settings, job: &Job, status: FileStatus) -> Result<Option<PathBuf>> {
    let Some(path) = job.delivery.path() else {
        return Ok(None);
    };
    if job.delivery.disposition == Disposition::LeaveInPlace {
        return Ok(None);
    }
    match FileStamp::of(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            info!(
                message = "The file left the inbox while it was loaded; its rows are committed.",
                file = %path.display()
            );
            return Ok(None);
        }
        Err(e) => return Err(Error::io(path, e)),
        Ok(now) if job.stamp.is_some_and(|taken| taken != now) => {
            warn!(
                message = "The file changed after it was taken; it stays to be taken again.",
                file = %path.display()
            );
            return Ok(None);
        }
        Ok(_) => {}
    }
    if status == FileStatus::Rejected || settings.delete_after_load {
        // A rejected file already has its copy in quarantine.
        fs::remove_file(path).map_err(|e| Error::io(path, e))?;
        return Ok(None);
    }
    fs::create_dir_all(&settings.processed_dir)
        .map_err(|e| Error::io(&settings.processed_dir, e))?;
    let mut destination = settings.processed_dir.join(job.name());
    if destination.exists() {
        let (stem, extension) = bounded_stem_and_extension(job.name());
        let extension = extension.map(|e| format!(".{e}")).unwrap_or_default();
        destination = settings
            .processed_dir
            .join(format!("{stem}.{}{extension}", &job.fingerprint()[..12]));
    }
    if fs::rename(path, &destination).is_err() {
        // Another file system: copy to a temporary name, sync, rename, then remove.
        let temp =
            settings
                .processed_dir
                .join(format!(".{}.{}.tmp", job.name(), std::process::id()));
        let copied = fs::copy(path, &temp)
            .and_then(|_| fs::File::open(&temp)?.sync_all())
            .and_then(|()| fs::rename(&temp, &destination));
        if let Err(e) = copied {
            let _ = fs::remove_file(&temp);
            return Err(Error::io(&destination, e));
        }
        fs::remove_file(path).map_err(|e| Error::io(path, e))?;
    }
    Ok(Some(destination))
}
