//! Pushes answered from the push journal (SPEC §10.2), and `GET /v1/receipts/{id}`.
//!
//! A push that cannot commit within `http.db_wait_ms` (or every push, with
//! `http.acknowledge = "journal"`) is validated here without the database (the same rules as
//! a load: a body rejected whole still gets 400 or 422 at once), appended to the journal and
//! answered `202 Accepted` with `Location: /v1/receipts/{id}` only after the journal synced it.
//! The same body or `Idempotency-Key` pushed again while it waits gets the same receipt.
//! Past the journal's bound, or on a full disk, the answer is 503: never a 202 for a body that
//! is not on disk.

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use crate::delivery::{ByteSource, Delivery};
use crate::http::access::Reader;
use crate::http::answers::RejectEntry;
use crate::http::device::DevicePush;
use crate::http::error::{ApiError, ErrorBody, ErrorDetail, RETRY_AFTER_SECS};
use crate::http::HttpState;
use crate::sources::journal::record::{Answer, DeviceSensors, Meta};
use crate::sources::journal::JournalError;
use crate::store::receipts;
use crate::validate::reject::RejectedRow;

/// Rejects listed in a receipt; the rest are in the database and quarantine once loaded.
const RECEIPT_REJECTS: usize = 100;

/// Bodies up to this size are checked on the task that answers them: a hand-off to the
/// blocking pool costs two task switches a push (about a seventh of the server's CPU in journal
/// mode), and a check this small holds a runtime thread for well under a millisecond. Larger
/// bodies are checked on the blocking pool.
const INLINE_CHECK_BYTES: usize = 64 * 1024;

/// The receipt of a journaled push, and what `GET /v1/receipts/{id}` says of it later.
#[derive(Debug, Serialize, ToSchema)]
pub struct JournalReceipt {
    /// The receipt (`GET /v1/receipts/{receipt_id}`).
    pub receipt_id: String,
    /// `journaled` while it waits; then `loaded`, `partially_loaded`, `rejected`, `empty`,
    /// `duplicate`, or `failed` (its bytes kept in `quarantine/journal/`).
    pub status: String,
    /// The delivery in the ledger, once loaded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_id: Option<i64>,
    /// Rows read.
    pub rows_read: u64,
    /// Rows stored (once loaded).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows_loaded: Option<u64>,
    /// Rows rejected, each with its line and reason.
    pub rows_rejected: u64,
    /// Rows whose readings were stored already (once loaded).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows_duplicate: Option<u64>,
    /// The first 100 rejected rows, by line (while journaled).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rejects: Vec<RejectEntry>,
    /// Whether more rows were rejected than listed.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub rejects_truncated: bool,
    /// Why the delivery was rejected, or why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorDetail>,
    /// When it was received (while journaled).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub received_at: Option<DateTime<Utc>>,
    /// A device push: the device (`X-Sensor`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// A device push: value types with no mapping (reported, not stored).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unknown_value_types: Option<Vec<String>>,
    /// A device push: what was read as "nothing read" (see `POST /v1/ingest`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notes: Option<Vec<String>>,
}

