//! `/v1/sensors` and `/v1/latest`: what there is, and its latest values.

use std::net::SocketAddr;

use axum::extract::rejection::QueryRejection;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, Uri};
use axum::response::Response;
use serde::Deserialize;
use utoipa::IntoParams;

use super::{
    begin, json_response, known_measurement, known_sensor, known_sensor_type, to_json, Read,
};
use crate::http::error::ApiError;
use crate::http::error::ErrorBody;
use crate::http::params::{self, optional};
use crate::http::HttpState;
use crate::store::query;
use crate::store::query::{LatestValue, SensorInfo};

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
pub(super) async fn sensors(
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
pub(super) async fn latest(
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
