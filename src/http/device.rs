//! sensor.community devices pushing straight in: the airRohr firmware's own-API body (on
//! `POST /v1/ingest`, recognised by its `sensordatavalues`) and the push-API body (on
//! `POST /v1/push-sensor-data/`, with `X-Sensor` and `X-Pin`), each turned into a CSV delivery
//! that takes the path of every other body: one line per sensor of the device, with the value
//! types mapped to the catalogue's columns by configuration (`config::DeviceSettings`), so
//! validation, unit conversion, quarantine and the ledger are the same.
//!
//! - A device carries several sensors: each (device, sensor type) is a sensor whose id is the
//!   one the owner configured, or else derived from the two names ([`sensor_id`]): stable,
//!   and in a range of its own (from 10^15) that sensor.community ids never reach.
//! - The readings' time is the body's own (`GPS_timestamp`) when it has one, else the second
//!   the body was received (UTC). The rendering carries that time, so an identical body pushed
//!   a second later is a new delivery, while the same body again within the same second (a
//!   retry) is a duplicate; `Idempotency-Key` covers longer retry windows.
//! - Value types the configuration does not know are left out and named in the receipt and the
//!   log; value types declared ignored are named too. Neither is a rejected row.
//! - What the firmware sends for "nothing read" is a missing value, never a bad reading that
//!   would take the cycle's other values with it: a value of `nan` (a failed read of one
//!   sensor value) leaves only that value out; a GPS position outside the globe (`-200`, no
//!   fix) is no position; a body time that is clearly unset (before 2000, the firmware's
//!   `1970-01-01T00:00:00.000`, or more than a day ahead of the receive time) gives way to the
//!   receive time. Each is said in the receipt's `notes`.

use std::collections::BTreeSet;

use axum::http::HeaderMap;
use chrono::{DateTime, Offset, Utc};
use serde::Deserialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::config::Settings;
use crate::delivery::ByteSource;
use crate::http::body::render;
use crate::http::error::ApiError;
use crate::validate::rejection::RejectionCode;

/// Derived sensor ids start here, above every id sensor.community hands out.
const DERIVED_ID_BASE: i64 = 1_000_000_000_000_000;

/// Derived sensor ids lie in `DERIVED_ID_BASE .. DERIVED_ID_BASE + DERIVED_ID_SPAN`.
const DERIVED_ID_SPAN: u64 = 8_000_000_000_000_000;

/// Longest device name taken.
const MAX_DEVICE_CHARS: usize = 64;

/// A device body rendered as a delivery.
#[derive(Debug)]
pub struct DevicePush {
    /// The device, e.g. `esp8266-3654427`.
    pub device: String,
    /// The CSV rendering.
    pub source: ByteSource,
    /// The sensors of the device in this body: (sensor id, sensor type).
    pub sensors: Vec<(i64, String)>,
    /// Value types the configuration does not know (left out).
    pub unknown_value_types: BTreeSet<String>,
    /// Value types declared ignored (left out).
    pub ignored_value_types: BTreeSet<String>,
    /// What was read as "nothing read" (a failed read, no GPS fix, an unset clock).
    pub notes: Vec<String>,
}

/// Body times before this are a device clock that was never set.
const EARLIEST_BODY_TIME: &str = "2000-01-01T00:00:00Z";

/// How far ahead of the receive time a body time may be.
const MAX_BODY_TIME_AHEAD: chrono::Duration = chrono::Duration::days(1);

/// A value the firmware sends for a read that failed (`nan`, `inf`, nothing).
fn is_failed_read(text: &str) -> bool {
    let lower = text
        .trim()
        .trim_start_matches(['-', '+'])
        .to_ascii_lowercase();
    lower.is_empty() || lower == "nan" || lower.starts_with("inf")
}

/// Whether `text` is a coordinate on the globe for `axis` (`lat` or `lon`).
fn on_the_globe(axis: &str, text: &str) -> bool {
    let limit = if axis == "lat" { 90.0 } else { 180.0 };
    text.trim()
        .parse::<f64>()
        .is_ok_and(|v| v.is_finite() && v.abs() <= limit)
}

#[derive(Debug, Deserialize)]
struct DeviceBody {
    #[serde(default)]
    esp8266id: Option<Value>,
    #[serde(default)]
    esp32id: Option<Value>,
    sensordatavalues: Vec<DataValue>,
}

#[derive(Debug, Deserialize)]
struct DataValue {
    value_type: String,
    value: Value,
}

