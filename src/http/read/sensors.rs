//! `/v1/sensors` and `/v1/latest`: what there is, and its latest values. The sensor list comes
//! in pages (by sensor id, the next in `Link`) and can be searched, so that a fleet of tens of
//! thousands of sensors costs a request no more than one page.

use axum::extract::State;
use axum::http::Uri;
use axum::response::Response;
use serde::Deserialize;
use utoipa::IntoParams;

use super::{
    answer_response, known_measurement, known_sensor, known_sensor_type, page_url, to_json,
};
use crate::http::access::Reader;
use crate::http::answers::{self, LatestValue, SensorInfo};
use crate::http::cache::Answer;
use crate::http::error::ApiError;
use crate::http::error::ErrorBody;
use crate::http::extract::{Db, Params};
use crate::http::params::{self, optional};
use crate::http::HttpState;
use crate::store::query;

/// Filters of `GET /v1/sensors`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SensorsParams {
    /// Only sensors of this type (e.g. `SDS011`; any case).
    sensor_type: Option<String>,
    /// Only sensors last measured at this location.
    #[param(value_type = Option<i64>)]
    location_id: Option<String>,
    /// Search: sensors whose id starts with it, whose type starts with it, or whose device
    /// contains it (any case).
    q: Option<String>,
    /// Sensors per page, 1 to 10000 (default 1000).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 10000)]
    limit: Option<String>,
    /// Only sensors with a larger id (the previous page's last; the `Link` header's next page
    /// carries it).
    #[param(value_type = Option<i64>)]
    after: Option<String>,
}

/// Sensors per page of `/v1/sensors` unless asked otherwise, and at most.
const SENSORS_PAGE: i64 = 1000;
const SENSORS_PAGE_MAX: i64 = 10_000;

/// Sensors by id, with their type, last position, measurements and the span of their readings;
/// a page at a time, the next page's URL in `Link: <…>; rel="next"`.
#[utoipa::path(
    get, path = "/v1/sensors", tag = "read", params(SensorsParams),
    responses(
        (status = 200, description = "A page of sensors by id; the next page in the Link header", body = Vec<SensorInfo>,
            headers(("Link" = String, description = "`<url>; rel=\"next\"` when more sensors follow"))),
        (status = 400, description = "A bad parameter", body = ErrorBody),
        (status = 401, description = "A token is required", body = ErrorBody),
        (status = 403, description = "Not allowed", body = ErrorBody),
        (status = 503, description = "The database is unavailable", body = ErrorBody),
    ),
    security((), ("token" = []))
)]
pub(super) async fn sensors(
    State(state): State<HttpState>,
    _: Reader,
    uri: Uri,
    Params(params): Params<SensorsParams>,
    Db(mut client): Db,
) -> Result<Response, ApiError> {
    let sensor_type =
        known_sensor_type(&state.settings, &client, params.sensor_type.as_deref()).await?;
    let location_id = optional(params.location_id.as_deref())
        .map(|text| params::integer("location_id", text))
        .transpose()?;
    let limit = params::limit(params.limit.as_deref(), SENSORS_PAGE, SENSORS_PAGE_MAX)?;
    let after = optional(params.after.as_deref())
        .map(|text| params::integer("after", text))
        .transpose()?;
    let search = optional(params.q.as_deref()).map(str::trim);
    let asked = query::SensorFilter {
        sensor_type: sensor_type.as_deref(),
        location_id,
        search,
        after,
    };
    let answer = state
        .answers
        .answer(&mut client, &uri.to_string(), async |tx| {
            let mut found = query::sensors(tx, &asked, limit + 1).await?;
            let more = found.len() as i64 > limit;
            found.truncate(limit as usize);
            let next = match (more, found.last()) {
                (true, Some(last)) => {
                    let mut pairs = vec![
                        ("limit", limit.to_string()),
                        ("after", last.sensor_id.to_string()),
                    ];
                    let kept = [
                        ("sensor_type", &sensor_type),
                        ("q", &search.map(str::to_owned)),
                    ];
                    for (name, value) in kept {
                        if let Some(value) = value {
                            pairs.push((name, value.clone()));
                        }
                    }
                    if let Some(location_id) = location_id {
                        pairs.push(("location_id", location_id.to_string()));
                    }
                    Some(page_url("/v1/sensors", &pairs))
                }
                _ => None,
            };
            let found: Vec<SensorInfo> = answers::all(found);
            let body = to_json(&found, found.len() * 260)?;
            Ok::<_, ApiError>(Answer {
                body: body.into(),
                next,
            })
        })
        .await?;
    Ok(answer_response(answer))
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
pub(super) async fn latest(
    State(state): State<HttpState>,
    _: Reader,
    uri: Uri,
    Params(params): Params<LatestParams>,
    Db(mut client): Db,
) -> Result<Response, ApiError> {
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
            let found: Vec<LatestValue> = answers::all(
                query::latest(tx, sensor_id, sensor_type.as_deref(), measurement).await?,
            );
            to_json(&found, found.len() * 200).map(Answer::from)
        })
        .await?;
    Ok(answer_response(body))
}
