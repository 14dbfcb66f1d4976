//! What the watcher does with the files it claimed: a group of small ones committed together
//! (split until the file at fault goes alone when the group fails for a reason of its data),
//! a file alone with its retries, and a file that keeps failing recorded and, past
//! `poison_attempts`, quarantined as poison. What it keeps across rounds is `WatchState`.

use std::collections::HashSet;
use std::ffi::OsString;
use std::path::Path;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use super::deferral::{Deferrals, Why};
use crate::delivery::Delivery;
use crate::error::{Error, Result};
use crate::pipeline::IngestSummary;
use crate::pipeline::{
    prepare_group, process_prepared_in_groups, process_with_retry, DeliveryReport, PipelineCtx,
    SplitOutcomes,
};
use crate::sources::dispose::dispose;
use crate::store::claims::Claims;
use crate::validate::quarantine;
use crate::validate::rejection::{FileRejection, RejectionCode};

/// A group of claimed small files whose transaction is under way in a task of its own, while
/// the watcher claims and prepares the next group.
pub(super) struct GroupInFlight {
    names: Vec<String>,
    task: JoinHandle<SplitOutcomes>,
}

impl GroupInFlight {
    /// The names of the group's files: claimed by this worker, not to be offered again.
    pub(super) fn names(&self) -> &[String] {
        &self.names
    }
}

/// Reads, validates and transforms a group of small claimed files (in a task of its own, so a
/// stage that panics fails only this group) and starts its transaction; nothing is written
/// before this returns. `Err` gives the names back to be processed one by one: the group
/// could not be prepared (a transform failed, a stage crashed).
pub(super) async fn start_group(
    ctx: &PipelineCtx,
    inbox: &Path,
    names: Vec<String>,
) -> std::result::Result<GroupInFlight, Vec<String>> {
    let deliveries: Vec<Delivery> = names
        .iter()
        .map(|name| Delivery::inbox_file(&inbox.join(name), ctx.settings.empty_file_grace))
        .collect();
    let prepared = {
        let ctx = ctx.clone();
        tokio::spawn(async move { prepare_group(&ctx, &deliveries).await }).await
    };
    let group = match prepared {
        Ok(Ok(group)) => group,
        Ok(Err(failure)) => {
            warn!(
                message = "Group could not be prepared; processing the files one by one.",
                files = names.len(),
                error = %crate::telemetry::chain(&failure)
            );
            return Err(names);
        }
        Err(join_error) => {
            warn!(message = "Group preparation crashed; processing the files one by one.", error = %join_error);
            return Err(names);
        }
    };
    let task = {
        let ctx = ctx.clone();
        tokio::spawn(async move { process_prepared_in_groups(&ctx, group).await })
    };
    Ok(GroupInFlight { names, task })
}

/// Waits for a group's transaction, then takes its committed files out of the inbox and ends
/// the claims; returns the files to process one by one instead, as claimed files never tried
/// (all of them when the group's task crashed). A group stopped by an outage leaves the files it did not reach in the inbox,
/// unclaimed, with no attempt counted.
pub(super) async fn finish_group(
    ctx: &PipelineCtx,
    claims: &Claims,
    inbox: &Path,
    group: GroupInFlight,
    state: &mut WatchState,
) -> Vec<(String, i32)> {
    let GroupInFlight { names, task } = group;
    let outcomes = match task.await {
        Ok(outcomes) => outcomes,
        Err(join_error) => {
            warn!(message = "Group commit crashed; processing the files one by one.", error = %join_error);
            return names.into_iter().map(|name| (name, 0)).collect();
        }
    };
    let mut gone = Vec::with_capacity(outcomes.len());
    for (delivery, outcome) in outcomes {
        let path = delivery.path().unwrap_or(inbox);
        let name = delivery.name.clone();
        match outcome {
            Some(Ok(report)) if leave_inbox(ctx, state, &name, &report) => gone.push(name),
            Some(Ok(_)) | None => {
                let _ = claims.release(&name, false, None).await;
            }
            Some(Err(failure)) if failure.is_local_fault() => {
                state.defer(ctx, &name, &failure);
                let _ = claims.release(&name, false, None).await;
            }
            Some(Err(failure)) if failure.is_transient() => {
                warn!(
                    message = "File left in the inbox for a later attempt.",
                    file = %path.display(),
                    error = %crate::telemetry::chain(&failure)
                );
                let _ = claims.release(&name, false, None).await;
            }
            Some(Err(failure)) => {
                let reason = crate::telemetry::chain(&failure);
                error!(message = "File failed.", file = %path.display(), attempt = 1, error = %reason);
                crate::telemetry::record_failed_file();
                let _ = claims.release(&name, false, Some(&reason)).await;
            }
        }
    }
    let _ = claims.release_gone(&gone).await;
    Vec::new()
}

