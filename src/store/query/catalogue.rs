//! The catalogue: which sensors and measurements there are, and their latest values.

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;

use super::{query, query_one, query_opt};
use crate::store::StoreError;
/// A sensor: its type, where it was last measured, what it measures and the span of its
/// readings.
#[derive(Debug, Clone)]
pub struct SensorInfo {
    /// Sensor id (sensor.community `sensor_id`, or derived for a device).
    pub sensor_id: i64,
    /// Sensor type of the catalogue (e.g. `SDS011`, `BME280`).
    pub sensor_type: String,
    /// Location id, when known.
    pub location_id: Option<i64>,
    /// Latitude in degrees (WGS 84), when known.
    pub lat: Option<f64>,
    /// Longitude in degrees (WGS 84), when known.
    pub lon: Option<f64>,
    /// Names of the measurements it has readings of.
    pub measurements: Vec<String>,
    /// Time of the earliest reading.
    pub first_ts: Option<DateTime<Utc>>,
    /// Time of the latest reading.
    pub last_ts: Option<DateTime<Utc>>,
    /// Readings stored (one per measurement and time).
    pub readings: i64,
    /// The device that pushes it (sensor.community firmware), if any.
    pub device: Option<String>,
}

/// The latest reading of one (sensor, measurement).
#[derive(Debug, Clone)]
pub struct LatestValue {
    /// Sensor id (sensor.community `sensor_id`, or derived for a device).
    pub sensor_id: i64,
    /// Sensor type of the catalogue (e.g. `SDS011`, `BME280`).
    pub sensor_type: String,
    /// Location id, when known.
    pub location_id: Option<i64>,
    /// Latitude in degrees (WGS 84), when known.
    pub lat: Option<f64>,
    /// Longitude in degrees (WGS 84), when known.
    pub lon: Option<f64>,
    /// Measurement name (e.g. `pm10`, `temperature`).
    pub measurement: String,
    /// Unit of the stored values (e.g. `µg/m³`, `°C`, `hPa`).
    pub unit: String,
    /// Time of the reading (UTC).
    pub ts: DateTime<Utc>,
    /// The value, in `unit`.
    pub value: f64,
}

/// The canonical spelling of a sensor type (`bme280` → `BME280`), if any measurement of it
/// is known.
///
/// # Errors
/// The statement failed.
pub async fn sensor_type(
    client: &impl GenericClient,
    asked: &str,
) -> Result<Option<String>, StoreError> {
    Ok(query_opt(
        client,
        "SELECT sensor_type FROM measurements WHERE upper(sensor_type) = upper($1) LIMIT 1",
        &[&asked],
    )
    .await?
    .map(|row| row.get(0)))
}

/// Whether some sensor type measures `name` (and `sensor_type`, when given, does).
///
/// # Errors
/// The statement failed.
pub async fn measurement_exists(
    client: &impl GenericClient,
    name: &str,
    sensor_type: Option<&str>,
) -> Result<bool, StoreError> {
    Ok(query_one(
        client,
        "SELECT EXISTS (SELECT 1 FROM measurements \
             WHERE name = $1 AND ($2::text IS NULL OR sensor_type = $2))",
        &[&name, &sensor_type],
    )
    .await?
    .get(0))
}

/// The type of sensor `sensor_id`, or `None` for an unknown sensor.
///
/// # Errors
/// The statement failed.
pub async fn type_of_sensor(
    client: &impl GenericClient,
    sensor_id: i64,
) -> Result<Option<String>, StoreError> {
    Ok(query_opt(
        client,
        "SELECT sensor_type FROM v_sensors WHERE sensor_id = $1",
        &[&sensor_id],
    )
    .await?
    .map(|row| row.get(0)))
}

/// Which sensors `/v1/sensors` lists.
#[derive(Debug, Default)]
pub struct SensorFilter<'a> {
    /// Only this (canonical) type.
    pub sensor_type: Option<&'a str>,
    /// Only sensors last measured here.
    pub location_id: Option<i64>,
    /// Id or type starting with it, or device containing it (any case).
    pub search: Option<&'a str>,
    /// Only ids above this one (the previous page's last).
    pub after: Option<i64>,
}

/// At most `limit` sensors that `filter` names, by id.
///
/// # Errors
/// The statement failed.
pub async fn sensors(
    client: &impl GenericClient,
    filter: &SensorFilter<'_>,
    limit: i64,
) -> Result<Vec<SensorInfo>, StoreError> {
    // The search is a prefix or substring: `%`, `_` and `\` in it are taken literally.
    let search = filter.search.map(|text| {
        text.replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_")
    });
    let rows = query(
        client,
        "SELECT s.sensor_id, s.sensor_type, s.location_id, s.lat, s.lon, \
                    coalesce(ms.names, '{}'), s.first_ts, s.last_ts, s.readings, s.device \
             FROM v_sensors s \
             LEFT JOIN LATERAL ( \
                 SELECT array_agg(l.measurement ORDER BY l.measurement) AS names \
                 FROM v_latest l WHERE l.sensor_id = s.sensor_id \
             ) ms ON true \
             WHERE ($1::text IS NULL OR s.sensor_type = $1) \
               AND ($2::int8 IS NULL OR s.location_id = $2) \
               AND ($3::int8 IS NULL OR s.sensor_id > $3) \
               AND ($4::text IS NULL OR s.sensor_id::text LIKE $4 || '%' \
                    OR s.sensor_type ILIKE $4 || '%' OR s.device ILIKE '%' || $4 || '%') \
             ORDER BY s.sensor_id \
             LIMIT $5",
        &[
            &filter.sensor_type,
            &filter.location_id,
            &filter.after,
            &search,
            &limit,
        ],
    )
    .await?;
    Ok(rows
        .iter()
        .map(|row| SensorInfo {
            sensor_id: row.get(0),
            sensor_type: row.get(1),
            location_id: row.get(2),
            lat: row.get(3),
            lon: row.get(4),
            measurements: row.get(5),
            first_ts: row.get(6),
            last_ts: row.get(7),
            readings: row.get(8),
            device: row.get(9),
        })
        .collect())
}

/// The latest reading of each (sensor, measurement) in scope, by sensor and measurement.
///
/// # Errors
/// The statement failed.
pub async fn latest(
    client: &impl GenericClient,
    sensor_id: Option<i64>,
    sensor_type: Option<&str>,
    measurement: Option<&str>,
) -> Result<Vec<LatestValue>, StoreError> {
    let rows = query(
        client,
        "SELECT l.sensor_id, l.sensor_type, l.location_id, l.lat, l.lon, l.measurement, \
                    l.unit, l.ts, l.value \
             FROM v_latest l \
             WHERE ($1::int8 IS NULL OR l.sensor_id = $1) \
               AND ($2::text IS NULL OR l.sensor_type = $2) \
               AND ($3::text IS NULL OR l.measurement = $3)",
        &[&sensor_id, &sensor_type, &measurement],
    )
    .await?;
    let mut found = rows
        .iter()
        .map(|row| LatestValue {
            sensor_id: row.get(0),
            sensor_type: row.get(1),
            location_id: row.get(2),
            lat: row.get(3),
            lon: row.get(4),
            measurement: row.get(5),
            unit: row.get(6),
            ts: row.get(7),
            value: row.get(8),
        })
        .collect::<Vec<_>>();
    // Sorted here rather than by the server: 3,000 rows sorted by a text column were half of
    // the statement's time.
    found
        .sort_unstable_by(|a, b| (a.sensor_id, &a.measurement).cmp(&(b.sensor_id, &b.measurement)));
    Ok(found)
}
