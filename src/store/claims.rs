//! Claims on inbox files for cooperating workers: one `inbox_claims` row per file name, leased
//! by one worker at a time.
//!
//! `claim` registers the ready files a worker sees and takes the unleased ones with
//! `FOR UPDATE SKIP LOCKED`, so concurrent workers never take the same file and never wait on
//! each other; `heartbeat` extends the leases of the files in hand; `release` deletes a claim
//! once its file has left the inbox, or frees it (for a later attempt) when it has not. The
//! lease of a worker that died expires, and another worker takes its files over; the ledger
//! then makes a re-run of a file that did commit load nothing twice.

use std::time::Duration;

use deadpool_postgres::Pool;

use crate::store::StoreError;

/// A worker's claims.
#[derive(Debug, Clone)]
pub struct Claims {
    pool: Pool,
    worker: String,
    lease: Duration,
}

impl Claims {
    /// Claims for `worker`, leased for `lease` at a time.
    pub fn new(pool: Pool, worker: String, lease: Duration) -> Self {
        Self {
            pool,
            worker,
            lease,
        }
    }

    /// This worker's id.
    pub fn worker(&self) -> &str {
        &self.worker
    }

    fn lease_secs(&self) -> f64 {
        self.lease.as_secs_f64()
    }

    /// Registers `ready` files and claims up to `limit` of them that no live worker holds;
    /// returns the names claimed, in name order, with the attempts made on each before.
    ///
    /// # Errors
    /// The database failed.
    pub async fn claim(
        &self,
        ready: &[String],
        limit: i64,
    ) -> Result<Vec<(String, i32)>, StoreError> {
        if ready.is_empty() {
            return Ok(Vec::new());
        }
        let client = self.pool.get().await?;
        client
            .execute(
                "INSERT INTO inbox_claims (file_name) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING",
                &[&ready],
            )
            .await?;
        let rows = client
            .query(
                "UPDATE inbox_claims c SET worker = $2, claimed_at = now(), \
                 lease_expires_at = now() + make_interval(secs => $3) \
                 FROM (SELECT file_name FROM inbox_claims \
                       WHERE file_name = ANY($1) AND (worker IS NULL OR worker = $2 OR lease_expires_at < now()) \
                       ORDER BY file_name LIMIT $4 FOR UPDATE SKIP LOCKED) free \
                 WHERE c.file_name = free.file_name RETURNING c.file_name, c.attempts",
                &[&ready, &self.worker, &self.lease_secs(), &limit],
            )
            .await?;
        let mut claimed: Vec<(String, i32)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        claimed.sort();
        Ok(claimed)
    }

    /// Extends the leases of this worker's claims.
    ///
    /// # Errors
    /// The database failed.
    pub async fn heartbeat(&self) -> Result<u64, StoreError> {
        let client = self.pool.get().await?;
        Ok(client
            .execute(
                "UPDATE inbox_claims SET lease_expires_at = now() + make_interval(secs => $2) WHERE worker = $1",
                &[&self.worker, &self.lease_secs()],
            )
            .await?)
    }

    /// Ends a claim: deleted when the file has left the inbox; otherwise freed, with one more
    /// failed attempt and its cause recorded when `failure` is given.
    ///
    /// # Errors
    /// The database failed.
    pub async fn release(
        &self,
        file_name: &str,
        file_gone: bool,
        failure: Option<&str>,
    ) -> Result<(), StoreError> {
        let client = self.pool.get().await?;
        if file_gone {
            client
                .execute(
                    "DELETE FROM inbox_claims WHERE file_name = $1 AND worker = $2",
                    &[&file_name, &self.worker],
                )
                .await?;
        } else {
            client
                .execute(
                    "UPDATE inbox_claims SET worker = NULL, lease_expires_at = NULL, \
                     attempts = attempts + $3::int4, last_error = coalesce($4, last_error) \
                     WHERE file_name = $1 AND worker = $2",
                    &[
                        &file_name,
                        &self.worker,
                        &i32::from(failure.is_some()),
                        &failure,
                    ],
                )
                .await?;
        }
        Ok(())
    }

    /// The cause of the last failed attempt on a file, if one was recorded.
    ///
    /// # Errors
    /// The database failed.
    pub async fn last_error(&self, file_name: &str) -> Result<Option<String>, StoreError> {
        let client = self.pool.get().await?;
        Ok(client
            .query_opt(
                "SELECT last_error FROM inbox_claims WHERE file_name = $1",
                &[&file_name],
            )
            .await?
            .and_then(|row| row.get(0)))
    }

    /// Deletes this worker's claims on files that have left the inbox, in one statement.
    ///
    /// # Errors
    /// The database failed.
    pub async fn release_gone(&self, file_names: &[String]) -> Result<(), StoreError> {
        if file_names.is_empty() {
            return Ok(());
        }
        let client = self.pool.get().await?;
        client
            .execute(
                "DELETE FROM inbox_claims WHERE file_name = ANY($1) AND worker = $2",
                &[&file_names, &self.worker],
            )
            .await?;
        Ok(())
    }

    /// Forgets unleased claims of files no longer in the inbox.
    ///
    /// # Errors
    /// The database failed.
    pub async fn forget_missing(&self, present: &[String]) -> Result<u64, StoreError> {
        let client = self.pool.get().await?;
        Ok(client
            .execute(
                "DELETE FROM inbox_claims WHERE NOT (file_name = ANY($1)) \
                 AND (worker IS NULL OR lease_expires_at < now())",
                &[&present],
            )
            .await?)
    }
}
