//! `POST /v1/ingest`: a request body is a delivery, taken through the same pipeline as a file
//! (validation, quarantine, ledger, exactly-once, one transaction), and answered only after
//! its commit: a 2xx means durable. The receipt says what was loaded and why rows were
//! rejected. Status codes: 200 loaded, partially loaded, duplicate or empty; 400 not parseable
//! as its type; 401/403 access; 413 too large (after decompression); 415 type or encoding;
//! 422 nothing loadable, or an `Idempotency-Key` given again with another body; 503 with
//! `Retry-After` when the database stays unavailable or too much is in flight.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Instant;

use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use bytes::Bytes;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::config::Scope;
use crate::delivery::{Delivery, Disposition, Origin};
use crate::error::Error;
use crate::http::access::authorize;
use crate::http::body::{to_source, BodyFormat};
use crate::http::error::ApiError;
use crate::http::HttpState;
use crate::pipeline::{process_with_retry, DeliveryReport, PipelineCtx};
use crate::store::ledger::FileStatus;

/// Rejects listed in a receipt; the rest are in the database and quarantine.
const RECEIPT_REJECTS: i64 = 100;

/// Seconds a client is told to wait when the service cannot take its request now.
const RETRY_AFTER_SECS: u64 = 5;

/// The ingest route.
pub fn routes() -> Router<HttpState> {
    Router::new().route("/v1/ingest", post(ingest))
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
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let received = body.as_ref().map_or(0, Bytes::len);
    let response = match take(&state, peer, query, &headers, body).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    };
    crate::telemetry::record_http_request(
        response.status().as_u16(),
        received as u64,
        started.elapsed(),
    );
    response
}

async fn take(
    state: &HttpState,
    peer: SocketAddr,
    query: IngestQuery,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let client = authorize(&state.settings.http, headers, peer, Scope::Write)?;
    let format = BodyFormat::of(
        headers
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok()),
    )?;
    let body = body.map_err(|rejection| match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!(
                "the body is over max_body_bytes = {} bytes (counted after decompression)",
                state.settings.http.max_body_bytes
            ),
        ),
        status => ApiError::new(status, "unreadable_body", rejection.body_text()),
    })?;
    // Back-pressure: a body is held only while the bytes in flight stay under the bound.
    let kib = u32::try_from((body.len() as u64).div_ceil(1024)).unwrap_or(u32::MAX);
    let _held = state
        .in_flight
        .clone()
        .try_acquire_many_owned(kib)
        .map_err(|_| {
            ApiError::unavailable(
                "too_busy",
                "too many request bytes are being processed; nothing was stored",
                RETRY_AFTER_SECS,
            )
        })?;
    let _gauge = crate::telemetry::InFlightBytes::hold(body.len() as u64);
    let source = to_source(format, body)?;
    let Some(ctx) = state.pipeline.get() else {
        return Err(ApiError::unavailable(
            "database_unavailable",
            "the database is not available yet; nothing was stored",
            RETRY_AFTER_SECS,
        ));
    };
    let key = idempotency_key(headers)?;
    let delivery = Delivery {
        name: delivery_name(query.name.as_deref(), format),
        source,
        origin: Origin::Http(client),
        disposition: Disposition::LeaveInPlace,
        key,
    };
    let wait = state.settings.http.database_wait;
    let outcome = tokio::time::timeout(
        wait,
        process_with_retry(ctx, &delivery, &CancellationToken::new()),
    )
    .await;
    let report = match outcome {
        Err(_) => {
            return Err(ApiError::unavailable(
                "database_unavailable",
                format!(
                    "the database did not answer within {} s; nothing was stored",
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
    receipt(ctx, &report).await
}

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
async fn receipt(ctx: &PipelineCtx, report: &DeliveryReport) -> Result<Response, ApiError> {
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
    Ok((status, Json(body)).into_response())
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
