//! `POST /v1/ingest`: a request body is a delivery, taken through the same pipeline as a file
//! (validation, quarantine, ledger, exactly-once, one transaction), and answered only after
//! its commit: a 2xx means durable. The receipt says what was loaded and why rows were
//! rejected. Status codes: 200 loaded, partially loaded, duplicate or empty; 400 not parseable
//! as its type; 401/403 access; 413 too large (after decompression); 415 type or encoding;
//! 422 nothing loadable, or an `Idempotency-Key` given again with another body; 503 with
//! `Retry-After` when the database stays unavailable or too much is in flight.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use chrono::Utc;
use serde::Deserialize;
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::config::{Acknowledge, Scope};
use crate::delivery::{ByteSource, Delivery, DeviceMark};
use crate::error::Error;
use crate::http::access::authorize;
use crate::http::body::{self, to_source, BodyFormat};
use crate::http::error::{ApiError, ErrorBody};
use crate::http::receipt::{receipt, DeviceSensor, ReceiptBody};
use crate::http::spool::{self, Received, MEMORY_BYTES};
use crate::http::HttpState;
use crate::http::{device, journaled};
use crate::pipeline::committer::Committed;
use crate::pipeline::{process_with_retry, DeliveryReport};
use crate::store::StoreError;
use crate::validate::rejection::FileRejection;

/// Bodies up to this size are committed in groups with concurrent ones.
const GROUP_BODY_MAX_BYTES: u64 = MEMORY_BYTES as u64;

/// Bytes a second a body must arrive at, on average, once `http.body_idle_secs` have passed.
const BODY_MIN_RATE: u64 = 4096;

/// Seconds a client is told to wait when the service cannot take its request now.
const RETRY_AFTER_SECS: u64 = 5;

