//! The HTTP API's answers, as `/openapi.json` documents them: one type per answer, serialized
//! as the API promises, built from the rows the store's questions return (`store::query`,
//! `store::status`). The store's rows may change with the schema; these change only with the
//! API.

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::sources::journal::JournalStats;
use crate::store::{query, status};

/// The answers of `rows`, in order.
pub fn all<R, T: From<R>>(rows: Vec<R>) -> Vec<T> {
    rows.into_iter().map(T::from).collect()
}

/// A delivery in the ledger (a file or a request body).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FileEntry {
    /// The delivery (file or request body) in the ledger.
    pub file_id: i64,
    /// Name of the file, or of the request body.
    pub file_name: String,
    /// SHA-256 of the content (or of the Idempotency-Key).
    pub content_sha256: String,
    /// `loaded`, `partially_loaded`, `rejected` or `empty`.
    pub status: String,
    /// Rows read (data lines or objects).
    pub rows_read: i64,
    /// Rows stored.
    pub rows_loaded: i64,
    /// Rows rejected, each with its line and reason.
    pub rows_rejected: i64,
    /// Readings stored from it (one per measurement and time).
    pub reading_count: i64,
    /// Size of the content in bytes.
    pub size_bytes: i64,
    /// When it arrived.
    pub received_at: DateTime<Utc>,
    /// When its transaction committed.
    pub finished_at: DateTime<Utc>,
    /// Why the whole delivery was rejected, if it was.
    pub error: Option<String>,
}

impl From<query::FileEntry> for FileEntry {
    fn from(row: query::FileEntry) -> Self {
        Self {
            file_id: row.file_id,
            file_name: row.file_name,
            content_sha256: row.content_sha256,
            status: row.status,
            rows_read: row.rows_read,
            rows_loaded: row.rows_loaded,
            rows_rejected: row.rows_rejected,
            reading_count: row.reading_count,
            size_bytes: row.size_bytes,
            received_at: row.received_at,
            finished_at: row.finished_at,
            error: row.error,
        }
    }
}

/// One per-file aggregate: per sensor type, or per sensor.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FileAggregate {
    /// `sensor_type` or `sensor`.
    pub scope: String,
    /// Sensor type of the catalogue (e.g. `SDS011`, `BME280`).
    pub sensor_type: String,
    /// Sensor id (sensor.community `sensor_id`, or derived for a device).
    pub sensor_id: Option<i64>,
    /// Location id, when known.
    pub location_id: Option<i64>,
    /// Measurement name (e.g. `pm10`, `temperature`).
    pub measurement: String,
    /// Unit of the stored values (e.g. `µg/m³`, `°C`, `hPa`).
    pub unit: String,
    /// Number of readings.
    pub n: i64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// Mean value.
    pub mean: f64,
    /// Sample standard deviation (null for a single reading).
    pub stddev: Option<f64>,
    /// Time of the earliest reading.
    pub first_ts: DateTime<Utc>,
    /// Time of the latest reading.
    pub last_ts: DateTime<Utc>,
}

impl From<query::FileAggregate> for FileAggregate {
    fn from(row: query::FileAggregate) -> Self {
        Self {
            scope: row.scope,
            sensor_type: row.sensor_type,
            sensor_id: row.sensor_id,
            location_id: row.location_id,
            measurement: row.measurement,
            unit: row.unit,
            n: row.n,
            min: row.min,
            max: row.max,
            mean: row.mean,
            stddev: row.stddev,
            first_ts: row.first_ts,
            last_ts: row.last_ts,
        }
    }
}

/// One arrival of a delivery's content (the first, and every duplicate).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeliveryEntry {
    /// The arrival.
    pub delivery_id: i64,
    /// Name of the file, or of the request body.
    pub file_name: String,
    /// Where it came from: `file`, or `http:<client>`.
    pub origin: Option<String>,
    /// `new` or `duplicate`.
    pub outcome: String,
    /// When it arrived.
    pub delivered_at: DateTime<Utc>,
}

impl From<query::DeliveryEntry> for DeliveryEntry {
    fn from(row: query::DeliveryEntry) -> Self {
        Self {
            delivery_id: row.delivery_id,
            file_name: row.file_name,
            origin: row.origin,
            outcome: row.outcome,
            delivered_at: row.delivered_at,
        }
    }
}

/// A rejected row and why.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RejectEntry {
    /// Physical line (the header is line 1; for a JSON array, the position in it).
    pub line: i64,
    /// Column at fault, if one is.
    pub column: Option<String>,
    /// The value, in `unit`.
    pub value: Option<String>,
    /// Stable reason code (e.g. `out_of_range`).
    pub code: String,
    /// For people: what happened and what to do.
    pub message: String,
}

impl From<query::RejectEntry> for RejectEntry {
    fn from(row: query::RejectEntry) -> Self {
        Self {
            line: row.line,
            column: row.column,
            value: row.value,
            code: row.code,
            message: row.message,
        }
    }
}

/// Rejected rows of one reason.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReasonCount {
    /// Stable reason code (e.g. `out_of_range`).
    pub code: String,
    /// Rejected rows.
    pub rows: i64,
}

impl From<query::ReasonCount> for ReasonCount {
    fn from(row: query::ReasonCount) -> Self {
        Self {
            code: row.code,
            rows: row.rows,
        }
    }
}

/// What was loaded lately.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct Throughput {
    /// Deliveries committed in the last minute.
    pub files_last_minute: i64,
    /// Rows loaded in the last minute.
    pub rows_last_minute: i64,
    /// Deliveries committed in the last hour.
    pub files_last_hour: i64,
    /// Rows loaded in the last hour.
    pub rows_last_hour: i64,
}

