//! The ledger over HTTP: `/v1/files`, `/v1/files/{id}` (with its arrivals and aggregates),
//! `/v1/files/{id}/rejects`, and `/v1/summary` (the pipeline at a glance, what the dashboard
//! shows).

use axum::extract::{Path, State};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::page_url;
use crate::http::access::Reader;
use crate::http::answers::{
    self, DeliveryEntry, FileAggregate, FileEntry, ReasonCount, RecentProblem, RejectEntry,
    StatusCount, Throughput,
};
use crate::http::error::ApiError;
use crate::http::error::ErrorBody;
use crate::http::extract::{Db, Params};
use crate::http::params::{self, optional};
use crate::http::HttpState;
use crate::store::query;
use crate::store::status;

/// Rejects per page by default, and at most.
const REJECTS_PAGE: i64 = 1_000;
const REJECTS_PAGE_MAX: i64 = 100_000;
/// Files listed by default, and at most.
const FILES_PAGE: i64 = 50;
const FILES_PAGE_MAX: i64 = 10_000;

/// Filters of `GET /v1/files`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FilesParams {
    /// Only files of this status: `loaded`, `partially_loaded`, `rejected`, `empty`.
    #[param(value_type = Option<String>, pattern = "^(loaded|partially_loaded|rejected|empty)$")]
    status: Option<String>,
    /// How many, newest first (default 50, at most 10000).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 10000)]
    limit: Option<String>,
}

/// The latest deliveries (files and request bodies), newest first.
#[utoipa::path(
    get, path = "/v1/files", tag = "read", params(FilesParams),
    responses(
        (status = 200, description = "Deliveries, newest first", body = Vec<FileEntry>),
        (status = 400, description = "A bad parameter", body = ErrorBody),
        (status = 401, description = "A token is required", body = ErrorBody),
        (status = 403, description = "Not allowed", body = ErrorBody),
        (status = 503, description = "The database is unavailable", body = ErrorBody),
    ),
    security((), ("token" = []))
)]
pub(super) async fn files(
    State(_state): State<HttpState>,
    _: Reader,
    Params(params): Params<FilesParams>,
    Db(client): Db,
) -> Result<Json<Vec<FileEntry>>, ApiError> {
    let status = optional(params.status.as_deref());
    if let Some(status) = status {
        if !["loaded", "partially_loaded", "rejected", "empty"].contains(&status) {
            return Err(ApiError::bad_parameter(
                "status",
                "`status` is loaded, partially_loaded, rejected or empty",
            ));
        }
    }
    let limit = params::limit(params.limit.as_deref(), FILES_PAGE, FILES_PAGE_MAX)?;
    let found = query::files(&client, status, limit).await?;
    Ok(Json(answers::all(found)))
}

/// A delivery, its arrivals and its aggregates.
#[derive(Debug, Serialize, ToSchema)]
pub struct FileDetail {
    /// The ledger row.
    pub file: FileEntry,
    /// The first arrival and every duplicate.
    pub deliveries: Vec<DeliveryEntry>,
    /// Per sensor type, then per sensor.
    pub aggregates: Vec<FileAggregate>,
}

fn file_id(text: &str) -> Result<i64, ApiError> {
    params::integer("file_id", text)
}

async fn known_file(client: &deadpool_postgres::Client, id: i64) -> Result<FileEntry, ApiError> {
    query::file(client, id)
        .await?
        .map(FileEntry::from)
        .ok_or_else(|| ApiError::not_found(format!("no file {id}")))
}

/// One delivery: its ledger row, arrivals and aggregates.
#[utoipa::path(
    get, path = "/v1/files/{file_id}", tag = "read",
    params(("file_id" = i64, Path, description = "The delivery's id")),
    responses(
        (status = 200, description = "The delivery", body = FileDetail),
        (status = 400, description = "A bad file id", body = ErrorBody),
        (status = 401, description = "A token is required", body = ErrorBody),
        (status = 403, description = "Not allowed", body = ErrorBody),
        (status = 404, description = "Unknown file", body = ErrorBody),
        (status = 503, description = "The database is unavailable", body = ErrorBody),
    ),
    security((), ("token" = []))
)]
pub(super) async fn file(
    _: Reader,
    Path(id): Path<String>,
    Db(client): Db,
) -> Result<Json<FileDetail>, ApiError> {
    let id = file_id(&id)?;
    let file = known_file(&client, id).await?;
    let deliveries = answers::all(query::file_deliveries(&client, id).await?);
    let aggregates = answers::all(query::file_aggregates(&client, id).await?);
    Ok(Json(FileDetail {
        file,
        deliveries,
        aggregates,
    }))
}

/// Paging of `GET /v1/files/{file_id}/rejects`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RejectsParams {
    /// Rejected rows per page, each with all its violations, 1 to 100000 (default 1000).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 100000)]
    limit: Option<String>,
    /// Only rejects after this line (from the previous page's `next`).
    #[param(value_type = Option<i64>)]
    after: Option<String>,
}

/// A page of a delivery's rejects.
#[derive(Debug, Serialize, ToSchema)]
pub struct RejectsPage {
    /// By line.
    pub rejects: Vec<RejectEntry>,
    /// The URL of the next page, or null on the last page.
    pub next: Option<String>,
}