/// Processes one claimed file in a task of its own, so that a stage that panics fails only
/// this file; on shutdown the file gets `shutdown_grace` to finish, then it is rolled back.
pub(super) async fn handle_file(
    ctx: &PipelineCtx,
    claims: &Claims,
    path: &Path,
    name: &str,
    attempts: i32,
    cancel: &CancellationToken,
    state: &mut WatchState,
) {
    if !path.exists() {
        // Another worker finished it between our scan and our claim.
        let _ = claims.release(name, true, None).await;
        return;
    }
    let poison_attempts = i32::try_from(ctx.settings.poison_attempts).unwrap_or(i32::MAX);
    if attempts >= poison_attempts {
        let cause = claims.last_error(name).await.ok().flatten();
        let reason = cause.unwrap_or_else(|| "earlier attempts failed".to_owned());
        quarantine_poison(ctx, claims, path, name, attempts, &reason, state).await;
        return;
    }
    let task = {
        let (ctx, delivery, cancel) = (
            ctx.clone(),
            Delivery::inbox_file(path, ctx.settings.empty_file_grace),
            cancel.clone(),
        );
        tokio::spawn(async move { process_with_retry(&ctx, &delivery, &cancel).await })
    };
    let abort = task.abort_handle();
    let grace = ctx.settings.shutdown_grace;
    let outcome = tokio::select! {
        joined = task => joined,
        () = async { cancel.cancelled().await; tokio::time::sleep(grace).await } => {
            warn!(message = "Shutdown grace period over; rolling the file back.", file = %path.display());
            abort.abort();
            let _ = claims.release(name, false, None).await;
            return;
        }
    };
    match outcome {
        Ok(Ok(report)) => {
            let gone = leave_inbox(ctx, state, name, &report);
            let _ = claims.release(name, gone, None).await;
        }
        Ok(Err(Error::Cancelled(_))) => {
            let _ = claims.release(name, false, None).await;
        }
        Ok(Err(failure)) if failure.is_local_fault() => {
            // Like a database outage: the file stays, no attempt is counted against it.
            state.defer(ctx, name, &failure);
            let _ = claims.release(name, false, None).await;
        }
        Ok(Err(failure)) if failure.is_transient() => {
            warn!(
                message = "File left in the inbox for a later attempt.",
                file = %path.display(),
                error = %crate::telemetry::chain(&failure)
            );
            let _ = claims.release(name, false, None).await;
        }
        Ok(Err(failure)) => {
            let reason = crate::telemetry::chain(&failure);
            record_failure(ctx, claims, path, name, attempts + 1, &reason, state).await;
        }
        Err(join_error) => {
            let reason = format!("a pipeline stage crashed: {join_error}");
            record_failure(ctx, claims, path, name, attempts + 1, &reason, state).await;
        }
    }
}

/// After a file's commit: counts it, and takes it out of the inbox (`sources::dispose`);
/// returns whether it is gone. A file that cannot be moved now (disk full …) waits like any
/// local fault; its next attempt finds it committed and moves it then.
fn leave_inbox(
    ctx: &PipelineCtx,
    state: &mut WatchState,
    name: &str,
    report: &DeliveryReport,
) -> bool {
    state.summary.add(report);
    match dispose(&ctx.settings, report) {
        Ok(disposed) => {
            state.deferrals.clear(name);
            disposed.is_gone()
        }
        Err(failure) => {
            state.defer(ctx, name, &failure);
            false
        }
    }
}

