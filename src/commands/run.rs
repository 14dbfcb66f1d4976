//! `sensor-etl run` and `sensor-etl serve`: the HTTP server at once (operator endpoints, and
//! ingest once the database answers), then, for `run`, the inbox watcher and, with `lake_dir`,
//! the lake kept up to date, until shutdown. The database is waited for with backoff instead
//! of failing when it is unreachable; meanwhile pushes go to the push journal, which is
//! drained from the moment the database answers.

use std::sync::Arc;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::http::HttpState;
use crate::pipeline::PipelineCtx;
use crate::sources::journal::{self, Journal};
use crate::sources::watch;
use crate::store::{self, Store};
use crate::{database, http, lake, telemetry};

/// Whether the inbox is watched (`run`) or only the HTTP API is served (`serve`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inbox {
    /// `run`: watch the inbox too.
    Watch,
    /// `serve`: the HTTP API alone.
    Ignore,
}

/// Serves HTTP, waits for the database, watches the inbox (or only serves) until `cancel`.
///
/// # Errors
/// The database is unusable for a reason other than an outage, the address cannot be served,
/// or the inbox cannot be watched.
pub async fn run(
    settings: Settings,
    inbox: Inbox,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let settings = Arc::new(settings);
    let target = database::resolve(&settings).await?;
    let pool = store::build_pool(&target.url, 8)?;
    // The push journal is opened first: a second server on the same state_dir stops here.
    let journal = match settings.http_addr {
        Some(_) => Some(
            Journal::open(
                &journal::journal_dir(&settings.state_dir),
                settings.http.journal_max_bytes,
            )
            .context("cannot open the push journal")?,
        ),
        None => None,
    };
    // Reads have connections of their own: a crowd of readers never starves the writes.
    let read_pool = store::build_read_pool(&target.url)?;
    let mut state = HttpState::new(read_pool, Arc::clone(&settings));
    if let Some(journal) = &journal {
        state = state.with_journal(Arc::clone(journal));
    }
    let server = match settings.http_addr {
        Some(addr) => Some(http::serve(addr, state.clone(), cancel.clone()).await?.1),
        None if inbox == Inbox::Ignore => {
            anyhow::bail!("`serve` needs an address: set http_addr or --http-addr")
        }
        None => None,
    };
    let mut delay = settings
        .retry
        .initial_delay
        .max(std::time::Duration::from_millis(50));
    let store = loop {
        match Store::from_pool(pool.clone(), &target.url, &settings).await {
            Ok(store) => break Some(store),
            Err(error) if error.is_transient() => {
                tracing::warn!(
                    message = "Waiting for the database.",
                    database = %target.psql_command(),
                    retry_in_ms = delay.as_millis() as u64,
                    error = %telemetry::chain(&error)
                );
                telemetry::record_retry();
                tokio::select! {
                    () = cancel.cancelled() => break None,
                    () = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(settings.retry.max_delay);
            }
            Err(error) => {
                return Err(anyhow::Error::new(error).context(format!(
                    "cannot use the database ({})",
                    target.psql_command()
                )))
            }
        }
    };
    if let Some(store) = store {
        eprintln!("database: {}", target.psql_command());
        telemetry::record_database_available();
        let ctx = PipelineCtx {
            settings: Arc::clone(&settings),
            store,
        };
        state.hand_over(ctx.clone());
        if let Some(journal) = journal {
            tokio::spawn(journal::drain::run(journal, ctx.clone(), cancel.clone()));
        }
        if let Some(dir) = settings.lake_dir.clone() {
            tokio::spawn(lake::keep_up_to_date(
                pool.clone(),
                dir,
                settings.lake_interval,
                cancel.clone(),
            ));
        }
        match inbox {
            Inbox::Watch => {
                watch::run(ctx, cancel.clone()).await?;
            }
            Inbox::Ignore => cancel.cancelled().await,
        }
    }
    cancel.cancel();
    if let Some(server) = server {
        let _ = server.await;
    }
    Ok(())
}
