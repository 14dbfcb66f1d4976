//! Around the commit: quarantine output published just before it, then the error-log entry
//! after it. (What becomes of a file source is its source's business: `sources::dispose`.)
//!
//! Quarantine names are deterministic (name stem and content hash), so a crash between the
//! publication and the commit only means the same files are written again.

use std::path::{Path, PathBuf};

use chrono::Utc;
use tracing::info;

use crate::config::Settings;
use crate::delivery::Disposition;
use crate::error::Result;
use crate::pipeline::{DeliveryReport, Job, PipelineCtx};
use crate::store::ledger::{ExistingFile, FileStatus};
use crate::validate::quarantine::{self, QuarantineTarget, QuarantineWriter};
use crate::validate::rejection::{FileRejection, RejectionCode};
use crate::validate::whole_file_rejection;

use super::tally::Tally;

/// How a delivery read to its end is concluded.
pub(super) enum Concluded {
    /// Over the reject limit: read it again, rejecting it whole for this reason (what was
    /// written of its quarantine output is discarded).
    RejectWhole(FileRejection),
    /// Its quarantine output is published: the delivery may commit.
    Published {
        /// Why it is rejected whole, if it is.
        rejection: Option<FileRejection>,
        /// The quarantine files written.
        quarantined: Vec<PathBuf>,
    },
}

/// The one end of reading a delivery, for both paths: `rejection` (its header, or the whole-
/// file verdict it was read under) stands; else a delivery over the reject limit is to be read
/// again as a whole rejection; else, once its source is final and unchanged, its quarantine
/// output is published.
///
/// # Errors
/// The source is not final or changed while it was read, or quarantine cannot be written.
pub(super) fn conclude(
    job: &Job,
    settings: &Settings,
    rejection: Option<FileRejection>,
    tally: &Tally,
    writer: QuarantineWriter,
) -> Result<Concluded> {
    if rejection.is_none() {
        if let Some(verdict) = whole_file_rejection(tally.rows.read, tally.rows_invalid(), settings)
        {
            writer.abort();
            return Ok(Concluded::RejectWhole(verdict));
        }
    }
    // Before anything is published: a young inbox file with no rows may still be written, and
    // a file that changed was not read as it is.
    job.check_final(tally.rows.read)?;
    job.check_unchanged()?;
    let target = job.quarantine_target(settings);
    let quarantined = publish_quarantine(&target, rejection.as_ref(), tally, writer)?;
    Ok(Concluded::Published {
        rejection,
        quarantined,
    })
}

/// Publishes a delivery's quarantine output (and, when it is rejected whole, its copy and
/// reason file) before the commit; returns the paths written.
fn publish_quarantine(
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
            tally.rows.read, tally.rows.rejected,
        );
        quarantined.push(quarantine::quarantine_whole_file(
            target, rejection, &details,
        )?);
        quarantined.push(target.path("reason.txt"));
    }
    quarantined.extend(published.rows.into_iter().chain(published.errors));
    Ok(quarantined)
}

/// After the commit of a new delivery: the error-log entry.
pub(super) fn after_commit(
    ctx: &PipelineCtx,
    job: &Job,
    report: DeliveryReport,
) -> Result<DeliveryReport> {
    if report.rows.rejected > 0 || report.rejection.is_some() {
        append_error_log(
            &ctx.settings,
            &report,
            &job.quarantine_target(&ctx.settings),
        )?;
    }
    Ok(report)
}

/// After the commit of a delivery whose content was already known: nothing loaded; for a
/// source that goes after the commit, its quarantine copy is made sure of when the first
/// delivery of these bytes was rejected.
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
    Ok(DeliveryReport::duplicate(job, &existing, quarantined))
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
        report.rows.read,
        report.rows.loaded,
        report.rows.rejected,
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
