//! The read API: sensors, latest values, a sensor's readings page by page (JSON, CSV or
//! NDJSON), windowed statistics with a trailing mean, the ledger of deliveries with their
//! aggregates and rejects, and the pipeline at a glance (`/v1/summary`, what the dashboard
//! shows). Every endpoint needs the `read` scope (SPEC §10 access rules) and answers from the
//! public views through `store::query`.
//!
//! Errors: a bad parameter is 400 naming it, an unknown sensor or file 404, a database outage
//! 503 with `Retry-After`; bad input never gets a 5xx. Each handler is documented for
//! `/openapi.json` by its own types (`utoipa`), and registered with its document in one step
//! (`routes!`), so what is served and what is documented cannot part.

use std::net::SocketAddr;

use axum::extract::rejection::QueryRejection;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::prelude::{Engine, BASE64_URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::config::{Scope, Settings};
use crate::http::access::authorize;
use crate::http::error::{ApiError, ErrorBody};
use crate::http::params::{self, optional, required};
use crate::http::HttpState;
use crate::store::ledger::{self, RecentProblem, StatusCount};
use crate::store::query::{
    self, Bucket, DeliveryEntry, FileAggregate, FileEntry, LatestValue, Reading, ReadingCursor,
    ReasonCount, RejectEntry, SensorInfo, SeriesQuery, SeriesScope, Throughput,
};

/// Readings per page by default, and at most.
const READINGS_PAGE: i64 = 10_000;
const READINGS_PAGE_MAX: i64 = 100_000;
/// Rejects per page by default, and at most.
const REJECTS_PAGE: i64 = 1_000;
const REJECTS_PAGE_MAX: i64 = 100_000;
/// Files listed by default, and at most.
const FILES_PAGE: i64 = 50;
const FILES_PAGE_MAX: i64 = 10_000;
/// Buckets one series may have.
const MAX_BUCKETS: i64 = 10_000;
/// The smallest bucket.
const MIN_BUCKET_SECS: i64 = 60;

/// The read routes, each with its OpenAPI operation.
pub fn routes() -> OpenApiRouter<HttpState> {
    OpenApiRouter::new()
        .routes(routes!(sensors))
        .routes(routes!(latest))
        .routes(routes!(readings))
        .routes(routes!(series))
        .routes(routes!(files))
        .routes(routes!(file))
        .routes(routes!(file_rejects))
        .routes(routes!(summary))
}

/// What every read handler starts with: the caller's right to read, the query string, and a
/// connection.
struct Read<T> {
    params: T,
    client: deadpool_postgres::Object,
}

async fn begin<T>(
    state: &HttpState,
    headers: &HeaderMap,
    peer: SocketAddr,
    query: Result<Query<T>, QueryRejection>,
) -> Result<Read<T>, ApiError> {
    authorize(&state.settings.http, headers, peer, Scope::Read)?;
    let Query(params) = query.map_err(|rejection| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            format!("the query string cannot be read: {}", rejection.body_text()),
        )
    })?;
    let client = state
        .pool
        .get()
        .await
        .map_err(|e| ApiError::from_store(&e.into()))?;
    Ok(Read { params, client })
}

/// A JSON answer written into one buffer sized for it up front (a list of 3,000 latest values
/// is 400 kB: grown step by step, the copies showed in the profile).
fn to_json<T: Serialize>(value: &T, size_hint: usize) -> Result<Vec<u8>, ApiError> {
    let mut body = Vec::with_capacity(size_hint.max(256));
    serde_json::to_writer(&mut body, value).map_err(internal)?;
    Ok(body)
}

fn json_body<T: Serialize>(value: &T, size_hint: usize) -> Result<Response, ApiError> {
    Ok(json_response(to_json(value, size_hint)?.into()))
}

fn json_response(body: bytes::Bytes) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn store_error(error: crate::store::StoreError) -> ApiError {
    ApiError::from_store(&error)
}

/// The canonical sensor type named by `sensor_type`, or 400: from the configured catalogue,
/// else from the database (types of data loaded under an older configuration).
async fn known_sensor_type(
    settings: &Settings,
    client: &deadpool_postgres::Client,
    asked: Option<&str>,
) -> Result<Option<String>, ApiError> {
    let Some(asked) = optional(asked) else {
        return Ok(None);
    };
    if let Some(known) = settings
        .sensor_types
        .iter()
        .find(|t| t.name.eq_ignore_ascii_case(asked))
    {
        return Ok(Some(known.name.clone()));
    }
    match query::sensor_type(client, asked)
        .await
        .map_err(store_error)?
    {
        Some(name) => Ok(Some(name)),
        None => Err(ApiError::bad_parameter(
            "sensor_type",
            format!("no sensor type `{asked}` is configured"),
        )),
    }
}

