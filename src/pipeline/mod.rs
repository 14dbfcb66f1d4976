//! The pipeline: takes a [`Delivery`] from any source through validate → transform → store
//! and returns its report; what becomes of the source afterwards is the source's business.
//!
//! - [`stream`]: one delivery streamed in bounded chunks into one transaction (any size);
//! - [`group`]: the group commit, several small deliveries in one transaction;
//! - [`lanes`]: a group split into parts that can be written at once, in any order;
//! - [`admit`]: the start of every delivery transaction, on both paths: keys and contents
//!   locked, each delivery new or a duplicate;
//! - [`commit`]: the end of every delivery transaction, on both paths: what is written after
//!   the readings, the commit, and what follows it ([`marks`]: receipts, tail positions,
//!   devices);
//! - [`committer`]: the group commit for deliveries arriving concurrently (request bodies);
//! - [`settle`]: what happens before and after a commit (a delivery over the reject limit
//!   read again as a whole rejection, or its quarantine output published; the error-log
//!   entry);
//! - [`tally`]: what a delivery adds up to while it is read, and its report.
//!
//! Guarantees: everything a delivery changes in the database commits in one transaction
//! (readings, rejects, aggregates, sensors, ledger row, marks), in `commit`; quarantine output is published under
//! deterministic names just before that commit; a source moves its file only after it. The
//! ledger, keyed by content hash under an advisory lock, makes a second delivery of the same
//! bytes a duplicate. Transient database errors are retried with exponential backoff and
//! jitter ([`process_with_retry`]); the source stays where it is meanwhile.

mod admit;
mod commit;
pub mod committer;
mod group;
mod lanes;
mod marks;
mod readings;
mod settle;
mod sift;
mod statistics;
mod stream;
mod tally;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::config::Settings;
use crate::delivery::{Delivery, FileStamp, Identity};
use crate::error::{Error, Result};
use crate::store::Store;
use crate::validate::quarantine::QuarantineTarget;

pub use crate::delivery::Disposition;
pub use group::{
    prepare_group, prepare_lanes, process_group, process_in_groups, process_prepared_in_groups,
    PreparedGroup, SplitOutcomes,
};
pub use stream::{process, process_unreadable};
pub use tally::{DeliveryReport, IngestSummary};

/// What the pipeline shares across deliveries.
#[derive(Clone)]
pub struct PipelineCtx {
    /// Validated configuration.
    pub settings: Arc<Settings>,
    /// The database.
    pub store: Store,
}

/// A delivery whose bytes have been read once for their identity, with the stamp its file
/// source had before anything of it was read.
#[derive(Debug, Clone)]
struct Job {
    delivery: Delivery,
    identity: Identity,
    stamp: Option<FileStamp>,
}

/// A delivery whose file source is open and stamped before anything of it is read.
type Taken = (Delivery, Option<FileStamp>);

/// Takes a delivery's file source (see `Delivery::take`).
fn take_source(delivery: &Delivery) -> Result<Taken> {
    delivery
        .take()
        .map_err(|e| Error::Read(delivery.source.to_string(), e))
}

impl Job {
    /// Reads the identity of a taken delivery (blocking: call from a blocking thread).
    fn identify((delivery, stamp): Taken) -> Result<Self> {
        let identity = delivery
            .identify()
            .map_err(|e| Error::Read(delivery.source.to_string(), e))?;
        Ok(Self {
            delivery,
            identity,
            stamp,
        })
    }

    /// Before the commit: the bytes read are the file's bytes. A file replaced, appended to or
    /// truncated since it was taken is rolled back and taken again, never bound to a hash of
    /// bytes that were not loaded. A file removed meanwhile was read whole through its open
    /// handles and may commit.
    fn check_unchanged(&self) -> Result<()> {
        let (Some(stamp), Some(path)) = (self.stamp, self.delivery.path()) else {
            return Ok(());
        };
        match FileStamp::of(path) {
            Ok(now) if now == stamp => Ok(()),
            Ok(_) => Err(Error::SourceChanged(path.display().to_string())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(path, e)),
        }
    }

    /// A file with no data rows (empty, a header alone, a header line not yet ended) that is
    /// younger than its source's grace period is not final: a writer that keeps it open may
    /// still add rows.
    fn check_final(&self, rows_read: u64) -> Result<()> {
        let Some(grace) = self.delivery.empty_grace.filter(|_| rows_read == 0) else {
            return Ok(());
        };
        let age = self
            .stamp
            .and_then(|s| s.modified())
            .and_then(|m| m.elapsed().ok())
            .unwrap_or_default();
        if age < grace {
            return Err(Error::NotFinal(
                self.delivery.source.to_string(),
                age.as_secs(),
            ));
        }
        Ok(())
    }

    fn name(&self) -> &str {
        &self.delivery.name
    }

    fn fingerprint(&self) -> &str {
        &self.identity.content_sha256
    }

    fn quarantine_target(&self, settings: &Settings) -> QuarantineTarget {
        QuarantineTarget {
            dir: settings.quarantine_dir.clone(),
            source: self.delivery.source.clone(),
            file_name: self.delivery.name.clone(),
            fingerprint: self.identity.content_sha256.clone(),
            max_line_bytes: settings.max_line_bytes,
        }
    }

    fn path(&self) -> Option<PathBuf> {
        self.delivery.path().map(PathBuf::from)
    }
}

/// Processes one delivery, retrying transient database errors per the configured policy and
/// giving up early when `cancel` fires (a file source then stays where it is).
///
/// # Errors
/// A permanent error, retries exhausted, or cancellation (as the last transient error).
pub async fn process_with_retry(
    ctx: &PipelineCtx,
    delivery: &Delivery,
    cancel: &CancellationToken,
) -> Result<DeliveryReport> {
    let policy = &ctx.settings.retry;
    let mut backoff = ExponentialBuilder::default()
        .with_min_delay(policy.initial_delay)
        .with_max_delay(policy.max_delay)
        .with_jitter();
    backoff = match policy.max_attempts {
        Some(attempts) => backoff.with_max_times(attempts),
        None => backoff.without_max_times(),
    };
    // The first attempt always runs to its end (commit or rollback); only the waits between
    // retries give way to shutdown.
    match process(ctx, delivery).await {
        Err(error) if error.is_transient() && !cancel.is_cancelled() => {
            warn!(
                message = "Database unavailable, will retry.",
                delivery = %delivery.source,
                error = %crate::telemetry::chain(&error)
            );
        }
        other => return other,
    }
    let attempt = || async { process(ctx, delivery).await };
    let retrying = attempt
        .retry(backoff)
        .when(|error: &Error| error.is_transient() && !cancel.is_cancelled())
        .notify(|error: &Error, delay: Duration| {
            warn!(
                message = "Database unavailable, retrying.",
                delivery = %delivery.source,
                delay_ms = delay.as_millis() as u64,
                error = %crate::telemetry::chain(error)
            );
            crate::telemetry::record_retry();
        });
    tokio::select! {
        biased;
        () = cancel.cancelled() => Err(Error::Cancelled(delivery.source.to_string())),
        result = retrying => result,
    }
}
