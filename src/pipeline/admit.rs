//! The start of every delivery transaction, streamed or group: each delivery's idempotency
//! key and content are locked and looked up in the ledger, and each is found new (with the
//! ledger id drawn for it) or a duplicate (of a stored delivery, or of an earlier one of the
//! same transaction). Both paths call [`admit`], so a key or a content is judged the same way
//! whatever the path.
//!
//! Locks are taken in one order (keys sorted, then contents sorted) so that concurrent
//! transactions cannot deadlock; a delivery holds its content lock until its commit, so two
//! deliveries of the same bytes never both load.

use deadpool_postgres::Transaction;

use crate::error::Result;
use crate::store::ledger::{self, ExistingFile, FileStatus};

use super::Job;

/// What a delivery of the transaction is: new, with the ledger id drawn for it, or a duplicate
/// of the delivery that holds its content.
pub(super) type Fate = std::result::Result<i64, ExistingFile>;

/// A delivery to admit and the status it will have if it is new (for a later delivery of the
/// same transaction with the same content, which is its duplicate).
pub(super) type Candidate<'a> = (&'a Job, FileStatus);

/// An `Idempotency-Key` given with content other than the content it already names.
#[derive(Debug)]
pub(super) struct KeyNamesOther {
    /// The key.
    pub key: String,
    /// The stored delivery it names, when it is stored (else another delivery of the same
    /// transaction names it).
    pub file_id: Option<i64>,
}

/// Locks and looks up every candidate's key and content, draws ids for the new ones and
/// records their keys; returns each candidate's fate, in order, or the key that names other
/// content (nothing should then be committed).
///
/// # Errors
/// A statement failed.
pub(super) async fn admit(
    tx: &Transaction<'_>,
    candidates: &[Candidate<'_>],
) -> Result<std::result::Result<Vec<Fate>, KeyNamesOther>> {
    let mut keyed: Vec<(&str, &str)> = candidates
        .iter()
        .filter_map(|(job, _)| Some((job.delivery.key.as_deref()?, job.fingerprint())))
        .collect();
    keyed.sort_unstable();
    for (i, (key, fingerprint)) in keyed.iter().enumerate() {
        let named_twice = i > 0 && keyed[i - 1].0 == *key && keyed[i - 1].1 != *fingerprint;
        let stored = ledger::lock_key(tx, key).await?;
        if let Some(stored) = stored.filter(|s| s.content_sha256 != *fingerprint) {
            return Ok(Err(KeyNamesOther {
                key: (*key).to_owned(),
                file_id: Some(stored.file_id),
            }));
        }
        if named_twice {
            return Ok(Err(KeyNamesOther {
                key: (*key).to_owned(),
                file_id: None,
            }));
        }
    }
    let hashes: Vec<String> = candidates
        .iter()
        .map(|(job, _)| job.fingerprint().to_owned())
        .collect();
    // Sent together (one round trip), run in this order: the locks, then the ledger read. An
    // id is drawn for every delivery; those of duplicates are left unused.
    let ((), mut known, ids) = futures_util::try_join!(
        ledger::lock_contents(tx, &hashes),
        ledger::find_files(tx, &hashes),
        ledger::next_file_ids(tx, hashes.len()),
    )?;
    let mut ids = ids.into_iter();
    let mut fates: Vec<Fate> = Vec::with_capacity(candidates.len());
    for (job, status) in candidates {
        match known.get(job.fingerprint()) {
            Some(existing) => fates.push(Err(existing.clone())),
            None => {
                let file_id = ids.next().expect("one id per delivery");
                known.insert(
                    job.fingerprint().to_owned(),
                    ExistingFile {
                        file_id,
                        status: *status,
                        file_name: job.name().to_owned(),
                    },
                );
                fates.push(Ok(file_id));
            }
        }
    }
    for (fate, (job, _)) in fates.iter().zip(candidates) {
        if let Some(key) = job.delivery.key.as_deref() {
            let file_id = fate
                .as_ref()
                .map_or_else(|existing| existing.file_id, |id| *id);
            ledger::record_key(tx, key, job.fingerprint(), file_id).await?;
        }
    }
    Ok(Ok(fates))
}