/// The rows of a delivery that were rejected, each with its line and reason.
#[utoipa::path(
    get, path = "/v1/files/{file_id}/rejects", tag = "read",
    params(("file_id" = i64, Path, description = "The delivery's id"), RejectsParams),
    responses(
        (status = 200, description = "A page of rejects", body = RejectsPage),
        (status = 400, description = "A bad parameter", body = ErrorBody),
        (status = 401, description = "A token is required", body = ErrorBody),
        (status = 403, description = "Not allowed", body = ErrorBody),
        (status = 404, description = "Unknown file", body = ErrorBody),
        (status = 503, description = "The database is unavailable", body = ErrorBody),
    ),
    security((), ("token" = []))
)]
pub(super) async fn file_rejects(
    _: Reader,
    Path(id): Path<String>,
    Params(params): Params<RejectsParams>,
    Db(client): Db,
) -> Result<Json<RejectsPage>, ApiError> {
    let id = file_id(&id)?;
    let limit = params::limit(params.limit.as_deref(), REJECTS_PAGE, REJECTS_PAGE_MAX)?;
    let after = optional(params.after.as_deref())
        .map(|text| params::integer("after", text))
        .transpose()?;
    known_file(&client, id).await?;
    let mut rejects: Vec<RejectEntry> =
        answers::all(query::rejects(&client, id, after, limit + 1).await?);
    let more = lines_in(&rejects) as i64 > limit;
    if more {
        let beyond = rejects.last().map(|r| r.line);
        rejects.retain(|r| Some(r.line) != beyond);
    }
    let next = match (more, rejects.last()) {
        (true, Some(last)) => Some(page_url(
            &format!("/v1/files/{id}/rejects"),
            &[
                ("limit", limit.to_string()),
                ("after", last.line.to_string()),
            ],
        )),
        _ => None,
    };
    Ok(Json(RejectsPage { rejects, next }))
}

/// Rejected lines among `rejects` (a line with several violations counts once).
fn lines_in(rejects: &[RejectEntry]) -> usize {
    let mut lines: Vec<i64> = rejects.iter().map(|r| r.line).collect();
    lines.dedup();
    lines.len()
}

/// Whether the database answers.
#[derive(Debug, Serialize, ToSchema)]
pub struct DatabaseState {
    /// Whether the database answered.
    pub up: bool,
    /// Why not, when it is down.
    pub message: Option<String>,
}

/// The pipeline at a glance.
#[derive(Debug, Serialize, ToSchema)]
pub struct Summary {
    /// Whether the database answers.
    pub database: DatabaseState,
    /// Files (deliveries) per status with their rows.
    pub files_by_status: Vec<StatusCount>,
    /// Re-deliveries of content already stored.
    pub duplicate_deliveries: i64,
    /// Readings stored.
    pub reading_count: i64,
    /// Files waiting in the inbox folder.
    pub files_waiting: i64,
    /// Rejected rows per reason.
    pub rejects_by_reason: Vec<ReasonCount>,
    /// What was loaded lately.
    pub throughput: Throughput,
    /// Latest deliveries with rejected rows or rejected whole.
    pub recent_problems: Vec<RecentProblem>,
    /// The push journal: bodies waiting to be loaded (none when this server keeps no journal).
    pub journal: Option<answers::JournalDepth>,
    /// When this was read.
    pub at: DateTime<Utc>,
}

/// Files by status, rows loaded and rejected, files waiting, the database up or down,
/// rejects by reason, throughput: what the dashboard shows. Answers 200 with
/// `database.up = false` while the database is down.
#[utoipa::path(
    get, path = "/v1/summary", tag = "read",
    responses(
        (status = 200, description = "The pipeline at a glance", body = Summary),
        (status = 401, description = "A token is required", body = ErrorBody),
        (status = 403, description = "Not allowed", body = ErrorBody),
    ),
    security((), ("token" = []))
)]
pub(super) async fn summary(
    State(state): State<HttpState>,
    _: Reader,
) -> Result<Json<Summary>, ApiError> {
    let inbox = state.settings.data_dir.clone();
    let files_waiting =
        tokio::task::spawn_blocking(move || crate::sources::inbox::inbox_inputs(&inbox))
            .await
            .map_or(0, |found| found.len() as i64);
    let read = async {
        let client = state.pool.get().await?;
        let ledger = status::summary(&client, 10).await?;
        let reasons = query::rejects_by_reason(&client).await?;
        let throughput = query::throughput(&client).await?;
        Ok::<_, crate::store::StoreError>((ledger, reasons, throughput))
    };
    let mut summary = Summary {
        database: DatabaseState {
            up: true,
            message: None,
        },
        files_by_status: Vec::new(),
        duplicate_deliveries: 0,
        reading_count: 0,
        files_waiting,
        rejects_by_reason: Vec::new(),
        throughput: Throughput::default(),
        recent_problems: Vec::new(),
        journal: state.journal.as_ref().map(|journal| journal.stats().into()),
        at: Utc::now(),
    };
    match tokio::time::timeout(std::time::Duration::from_secs(3), read).await {
        Ok(Ok((ledger, reasons, throughput))) => {
            summary.files_by_status = answers::all(ledger.by_status);
            summary.duplicate_deliveries = ledger.duplicate_deliveries;
            summary.reading_count = ledger.reading_count;
            summary.recent_problems = answers::all(ledger.recent_problems);
            summary.rejects_by_reason = answers::all(reasons);
            summary.throughput = throughput.into();
        }
        Ok(Err(error)) => {
            summary.database = DatabaseState {
                up: false,
                message: Some(crate::telemetry::chain(&error)),
            };
        }
        Err(_) => {
            summary.database = DatabaseState {
                up: false,
                message: Some("the database did not answer within 3 s".to_owned()),
            };
        }
    }
    Ok(Json(summary))
}
