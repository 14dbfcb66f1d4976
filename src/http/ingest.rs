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
use axum::{Json, Router};
use chrono::Utc;
use serde::Deserialize;
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;

use crate::config::Scope;
use crate::delivery::{ByteSource, Delivery, Disposition, Origin};
use crate::error::Error;
use crate::http::access::authorize;
use crate::http::body::{self, to_source, BodyFormat};
use crate::http::device;
use crate::http::error::ApiError;
use crate::http::spool::{self, Received, MEMORY_BYTES};
use crate::http::HttpState;
use crate::pipeline::committer::Committed;
use crate::pipeline::{process_with_retry, DeliveryReport, PipelineCtx};
use crate::store::ledger::{self, FileStatus};
use crate::store::StoreError;

/// Rejects listed in a receipt; the rest are in the database and quarantine.
const RECEIPT_REJECTS: i64 = 100;

/// Bodies up to this size are committed in groups with concurrent ones.
const GROUP_BODY_MAX_BYTES: u64 = MEMORY_BYTES as u64;

/// Seconds a client is told to wait when the service cannot take its request now.
const RETRY_AFTER_SECS: u64 = 5;

/// The ingest routes: `/v1/ingest`, and the sensor.community push API.
pub fn routes() -> Router<HttpState> {
    Router::new()
        .route("/v1/ingest", post(ingest))
        .route("/v1/push-sensor-data/", post(push_sensor_data))
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
#[derive(Debug, Deserialize)]
struct IngestQuery {
    /// The delivery's file name (the sensor type may follow from it).
    name: Option<String>,
}

async fn ingest(
    State(state): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(query): Query<IngestQuery>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    answer(&state, peer, query, &headers, body, Endpoint::Ingest).await
}

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
    let Some((ctx, committer)) = state.pipeline.get() else {
        return Err(ApiError::unavailable(
            "database_unavailable",
            "the database is not available yet; nothing was stored",
            RETRY_AFTER_SECS,
        ));
    };
    // Back-pressure: the memory a body may take is reserved before it is read.
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok()?.parse::<u64>().ok());
    let in_memory = declared.map_or(MEMORY_BYTES as u64, |n| n.min(MEMORY_BYTES as u64));
    let held = hold(state, in_memory)?;
    let body = spool::receive(
        body,
        state.settings.http.max_body_bytes,
        &spool::spool_dir(&state.settings.state_dir),
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
    if let Some(push) = &device {
        // The (device, sensor) pairs are deterministic: recording them first is idempotent.
        let stored = async {
            let client = ctx.store.pool().get().await.map_err(StoreError::from)?;
            ledger::record_device_sensors(&client, &push.device, &push.sensors).await
        };
        stored.await.map_err(|error| {
            ApiError::unavailable(
                "database_unavailable",
                format!("{}; nothing was stored", crate::telemetry::chain(&error)),
                RETRY_AFTER_SECS,
            )
        })?;
    }
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
    };
    // Small bodies without a key are committed together with whatever else is arriving.
    let grouped = in_memory && delivery.key.is_none() && size <= GROUP_BODY_MAX_BYTES;
    let wait = state.settings.http.database_wait;
    let outcome = tokio::time::timeout(wait, async {
        if grouped {
            if let Committed::Report(report) = committer.commit(delivery.clone(), size).await {
                return *report;
            }
        }
        process_with_retry(ctx, &delivery, &CancellationToken::new()).await
    })
    .await;
    drop(held);
    let report = match outcome {
        Err(_) => {
            return Err(ApiError::unavailable(
                "database_unavailable",
                format!(
                    "the database did not answer within {} s; the body was not acknowledged \
                     (sending it again is safe: a stored body is a duplicate)",
                    wait.as_secs()
                ),
                RETRY_AFTER_SECS,
            ))
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
    let mut response = receipt(ctx, &report).await?;
    if let Some(push) = device {
        response.device = Some(serde_json::json!({
            "device": push.device,
            "sensors": push.sensors.iter().map(|(id, sensor_type)| {
                serde_json::json!({"sensor_id": id, "sensor_type": sensor_type})
            }).collect::<Vec<_>>(),
            "unknown_value_types": push.unknown_value_types,
            "ignored_value_types": push.ignored_value_types,
        }));
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

/// The delivery's name: the `name` parameter's last path component, or a default by format.
fn delivery_name(asked: Option<&str>, format: BodyFormat) -> String {
    asked
        .and_then(|name| Path::new(name).file_name())
        .map(|name| name.to_string_lossy().into_owned())
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
    let status = match (stored_status.as_str(), rejection_code.as_deref()) {
        ("rejected", Some("no_valid_rows" | "too_many_rejects")) => {
            StatusCode::UNPROCESSABLE_ENTITY
        }
        ("rejected", _) => StatusCode::BAD_REQUEST,
        _ => StatusCode::OK,
    };
    let mut rejects = Vec::new();
    if report.status != FileStatus::Duplicate && report.rows_rejected > 0 {
        rejects = connect()
            .await?
            .query(
                "SELECT line, column_name, value, code, message FROM v_rejects \
                 WHERE file_id = $1 ORDER BY line, code LIMIT $2",
                &[&report.file_id, &(RECEIPT_REJECTS + 1)],
            )
            .await
            .map_err(|_| unavailable_after_commit())?
            .iter()
            .map(|row| {
                serde_json::json!({
                    "line": row.get::<_, i64>(0),
                    "column": row.get::<_, Option<String>>(1),
                    "value": row.get::<_, Option<String>>(2),
                    "code": row.get::<_, String>(3),
                    "message": row.get::<_, String>(4),
                })
            })
            .collect();
    }
    let truncated = rejects.len() as i64 > RECEIPT_REJECTS;
    rejects.truncate(RECEIPT_REJECTS as usize);
    let mut body = serde_json::json!({
        "file_id": report.file_id,
        "status": report.status.as_str(),
        "rows_read": report.rows_read,
        "rows_loaded": report.rows_loaded,
        "rows_rejected": report.rows_rejected,
        "rejects": rejects,
        "rejects_truncated": truncated,
    });
    if status != StatusCode::OK {
        let (code, message) = stored_error
            .as_deref()
            .and_then(|error| error.split_once(": "))
            .unwrap_or(("rejected", "the delivery was rejected"));
        body["error"] = serde_json::json!({"code": code, "message": message});
    }
    Ok(Receipt {
        status,
        body,
        device: None,
    })
}

/// A receipt and its status code; a device push adds what became of its values.
struct Receipt {
    status: StatusCode,
    body: serde_json::Value,
    device: Option<serde_json::Value>,
}

impl IntoResponse for Receipt {
    fn into_response(mut self) -> Response {
        if let (Some(device), Some(body)) = (self.device, self.body.as_object_mut()) {
            if let Some(fields) = device.as_object() {
                body.extend(fields.clone());
            }
        }
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