/// The type of the sensor named by `sensor_id`, or 400 (not a number) or 404 (unknown).
async fn known_sensor(
    client: &deadpool_postgres::Client,
    text: &str,
) -> Result<(i64, String), ApiError> {
    let sensor_id = params::integer("sensor_id", text)?;
    match query::type_of_sensor(client, sensor_id)
        .await
        .map_err(store_error)?
    {
        Some(sensor_type) => Ok((sensor_id, sensor_type)),
        None => Err(ApiError::not_found(format!("no sensor {sensor_id}"))),
    }
}

/// `measurement` when some sensor type (of `sensor_type`, if given) has it, or 400: from the
/// configured catalogue, else from the database.
async fn known_measurement(
    settings: &Settings,
    client: &deadpool_postgres::Client,
    name: &str,
    sensor_type: Option<&str>,
) -> Result<(), ApiError> {
    let configured = settings
        .catalogue
        .iter()
        .any(|m| m.name == name && sensor_type.is_none_or(|t| m.sensor_type == t));
    if configured {
        return Ok(());
    }
    if query::measurement_exists(client, name, sensor_type)
        .await
        .map_err(store_error)?
    {
        return Ok(());
    }
    Err(ApiError::bad_parameter(
        "measurement",
        match sensor_type {
            Some(sensor_type) => format!("a {sensor_type} sensor has no measurement `{name}`"),
            None => format!("no sensor type has a measurement `{name}`"),
        },
    ))
}

/// Filters of `GET /v1/sensors`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SensorsParams {
    /// Only sensors of this type (e.g. `SDS011`; any case).
    sensor_type: Option<String>,
    /// Only sensors last measured at this location.
    #[param(value_type = Option<i64>)]
    location_id: Option<String>,
}

/// Every sensor, with its type, last position, measurements and the span of its readings.
#[utoipa::path(
    get, path = "/v1/sensors", tag = "read", params(SensorsParams),
    responses(
        (status = 200, description = "Sensors by id", body = Vec<SensorInfo>),
        (status = 400, description = "A bad parameter", body = ErrorBody),
        (status = 401, description = "A token is required", body = ErrorBody),
        (status = 403, description = "Not allowed", body = ErrorBody),
        (status = 503, description = "The database is unavailable", body = ErrorBody),
    ),
    security((), ("token" = []))
)]
async fn sensors(
    State(state): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    uri: Uri,
    query: Result<Query<SensorsParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Read { params, mut client } = begin(&state, &headers, peer, query).await?;
    let sensor_type =
        known_sensor_type(&state.settings, &client, params.sensor_type.as_deref()).await?;
    let location_id = optional(params.location_id.as_deref())
        .map(|text| params::integer("location_id", text))
        .transpose()?;
    let body = state
        .answers
        .answer(&mut client, &uri.to_string(), async |tx| {
            let found = query::sensors(tx, sensor_type.as_deref(), location_id).await?;
            to_json(&found, found.len() * 260)
        })
        .await?;
    Ok(json_response(body))
}

/// Filters of `GET /v1/latest`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LatestParams {
    /// Only this sensor (404 if unknown).
    #[param(value_type = Option<i64>)]
    sensor_id: Option<String>,
    /// Only sensors of this type.
    sensor_type: Option<String>,
    /// Only this measurement (e.g. `pm10`, `temperature`).
    measurement: Option<String>,
}

/// The latest reading of each (sensor, measurement).
#[utoipa::path(
    get, path = "/v1/latest", tag = "read", params(LatestParams),
    responses(
        (status = 200, description = "Latest values by sensor and measurement", body = Vec<LatestValue>),
        (status = 400, description = "A bad parameter", body = ErrorBody),
        (status = 401, description = "A token is required", body = ErrorBody),
        (status = 403, description = "Not allowed", body = ErrorBody),
        (status = 404, description = "Unknown sensor", body = ErrorBody),
        (status = 503, description = "The database is unavailable", body = ErrorBody),
    ),
    security((), ("token" = []))
)]
async fn latest(
    State(state): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    uri: Uri,
    query: Result<Query<LatestParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Read { params, mut client } = begin(&state, &headers, peer, query).await?;
    let sensor_type =
        known_sensor_type(&state.settings, &client, params.sensor_type.as_deref()).await?;
    let sensor_id = match optional(params.sensor_id.as_deref()) {
        Some(text) => Some(known_sensor(&client, text).await?.0),
        None => None,
    };
    let measurement = optional(params.measurement.as_deref());
    if let Some(name) = measurement {
        known_measurement(&state.settings, &client, name, sensor_type.as_deref()).await?;
    }
    let body = state
        .answers
        .answer(&mut client, &uri.to_string(), async |tx| {
            let found = query::latest(tx, sensor_id, sensor_type.as_deref(), measurement).await?;
            to_json(&found, found.len() * 200)
        })
        .await?;
    Ok(json_response(body))
}