impl From<query::Throughput> for Throughput {
    fn from(row: query::Throughput) -> Self {
        Self {
            files_last_minute: row.files_last_minute,
            rows_last_minute: row.rows_last_minute,
            files_last_hour: row.files_last_hour,
            rows_last_hour: row.rows_last_hour,
        }
    }
}

/// A sensor: its type, where it was last measured, what it measures and the span of its
/// readings.
#[derive(Debug, Clone, Serialize, ToSchema)]
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

impl From<query::SensorInfo> for SensorInfo {
    fn from(row: query::SensorInfo) -> Self {
        Self {
            sensor_id: row.sensor_id,
            sensor_type: row.sensor_type,
            location_id: row.location_id,
            lat: row.lat,
            lon: row.lon,
            measurements: row.measurements,
            first_ts: row.first_ts,
            last_ts: row.last_ts,
            readings: row.readings,
            device: row.device,
        }
    }
}

/// The latest reading of one (sensor, measurement).
#[derive(Debug, Clone, Serialize, ToSchema)]
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

impl From<query::LatestValue> for LatestValue {
    fn from(row: query::LatestValue) -> Self {
        Self {
            sensor_id: row.sensor_id,
            sensor_type: row.sensor_type,
            location_id: row.location_id,
            lat: row.lat,
            lon: row.lon,
            measurement: row.measurement,
            unit: row.unit,
            ts: row.ts,
            value: row.value,
        }
    }
}

/// One reading of one measurement, with its provenance (file and line).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Reading {
    /// Time of the reading (UTC).
    pub ts: DateTime<Utc>,
    /// The value, in `unit`.
    pub value: f64,
    /// Unit of the stored values (e.g. `µg/m³`, `°C`, `hPa`).
    pub unit: String,
    /// Location id, when known.
    pub location_id: Option<i64>,
    /// Latitude in degrees (WGS 84), when known.
    pub lat: Option<f64>,
    /// Longitude in degrees (WGS 84), when known.
    pub lon: Option<f64>,
    /// The delivery (file or request body) in the ledger.
    pub file_id: i64,
    /// Line in the delivery (the CSV header is line 1; for a JSON array, the position in it).
    pub line: i32,
}

impl From<query::Reading> for Reading {
    fn from(row: query::Reading) -> Self {
        Self {
            ts: row.ts,
            value: row.value,
            unit: row.unit,
            location_id: row.location_id,
            lat: row.lat,
            lon: row.lon,
            file_id: row.file_id,
            line: row.line,
        }
    }
}

/// One time bucket of a series, aligned to the UTC epoch.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Bucket {
    /// Start of the bucket; it covers `[start, start + bucket)`.
    pub start: DateTime<Utc>,
    /// Readings in the bucket (within the asked range).
    pub n: i64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// Mean value.
    pub mean: f64,
    /// Sample standard deviation; null for a single reading.
    pub stddev: Option<f64>,
    /// Mean of every reading in the trailing window of length `rolling` that ends at the
    /// bucket's end; present only when `rolling` is asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rolling_mean: Option<f64>,
}

impl From<query::Bucket> for Bucket {
    fn from(row: query::Bucket) -> Self {
        Self {
            start: row.start,
            n: row.n,
            min: row.min,
            max: row.max,
            mean: row.mean,
            stddev: row.stddev,
            rolling_mean: row.rolling_mean,
        }
    }
}

/// Files per status and their row counts, for `sensor-etl status`.
#[derive(Debug, Clone, Serialize, PartialEq, ToSchema)]
pub struct StatusCount {
    /// Status.
    pub status: String,
    /// Files.
    pub files: i64,
    /// Rows read.
    pub rows_read: i64,
    /// Rows loaded.
    pub rows_loaded: i64,
    /// Rows rejected.
    pub rows_rejected: i64,
    /// Rows whose readings were already stored (not stored again).
    pub rows_duplicate: i64,
}

impl From<status::StatusCount> for StatusCount {
    fn from(row: status::StatusCount) -> Self {
        Self {
            status: row.status,
            files: row.files,
            rows_read: row.rows_read,
            rows_loaded: row.rows_loaded,
            rows_rejected: row.rows_rejected,
            rows_duplicate: row.rows_duplicate,
        }
    }
}

/// A recent file with a problem.
#[derive(Debug, Clone, Serialize, PartialEq, ToSchema)]
pub struct RecentProblem {
    /// File id.
    pub file_id: i64,
    /// Name.
    pub file_name: String,
    /// Status.
    pub status: String,
    /// Rows rejected.
    pub rows_rejected: i64,
    /// File-level reason, if any.
    pub error: Option<String>,
    /// When it finished.
    pub finished_at: DateTime<Utc>,
}

impl From<status::RecentProblem> for RecentProblem {
    fn from(row: status::RecentProblem) -> Self {
        Self {
            file_id: row.file_id,
            file_name: row.file_name,
            status: row.status,
            rows_rejected: row.rows_rejected,
            error: row.error,
            finished_at: row.finished_at,
        }
    }
}

/// Depth and progress of the push journal.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[schema(as = JournalStats)]
pub struct JournalDepth {
    /// Bodies waiting to be loaded.
    pub bodies: u64,
    /// Their bytes in the journal.
    pub bytes: u64,
    /// Seconds since the oldest waiting body was received (0 when none waits).
    pub oldest_age_seconds: f64,
    /// Bodies loaded per second over the last 10 seconds.
    pub drain_rate: f64,
}

impl From<JournalStats> for JournalDepth {
    fn from(stats: JournalStats) -> Self {
        Self {
            bodies: stats.bodies,
            bytes: stats.bytes,
            oldest_age_seconds: stats.oldest_age_seconds,
            drain_rate: stats.drain_rate,
        }
    }
}