/// Validates `delivery` without the database, appends it to the journal and answers 202 (or
/// 400/422 for a body rejected whole, which is journaled too, to be recorded in the ledger).
///
/// # Errors
/// 503 when the journal is full, its disk is, or the server has no journal.
pub async fn keep(
    state: &HttpState,
    delivery: Delivery,
    device: Option<&DevicePush>,
    received_at: DateTime<Utc>,
) -> Result<Response, ApiError> {
    let Some(journal) = state.journal.clone() else {
        return Err(ApiError::unavailable(
            "database_unavailable",
            "the database is unavailable and this server keeps no push journal; nothing was \
             stored",
            RETRY_AFTER_SECS,
        ));
    };
    let (bytes, line_shift) = match &delivery.source {
        ByteSource::Memory(bytes) => (bytes.clone(), None),
        ByteSource::Rendered { bytes, line_shift } => (bytes.clone(), Some(*line_shift)),
        ByteSource::File(_) | ByteSource::Taken { .. } | ByteSource::RenderedFile { .. } => {
            return Err(ApiError::unavailable(
                "database_unavailable",
                "the database is unavailable; bodies over 1 MiB are not kept in the push \
                 journal: nothing was stored, send it again later",
                RETRY_AFTER_SECS,
            ))
        }
    };
    let identity = match &delivery.key {
        Some(key) => format!("key:{key}"),
        None => format!("sha256:{}", hex::encode(Sha256::digest(&bytes))),
    };
    if let Some(receipt_id) = journal.waiting_receipt(&identity) {
        if let Ok(Some(answer)) = journal.waiting_answer(&receipt_id) {
            return Ok(respond(answer, &receipt_id));
        }
    }
    let checked = if bytes.len() <= INLINE_CHECK_BYTES {
        crate::validate::dry_run_source(&delivery.source, &delivery.name, &state.settings)
    } else {
        let settings = std::sync::Arc::clone(&state.settings);
        let (source, name) = (delivery.source.clone(), delivery.name.clone());
        tokio::task::spawn_blocking(move || {
            crate::validate::dry_run_source(&source, &name, &settings)
        })
        .await
        .map_err(|_| internal())?
    }
    .map_err(|error| {
        tracing::error!(message = "A push could not be read.", error = %crate::telemetry::chain(&error));
        internal()
    })?;
    let (status, error) = match &checked.file_rejection {
        None => (StatusCode::ACCEPTED, None),
        Some(rejection) => {
            let status = if rejection.code.nothing_loadable() {
                StatusCode::UNPROCESSABLE_ENTITY
            } else {
                StatusCode::BAD_REQUEST
            };
            let detail = ErrorDetail {
                code: rejection.code.as_str().to_owned(),
                message: rejection.message.clone(),
                parameter: None,
            };
            (status, Some(detail))
        }
    };
    let rows_rejected = if checked.file_rejection.is_some() {
        checked.rows_read
    } else {
        checked.rejects.len() as u64
    };
    let receipt = JournalReceipt {
        receipt_id: String::new(),
        status: "journaled".to_owned(),
        file_id: None,
        rows_read: checked.rows_read,
        rows_loaded: None,
        rows_rejected,
        rows_duplicate: None,
        rejects: reject_entries(&checked.rejects),
        rejects_truncated: checked.rejects.len() > RECEIPT_REJECTS,
        error,
        received_at: Some(received_at),
        device: device.map(|push| push.device.clone()),
        unknown_value_types: device.map(|push| push.unknown_value_types.iter().cloned().collect()),
        notes: device
            .filter(|push| !push.notes.is_empty())
            .map(|push| push.notes.clone()),
    };
    let meta = Meta {
        receipt_id: String::new(),
        received_at,
        name: delivery.name.clone(),
        client: match &delivery.origin {
            crate::delivery::Origin::Http(client) => client.clone(),
            other => other.to_string(),
        },
        key: delivery.key.clone(),
        line_shift,
        identity,
        device: device.map(|push| DeviceSensors {
            device: push.device.clone(),
            sensors: push.sensors.clone(),
        }),
        answer: Answer {
            status: status.as_u16(),
            body: serde_json::to_value(&receipt).map_err(|_| internal())?,
        },
    };
    let answer = meta.answer.clone();
    match journal.append(meta, Bytes::clone(&bytes)).await {
        Ok(receipt_id) => Ok(respond(answer, &receipt_id)),
        Err(JournalError::Full { bytes, limit }) => Err(ApiError::unavailable(
            "journal_full",
            format!(
                "the database is unavailable and the push journal is full ({bytes} of {limit} \
                 bytes); nothing was stored, send it again later"
            ),
            RETRY_AFTER_SECS,
        )),
        Err(error) => Err(ApiError::unavailable(
            "journal_unavailable",
            format!(
                "the push journal could not keep the body ({}); nothing was stored, send it \
                 again later",
                crate::telemetry::chain(&error)
            ),
            RETRY_AFTER_SECS,
        )),
    }
}

