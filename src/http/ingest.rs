//! `POST /v1/ingest`: a request body is a delivery, taken through the same pipeline as a file
//! (validation, quarantine, ledger, exactly-once, one transaction), and answered only after
//! its commit: a 2xx means durable. The receipt says what was loaded and why rows were
//! rejected. Status codes: 200 loaded, partially loaded, duplicate or empty; 400 not parseable
//! as its type; 401/403 access; 413 too large (after decompression); 415 type or encoding;
//! 422 nothing loadable, or an `Idempotency-Key` given again with another body; 503 with
//! `Retry-After` when the database stays unavailable or too much is in flight.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::config::Acknowledge;
use crate::delivery::{ByteSource, Delivery, DeviceMark};
use crate::error::Error;
use crate::http::access::Writer;
use crate::http::body::{self, to_source, BodyFormat};
use crate::http::error::{ApiError, ErrorBody, RETRY_AFTER_SECS};
use crate::http::extract::{IdempotencyKey, InFlight, Params};
use crate::http::receipt::{receipt, ReceiptBody};
use crate::http::spool::{self, Received, MEMORY_BYTES};
use crate::http::HttpState;
use crate::http::{device, journaled};
use crate::pipeline::committer::{goes_in_group, Committed, Committer};
use crate::pipeline::{process_with_retry, DeliveryReport, PipelineCtx};
use crate::store::StoreError;
use crate::validate::rejection::FileRejection;

/// Bytes a second a body must arrive at, on average, once `http.body_idle_secs` have passed.
const BODY_MIN_RATE: u64 = 4096;

/// The ingest routes: `/v1/ingest`, and the sensor.community push API (with and without the
/// trailing slash the firmware sends), each with its OpenAPI operation.
pub fn routes() -> OpenApiRouter<HttpState> {
    OpenApiRouter::new()
        .routes(routes!(ingest))
        .routes(routes!(push_sensor_data))
        .route("/v1/push-sensor-data", post(push_sensor_data))
        .route_layer(middleware::from_fn(measured))
        .routes(routes!(journaled::receipt))
}

/// Which endpoint a body came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    /// `POST /v1/ingest`: CSV, JSON, NDJSON, or a device's own-API body.
    Ingest,
    /// `POST /v1/push-sensor-data/`: one sensor of a device, named by `X-Pin`.
    Push,
}

/// Query parameters of `POST /v1/ingest`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct IngestQuery {
    /// The delivery's file name (the sensor type may follow from it, as from a file name).
    name: Option<String>,
}

/// A delivery: CSV (any layout the inbox takes), a JSON object or array of objects keyed by
/// the CSV header's column names, NDJSON, or an airRohr firmware body. Answered after the
/// commit: a 2xx means durable.
#[utoipa::path(
    post, path = "/v1/ingest", tag = "ingest", params(
        IngestQuery,
        ("Idempotency-Key" = Option<String>, Header, description = "The delivery's identity instead of its content's SHA-256"),
    ),
    request_body(description = "Readings", content(
        (String = "text/csv"),
        (serde_json::Value = "application/json"),
        (String = "application/x-ndjson"),
    )),
    responses(
        (status = 200, description = "Loaded, partially loaded, duplicate or empty", body = ReceiptBody),
        (status = 400, description = "Not parseable as its content type (recorded as a rejected delivery)", body = ErrorBody),
        (status = 401, description = "A token is required", body = ErrorBody),
        (status = 403, description = "The token lacks the write scope, or the client is not allowed", body = ErrorBody),
        (status = 413, description = "Over max_body_bytes (after decompression)", body = ErrorBody),
        (status = 415, description = "Unsupported content type or encoding", body = ErrorBody),
        (status = 422, description = "Nothing loadable, or an Idempotency-Key reused with another body", body = ErrorBody),
        (status = 503, description = "The database is unavailable or too much is in flight; see Retry-After", body = ErrorBody),
    ),
    security((), ("token" = []))
)]
#[expect(
    clippy::too_many_arguments,
    reason = "a handler lists what it extracts, in the order it is checked"
)]
async fn ingest(
    State(state): State<HttpState>,
    Writer { client }: Writer,
    format: BodyFormat,
    IdempotencyKey(key): IdempotencyKey,
    Params(query): Params<IngestQuery>,
    held: InFlight,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let push = Push {
        endpoint: Endpoint::Ingest,
        client,
        format,
        key,
        name: query.name,
    };
    answer(&state, push, held, &headers, body).await
}