/// How rows are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RowFormat {
    Json,
    Csv,
    Ndjson,
}

fn row_format(text: Option<&str>) -> Result<RowFormat, ApiError> {
    match optional(text) {
        None | Some("json") => Ok(RowFormat::Json),
        Some("csv") => Ok(RowFormat::Csv),
        Some("ndjson") => Ok(RowFormat::Ndjson),
        Some(_) => Err(ApiError::bad_parameter(
            "format",
            "`format` is json (default), csv or ndjson",
        )),
    }
}

/// Parameters of `GET /v1/readings`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReadingsParams {
    /// The sensor (404 if unknown).
    #[param(required = true, value_type = i64)]
    sensor_id: Option<String>,
    /// One of the sensor's measurements.
    #[param(required = true, value_type = String)]
    measurement: Option<String>,
    /// Start of the range (inclusive), RFC 3339.
    #[param(required = true, value_type = DateTime<Utc>)]
    start: Option<String>,
    /// End of the range (exclusive), RFC 3339.
    #[param(required = true, value_type = DateTime<Utc>)]
    end: Option<String>,
    /// Readings per page, 1 to 100000 (default 10000).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 100000)]
    limit: Option<String>,
    /// The cursor of the previous page (from its `next`).
    after: Option<String>,
    /// `json` (default), `csv` or `ndjson`; the next page of the last two is in the `Link`
    /// header.
    #[param(value_type = Option<String>, pattern = "^(json|csv|ndjson)$")]
    format: Option<String>,
}

/// A page of readings and the address of the next one.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReadingsPage {
    /// In time order (then by file and line).
    pub readings: Vec<Reading>,
    /// The URL of the next page, or null on the last page.
    pub next: Option<String>,
}

fn encode_cursor(cursor: ReadingCursor) -> String {
    BASE64_URL_SAFE_NO_PAD.encode(format!(
        "{}:{}:{}",
        cursor.ts.timestamp_micros(),
        cursor.file_id,
        cursor.line
    ))
}

fn decode_cursor(text: &str) -> Result<ReadingCursor, ApiError> {
    let wrong = || {
        ApiError::bad_parameter(
            "after",
            "`after` is the cursor a previous page gave in `next`",
        )
    };
    let bytes = BASE64_URL_SAFE_NO_PAD.decode(text).map_err(|_| wrong())?;
    let text = String::from_utf8(bytes).map_err(|_| wrong())?;
    let mut parts = text.split(':');
    let (Some(micros), Some(file_id), Some(line), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(wrong());
    };
    Ok(ReadingCursor {
        ts: micros
            .parse()
            .ok()
            .and_then(DateTime::<Utc>::from_timestamp_micros)
            .ok_or_else(wrong)?,
        file_id: file_id.parse().map_err(|_| wrong())?,
        line: line.parse().map_err(|_| wrong())?,
    })
}

