//! Read answers kept until the database changes. A dashboard asks the same questions every few
//! seconds and a list of 3,000 latest values is 400 kB of JSON: rendering it anew each time
//! was most of the request's cost. An answer is stored with the PostgreSQL snapshot it was
//! read under (`pg_current_snapshot()`: the next transaction id and the ones in progress),
//! and served again only while the current snapshot is the same, i.e. no transaction that
//! writes has started or ended anywhere in the cluster since. The check is one round trip;
//! any write (a delivery, a migration, a vacuum's statistics) makes the next request read
//! afresh.
//!
//! Guarantees: an answer served from the cache is byte for byte what the database would
//! answer now (the data a snapshot sees is fixed by its next transaction id and in-progress
//! list); the answer and its snapshot are read in one REPEATABLE READ transaction, so they
//! agree; memory stays under `http.answer_cache_bytes` (past it, the cache is emptied).

use std::collections::HashMap;
use std::sync::Mutex;

use bytes::Bytes;
use deadpool_postgres::Transaction;

use crate::store::StoreError;

/// Answers by request (path and query string).
#[derive(Debug, Default)]
pub struct AnswerCache {
    limit_bytes: u64,
    entries: Mutex<Entries>,
}

#[derive(Debug, Default)]
struct Entries {
    by_request: HashMap<String, (String, Answer)>,
    bytes: u64,
}

/// An answer: its body, and the URL of the next page when there is one.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The JSON body.
    pub body: Bytes,
    /// The next page (`Link: <…>; rel="next"`).
    pub next: Option<String>,
}

impl From<Vec<u8>> for Answer {
    fn from(body: Vec<u8>) -> Self {
        Self {
            body: body.into(),
            next: None,
        }
    }
}

impl Answer {
    fn size(&self) -> u64 {
        (self.body.len() + self.next.as_ref().map_or(0, String::len)) as u64
    }
}

impl AnswerCache {
    /// A cache of at most `limit_bytes` of answers; 0 keeps none.
    pub fn new(limit_bytes: u64) -> Self {
        Self {
            limit_bytes,
            entries: Mutex::default(),
        }
    }

    /// The answer to `request`: the stored one while the database has not changed, else
    /// `read`'s, read in one snapshot with the snapshot's identity, and stored.
    ///
    /// # Errors
    /// What `read` returns, or a failed statement.
    pub async fn answer<E, F>(
        &self,
        client: &mut deadpool_postgres::Client,
        request: &str,
        read: F,
    ) -> Result<Answer, E>
    where
        E: From<StoreError>,
        F: AsyncFnOnce(&Transaction<'_>) -> Result<Answer, E>,
    {
        if self.limit_bytes > 0 {
            let now = snapshot(client).await.map_err(E::from)?;
            if let Some(body) = self.stored(request, &now) {
                return Ok(body);
            }
        }
        let tx = crate::store::snapshot_transaction(client)
            .await
            .map_err(E::from)?;
        // The transaction's snapshot is taken by its first statement: this one.
        let seen: String = tx
            .query_one("SELECT pg_current_snapshot()::text", &[])
            .await
            .map_err(|e| E::from(StoreError::from(e)))?
            .get(0);
        let answer = read(&tx).await?;
        tx.commit()
            .await
            .map_err(|e| E::from(StoreError::from(e)))?;
        if self.limit_bytes > 0 {
            self.store(request, seen, answer.clone());
        }
        Ok(answer)
    }

    fn stored(&self, request: &str, now: &str) -> Option<Answer> {
        let entries = self.entries.lock().ok()?;
        match entries.by_request.get(request) {
            Some((seen, body)) if seen == now => Some(body.clone()),
            _ => None,
        }
    }

    fn store(&self, request: &str, seen: String, answer: Answer) {
        let size = answer.size() + request.len() as u64;
        if size > self.limit_bytes / 4 {
            return;
        }
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        if entries.bytes + size > self.limit_bytes {
            entries.by_request.clear();
            entries.bytes = 0;
        }
        if let Some((_, old)) = entries
            .by_request
            .insert(request.to_owned(), (seen, answer))
        {
            entries.bytes -= old.size() + request.len() as u64;
        }
        entries.bytes += size;
    }
}

/// The current snapshot's identity: `xmin:xmax:in-progress…`.
async fn snapshot(client: &deadpool_postgres::Client) -> Result<String, StoreError> {
    let statement = client
        .prepare_cached("SELECT pg_current_snapshot()::text")
        .await?;
    Ok(client.query_one(&statement, &[]).await?.get(0))
}