/// The sensor.community push API: one sensor of a device, named by `X-Pin`.
#[utoipa::path(
    post, path = "/v1/push-sensor-data/", tag = "ingest", params(
        ("X-Sensor" = String, Header, description = "The device, e.g. esp8266-3654427"),
        ("X-Pin" = String, Header, description = "Which sensor, as the firmware numbers them (1, 3, 5, 7, 9, 11, 13, 17)"),
    ),
    request_body(description = "`{\"software_version\": …, \"sensordatavalues\": [{\"value_type\", \"value\"}, …]}`",
        content((serde_json::Value = "application/json"))),
    responses(
        (status = 200, description = "Loaded, partially loaded, duplicate or empty", body = ReceiptBody),
        (status = 400, description = "Not a push-API body, or an unknown pin", body = ErrorBody),
        (status = 401, description = "A token is required", body = ErrorBody),
        (status = 403, description = "Not allowed", body = ErrorBody),
        (status = 413, description = "Too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "Nothing loadable", body = ErrorBody),
        (status = 503, description = "The database is unavailable; see Retry-After", body = ErrorBody),
    ),
    security((), ("token" = []))
)]
async fn push_sensor_data(
    State(state): State<HttpState>,
    Writer { client }: Writer,
    format: BodyFormat,
    held: InFlight,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    if format != BodyFormat::Json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "the push API takes application/json",
        ));
    }
    let push = Push {
        endpoint: Endpoint::Push,
        client,
        format,
        key: None,
        name: None,
    };
    Ok(answer(&state, push, held, &headers, body).await)
}

/// What a push request says about its body before the body is read.
struct Push {
    endpoint: Endpoint,
    /// Who sent it, as the ledger records it.
    client: String,
    format: BodyFormat,
    /// The `Idempotency-Key`, if given.
    key: Option<String>,
    /// The `name` parameter, if given.
    name: Option<String>,
}

impl Push {
    fn delivery_name(&self) -> String {
        delivery_name(self.name.as_deref(), self.format)
    }
}

/// Bytes of a request body received, on its response for [`measured`].
#[derive(Debug, Clone, Copy)]
struct ReceivedBytes(u64);

/// Counts each push request by status, its received bytes and its time (`/metrics`), whether
/// an extractor or the handler answered it.
async fn measured(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let response = next.run(request).await;
    let received = response
        .extensions()
        .get::<ReceivedBytes>()
        .map_or(0, |ReceivedBytes(bytes)| *bytes);
    crate::telemetry::record_http_request(response.status().as_u16(), received, started.elapsed());
    response
}

/// The answer to a push: the body received, made a delivery, committed (or journaled), and
/// its receipt; the in-flight reservation is held until the delivery's outcome is known.
async fn answer(
    state: &HttpState,
    push: Push,
    held: InFlight,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    let pace = spool::Pace {
        idle: state.settings.http.body_idle,
        min_rate: BODY_MIN_RATE,
    };
    let received = spool::receive(
        body,
        state.settings.http.max_body_bytes,
        &spool::spool_dir(&state.settings.state_dir),
        pace,
    )
    .await;
    let (size, answered) = match received {
        Ok(received) => (
            received.len(),
            deliver(state, push, held, headers, received).await,
        ),
        Err(error) => (0, Err(error)),
    };
    let mut response = answered.unwrap_or_else(IntoResponse::into_response);
    response.extensions_mut().insert(ReceivedBytes(size));
    response
}

/// A received body as a delivery's source: CSV as it came; JSON and NDJSON rendered (a
/// device's body for its sensors).
struct Source {
    bytes: ByteSource,
    /// A file the source was rendered into, removed with this value.
    _rendered: Option<tempfile::TempPath>,
    /// What a device's body says besides its readings.
    device: Option<device::DevicePush>,
}

