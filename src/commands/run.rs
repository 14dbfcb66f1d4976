//! `sensor-etl run`: the operator endpoints at once, then the inbox watcher once the database
//! answers (waiting for it with backoff instead of failing), until shutdown.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::pipeline::PipelineCtx;
use crate::store::{self, Store};
use crate::{database, http, telemetry, watch};

/// Serves HTTP, waits for the database, watches the inbox until `cancel` fires.
///
/// # Errors
/// The database is unusable for a reason other than an outage, or the inbox cannot be watched.
pub async fn run(settings: Settings, cancel: CancellationToken) -> anyhow::Result<()> {
    let target = database::resolve(&settings).await?;
    let pool = store::build_pool(&target.url, 8)?;
    let server = match settings.http_addr {
        Some(addr) => Some(http::serve(addr, pool.clone(), cancel.clone()).await?.1),
        None => None,
    };
    let mut delay = settings
        .retry
        .initial_delay
        .max(std::time::Duration::from_millis(50));
    let store = loop {
        match Store::from_pool(pool.clone(), &settings).await {
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
            settings: Arc::new(settings),
            store,
        };
        watch::run(ctx, cancel.clone()).await?;
    }
    cancel.cancel();
    if let Some(server) = server {
        let _ = server.await;
    }
    Ok(())
}
