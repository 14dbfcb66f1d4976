//! Operator endpoints: `/metrics` (Prometheus text format), `/healthz` (200 while the process
//! runs) and `/readyz` (200 only while the pipeline is up, the database answers, every
//! migration is applied and no file waits on a local fault; 503 with the reason otherwise). A readiness probe never waits more than `READY_TIMEOUT`
//! for the database.

use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::http::HttpState;
use crate::store;

/// Longest wait of one readiness check.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// The operator routes.
pub fn routes() -> Router<HttpState> {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}

async fn metrics() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::telemetry::metrics_handle().render(),
    )
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<HttpState>) -> (StatusCode, String) {
    let check = async {
        let client = state
            .pool
            .get()
            .await
            .map_err(|e| format!("database unreachable: {e}"))?;
        client
            .query_one("SELECT 1", &[])
            .await
            .map_err(|e| format!("database does not answer: {e}"))?;
        drop(client);
        match store::migrations_applied(&state.pool).await {
            Ok(true) => Ok(()),
            Ok(false) => Err("migrations are not applied".to_owned()),
            Err(e) => Err(format!("cannot read the migration history: {e}")),
        }
    };
    let faults = crate::telemetry::local_faults();
    if faults > 0 {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {faults} file(s) wait on a local fault (disk full, permission denied; see the log)\n"),
        );
    }
    let database = if state.pipeline.get().is_none() {
        Err("waiting for the database before taking deliveries".to_owned())
    } else {
        match tokio::time::timeout(READY_TIMEOUT, check).await {
            Ok(result) => result,
            Err(_) => Err("the database did not answer in time".to_owned()),
        }
    };
    match (database, &state.journal) {
        (Ok(()), _) => (StatusCode::OK, "ready\n".to_owned()),
        // Pushes are still taken: the journal keeps them until the database is back.
        (Err(reason), Some(journal)) if journal.accepts() => (
            StatusCode::OK,
            format!(
                "ready: {reason}; pushes are kept in the push journal ({} waiting)\n",
                journal.stats().bodies
            ),
        ),
        (Err(reason), _) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}\n"),
        ),
    }
}