/// Makes `body` a delivery's source; a body refused for its content is answered as a refused
/// delivery ([`refuse`]).
async fn source_of(
    state: &HttpState,
    push: &Push,
    headers: &HeaderMap,
    body: Received,
    received_at: DateTime<Utc>,
) -> Result<Source, Refused> {
    let plain = |bytes, rendered| Source {
        bytes,
        _rendered: rendered,
        device: None,
    };
    match body {
        Received::Memory(bytes) if push.format == BodyFormat::Csv => {
            Ok(plain(ByteSource::Memory(bytes), None))
        }
        Received::Spooled { path, .. } if push.format == BodyFormat::Csv => {
            Ok(plain(ByteSource::File(path.to_path_buf()), Some(path)))
        }
        Received::Spooled { .. } if push.endpoint == Endpoint::Push => {
            Err(Refused::Request(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("a push-API body is one sensor's values: at most {MEMORY_BYTES} bytes"),
            )))
        }
        Received::Spooled { path, .. } => {
            // A large JSON or NDJSON body is rendered from its spool file into another one,
            // one object in memory at a time.
            let dir = spool::spool_dir(&state.settings.state_dir);
            let (format, spooled) = (push.format, path.to_path_buf());
            let rendered =
                tokio::task::spawn_blocking(move || body::render_file(format, &spooled, &dir))
                    .await
                    .map_err(|_| Refused::Request(render_failed()))?;
            match rendered {
                Ok((rendered_path, source)) => Ok(plain(source, Some(rendered_path))),
                Err(refusal) => {
                    let bytes = ByteSource::File(path.to_path_buf());
                    Err(Refused::Content(refusal, bytes, Some(path)))
                }
            }
        }
        Received::Memory(bytes) => {
            // Parsing and rendering JSON is CPU work of any length: off the async workers.
            let (settings, headers) = (Arc::clone(&state.settings), headers.clone());
            let (endpoint, format, raw) = (push.endpoint, push.format, bytes.clone());
            let rendered = tokio::task::spawn_blocking(move || {
                render_in_memory(endpoint, format, bytes, &headers, received_at, &settings)
            })
            .await
            .map_err(|_| Refused::Request(render_failed()))?;
            match rendered {
                Ok((bytes, device)) => Ok(Source {
                    bytes,
                    _rendered: None,
                    device,
                }),
                Err(refusal) => Err(Refused::Content(refusal, ByteSource::Memory(raw), None)),
            }
        }
    }
}

/// Why a body did not become a delivery's source.
enum Refused {
    /// The request itself (too large a push body, a rendering that failed): not a delivery.
    Request(ApiError),
    /// The body's content, recorded as a rejected delivery of these bytes (from a spool file
    /// removed with this value).
    Content(ApiError, ByteSource, Option<tempfile::TempPath>),
}

async fn deliver(
    state: &HttpState,
    push: Push,
    held: InFlight,
    headers: &HeaderMap,
    body: Received,
) -> Result<Response, ApiError> {
    let size = body.len();
    let received_at = Utc::now();
    // A spool file lives (and the pipeline reads it) until the answer.
    let source = match source_of(state, &push, headers, body, received_at).await {
        Ok(source) => source,
        Err(Refused::Request(error)) => return Err(error),
        Err(Refused::Content(refusal, bytes, _spooled)) => {
            let delivery = Delivery::pushed(push.delivery_name(), bytes, push.client, push.key);
            return refuse(state, refusal, delivery).await;
        }
    };
    let device = source.device;
    let in_memory = matches!(
        source.bytes,
        ByteSource::Memory(_) | ByteSource::Rendered { .. }
    );
    let name = match &device {
        Some(push) => format!("{}.json", push.device),
        None => push.delivery_name(),
    };
    let delivery = Delivery {
        device: device.as_ref().map(|push| DeviceMark {
            device: push.device.clone(),
            sensors: push.sensors.clone(),
        }),
        ..Delivery::pushed(name, source.bytes, push.client, push.key)
    };
    // Journaled at once: with `acknowledge = "journal"`, or while no database was ever reached.
    let journal_first = in_memory
        && (state.settings.http.acknowledge == Acknowledge::Journal
            || state.journal.as_ref().is_some_and(|j| j.database_away()));
    let pipeline = state.pipeline.get().filter(|_| !journal_first);
    let Some((ctx, committer)) = pipeline else {
        return journaled::keep(state, delivery, device.as_ref(), received_at).await;
    };
    let outcome = if in_memory {
        commit_or_time_out(state, ctx, committer, &delivery, size).await
    } else {
        load_large(state, ctx, &delivery).await
    };
    let away = match &outcome {
        Outcome::Away => true,
        Outcome::Failed(error) => error.is_transient(),
        Outcome::Loaded(_) => false,
    };
    if away && in_memory {
        // The database is away: the body goes to the push journal (202), and so do the next
        // ones until the drain finds the database back.
        if let Some(journal) = &state.journal {
            journal.set_database_away(true);
        }
        return journaled::keep(state, delivery, device.as_ref(), received_at).await;
    }
    let report = match outcome {
        Outcome::Loaded(report) => *report,
        Outcome::Away => return Err(database_unavailable(state)),
        Outcome::Failed(error) => failure_report(error, device.is_some(), &delivery)?,
    };
    drop(held);
    let mut response = receipt(ctx, &report).await?;
    if let Some(push) = device {
        response.body.describe_device(push);
    }
    Ok(response.into_response())
}