/// The stored answer with its receipt id and `Location`.
fn respond(mut answer: Answer, receipt_id: &str) -> Response {
    if let Some(body) = answer.body.as_object_mut() {
        body.insert("receipt_id".to_owned(), receipt_id.into());
    }
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::ACCEPTED);
    let mut response = (status, Json(answer.body)).into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/receipts/{receipt_id}")) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

fn reject_entries(rejects: &[RejectedRow]) -> Vec<RejectEntry> {
    rejects
        .iter()
        .flat_map(|row| {
            row.violations.iter().map(|violation| RejectEntry {
                line: row.position.line as i64,
                column: violation.column.clone(),
                value: violation.value.clone(),
                code: violation.reason.code().to_owned(),
                message: violation.message.clone(),
            })
        })
        .take(RECEIPT_REJECTS)
        .collect()
}

fn internal() -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal_error",
        "the body could not be processed; see the server log",
    )
}

/// What became of a push answered from the journal: `journaled` while it waits, then its final
/// outcome with its `file_id` and counts.
#[utoipa::path(
    get, path = "/v1/receipts/{receipt_id}", tag = "ingest",
    params(("receipt_id" = String, Path, description = "The receipt a 202 answer gave")),
    responses(
        (status = 200, description = "The receipt: journaled, or the final outcome", body = JournalReceipt),
        (status = 401, description = "A token is required", body = ErrorBody),
        (status = 403, description = "Not allowed", body = ErrorBody),
        (status = 404, description = "No such receipt", body = ErrorBody),
        (status = 503, description = "The database is unavailable and the receipt is not waiting here", body = ErrorBody),
    ),
    security((), ("token" = []))
)]
pub async fn receipt(
    State(state): State<HttpState>,
    _: Reader,
    Path(receipt_id): Path<String>,
) -> Result<Response, ApiError> {
    if let Some(journal) = &state.journal {
        match journal.waiting_answer(&receipt_id) {
            Ok(Some(mut answer)) => {
                // The drain marks a record loaded in the journal just after its commit: in
                // between, the database's answer is the newer one.
                if !journal.database_away() {
                    if let Ok(client) = state.pool.get().await {
                        if let Ok(Some(outcome)) = receipts::outcome(&client, &receipt_id).await {
                            return Ok(loaded(receipt_id, outcome));
                        }
                    }
                }
                // A receipt read back is an answer about the receipt: 200, whatever the push got.
                answer.status = StatusCode::OK.as_u16();
                return Ok(respond(answer, &receipt_id));
            }
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(message = "A journal record could not be read back.", error = %error);
            }
        }
    }
    let client = state
        .pool
        .get()
        .await
        .map_err(|e| ApiError::from_store(&crate::store::StoreError::from(e)))?;
    let Some(outcome) = receipts::outcome(&client, &receipt_id).await? else {
        return Err(ApiError::not_found(format!(
            "no receipt {receipt_id}: neither waiting in the push journal nor loaded"
        )));
    };
    Ok(loaded(receipt_id, outcome))
}

/// The receipt of a journaled push that was loaded, from the database's record of it.
fn loaded(receipt_id: String, outcome: receipts::Outcome) -> Response {
    let error = outcome.error.as_deref().map(|text| {
        let (code, message) = text.split_once(": ").unwrap_or(("rejected", text));
        ErrorDetail {
            code: code.to_owned(),
            message: message.to_owned(),
            parameter: None,
        }
    });
    let receipt = JournalReceipt {
        receipt_id,
        status: outcome.status,
        file_id: outcome.file_id,
        rows_read: outcome.rows.read,
        rows_loaded: Some(outcome.rows.loaded),
        rows_rejected: outcome.rows.rejected,
        rows_duplicate: Some(outcome.rows.duplicate),
        rejects: Vec::new(),
        rejects_truncated: false,
        error,
        received_at: None,
        device: None,
        unknown_value_types: None,
        notes: None,
    };
    Json(receipt).into_response()
}
