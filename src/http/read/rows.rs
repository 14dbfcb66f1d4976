//! `/v1/readings` (a sensor's readings page by page, as JSON, CSV or NDJSON) and `/v1/series`
//! (windowed statistics with a trailing mean).

use axum::extract::State;
use axum::http::Uri;
use axum::response::Response;
use base64::prelude::{Engine, BASE64_URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{
    answer_response, internal, json_body, known_measurement, known_sensor, known_sensor_type,
    page_url, rows_response, to_json,
};
use crate::config::Settings;
use crate::http::access::Reader;
use crate::http::answers::{self, Bucket, Reading};
use crate::http::cache::Answer;
use crate::http::error::ApiError;
use crate::http::error::ErrorBody;
use crate::http::extract::{Db, Params};
use crate::http::params::required;
use crate::http::params::{self, optional};
use crate::http::HttpState;
use crate::store::query;
use crate::store::query::{ReadingCursor, SeriesQuery, SeriesScope};

/// Readings per page by default, and at most.
const READINGS_PAGE: i64 = 10_000;
const READINGS_PAGE_MAX: i64 = 100_000;
/// Buckets one series may have.
const MAX_BUCKETS: i64 = 10_000;
/// The smallest bucket.
const MIN_BUCKET_SECS: i64 = 60;

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
pub(super) async fn readings(
    State(state): State<HttpState>,
    _: Reader,
    Params(params): Params<ReadingsParams>,
    Db(client): Db,
) -> Result<Response, ApiError> {
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
    .await?;
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
    let page: Vec<Reading> = answers::all(page);
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
pub(super) async fn series(
    State(state): State<HttpState>,
    _: Reader,
    uri: Uri,
    Params(params): Params<SeriesParams>,
    Db(mut client): Db,
) -> Result<Response, ApiError> {
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
            let buckets: Vec<Bucket> = answers::all(query::series(tx, &asked).await?);
            let size = buckets.len() * 200;
            to_json(&Series { buckets }, size).map(Answer::from)
        })
        .await?;
    Ok(answer_response(body))
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