/// A sensor's readings of one measurement in `[start, end)`, in time order, page by page.
#[utoipa::path(
    get, path = "/v1/readings", tag = "read", params(ReadingsParams),
    responses(
        (status = 200, description = "A page of readings", content(
            (ReadingsPage = "application/json"),
            (String = "text/csv"),
            (String = "application/x-ndjson"),
        )),
        (status = 400, description = "A bad parameter", body = ErrorBody),
        (status = 401, description = "A token is required", body = ErrorBody),
        (status = 403, description = "Not allowed", body = ErrorBody),
        (status = 404, description = "Unknown sensor", body = ErrorBody),
        (status = 503, description = "The database is unavailable", body = ErrorBody),
    ),
    security((), ("token" = []))
)]
async fn readings(
    State(state): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    query: Result<Query<ReadingsParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Read { params, client } = begin(&state, &headers, peer, query).await?;
    let format = row_format(params.format.as_deref())?;
    let (sensor_id, sensor_type) =
        known_sensor(&client, required("sensor_id", params.sensor_id.as_deref())?).await?;
    let measurement = required("measurement", params.measurement.as_deref())?;
    let (start, end) = params::range(params.start.as_deref(), params.end.as_deref())?;
    let limit = params::limit(params.limit.as_deref(), READINGS_PAGE, READINGS_PAGE_MAX)?;
    let after = optional(params.after.as_deref())
        .map(decode_cursor)
        .transpose()?;
    known_measurement(&state.settings, &client, measurement, Some(&sensor_type)).await?;
    let mut page = query::readings(
        &client,
        (sensor_id, &sensor_type),
        measurement,
        (start, end),
        after,
        limit + 1,
    )
    .await
    .map_err(store_error)?;
    let more = page.len() as i64 > limit;
    page.truncate(limit as usize);
    let next = match (more, page.last()) {
        (true, Some(last)) => Some(page_url(
            "/v1/readings",
            &[
                ("sensor_id", sensor_id.to_string()),
                ("measurement", measurement.to_owned()),
                ("start", start.to_rfc3339()),
                ("end", end.to_rfc3339()),
                ("limit", limit.to_string()),
                ("after", encode_cursor(last.cursor())),
            ]
            .into_iter()
            .chain(
                (format != RowFormat::Json)
                    .then(|| ("format", params.format.clone().unwrap_or_default())),
            )
            .collect::<Vec<_>>(),
        )),
        _ => None,
    };
    Ok(match format {
        RowFormat::Json => {
            let size = page.len() * 160;
            json_body(
                &ReadingsPage {
                    readings: page,
                    next,
                },
                size,
            )?
        }
        RowFormat::Csv => rows_response("text/csv; charset=utf-8", readings_csv(&page)?, next),
        RowFormat::Ndjson => {
            let mut body = Vec::new();
            for reading in &page {
                serde_json::to_writer(&mut body, reading).map_err(internal)?;
                body.push(b'\n');
            }
            rows_response("application/x-ndjson", body, next)
        }
    })
}

fn readings_csv(page: &[Reading]) -> Result<Vec<u8>, ApiError> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer
        .write_record([
            "ts",
            "value",
            "unit",
            "location_id",
            "lat",
            "lon",
            "file_id",
            "line",
        ])
        .map_err(internal)?;
    let text = |value: Option<String>| value.unwrap_or_default();
    for r in page {
        writer
            .write_record([
                r.ts.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
                r.value.to_string(),
                r.unit.clone(),
                text(r.location_id.map(|v| v.to_string())),
                text(r.lat.map(|v| v.to_string())),
                text(r.lon.map(|v| v.to_string())),
                r.file_id.to_string(),
                r.line.to_string(),
            ])
            .map_err(internal)?;
    }
    writer.into_inner().map_err(|e| internal(e.into_error()))
}

/// A CSV or NDJSON page; the next page's URL is in `Link: <…>; rel="next"`.
fn rows_response(content_type: &'static str, body: Vec<u8>, next: Option<String>) -> Response {
    let mut response = ([(header::CONTENT_TYPE, content_type)], body).into_response();
    if let Some(link) =
        next.and_then(|next| HeaderValue::from_str(&format!("<{next}>; rel=\"next\"")).ok())
    {
        response.headers_mut().insert(header::LINK, link);
    }
    response
}

fn internal(error: impl std::fmt::Display) -> ApiError {
    tracing::error!(message = "An answer could not be written.", error = %error);
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "the answer could not be written; the server log says why",
    )
}

/// `path?k=v&…`, every value percent-encoded.
fn page_url(path: &str, pairs: &[(&str, String)]) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (key, value) in pairs {
        query.append_pair(key, value);
    }
    format!("{path}?{}", query.finish())
}

/// Parameters of `GET /v1/series`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SeriesParams {
    /// The measurement (e.g. `temperature`).
    #[param(required = true, value_type = String)]
    measurement: Option<String>,
    /// Start of the range (inclusive), RFC 3339.
    #[param(required = true, value_type = DateTime<Utc>)]
    start: Option<String>,
    /// End of the range (exclusive), RFC 3339.
    #[param(required = true, value_type = DateTime<Utc>)]
    end: Option<String>,
    /// Bucket length, at least 1m: `1m`, `5m`, `15m`, `1h`, `6h`, `1d`, … Buckets are
    /// aligned to the UTC epoch.
    #[param(required = true, value_type = String, example = "1h", pattern = "^[0-9]+(s|m|min|h|d)$")]
    bucket: Option<String>,
    /// One sensor (at most one of sensor_id, sensor_type, location_id).
    #[param(value_type = Option<i64>)]
    sensor_id: Option<String>,
    /// Every sensor of one type.
    sensor_type: Option<String>,
    /// Every sensor at one location.
    #[param(value_type = Option<i64>)]
    location_id: Option<String>,
    /// Trailing window of `rolling_mean`, a whole number of buckets (e.g. `6h`).
    #[param(value_type = Option<String>, example = "6h", pattern = "^[0-9]+(s|m|min|h|d)$")]
    rolling: Option<String>,
}