/// Counts a failed attempt; at `poison_attempts` the file is quarantined as poison.
async fn record_failure(
    ctx: &PipelineCtx,
    claims: &Claims,
    path: &Path,
    name: &str,
    attempt: i32,
    reason: &str,
    state: &mut WatchState,
) {
    error!(message = "File failed.", file = %path.display(), attempt, error = %reason);
    crate::telemetry::record_failed_file();
    let poison_attempts = i32::try_from(ctx.settings.poison_attempts).unwrap_or(i32::MAX);
    if attempt >= poison_attempts {
        quarantine_poison(ctx, claims, path, name, attempt, reason, state).await;
    } else {
        let _ = claims.release(name, false, Some(reason)).await;
    }
}

async fn quarantine_poison(
    ctx: &PipelineCtx,
    claims: &Claims,
    path: &Path,
    name: &str,
    attempts: i32,
    reason: &str,
    state: &mut WatchState,
) {
    let reason = format!("failed {attempts} times; last error: {reason}");
    match quarantine_failed(ctx, path, &reason) {
        Ok(()) => {
            state.summary.failed += 1;
            error!(message = "Poison file quarantined.", file = %path.display(), reason = %reason);
            let _ = claims.release(name, true, None).await;
        }
        Err(q) if q.is_local_fault() => {
            // The quarantine cannot be written now (disk full …): wait, said once.
            state.defer(ctx, name, &q);
            let _ = claims.release(name, false, None).await;
        }
        Err(q) => {
            let cause = crate::telemetry::chain(&q);
            error!(message = "Could not quarantine the file.", file = %path.display(), error = %cause);
            let _ = claims.release(name, false, Some(&cause)).await;
        }
    }
}

/// Moves a file that cannot be processed into quarantine with the reason.
fn quarantine_failed(ctx: &PipelineCtx, path: &Path, reason: &str) -> Result<()> {
    if !path.exists() {
        return Ok(());
    }
    let delivery = Delivery::inbox_file(path, ctx.settings.empty_file_grace);
    let identity = delivery
        .identify()
        .map_err(|e| Error::Read(delivery.source.to_string(), e))?;
    let target = quarantine::QuarantineTarget {
        dir: ctx.settings.quarantine_dir.clone(),
        source: delivery.source.clone(),
        file_name: delivery.name.clone(),
        fingerprint: identity.content_sha256.clone(),
        max_line_bytes: ctx.settings.max_line_bytes,
    };
    let rejection = FileRejection::new(RejectionCode::PoisonFile, reason);
    let copy = quarantine::quarantine_whole_file(&target, &rejection, "")?;
    quarantine::append_error_log(
        &ctx.settings.error_log_path(),
        &format!(
            "{} file={} sha256={} status=failed reason={}\n  quarantine: {}",
            chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            quarantine::quoted(&delivery.name),
            identity.content_sha256,
            quarantine::quoted(&rejection.message),
            quarantine::quoted(&copy.display().to_string())
        ),
    )?;
    std::fs::remove_file(path).map_err(|e| Error::io(path, e))
}

/// What the watcher keeps across rounds.
#[derive(Default)]
pub(super) struct WatchState {
    pub(super) summary: IngestSummary,
    pub(super) deferrals: Deferrals,
    /// Inbox entries not taken, each reported once.
    pub(super) ignored: HashSet<OsString>,
}

impl WatchState {
    /// Sets a file aside after a local fault or while it is not ready.
    pub(super) fn defer(&mut self, ctx: &PipelineCtx, name: &str, failure: &Error) {
        let why = match failure {
            Error::NotFinal(..) | Error::SourceChanged(_) => Why::NotReady,
            _ => Why::Fault,
        };
        let reason = crate::telemetry::chain(failure);
        self.deferrals
            .defer(name, why, &reason, ctx.settings.retry.max_delay);
    }
}
