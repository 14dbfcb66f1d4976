//! The receipt of a committed push (`POST /v1/ingest`, the push API): what became of the
//! delivery, built from its report, with the status code its outcome calls for (200; 400 for a
//! body rejected whole as unparseable; 422 when nothing was loadable).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use crate::http::answers::{self, RejectEntry};
use crate::http::device::DevicePush;
use crate::http::error::{ApiError, ErrorDetail, RETRY_AFTER_SECS};
use crate::pipeline::{DeliveryReport, PipelineCtx};
use crate::store::ledger::{self, FileStatus};
use crate::store::query;
use crate::validate::rejection::{FileRejection, RejectionCode};

/// Rejects listed in a receipt; the rest are in the database and quarantine.
const RECEIPT_REJECTS: i64 = 100;

/// The JSON receipt, with the status code its outcome calls for; a rejected delivery (or a
/// duplicate of one) also carries `error`, as every error answer does.
pub async fn receipt(ctx: &PipelineCtx, report: &DeliveryReport) -> Result<Receipt, ApiError> {
    let connect = || async {
        ctx.store
            .pool()
            .get()
            .await
            .map_err(|_| unavailable_after_commit())
    };
    // A duplicate answers as its first delivery did; a new one as its own report says.
    let (outcome, rejection) = if report.status == FileStatus::Duplicate {
        let client = connect().await?;
        ledger::stored_outcome(&client, report.file_id)
            .await
            .map_err(|_| unavailable_after_commit())?
    } else {
        (report.status, report.rejection.clone())
    };
    // Every row rejected, those that conflict with stored readings included: nothing loadable.
    let conflicts_only = report.status == FileStatus::PartiallyLoaded
        && report.rows.loaded == 0
        && report.rows.duplicate == 0
        && report.rows.rejected == report.rows.read;
    let rejection = if conflicts_only {
        let conflicting = report
            .violation_counts
            .get("conflicting_reading")
            .copied()
            .unwrap_or(0);
        Some(FileRejection::new(
            RejectionCode::NoValidRows,
            format!(
                "all {} data rows were rejected ({conflicting} conflict with stored readings); \
                 nothing was stored",
                report.rows.read
            ),
        ))
    } else {
        rejection
    };
    let status = match (outcome, &rejection) {
        (FileStatus::Rejected, Some(r)) if r.code.nothing_loadable() => {
            StatusCode::UNPROCESSABLE_ENTITY
        }
        (FileStatus::Rejected, _) => StatusCode::BAD_REQUEST,
        _ if conflicts_only => StatusCode::UNPROCESSABLE_ENTITY,
        _ => StatusCode::OK,
    };
    let mut rejects: Vec<RejectEntry> = Vec::new();
    if report.status != FileStatus::Duplicate && report.rows.rejected > 0 {
        let client = connect().await?;
        rejects = query::rejects(&client, report.file_id, None, RECEIPT_REJECTS + 1)
            .await
            .map(answers::all)
            .map_err(|_| unavailable_after_commit())?;
    }
    let mut lines: Vec<i64> = rejects.iter().map(|r| r.line).collect();
    lines.dedup();
    let truncated = lines.len() as i64 > RECEIPT_REJECTS;
    if truncated {
        let beyond = lines.last().copied();
        rejects.retain(|r| Some(r.line) != beyond);
    }
    let error = (status != StatusCode::OK).then(|| match &rejection {
        Some(rejection) => ErrorDetail {
            code: rejection.code.as_str().to_owned(),
            message: rejection.message.clone(),
            parameter: None,
        },
        None => ErrorDetail {
            code: "rejected".to_owned(),
            message: "the delivery was rejected".to_owned(),
            parameter: None,
        },
    });
    Ok(Receipt {
        status,
        body: ReceiptBody {
            file_id: report.file_id,
            status: report.status.as_str().to_owned(),
            rows_read: report.rows.read,
            rows_loaded: report.rows.loaded,
            rows_rejected: report.rows.rejected,
            rows_duplicate: report.rows.duplicate,
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

impl ReceiptBody {
    /// Adds what a device's body said besides its readings: the device, its sensors, the
    /// value types left out, and what was read as "nothing read".
    pub fn describe_device(&mut self, push: DevicePush) {
        self.sensors = Some(
            push.sensors
                .into_iter()
                .map(|(sensor_id, sensor_type)| DeviceSensor {
                    sensor_id,
                    sensor_type,
                })
                .collect(),
        );
        self.device = Some(push.device);
        self.unknown_value_types = Some(push.unknown_value_types.into_iter().collect());
        self.ignored_value_types = Some(push.ignored_value_types.into_iter().collect());
        self.notes = (!push.notes.is_empty()).then_some(push.notes);
    }
}

/// A receipt and its status code.
pub struct Receipt {
    /// The status code.
    pub status: StatusCode,
    /// The JSON body.
    pub body: ReceiptBody,
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