/// The ingest routes: `/v1/ingest`, and the sensor.community push API (with and without the
/// trailing slash the firmware sends), each with its OpenAPI operation.
pub fn routes() -> OpenApiRouter<HttpState> {
    OpenApiRouter::new()
        .routes(routes!(ingest))
        .routes(routes!(push_sensor_data))
        .routes(routes!(journaled::receipt))
        .route("/v1/push-sensor-data", post(push_sensor_data))
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
async fn ingest(
    State(state): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(query): Query<IngestQuery>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    answer(&state, peer, query, &headers, body, Endpoint::Ingest).await
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
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let query = IngestQuery { name: None };
    answer(&state, peer, query, &headers, body, Endpoint::Push).await
}

async fn answer(
    state: &HttpState,
    peer: SocketAddr,
    query: IngestQuery,
    headers: &HeaderMap,
    body: Body,
    endpoint: Endpoint,
) -> Response {
    let started = Instant::now();
    let mut received = 0;
    let handled = handle_push(state, peer, query, headers, body, endpoint, &mut received).await;
    let response = match handled {
        Ok(response) => response,
        Err(error) => error.into_response(),
    };
    crate::telemetry::record_http_request(response.status().as_u16(), received, started.elapsed());
    response
}

async fn handle_push(
    state: &HttpState,
    peer: SocketAddr,
    query: IngestQuery,
    headers: &HeaderMap,
    body: Body,
    endpoint: Endpoint,
    received: &mut u64,
) -> Result<Response, ApiError> {
    let client = authorize(&state.settings.http, headers, peer, Scope::Write)?;
    let format = BodyFormat::of(
        headers
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok()),
    )?;
    if endpoint == Endpoint::Push && format != BodyFormat::Json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "the push API takes application/json",
        ));
    }
    let key = idempotency_key(headers)?;
    // Back-pressure: the memory a body may take is reserved before it is read.
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok()?.parse::<u64>().ok());
    let in_memory = declared.map_or(MEMORY_BYTES as u64, |n| n.min(MEMORY_BYTES as u64));
    let held = hold(state, peer, in_memory)?;
    let pace = spool::Pace {
        idle: state.settings.http.body_idle,
        min_rate: BODY_MIN_RATE,
    };
    let body = spool::receive(
        body,
        state.settings.http.max_body_bytes,
        &spool::spool_dir(&state.settings.state_dir),
        pace,
    )
    .await?;
    *received = body.len();
    let size = body.len();
    let received_at = Utc::now();
    let mut device = None;
    // A spool file lives (and the pipeline reads it) until the answer.
    let (source, _spooled) = match body {
        Received::Memory(bytes) if format == BodyFormat::Csv => (ByteSource::Memory(bytes), None),
        Received::Spooled { path, .. } if format == BodyFormat::Csv => {
            (ByteSource::File(path.to_path_buf()), Some(path))
        }
        Received::Spooled { .. } if endpoint == Endpoint::Push => {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("a push-API body is one sensor's values: at most {MEMORY_BYTES} bytes"),
            ));
        }
        Received::Spooled { path, .. } => {
            // A large JSON or NDJSON body is rendered from its spool file into another one,
            // one object in memory at a time.
            let dir = spool::spool_dir(&state.settings.state_dir);
            let spooled = path.to_path_buf();
            let rendered =
                tokio::task::spawn_blocking(move || body::render_file(format, &spooled, &dir))
                    .await
                    .map_err(|_| render_failed())?;
            match rendered {
                Ok((rendered_path, source)) => (source, Some(rendered_path)),
                Err(refusal) => {
                    let source = ByteSource::File(path.to_path_buf());
                    let name = delivery_name(query.name.as_deref(), format);
                    return refuse(state, refusal, source, name, client, key).await;
                }
            }
        }
        Received::Memory(bytes) => {
            // Parsing and rendering JSON is CPU work of any length: off the async workers.
            let (settings, headers) = (Arc::clone(&state.settings), headers.clone());
            let raw = bytes.clone();
            let rendered = tokio::task::spawn_blocking(move || {
                render_in_memory(endpoint, format, bytes, &headers, received_at, &settings)
            })
            .await
            .map_err(|_| render_failed())?;
            match rendered {
                Ok((source, push)) => {
                    device = push;
                    (source, None)
                }
                Err(refusal) => {
                    let name = delivery_name(query.name.as_deref(), format);
                    let source = ByteSource::Memory(raw);
                    return refuse(state, refusal, source, name, client, key).await;
                }
            }
        }
    };
    let in_memory = matches!(source, ByteSource::Memory(_) | ByteSource::Rendered { .. });
    let name = match &device {
        Some(push) => format!("{}.json", push.device),
        None => delivery_name(query.name.as_deref(), format),
    };
    let delivery = Delivery {
        device: device.as_ref().map(|push| DeviceMark {
            device: push.device.clone(),
            sensors: push.sensors.clone(),
        }),
        ..Delivery::pushed(name, source, client, key)
    };
    // Journaled at once: with `acknowledge = "journal"`, or while no database was ever reached.
    let journal_first = in_memory
        && (state.settings.http.acknowledge == Acknowledge::Journal
            || state.journal.as_ref().is_some_and(|j| j.database_away()));
    let pipeline = state.pipeline.get().filter(|_| !journal_first);
    let Some((ctx, committer)) = pipeline else {
        return journaled::keep(state, delivery, device.as_ref(), received_at).await;
    };
    // Small bodies are committed together with whatever else is arriving.
    let grouped = in_memory && size <= GROUP_BODY_MAX_BYTES;
    let wait = state.settings.http.database_wait;
    let outcome = if in_memory {
        // A body the journal can keep waits `wait` for its commit, then is journaled.
        tokio::time::timeout(wait, async {
            if grouped {
                if let Committed::Report(report) = committer.commit(delivery.clone(), size).await {
                    return *report;
                }
            }
            process_with_retry(ctx, &delivery, &CancellationToken::new()).await
        })
        .await
    } else {
        // A large body waits `wait` for the database to answer, then takes the time its load
        // takes (one attempt: an outage during it is a 503, and the body was not stored).
        match tokio::time::timeout(wait, ctx.store.pool().get()).await {
            Ok(Ok(connection)) => {
                drop(connection);
                Ok(crate::pipeline::process(ctx, &delivery).await)
            }
            Ok(Err(error)) => Ok(Err(Error::from(StoreError::from(error)))),
            Err(elapsed) => Err(elapsed),
        }
    };
    let away = match &outcome {
        Err(_) => true,
        Ok(Err(error)) => error.is_transient(),
        Ok(Ok(_)) => false,
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
        Err(_) => {
            return Err(ApiError::unavailable(
                "database_unavailable",
                format!(
                    "the database did not answer within {} ms; the body was not acknowledged \
                     (sending it again is safe: a stored body is a duplicate)",
                    wait.as_millis()
                ),
                RETRY_AFTER_SECS,
            ))
        }
        // A device body's time is its receive time, so a retry differs from the first send by
        // that alone: the key names the delivery, and the retry is answered as a duplicate.
        Ok(Err(Error::KeyReused(file_id))) if device.is_some() => {
            DeliveryReport::same_delivery(file_id, &delivery.name, &delivery.origin.to_string())
        }
        Ok(Err(Error::KeyReused(file_id))) => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                format!(
                    "this Idempotency-Key was first given with another body (delivery \
                     {file_id}); use a new key for new content"
                ),
            ))
        }
        Ok(Err(error)) if error.is_transient() || error.is_local_fault() => {
            return Err(ApiError::unavailable(
                "temporarily_unavailable",
                format!("{}; nothing was stored", crate::telemetry::chain(&error)),
                RETRY_AFTER_SECS,
            ))
        }
        Ok(Err(error)) => {
            tracing::error!(message = "Request failed.", error = %crate::telemetry::chain(&error));
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "the delivery could not be processed; see the server log",
            ));
        }
        Ok(Ok(report)) => report,
    };
    drop(held);
    let mut response = receipt(ctx, &report).await?;
    if let Some(push) = device {
        let body = &mut response.body;
        body.sensors = Some(
            push.sensors
                .iter()
                .map(|(sensor_id, sensor_type)| DeviceSensor {
                    sensor_id: *sensor_id,
                    sensor_type: sensor_type.clone(),
                })
                .collect(),
        );
        body.device = Some(push.device);
        body.unknown_value_types = Some(push.unknown_value_types.into_iter().collect());
        body.ignored_value_types = Some(push.ignored_value_types.into_iter().collect());
        body.notes = (!push.notes.is_empty()).then_some(push.notes);
    }
    Ok(response.into_response())
}