/// What a value type stands for.
enum Meaning {
    /// A value of (sensor type index, column).
    Value(usize, String),
    /// The latitude or longitude of every reading.
    Position(&'static str),
    /// The time of every reading.
    Time,
    Ignored,
    Unknown,
}

/// Whether a JSON body is a device's own-API body.
pub fn is_device_body(body: &[u8]) -> bool {
    memchr::memmem::find(body, b"\"sensordatavalues\"").is_some()
}

/// The firmware's own-API body: value types carry their sensor (`SDS_P1`, `BME280_pressure`).
///
/// # Errors
/// 400 for a body that does not parse or names no device.
pub fn own_api(
    body: &[u8],
    headers: &HeaderMap,
    received: DateTime<Utc>,
    settings: &Settings,
) -> Result<DevicePush, ApiError> {
    let parsed: DeviceBody = parse(body)?;
    let from_body = [("esp8266", &parsed.esp8266id), ("esp32", &parsed.esp32id)]
        .into_iter()
        .find_map(|(chip, id)| id.as_ref().map(|id| format!("{chip}-{}", plain(id))));
    let device = device_name(headers, from_body)?;
    let meaning = |value_type: &str| match value_type {
        "GPS_lat" => Meaning::Position("lat"),
        "GPS_lon" => Meaning::Position("lon"),
        "GPS_timestamp" => Meaning::Time,
        _ => match settings.devices.value_types.get(value_type) {
            Some(target) => Meaning::Value(target.sensor_type, target.column.clone()),
            None if settings.devices.ignored_value_types.contains(value_type) => Meaning::Ignored,
            None => Meaning::Unknown,
        },
    };
    render_push(
        device,
        &parsed.sensordatavalues,
        meaning,
        received,
        settings,
    )
}

/// The push API's body: `X-Pin` names the sensor, value types are its columns (`P1`,
/// `temperature`).
///
/// # Errors
/// 400 for a body that does not parse, no `X-Sensor`, or a pin no sensor type is mapped to.
pub fn push_api(
    body: &[u8],
    headers: &HeaderMap,
    received: DateTime<Utc>,
    settings: &Settings,
) -> Result<DevicePush, ApiError> {
    let parsed: DeviceBody = parse(body)?;
    let device = device_name(headers, None)?;
    let pin_text = header_text(headers, "x-pin").unwrap_or_default();
    let type_index = pin_text
        .parse::<u32>()
        .ok()
        .and_then(|pin| settings.devices.pins.get(&pin).copied())
        .ok_or_else(|| {
            bad_request(
                RejectionCode::UnknownPin,
                format!(
                    "X-Pin `{pin_text}` names no sensor: send the firmware's pin number (1 \
                     particulate matter, 3 BMP180/BMP280, 5 PPD42NS, 7 DHT22, 9 GPS, 11 BME280, \
                     13 DS18B20, 17 SCD30) or map it under [devices.pins]"
                ),
            )
        })?;
    let columns: Vec<&String> = settings.sensor_types[type_index]
        .columns(&settings.catalogue)
        .collect();
    let meaning = |value_type: &str| {
        let lower = value_type.to_ascii_lowercase();
        match lower.as_str() {
            "lat" => Meaning::Position("lat"),
            "lon" => Meaning::Position("lon"),
            "timestamp" => Meaning::Time,
            _ if settings.devices.ignored_value_types.contains(value_type) => Meaning::Ignored,
            _ if columns.iter().any(|c| **c == lower) => Meaning::Value(type_index, lower),
            _ => Meaning::Unknown,
        }
    };
    render_push(
        device,
        &parsed.sensordatavalues,
        meaning,
        received,
        settings,
    )
}

/// One CSV line per sensor type of the body, in the order the types first appear.
fn render_push(
    device: String,
    values: &[DataValue],
    meaning: impl Fn(&str) -> Meaning,
    received: DateTime<Utc>,
    settings: &Settings,
) -> Result<DevicePush, ApiError> {
    let mut lines: Vec<(usize, Map<String, Value>)> = Vec::new();
    let mut shared = Map::new();
    let mut time = None;
    let mut unknown = BTreeSet::new();
    let mut ignored = BTreeSet::new();
    let mut notes = Vec::new();
    // Without a fix the firmware sends a position off the globe (-200) and placeholders for
    // the other GPS values (a height of -1000 m): none of them is a reading.
    let no_fix = values.iter().any(|data| {
        matches!(meaning(&data.value_type), Meaning::Position(axis)
            if !on_the_globe(axis, &plain(&data.value)))
    });
    for data in values {
        match meaning(&data.value_type) {
            Meaning::Value(type_index, _)
                if no_fix
                    && settings.sensor_types[type_index]
                        .name
                        .eq_ignore_ascii_case("GPS") =>
            {
                notes.push(format!(
                    "{} = `{}`: no GPS fix, left out",
                    data.value_type,
                    plain(&data.value)
                ));
            }
            Meaning::Value(_, _) if is_failed_read(&plain(&data.value)) => {
                notes.push(format!(
                    "{} = `{}`: a failed read, left out (the other values are kept)",
                    data.value_type,
                    plain(&data.value)
                ));
            }
            Meaning::Position(axis) if !on_the_globe(axis, &plain(&data.value)) => {
                notes.push(format!(
                    "{} = `{}`: no GPS fix, the readings have no position",
                    data.value_type,
                    plain(&data.value)
                ));
            }
            Meaning::Value(type_index, column) => {
                let line = match lines.iter().position(|(index, _)| *index == type_index) {
                    Some(position) => &mut lines[position].1,
                    None => {
                        lines.push((type_index, Map::new()));
                        &mut lines.last_mut().expect("just pushed").1
                    }
                };
                line.insert(column, Value::String(plain(&data.value)));
            }
            Meaning::Position(axis) => {
                shared.insert(axis.to_owned(), Value::String(plain(&data.value)));
            }
            Meaning::Time => {
                let text = plain(&data.value);
                let earliest = EARLIEST_BODY_TIME.parse::<DateTime<Utc>>().expect("a time");
                match crate::validate::rules::parse_timestamp(&text, Utc.fix()) {
                    Some(micros)
                        if micros >= earliest.timestamp_micros()
                            && micros <= (received + MAX_BODY_TIME_AHEAD).timestamp_micros() =>
                    {
                        time = Some(text);
                    }
                    _ => notes.push(format!(
                        "{} = `{text}`: not a set clock, the readings take the receive time",
                        data.value_type
                    )),
                }
            }
            Meaning::Ignored => {
                ignored.insert(data.value_type.clone());
            }
            Meaning::Unknown => {
                unknown.insert(data.value_type.clone());
            }
        }
    }
    if lines.is_empty() {
        let list = |set: &BTreeSet<String>| {
            let names: Vec<&str> = set.iter().map(String::as_str).collect();
            if names.is_empty() {
                "none".to_owned()
            } else {
                names.join(", ")
            }
        };
        return Err(ApiError::refused(
            RejectionCode::NoValues,
            format!(
                "no value of the body is a reading of a known sensor ({} values; unknown value \
                 types: {}; ignored: {}); nothing was stored",
                values.len(),
                list(&unknown),
                list(&ignored)
            ),
        ));
    }
    let time = time.unwrap_or_else(|| received.format("%Y-%m-%dT%H:%M:%SZ").to_string());
    let mut sensors = Vec::with_capacity(lines.len());
    let mut objects = Vec::with_capacity(lines.len());
    for (line, (type_index, mut fields)) in lines.into_iter().enumerate() {
        let type_name = settings.sensor_types[type_index].name.clone();
        let id = settings
            .devices
            .sensor_ids
            .get(&(device.clone(), type_index))
            .copied()
            .unwrap_or_else(|| sensor_id(&device, &type_name));
        fields.insert("sensor_id".to_owned(), Value::from(id));
        fields.insert("sensor_type".to_owned(), Value::String(type_name.clone()));
        fields.insert("timestamp".to_owned(), Value::String(time.clone()));
        for (axis, value) in &shared {
            fields.insert(axis.clone(), value.clone());
        }
        sensors.push((id, type_name));
        objects.push((line as u64 + 1, fields));
    }
    if !unknown.is_empty() {
        tracing::warn!(
            message = "Device sent value types the configuration does not know; they were left out.",
            device = %device,
            value_types = ?unknown
        );
    }
    Ok(DevicePush {
        device,
        source: ByteSource::Rendered {
            bytes: render(&objects)?,
            line_shift: 1,
        },
        sensors,
        unknown_value_types: unknown,
        ignored_value_types: ignored,
        notes,
    })
}

/// The id of a device's sensor of a type, when its owner configured none: stable, derived
/// from the two names, in a range sensor.community ids never reach.
pub fn sensor_id(device: &str, sensor_type: &str) -> i64 {
    let digest = Sha256::digest(format!("{device}/{}", sensor_type.to_ascii_uppercase()));
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    DERIVED_ID_BASE + (u64::from_be_bytes(first) % DERIVED_ID_SPAN) as i64
}

/// The device: `X-Sensor`, else what the body says.
fn device_name(headers: &HeaderMap, from_body: Option<String>) -> Result<String, ApiError> {
    let name = header_text(headers, "x-sensor")
        .or(from_body)
        .unwrap_or_default();
    let valid = !name.is_empty()
        && name.chars().count() <= MAX_DEVICE_CHARS
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !valid {
        return Err(bad_request(
            RejectionCode::UnknownDevice,
            "name the device: header `X-Sensor: esp8266-<chip id>` (letters, digits, - and _, \
             at most 64)",
        ));
    }
    Ok(name)
}

fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .map(|text| text.trim().to_owned())
        .filter(|text| !text.is_empty())
}

fn parse(body: &[u8]) -> Result<DeviceBody, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        bad_request(
            RejectionCode::MalformedBody,
            format!("not a device body with sensordatavalues: {e}"),
        )
    })
}

/// A JSON string or number as plain text.
fn plain(value: &Value) -> String {
    match value {
        Value::String(text) => text.trim().to_owned(),
        other => other.to_string(),
    }
}

fn bad_request(code: RejectionCode, message: impl Into<String>) -> ApiError {
    ApiError::refused(code, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_ids_are_stable_distinct_and_out_of_the_way() {
        let sds = sensor_id("esp8266-3654427", "SDS011");
        assert_eq!(sds, sensor_id("esp8266-3654427", "sds011"));
        assert_ne!(sds, sensor_id("esp8266-3654427", "BME280"));
        assert_ne!(sds, sensor_id("esp8266-3654428", "SDS011"));
        assert!((DERIVED_ID_BASE..i64::MAX).contains(&sds));
    }
}