/// The buckets of a series.
#[derive(Debug, Serialize, ToSchema)]
pub struct Series {
    /// Buckets holding at least one reading of the range, in time order.
    pub buckets: Vec<Bucket>,
}

/// Windowed statistics in data time: per bucket n, min, max, mean, sample stddev and,
/// with `rolling`, the mean over the trailing window ending at the bucket's end.
#[utoipa::path(
    get, path = "/v1/series", tag = "read", params(SeriesParams),
    responses(
        (status = 200, description = "The buckets", body = Series),
        (status = 400, description = "A bad parameter, or more than 10000 buckets", body = ErrorBody),
        (status = 401, description = "A token is required", body = ErrorBody),
        (status = 403, description = "Not allowed", body = ErrorBody),
        (status = 404, description = "Unknown sensor", body = ErrorBody),
        (status = 503, description = "The database is unavailable", body = ErrorBody),
    ),
    security((), ("token" = []))
)]
async fn series(
    State(state): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    uri: Uri,
    query: Result<Query<SeriesParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Read { params, mut client } = begin(&state, &headers, peer, query).await?;
    let measurement = required("measurement", params.measurement.as_deref())?;
    let (start, end) = params::range(params.start.as_deref(), params.end.as_deref())?;
    let bucket_secs =
        params::duration_secs("bucket", required("bucket", params.bucket.as_deref())?)?;
    if bucket_secs < MIN_BUCKET_SECS {
        return Err(ApiError::bad_parameter("bucket", "`bucket` is at least 1m"));
    }
    let buckets = query::bucket_count(start, end, bucket_secs);
    if buckets > MAX_BUCKETS {
        return Err(ApiError::bad_parameter(
            "bucket",
            format!(
                "{buckets} buckets asked for, at most {MAX_BUCKETS}: use a larger bucket (e.g. \
                 {}) or a shorter range",
                suggest_bucket(end - start)
            ),
        ));
    }
    let rolling_secs = optional(params.rolling.as_deref())
        .map(|text| params::duration_secs("rolling", text))
        .transpose()?;
    if let Some(rolling) = rolling_secs {
        if rolling % bucket_secs != 0 || rolling / bucket_secs > MAX_BUCKETS {
            return Err(ApiError::bad_parameter(
                "rolling",
                format!(
                    "`rolling` is a whole number of buckets (of {bucket_secs} s), at most \
                     {MAX_BUCKETS}"
                ),
            ));
        }
    }
    let (scope, type_of_scope) = series_scope(&state.settings, &client, &params).await?;
    known_measurement(
        &state.settings,
        &client,
        measurement,
        type_of_scope.as_deref(),
    )
    .await?;
    let asked = SeriesQuery {
        measurement: measurement.to_owned(),
        start,
        end,
        bucket_secs,
        rolling_secs,
        scope,
    };
    let body = state
        .answers
        .answer(&mut client, &uri.to_string(), async |tx| {
            let buckets = query::series(tx, &asked).await?;
            let size = buckets.len() * 200;
            to_json(&Series { buckets }, size)
        })
        .await?;
    Ok(json_response(body))
}

/// The sensors a series covers; at most one of the three scopes.
async fn series_scope(
    settings: &Settings,
    client: &deadpool_postgres::Client,
    params: &SeriesParams,
) -> Result<(SeriesScope, Option<String>), ApiError> {
    let sensor_id = optional(params.sensor_id.as_deref());
    let sensor_type = optional(params.sensor_type.as_deref());
    let location_id = optional(params.location_id.as_deref());
    let given = [
        ("sensor_id", sensor_id),
        ("sensor_type", sensor_type),
        ("location_id", location_id),
    ];
    if let Some((second, _)) = given.iter().filter(|(_, v)| v.is_some()).nth(1) {
        return Err(ApiError::bad_parameter(
            second,
            "give at most one of sensor_id, sensor_type and location_id",
        ));
    }
    if let Some(text) = sensor_id {
        let (id, sensor_type) = known_sensor(client, text).await?;
        return Ok((SeriesScope::Sensor(id), Some(sensor_type)));
    }
    if let Some(name) = known_sensor_type(settings, client, sensor_type).await? {
        return Ok((SeriesScope::SensorType(name.clone()), Some(name)));
    }
    if let Some(text) = location_id {
        let id = params::integer("location_id", text)?;
        return Ok((SeriesScope::Location(id), None));
    }
    Ok((SeriesScope::All, None))
}

