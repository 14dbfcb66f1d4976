//! The HTTP server of `sensor-etl run`: one axum server, one module per group of endpoints.
//! Today: the operator endpoints ([`operator`]); the ingest, query and dashboard groups join
//! here with routes of their own.
//!
//! The server runs beside the pipeline and stops when the shutdown token fires. It imports the
//! store and telemetry, never the commands above it.

pub mod operator;

use std::net::SocketAddr;

use deadpool_postgres::Pool;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};

/// What every handler may use.
#[derive(Clone)]
pub struct HttpState {
    /// The database pool.
    pub pool: Pool,
}

/// Binds `addr` and serves until `cancel` fires; returns the bound address (useful with port 0)
/// and the server task.
///
/// # Errors
/// The address cannot be bound.
pub async fn serve(
    addr: SocketAddr,
    pool: Pool,
    cancel: CancellationToken,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    crate::telemetry::metrics_handle();
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::io(format!("http://{addr}"), e))?;
    let bound = listener
        .local_addr()
        .map_err(|e| Error::io(format!("http://{addr}"), e))?;
    let app = operator::routes().with_state(HttpState { pool });
    let task = tokio::spawn(async move {
        let shutdown = async move { cancel.cancelled().await };
        if let Err(error) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(message = "HTTP server failed.", error = %error);
        }
    });
    tracing::info!(message = "Serving /metrics, /healthz and /readyz.", address = %bound);
    Ok((bound, task))
}
