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
use axum::Json;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::config::{Acknowledge, Scope};
use crate::delivery::{ByteSource, Delivery, Disposition, Origin};
use crate::error::Error;
use crate::http::access::authorize;
use crate::http::body::{self, to_source, BodyFormat};
use crate::http::error::{ApiError, ErrorBody, ErrorDetail};
use crate::http::spool::{self, Received, MEMORY_BYTES};
use crate::http::HttpState;
use crate::http::{device, journaled};
use crate::pipeline::committer::Committed;
use crate::pipeline::{process_with_retry, DeliveryReport, PipelineCtx};
use crate::store::ledger::{self, FileStatus};
use crate::store::query::{self, RejectEntry};
use crate::store::StoreError;

/// Rejects listed in a receipt; the rest are in the database and quarantine.
const RECEIPT_REJECTS: i64 = 100;

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
    let taken = take(state, peer, query, headers, body, endpoint, &mut received).await;
    let response = match taken {
        Ok(response) => response,
        Err(error) => error.into_response(),
    };
    crate::telemetry::record_http_request(response.status().as_u16(), received, started.elapsed());
    response
}

async fn take(
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
    let held = hold(state, in_memory)?;
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
            let rendered =
                tokio::task::spawn_blocking(move || body::render_file(format, &path, &dir))
                    .await
                    .map_err(|_| {
                        ApiError::new(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "internal_error",
                            "the body could not be rendered; see the server log",
                        )
                    })??;
            let (rendered_path, source) = rendered;
            (source, Some(rendered_path))
        }
        Received::Memory(bytes) => {
            let bytes = body::without_bom(bytes);
            let settings = &state.settings;
            let pushed = match endpoint {
                Endpoint::Push => Some(device::push_api(&bytes, headers, received_at, settings)?),
                Endpoint::Ingest
                    if format == BodyFormat::Json && device::is_device_body(&bytes) =>
                {
                    Some(device::own_api(&bytes, headers, received_at, settings)?)
                }
                Endpoint::Ingest => None,
            };
            match pushed {
                Some(push) => {
                    let source = push.source.clone();
                    device = Some(push);
                    (source, None)
                }
                None => (to_source(format, bytes)?, None),
            }
        }
    };
    let in_memory = matches!(source, ByteSource::Memory(_) | ByteSource::Rendered { .. });
    let name = match &device {
        Some(push) => format!("{}.json", push.device),
        None => delivery_name(query.name.as_deref(), format),
    };
    let delivery = Delivery {
        name,
        source,
        origin: Origin::Http(client),
        disposition: Disposition::LeaveInPlace,
        key,
        journaled: None,
        tail: None,
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
    let outcome = tokio::time::timeout(wait, async {
        if let Some(push) = &device {
            // The (device, sensor) pairs are deterministic: recording them first is idempotent.
            let client = ctx.store.pool().get().await.map_err(StoreError::from)?;
            ledger::record_device_sensors(&client, &push.device, &push.sensors).await?;
        }
        if grouped {
            if let Committed::Report(report) = committer.commit(delivery.clone(), size).await {
                return *report;
            }
        }
        process_with_retry(ctx, &delivery, &CancellationToken::new()).await
    })
    .await;
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

/// Reserves `bytes` of the in-flight bound for as long as the guard lives.
///
/// # Errors
/// 503 with `Retry-After` when the bound is reached.
fn hold(state: &HttpState, bytes: u64) -> Result<Held, ApiError> {
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
    Ok((permits, crate::telemetry::InFlightBytes::hold(bytes)))
}

/// A reservation of in-flight bytes and its share of the gauge.
type Held = (OwnedSemaphorePermit, crate::telemetry::InFlightBytes);

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

/// The JSON receipt, with the status code its outcome calls for; a rejected delivery (or a
/// duplicate of one) also carries `error`, as every error answer does.
async fn receipt(ctx: &PipelineCtx, report: &DeliveryReport) -> Result<Receipt, ApiError> {
    let connect = || async {
        ctx.store
            .pool()
            .get()
            .await
            .map_err(|_| unavailable_after_commit())
    };
    // A duplicate answers as its first delivery did; a new one as its own report says.
    let (stored_status, stored_error): (String, Option<String>) =
        if report.status == FileStatus::Duplicate {
            connect()
                .await?
                .query_one(
                    "SELECT status, error FROM v_files WHERE file_id = $1",
                    &[&report.file_id],
                )
                .await
                .map(|row| (row.get(0), row.get(1)))
                .map_err(|_| unavailable_after_commit())?
        } else {
            (report.status.as_str().to_owned(), report.rejection.clone())
        };
    let rejection_code = stored_error
        .as_deref()
        .and_then(|error| error.split_once(':'))
        .map(|(code, _)| code.to_owned());
    // Every row rejected, those that conflict with stored readings included: nothing loadable.
    let conflicts_only = report.status == FileStatus::PartiallyLoaded
        && report.rows_loaded == 0
        && report.rows_duplicate == 0
        && report.rows_rejected == report.rows_read;
    let (stored_error, rejection_code) = if conflicts_only {
        let conflicting = report
            .violation_counts
            .get("conflicting_reading")
            .copied()
            .unwrap_or(0);
        let message = format!(
            "no_valid_rows: all {} data rows were rejected ({conflicting} conflict with stored \
             readings); nothing was stored",
            report.rows_read
        );
        (Some(message), Some("no_valid_rows".to_owned()))
    } else {
        (stored_error, rejection_code)
    };
    let status = match (stored_status.as_str(), rejection_code.as_deref()) {
        ("rejected", Some("no_valid_rows" | "too_many_rejects")) => {
            StatusCode::UNPROCESSABLE_ENTITY
        }
        ("rejected", _) => StatusCode::BAD_REQUEST,
        _ if conflicts_only => StatusCode::UNPROCESSABLE_ENTITY,
        _ => StatusCode::OK,
    };
    let mut rejects = Vec::new();
    if report.status != FileStatus::Duplicate && report.rows_rejected > 0 {
        let client = connect().await?;
        rejects = query::rejects(&client, report.file_id, None, RECEIPT_REJECTS + 1)
            .await
            .map_err(|_| unavailable_after_commit())?;
    }
    let mut lines: Vec<i64> = rejects.iter().map(|r| r.line).collect();
    lines.dedup();
    let truncated = lines.len() as i64 > RECEIPT_REJECTS;
    if truncated {
        let beyond = lines.last().copied();
        rejects.retain(|r| Some(r.line) != beyond);
    }
    let error = (status != StatusCode::OK).then(|| {
        let (code, message) = stored_error
            .as_deref()
            .and_then(|error| error.split_once(": "))
            .unwrap_or(("rejected", "the delivery was rejected"));
        ErrorDetail {
            code: code.to_owned(),
            message: message.to_owned(),
            parameter: None,
        }
    });
    Ok(Receipt {
        status,
        body: ReceiptBody {
            file_id: report.file_id,
            status: report.status.as_str().to_owned(),
            rows_read: report.rows_read,
            rows_loaded: report.rows_loaded,
            rows_rejected: report.rows_rejected,
            rows_duplicate: report.rows_duplicate,
            rejects,
            rejects_truncated: truncated,
            error,
            device: None,
            sensors: None,
            unknown_value_types: None,
            ignored_value_types: None,
            notes: None,
        },
    })
}

/// What became of a delivery; sent after its commit.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReceiptBody {
    /// The delivery (file or request body) in the ledger.
    pub file_id: i64,
    /// `loaded`, `partially_loaded`, `rejected`, `empty` or `duplicate`.
    pub status: String,
    /// Rows read (data lines or objects).
    pub rows_read: u64,
    /// Rows stored.
    pub rows_loaded: u64,
    /// Rows rejected, each with its line and reason.
    pub rows_rejected: u64,
    /// Rows whose readings (sensor and time) were already stored with the same values: not
    /// stored again. Rows read = loaded + rejected + duplicate.
    pub rows_duplicate: u64,
    /// The first 100 rejected rows, by line.
    pub rejects: Vec<RejectEntry>,
    /// Whether more rows were rejected than listed (all are in `/v1/files/{id}/rejects`).
    pub rejects_truncated: bool,
    /// Why the delivery was rejected (400, 422).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorDetail>,
    /// A device push: the device (`X-Sensor`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// A device push: the sensors its values went to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sensors: Option<Vec<DeviceSensor>>,
    /// A device push: value types with no mapping (reported, not stored).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unknown_value_types: Option<Vec<String>>,
    /// A device push: value types configured as ignored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ignored_value_types: Option<Vec<String>>,
    /// A device push: what was read as "nothing read" (a failed read left out, no GPS fix, an
    /// unset clock replaced by the receive time).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notes: Option<Vec<String>>,
}

/// One sensor of a device.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeviceSensor {
    /// Sensor id (sensor.community `sensor_id`, or derived for a device).
    pub sensor_id: i64,
    /// Sensor type of the catalogue (e.g. `SDS011`, `BME280`).
    pub sensor_type: String,
}

/// A receipt and its status code.
struct Receipt {
    status: StatusCode,
    body: ReceiptBody,
}

impl IntoResponse for Receipt {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

/// The delivery committed but its rejects could not be read back for the receipt.
fn unavailable_after_commit() -> ApiError {
    ApiError::unavailable(
        "receipt_unavailable",
        "the delivery was stored, but its receipt could not be read; sending it again is safe \
         (it is a duplicate)",
        RETRY_AFTER_SECS,
    )
}