/// What became of a delivery handed to the database.
enum Outcome {
    /// Committed (loaded, rejected, a duplicate…): its report.
    Loaded(Box<DeliveryReport>),
    /// The database did not answer in time: nothing was stored.
    Away,
    /// It failed: the database went away during it, or a reason of its own.
    Failed(Error),
}

impl From<Result<DeliveryReport, Error>> for Outcome {
    fn from(result: Result<DeliveryReport, Error>) -> Self {
        result.map_or_else(Outcome::Failed, |report| Outcome::Loaded(Box::new(report)))
    }
}

/// A body the journal can keep waits `http.db_wait_ms` for its commit: in a group with
/// whatever else is arriving when the shared policy says so, else alone with retries.
async fn commit_or_time_out(
    state: &HttpState,
    ctx: &PipelineCtx,
    committer: &Committer,
    delivery: &Delivery,
    size: u64,
) -> Outcome {
    let committed = tokio::time::timeout(state.settings.http.database_wait, async {
        if goes_in_group(size, false) {
            if let Committed::Report(report) = committer.commit(delivery.clone(), size).await {
                return *report;
            }
        }
        process_with_retry(ctx, delivery, &CancellationToken::new()).await
    })
    .await;
    committed.map_or(Outcome::Away, Outcome::from)
}

/// A large body waits `http.db_wait_ms` for the database to answer, then takes the time its
/// load takes (one attempt: an outage during it is a 503, and the body was not stored).
async fn load_large(state: &HttpState, ctx: &PipelineCtx, delivery: &Delivery) -> Outcome {
    match tokio::time::timeout(state.settings.http.database_wait, ctx.store.pool().get()).await {
        Ok(Ok(connection)) => {
            drop(connection);
            Outcome::from(crate::pipeline::process(ctx, delivery).await)
        }
        Ok(Err(error)) => Outcome::from(Err(Error::from(StoreError::from(error)))),
        Err(_) => Outcome::Away,
    }
}

/// 503: the database did not answer in time and the body could not be journaled.
fn database_unavailable(state: &HttpState) -> ApiError {
    ApiError::unavailable(
        "database_unavailable",
        format!(
            "the database did not answer within {} ms; the body was not acknowledged \
             (sending it again is safe: a stored body is a duplicate)",
            state.settings.http.database_wait.as_millis()
        ),
        RETRY_AFTER_SECS,
    )
}

/// The report, or the answer, of a delivery that failed.
fn failure_report(
    error: Error,
    from_device: bool,
    delivery: &Delivery,
) -> Result<DeliveryReport, ApiError> {
    Err(match error {
        // A device body's time is its receive time, so a retry differs from the first send by
        // that alone: the key names the delivery, and the retry is answered as a duplicate.
        Error::KeyReused(file_id) if from_device => {
            let origin = delivery.origin.to_string();
            return Ok(DeliveryReport::same_delivery(
                file_id,
                &delivery.name,
                &origin,
            ));
        }
        Error::KeyReused(file_id) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_key_reused",
            format!(
                "this Idempotency-Key was first given with another body (delivery {file_id}); \
                 use a new key for new content"
            ),
        ),
        error if error.is_transient() || error.is_local_fault() => ApiError::unavailable(
            "temporarily_unavailable",
            format!("{}; nothing was stored", crate::telemetry::chain(&error)),
            RETRY_AFTER_SECS,
        ),
        error => {
            tracing::error!(message = "Request failed.", error = %crate::telemetry::chain(&error));
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "the delivery could not be processed; see the server log",
            )
        }
    })
}

