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
//! counts them, so a compression bomb is cut off at `max_body_bytes`. A client must send each
//! request's header within `http.header_read_secs` and its body at a minimum pace ([`spool`]),
//! and may hold only its share of the room for bodies ([`shares`]): slow or greedy clients
//! cannot take the server from the others. It refuses to listen beyond loopback without an
//! access token. It stops when the shutdown token fires, after the requests under way.

pub mod access;
pub mod answers;
pub mod body;
pub mod cache;
pub mod dashboard;
pub mod device;
pub mod docs;
pub mod encoding;
pub mod error;
pub mod extract;
pub mod ingest;
pub mod journaled;
pub mod operator;
pub mod params;
pub mod read;
pub mod receipt;
pub mod shares;
pub mod spool;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tower_service::Service;

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
    /// Each client address's share of `in_flight`.
    pub client_shares: Arc<shares::ClientShares>,
    /// Read answers kept until the database changes.
    pub answers: Arc<cache::AnswerCache>,
    /// The push journal: pushes answered 202 while the database is away (or always, with
    /// `http.acknowledge = "journal"`); none in a server that keeps no journal.
    pub journal: Option<Arc<crate::sources::journal::Journal>>,
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
            client_shares: Arc::new(shares::ClientShares::new(settings.http.max_client_bytes)),
            settings,
            pipeline: Arc::new(OnceLock::new()),
            in_flight: Arc::new(tokio::sync::Semaphore::new(permits)),
            journal: None,
        }
    }

    /// The same state, keeping pushes in `journal` while the database is away.
    pub fn with_journal(mut self, journal: Arc<crate::sources::journal::Journal>) -> Self {
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
    let header_read = state.settings.http.header_read;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::io(format!("http://{addr}"), e))?;
    let bound = listener
        .local_addr()
        .map_err(|e| Error::io(format!("http://{addr}"), e))?;
    let task = tokio::spawn(accept(listener, app(state), header_read, cancel));
    tracing::info!(message = "Serving HTTP.", address = %bound);
    Ok((bound, task))
}

/// Every endpoint, with request bodies decoded before any handler reads them. Handlers read
/// the client's address from `ConnectInfo<SocketAddr>`, which the server puts on each request.
pub fn app(state: HttpState) -> axum::Router {
    let (api, document) = OpenApiRouter::with_openapi(docs::ApiDoc::openapi())
        .merge(ingest::routes())
        .merge(read::routes())
        .split_for_parts();
    operator::routes()
        .merge(api)
        .merge(docs::routes(document))
        .merge(dashboard::routes())
        .layer(axum::middleware::from_fn(encoding::decode_request_body))
        .with_state(state)
}

/// Takes connections from `listener` and serves each on its own task until `cancel` fires;
/// then takes no more and waits for the requests under way. A client gets `header_read` to
/// send each request's header (from its connection, or the end of its previous request),
/// else its connection is closed: connections that send nothing hold nothing for long.
async fn accept(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    header_read: Duration,
    cancel: CancellationToken,
) {
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(header_read);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of descriptors, say: wait a little instead of spinning.
                    tracing::warn!(message = "A connection could not be accepted.", error = %error);
                    tokio::time::sleep(ACCEPT_PAUSE).await;
                    continue;
                }
            },
            () = cancel.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let router = app.clone();
        let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            let mut router = router.clone();
            async move { router.call(request.map(axum::body::Body::new)).await }
        });
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(message = "A connection ended with an error.", peer = %peer, error = %error);
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// How long the server waits after a failed `accept` before it tries again.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);
