//! The read API: sensors, latest values, a sensor's readings page by page (JSON, CSV or
//! NDJSON), windowed statistics with a trailing mean, the ledger of deliveries with their
//! aggregates and rejects, and the pipeline at a glance (`/v1/summary`, what the dashboard
//! shows): `sensors`, `rows` and `deliveries`, with what they share here (access, the
//! connection, parameter checks against the catalogue, JSON answers, the answer cache). Every
//! endpoint needs the `read` scope (SPEC §10 access rules) and answers what the public views
//! answer, through `store::query`.
//!
//! Errors: a bad parameter is 400 naming it, an unknown sensor or file 404, a database outage
//! 503 with `Retry-After`; bad input never gets a 5xx. Each handler is documented for
//! `/openapi.json` by its own types (`utoipa`), and registered with its document in one step
//! (`routes!`), so what is served and what is documented cannot part.

mod deliveries;
mod rows;
mod sensors;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::config::Settings;
use crate::http::cache::Answer;
use crate::http::error::ApiError;
use crate::http::params::{self, optional};
use crate::http::HttpState;
use crate::store::query;

/// The read routes, each with its OpenAPI operation.
pub fn routes() -> OpenApiRouter<HttpState> {
    OpenApiRouter::new()
        .routes(routes!(sensors::sensors))
        .routes(routes!(sensors::latest))
        .routes(routes!(rows::readings))
        .routes(routes!(rows::series))
        .routes(routes!(deliveries::files))
        .routes(routes!(deliveries::file))
        .routes(routes!(deliveries::file_rejects))
        .routes(routes!(deliveries::summary))
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

/// A JSON answer; the next page's URL, when there is one, in `Link: <…>; rel="next"`.
fn answer_response(answer: Answer) -> Response {
    let mut response = json_response(answer.body);
    if let Some(link) = answer
        .next
        .and_then(|next| HeaderValue::from_str(&format!("<{next}>; rel=\"next\"")).ok())
    {
        response.headers_mut().insert(header::LINK, link);
    }
    response
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
    match query::sensor_type(client, asked).await? {
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
    match query::type_of_sensor(client, sensor_id).await? {
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
    if query::measurement_exists(client, name, sensor_type).await? {
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