/// The answer to a body refused for its content (not valid JSON, no objects, a key twice): 400
/// or 422 as `refusal` says, after the body is recorded as a rejected delivery, like a file
/// whose header cannot be read (its ledger row, its bytes in quarantine). Refusals of the
/// request itself (401, 403, 413, 415) are not deliveries. When the database cannot record
/// it in time, the refusal is answered all the same: the body is refused either way.
async fn refuse(
    state: &HttpState,
    refusal: ApiError,
    delivery: Delivery,
) -> Result<Response, ApiError> {
    let database_away = state.journal.as_ref().is_some_and(|j| j.database_away());
    let (Some((ctx, _)), Some(code)) = (
        state.pipeline.get().filter(|_| !database_away),
        refusal.rejection(),
    ) else {
        return Err(refusal);
    };
    let rejection = FileRejection::new(code, refusal.message());
    let recorded = tokio::time::timeout(
        state.settings.http.database_wait,
        crate::pipeline::process_unreadable(ctx, &delivery, rejection),
    )
    .await;
    let report = match recorded {
        Ok(Ok(report)) => report,
        Ok(Err(error)) => {
            tracing::warn!(
                message = "A refused body could not be recorded.",
                error = %crate::telemetry::chain(&error)
            );
            return Err(refusal);
        }
        Err(_) => return Err(refusal),
    };
    let mut response = receipt(ctx, &report).await?;
    response.status = refusal.status();
    response.body.error = Some(refusal.detail());
    Ok(response.into_response())
}

/// 500: the thread rendering a body ended without an answer (the log says why).
fn render_failed() -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal_error",
        "the body could not be rendered; see the server log",
    )
}

/// A JSON or NDJSON body held in memory as the delivery's source: a device's body rendered for
/// its sensors (with what the device push says), any other rendered as CSV. Blocking.
fn render_in_memory(
    endpoint: Endpoint,
    format: BodyFormat,
    bytes: bytes::Bytes,
    headers: &HeaderMap,
    received_at: chrono::DateTime<Utc>,
    settings: &crate::config::Settings,
) -> Result<(ByteSource, Option<device::DevicePush>), ApiError> {
    // A device's body is read without its byte order mark; any other body is read by
    // `to_source`, which skips the mark itself, as it does for a spooled body.
    let unmarked = body::without_bom(bytes.clone());
    let pushed = match endpoint {
        Endpoint::Push => Some(device::push_api(&unmarked, headers, received_at, settings)?),
        Endpoint::Ingest if format == BodyFormat::Json && device::is_device_body(&unmarked) => {
            Some(device::own_api(&unmarked, headers, received_at, settings)?)
        }
        Endpoint::Ingest => None,
    };
    Ok(match pushed {
        Some(push) => (push.source.clone(), Some(push)),
        None => (to_source(format, bytes)?, None),
    })
}

/// Characters of a `name` parameter kept.
const MAX_NAME_CHARS: usize = 200;

/// The delivery's name: the `name` parameter's last path component (control characters made
/// `_`, at most [`MAX_NAME_CHARS`]), or a default by format.
fn delivery_name(asked: Option<&str>, format: BodyFormat) -> String {
    asked
        .and_then(|name| Path::new(name).file_name())
        .map(|name| {
            name.to_string_lossy()
                .chars()
                .map(|c| if c.is_control() { '_' } else { c })
                .take(MAX_NAME_CHARS)
                .collect::<String>()
        })
        .filter(|name| !name.trim().is_empty())
        .unwrap_or_else(|| {
            match format {
                BodyFormat::Csv => "request.csv",
                BodyFormat::Json => "request.json",
                BodyFormat::Ndjson => "request.ndjson",
            }
            .to_owned()
        })
}