/// The smallest of the usual buckets giving at most `MAX_BUCKETS` over `span`.
fn suggest_bucket(span: chrono::Duration) -> &'static str {
    let secs = span.num_seconds().max(1);
    [
        ("1m", 60),
        ("5m", 300),
        ("15m", 900),
        ("1h", 3600),
        ("6h", 21_600),
        ("1d", 86_400),
    ]
    .into_iter()
    .find(|(_, bucket)| secs / bucket < MAX_BUCKETS)
    .map_or("7d", |(name, _)| name)
}

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
async fn files(
    State(state): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    query: Result<Query<FilesParams>, QueryRejection>,
) -> Result<Json<Vec<FileEntry>>, ApiError> {
    let Read { params, client } = begin(&state, &headers, peer, query).await?;
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
    let found = query::files(&client, status, limit)
        .await
        .map_err(store_error)?;
    Ok(Json(found))
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
        .await
        .map_err(store_error)?
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
async fn file(
    State(state): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<FileDetail>, ApiError> {
    let Read { client, .. } = begin::<()>(&state, &headers, peer, Ok(Query(()))).await?;
    let id = file_id(&id)?;
    let file = known_file(&client, id).await?;
    let deliveries = query::file_deliveries(&client, id)
        .await
        .map_err(store_error)?;
    let aggregates = query::file_aggregates(&client, id)
        .await
        .map_err(store_error)?;
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
    /// Rejects per page, 1 to 100000 (default 1000).
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
async fn file_rejects(
    State(state): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
    query: Result<Query<RejectsParams>, QueryRejection>,
) -> Result<Json<RejectsPage>, ApiError> {
    let Read { params, client } = begin(&state, &headers, peer, query).await?;
    let id = file_id(&id)?;
    let limit = params::limit(params.limit.as_deref(), REJECTS_PAGE, REJECTS_PAGE_MAX)?;
    let after = optional(params.after.as_deref())
        .map(|text| params::integer("after", text))
        .transpose()?;
    known_file(&client, id).await?;
    let mut rejects = query::rejects(&client, id, after, limit + 1)
        .await
        .map_err(store_error)?;
    let more = rejects.len() as i64 > limit;
    rejects.truncate(limit as usize);
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
async fn summary(
    State(state): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Json<Summary>, ApiError> {
    authorize(&state.settings.http, &headers, peer, Scope::Read)?;
    let inbox = state.settings.data_dir.clone();
    let files_waiting = tokio::task::spawn_blocking(move || crate::ingest::inbox_inputs(&inbox))
        .await
        .map_or(0, |found| found.len() as i64);
    let read = async {
        let client = state.pool.get().await?;
        let ledger = ledger::summary(&client, 10).await?;
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
        at: Utc::now(),
    };
    match tokio::time::timeout(std::time::Duration::from_secs(3), read).await {
        Ok(Ok((ledger, reasons, throughput))) => {
            summary.files_by_status = ledger.by_status;
            summary.duplicate_deliveries = ledger.duplicate_deliveries;
            summary.reading_count = ledger.reading_count;
            summary.recent_problems = ledger.recent_problems;
            summary.rejects_by_reason = reasons;
            summary.throughput = throughput;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_reads_back_as_written() {
        let cursor = ReadingCursor {
            ts: "2024-05-01T12:00:00.123456Z".parse().unwrap(),
            file_id: 42,
            line: 7,
        };
        assert_eq!(decode_cursor(&encode_cursor(cursor)).unwrap(), cursor);
        assert!(decode_cursor("not-a-cursor").is_err());
        assert!(decode_cursor(&BASE64_URL_SAFE_NO_PAD.encode("1:2")).is_err());
    }

    #[test]
    fn a_too_fine_bucket_gets_a_usable_suggestion() {
        assert_eq!(suggest_bucket(chrono::Duration::days(30)), "5m");
        assert_eq!(suggest_bucket(chrono::Duration::days(3650)), "1d");
    }
}
