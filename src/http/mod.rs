//! The HTTP server of `sensor-etl run` and `sensor-etl serve`: one axum server, one module per
//! group of endpoints: [`operator`] (`/metrics`, `/healthz`, `/readyz`), [`ingest`]
//! (`POST /v1/ingest`, the push API), [`read`] (`/v1/sensors`, `/v1/latest`, `/v1/readings`,
//! `/v1/series`, `/v1/files`, `/v1/summary`), [`docs`] (`/openapi.json`, `/docs`) and
//! [`dashboard`] (`/`), with [`access`] deciding who may call, [`params`] reading query
//! parameters and [`body`] turning request bodies into deliveries.
//!
//! The server starts before the database answers (the operator endpoints report it); ingest
//! requests get 503 until the pipeline is handed over (`HttpState::pipeline`). Request bodies
//! are decompressed ([`encoding`]: gzip of any number of members, zstd) before the body limit
//! counts them, so a compression bomb is cut off at `max_body_bytes`. It refuses to listen beyond loopback without an access token.
//! It stops when the shutdown token fires.

pub mod access;
pub mod body;
pub mod cache;
pub mod dashboard;
pub mod device;
pub mod docs;
pub mod encoding;
pub mod error;
pub mod ingest;
pub mod journaled;
pub mod operator;
pub mod params;
pub mod read;
pub mod receipt;
pub mod spool;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use deadpool_postgres::Pool;
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::config::Settings;
use crate::error::{Error, Result};
use crate::pipeline::committer::Committer;
use crate::pipeline::PipelineCtx;

/// What every handler may use.
#[derive(Clone)]
pub struct HttpState {
    /// The database pool (readiness).
    pub pool: Pool,
    /// Validated configuration.
    pub settings: Arc<Settings>,
    /// The pipeline and the group commit of request bodies, once the database answered and
    /// the store is ready.
    pub pipeline: Arc<OnceLock<(PipelineCtx, Committer)>>,
    /// Request bodies held now, in KiB permits: memory stays bounded under any load.
    pub in_flight: Arc<tokio::sync::Semaphore>,
    /// Read answers kept until the database changes.
    pub answers: Arc<cache::AnswerCache>,
    /// The push journal: pushes answered 202 while the database is away (or always, with
    /// `http.acknowledge = "journal"`); none in a server that keeps no journal.
    pub journal: Option<Arc<crate::journal::Journal>>,
}

impl HttpState {
    /// A state whose pipeline is handed over later.
    pub fn new(pool: Pool, settings: Arc<Settings>) -> Self {
        let permits = usize::try_from(settings.http.max_in_flight_bytes.div_ceil(1024))
            .unwrap_or(usize::MAX)
            .min(tokio::sync::Semaphore::MAX_PERMITS);
        Self {
            pool,
            answers: Arc::new(cache::AnswerCache::new(settings.http.answer_cache_bytes)),
            settings,
            pipeline: Arc::new(OnceLock::new()),
            in_flight: Arc::new(tokio::sync::Semaphore::new(permits)),
            journal: None,
        }
    }

    /// The same state, keeping pushes in `journal` while the database is away.
    pub fn with_journal(mut self, journal: Arc<crate::journal::Journal>) -> Self {
        self.journal = Some(journal);
        self
    }
}

impl HttpState {
    /// Hands the pipeline over once the store is ready: ingest requests are taken from now on.
    pub fn hand_over(&self, ctx: PipelineCtx) {
        let committer = Committer::start(ctx.clone(), GROUP_WRITERS, self.settings.http.group_wait);
        let _ = self.pipeline.set((ctx, committer));
    }
}

/// Group commits of request bodies under way at once: while some validate and transform,
/// others write.
const GROUP_WRITERS: usize = 4;

/// Binds `addr` and serves until `cancel` fires; returns the bound address (useful with port 0)
/// and the server task.
///
/// # Errors
/// The address cannot be bound, or it is not loopback while no access token is configured.
pub async fn serve(
    addr: SocketAddr,
    state: HttpState,
    cancel: CancellationToken,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    if !addr.ip().is_loopback() && state.settings.http.tokens.is_empty() {
        return Err(Error::Config(crate::config::ConfigError::Value {
            key: "http_addr",
            message: format!(
                "refusing to listen on {addr} with no access token: anyone who reaches it could \
                 write; add a token under [[http.tokens]] in sensor-etl.toml (name, sha256 of \
                 the token or env, scopes) or listen on 127.0.0.1"
            ),
        }));
    }
    crate::telemetry::metrics_handle();
    spool::sweep(&state.settings.state_dir);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::io(format!("http://{addr}"), e))?;
    let bound = listener
        .local_addr()
        .map_err(|e| Error::io(format!("http://{addr}"), e))?;
    let (api, document) = OpenApiRouter::with_openapi(docs::ApiDoc::openapi())
        .merge(ingest::routes())
        .merge(read::routes())
        .split_for_parts();
    let app = operator::routes()
        .merge(api)
        .merge(docs::routes(document))
        .merge(dashboard::routes())
        .layer(axum::middleware::from_fn(encoding::decode_request_body))
        .with_state(state);
    let task = tokio::spawn(async move {
        let shutdown = async move { cancel.cancelled().await };
        if let Err(error) = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown)
        .await
        {
            tracing::error!(message = "HTTP server failed.", error = %error);
        }
    });
    tracing::info!(message = "Serving HTTP.", address = %bound);
    Ok((bound, task))
}