/// The answer to a body refused for its content (not valid JSON, no objects, a key twice): 400
/// or 422 as `refusal` says, after the body is recorded as a rejected delivery, like a file
/// whose header cannot be read (its ledger row, its bytes in quarantine). Refusals of the
/// request itself (401, 403, 413, 415) are not deliveries. When the database cannot record
/// it in time, the refusal is answered all the same: the body is refused either way.
async fn refuse(
    state: &HttpState,
    refusal: ApiError,
    source: ByteSource,
    name: String,
    client: String,
    key: Option<String>,
) -> Result<Response, ApiError> {
    let database_away = state.journal.as_ref().is_some_and(|j| j.database_away());
    let (Some((ctx, _)), Some(code)) = (
        state.pipeline.get().filter(|_| !database_away),
        refusal.rejection(),
    ) else {
        return Err(refusal);
    };
    let delivery = Delivery::pushed(name, source, client, key);
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
    let bytes = body::without_bom(bytes);
    let pushed = match endpoint {
        Endpoint::Push => Some(device::push_api(&bytes, headers, received_at, settings)?),
        Endpoint::Ingest if format == BodyFormat::Json && device::is_device_body(&bytes) => {
            Some(device::own_api(&bytes, headers, received_at, settings)?)
        }
        Endpoint::Ingest => None,
    };
    Ok(match pushed {
        Some(push) => (push.source.clone(), Some(push)),
        None => (to_source(format, bytes)?, None),
    })
}

/// Reserves `bytes` of the in-flight bound, and of the client's share of it, for as long as
/// the guard lives.
///
/// # Errors
/// 503 with `Retry-After` when the bound or the client's share is reached.
fn hold(state: &HttpState, peer: SocketAddr, bytes: u64) -> Result<Held, ApiError> {
    let share = state
        .client_shares
        .reserve(peer.ip(), bytes)
        .ok_or_else(|| {
            ApiError::unavailable(
                "too_busy",
                "this client address holds its share of the request bytes being processed; \
             nothing was stored (finish or end the requests under way)",
                RETRY_AFTER_SECS,
            )
        })?;
    let kib = u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX);
    let permits = Arc::clone(&state.in_flight)
        .try_acquire_many_owned(kib)
        .map_err(|_| {
            ApiError::unavailable(
                "too_busy",
                "too many request bytes are being processed; nothing was stored",
                RETRY_AFTER_SECS,
            )
        })?;
    Ok((permits, share, crate::telemetry::InFlightBytes::hold(bytes)))
}

/// A reservation of in-flight bytes, the client's part in it, and its share of the gauge.
type Held = (
    OwnedSemaphorePermit,
    crate::http::shares::ClientHold,
    crate::telemetry::InFlightBytes,
);

/// Longest `Idempotency-Key` taken.
const MAX_KEY_CHARS: usize = 200;

/// The `Idempotency-Key` header, if given.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value.to_str().map(str::trim).unwrap_or_default();
    if key.is_empty() || key.chars().count() > MAX_KEY_CHARS {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_idempotency_key",
            format!("Idempotency-Key must be 1 to {MAX_KEY_CHARS} visible ASCII characters"),
        ));
    }
    Ok(Some(key.to_owned()))
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
