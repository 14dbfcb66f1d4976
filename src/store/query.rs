//! Read side of the store: the questions the read API answers (sensors, latest values, a
//! sensor's readings page by page, windowed statistics, the ledger), asked of the public views
//! (`v_sensors`, `v_latest`, `v_readings`, `v_files`, `v_aggregates`, `v_rejects`,
//! `v_deliveries`), so they answer what an analyst's SQL answers.
//!
//! Guarantees: read-only statements, every value bound as a parameter (the SQL text is
//! chosen from fixed pieces, never built from input); time ranges are half-open
//! `[start, end)`; pages follow one total order, `(ts, file_id, line)` for readings and `line`
//! for rejects, so paging visits every row once. The caller validates parameters; the types
//! here are what the HTTP API returns (their JSON schema is derived from them).

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use serde::Serialize;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;
use utoipa::ToSchema;

use crate::store::StoreError;

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

/// Where a page of readings ends: the next page starts after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadingCursor {
    /// Time of the reading (UTC).
    pub ts: DateTime<Utc>,
    /// The delivery (file or request body) in the ledger.
    pub file_id: i64,
    /// Line in the delivery (the CSV header is line 1; for a JSON array, the position in it).
    pub line: i32,
}

impl Reading {
    /// The cursor just past this reading.
    pub fn cursor(&self) -> ReadingCursor {
        ReadingCursor {
            ts: self.ts,
            file_id: self.file_id,
            line: self.line,
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

/// Rejected rows of one reason.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReasonCount {
    /// Stable reason code (e.g. `out_of_range`).
    pub code: String,
    /// Rejected rows.
    pub rows: i64,
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

/// Which sensors a series covers.
#[derive(Debug, Clone, PartialEq)]
pub enum SeriesScope {
    /// Every sensor with the measurement.
    All,
    /// One sensor.
    Sensor(i64),
    /// Every sensor of one type.
    SensorType(String),
    /// Every sensor at one location.
    Location(i64),
}

/// A windowed-statistics question; the caller checked it (bucket ≥ 1 s, rolling a multiple
/// of bucket, a bounded number of buckets).
#[derive(Debug, Clone)]
pub struct SeriesQuery {
    /// Measurement name (e.g. `pm10`, `temperature`).
    pub measurement: String,
    /// Start of the range (inclusive).
    pub start: DateTime<Utc>,
    /// End of the range (exclusive).
    pub end: DateTime<Utc>,
    /// Bucket length in seconds.
    pub bucket_secs: i64,
    /// Trailing window in seconds, if asked for.
    pub rolling_secs: Option<i64>,
    /// `sensor_type` or `sensor`.
    pub scope: SeriesScope,
}

// Statements are planned with their parameters each time (not cached): a cached statement
// falls back to a generic plan after five runs, which cannot prune the yearly partitions by
// the asked range (measured: a 2-day series of one sensor, 40 -> 75 ms).

/// The rows of `sql`.
async fn query(
    client: &impl GenericClient,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<Row>, StoreError> {
    Ok(client.query(sql, params).await?)
}

/// The one row of `sql`.
async fn query_one(
    client: &impl GenericClient,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Row, StoreError> {
    Ok(client.query_one(sql, params).await?)
}

/// The row of `sql`, if any.
async fn query_opt(
    client: &impl GenericClient,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Option<Row>, StoreError> {
    Ok(client.query_opt(sql, params).await?)
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

/// The measurement sets holding measurement `$1` (of sensor type `$2`, when not null) and
/// where its value is in each set's arrays: a reading row of another set is never unpacked.
/// The read API's row questions join this to `readings` instead of unnesting every row as
/// `v_readings` does (the same answers; the tests compare them).
const WANTED: &str = "WITH wanted AS ( \
     SELECT s.set_id, array_position(s.measurement_ids, m.measurement_id) AS i, m.unit \
     FROM measurement_sets s \
     JOIN measurements m ON m.measurement_id = ANY (s.measurement_ids) \
     WHERE m.name = $1 AND ($2::text IS NULL OR m.sensor_type = $2))";

/// A reading's location id, latitude and longitude, from its position entry or its own
/// columns (as `v_readings` has them), then its file and line.
const POSITION: &str =
    "CASE WHEN r.position_id IS NULL THEN r.location_id ELSE p.location_id END, \
     CASE WHEN r.position_id IS NULL THEN r.lat ELSE p.lat END, \
     CASE WHEN r.position_id IS NULL THEN r.lon ELSE p.lon END, r.file_id, r.line";

/// Up to `limit` readings of one sensor's measurement in `[start, end)`, after `after`, in
/// `(ts, file_id, line)` order.
///
/// # Errors
/// The statement failed.
pub async fn readings(
    client: &impl GenericClient,
    (sensor_id, sensor_type): (i64, &str),
    measurement: &str,
    (start, end): (DateTime<Utc>, DateTime<Utc>),
    after: Option<ReadingCursor>,
    limit: i64,
) -> Result<Vec<Reading>, StoreError> {
    // `v_readings`, narrowed to one measurement before the rows are read (see `WANTED`).
    let select = format!(
        "{WANTED} SELECT r.ts, r.\"values\"[w.i], w.unit, {POSITION} \
         FROM readings r JOIN wanted w ON w.set_id = r.set_id \
         LEFT JOIN positions p ON p.position_id = r.position_id \
         WHERE r.sensor_id = $3 AND r.ts >= $4 AND r.ts < $5"
    );
    const ORDER: &str = " ORDER BY r.ts, r.file_id, r.line LIMIT $6";
    let sensor_type = Some(sensor_type);
    let rows = match after {
        None => {
            query(
                client,
                &format!("{select}{ORDER}"),
                &[&measurement, &sensor_type, &sensor_id, &start, &end, &limit],
            )
            .await?
        }
        Some(cursor) => {
            query(
                client,
                &format!("{select} AND (r.ts, r.file_id, r.line) > ($7, $8, $9){ORDER}"),
                &[
                    &measurement,
                    &sensor_type,
                    &sensor_id,
                    &start,
                    &end,
                    &limit,
                    &cursor.ts,
                    &cursor.file_id,
                    &cursor.line,
                ],
            )
            .await?
        }
    };
    Ok(rows
        .iter()
        .map(|row| Reading {
            ts: row.get(0),
            value: row.get(1),
            unit: row.get(2),
            location_id: row.get(3),
            lat: row.get(4),
            lon: row.get(5),
            file_id: row.get(6),
            line: row.get(7),
        })
        .collect())
}

/// Per bucket as read: the statistics of readings in the asked range, and the count and sum
/// of all readings (for the trailing windows, which may reach before the range).
struct RawBucket {
    start_secs: i64,
    n: i64,
    min: Option<f64>,
    max: Option<f64>,
    mean: Option<f64>,
    stddev: Option<f64>,
    n_all: i64,
    sum_all: f64,
}

/// The first second of the bucket holding `ts`.
fn bucket_floor(ts: DateTime<Utc>, bucket_secs: i64) -> i64 {
    ts.timestamp().div_euclid(bucket_secs) * bucket_secs
}

/// The buckets a series of `[start, end)` spans (the last one may reach past `end`).
pub fn bucket_count(start: DateTime<Utc>, end: DateTime<Utc>, bucket_secs: i64) -> i64 {
    if end <= start {
        return 0;
    }
    let last = end - chrono::Duration::microseconds(1);
    (bucket_floor(last, bucket_secs) - bucket_floor(start, bucket_secs)) / bucket_secs + 1
}

/// Windowed statistics: buckets aligned to the UTC epoch holding at least one reading of the
/// range, each with its n/min/max/mean/stddev, and the trailing mean when asked for.
///
/// # Errors
/// The statement failed.
pub async fn series(
    client: &impl GenericClient,
    asked: &SeriesQuery,
) -> Result<Vec<Bucket>, StoreError> {
    let bucket = asked.bucket_secs;
    let first = bucket_floor(asked.start, bucket);
    let after_last = first + bucket_count(asked.start, asked.end, bucket) * bucket;
    // Without a trailing window only the range is read; with one, the buckets it reaches.
    let (read_from, read_to) = match asked.rolling_secs {
        None => (asked.start, asked.end),
        Some(rolling) => (epoch(first + bucket - rolling), epoch(after_last)),
    };
    let id;
    let (scope_clause, scope_value): (&str, Option<&(dyn ToSql + Sync)>) = match &asked.scope {
        SeriesScope::All | SeriesScope::SensorType(_) => ("", None),
        SeriesScope::Sensor(sensor_id) => {
            id = *sensor_id;
            (" AND r.sensor_id = $8", Some(&id))
        }
        SeriesScope::Location(location_id) => {
            id = *location_id;
            (
                " AND CASE WHEN r.position_id IS NULL THEN r.location_id ELSE p.location_id END = $8",
                Some(&id),
            )
        }
    };
    let sensor_type = match &asked.scope {
        SeriesScope::SensorType(name) => Some(name.as_str()),
        _ => None,
    };
    let positions = match asked.scope {
        SeriesScope::Location(_) => " LEFT JOIN positions p ON p.position_id = r.position_id",
        _ => "",
    };
    // `v_readings` narrowed to one measurement before the rows are read (see `WANTED`).
    let sql = format!(
        "{WANTED} \
         SELECT extract(epoch FROM b)::int8, \
                count(*) FILTER (WHERE inside), \
                min(value) FILTER (WHERE inside), max(value) FILTER (WHERE inside), \
                avg(value) FILTER (WHERE inside), stddev_samp(value) FILTER (WHERE inside), \
                count(*), coalesce(sum(value), 0) \
         FROM ( \
             SELECT date_bin(make_interval(secs => $3), r.ts, timestamptz 'epoch') AS b, \
                    r.\"values\"[w.i] AS value, r.ts >= $5 AND r.ts < $6 AS inside \
             FROM readings r JOIN wanted w ON w.set_id = r.set_id{positions} \
             WHERE r.ts >= $4 AND r.ts < $7{scope_clause} \
         ) x \
         GROUP BY b ORDER BY b"
    );
    let bucket_f = bucket as f64;
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![
        &asked.measurement,
        &sensor_type,
        &bucket_f,
        &read_from,
        &asked.start,
        &asked.end,
        &read_to,
    ];
    params.extend(scope_value);
    let raw: Vec<RawBucket> = query(client, &sql, &params)
        .await?
        .iter()
        .map(raw_bucket)
        .collect();
    Ok(with_rolling_means(&raw, bucket, asked.rolling_secs))
}

fn raw_bucket(row: &Row) -> RawBucket {
    RawBucket {
        start_secs: row.get(0),
        n: row.get(1),
        min: row.get(2),
        max: row.get(3),
        mean: row.get(4),
        stddev: row.get(5),
        n_all: row.get(6),
        sum_all: row.get(7),
    }
}

/// The buckets with readings in the range, each with the mean over the trailing window of
/// `rolling` seconds ending at its end (a whole number of buckets).
fn with_rolling_means(raw: &[RawBucket], bucket: i64, rolling: Option<i64>) -> Vec<Bucket> {
    let mut out = Vec::new();
    // The window slides over the sorted buckets: `lo` is its first; the sums cover `lo` to `b`.
    let (mut lo, mut count, mut sum) = (0usize, 0i64, 0f64);
    for b in raw {
        count += b.n_all;
        sum += b.sum_all;
        if let Some(rolling) = rolling {
            let window_start = b.start_secs + bucket - rolling;
            while raw[lo].start_secs < window_start {
                count -= raw[lo].n_all;
                sum -= raw[lo].sum_all;
                lo += 1;
            }
        }
        let (Some(min), Some(max), Some(mean)) = (b.min, b.max, b.mean) else {
            continue;
        };
        if b.n == 0 {
            continue;
        }
        out.push(Bucket {
            start: epoch(b.start_secs),
            n: b.n,
            min,
            max,
            mean,
            stddev: b.stddev,
            rolling_mean: rolling.map(|_| sum / count as f64),
        });
    }
    out
}

fn epoch(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(secs, 0).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

const FILE_COLUMNS: &str = "file_id, file_name, content_sha256, status, rows_read, rows_loaded, \
     rows_rejected, reading_count, size_bytes, received_at, finished_at, error";

fn file_entry(row: &Row) -> FileEntry {
    FileEntry {
        file_id: row.get(0),
        file_name: row.get(1),
        content_sha256: row.get(2),
        status: row.get(3),
        rows_read: row.get(4),
        rows_loaded: row.get(5),
        rows_rejected: row.get(6),
        reading_count: row.get(7),
        size_bytes: row.get(8),
        received_at: row.get(9),
        finished_at: row.get(10),
        error: row.get(11),
    }
}

/// The latest deliveries, newest first, optionally of one status.
///
/// # Errors
/// The statement failed.
pub async fn files(
    client: &impl GenericClient,
    status: Option<&str>,
    limit: i64,
) -> Result<Vec<FileEntry>, StoreError> {
    let rows = query(
        client,
        &format!(
            "SELECT {FILE_COLUMNS} FROM v_files WHERE ($1::text IS NULL OR status = $1) \
                 ORDER BY file_id DESC LIMIT $2"
        ),
        &[&status, &limit],
    )
    .await?;
    Ok(rows.iter().map(file_entry).collect())
}

/// One delivery's ledger row, or `None` for an unknown id.
///
/// # Errors
/// The statement failed.
pub async fn file(
    client: &impl GenericClient,
    file_id: i64,
) -> Result<Option<FileEntry>, StoreError> {
    Ok(query_opt(
        client,
        &format!("SELECT {FILE_COLUMNS} FROM v_files WHERE file_id = $1"),
        &[&file_id],
    )
    .await?
    .as_ref()
    .map(file_entry))
}

/// A delivery's aggregates: per sensor type first, then per sensor.
///
/// # Errors
/// The statement failed.
pub async fn file_aggregates(
    client: &impl GenericClient,
    file_id: i64,
) -> Result<Vec<FileAggregate>, StoreError> {
    let rows = query(
        client,
        "SELECT scope, sensor_type, sensor_id, location_id, measurement, unit, n, min, max, \
                    mean, stddev, first_ts, last_ts \
             FROM v_aggregates WHERE file_id = $1 \
             ORDER BY scope DESC, sensor_id NULLS FIRST, measurement, location_id",
        &[&file_id],
    )
    .await?;
    Ok(rows
        .iter()
        .map(|row| FileAggregate {
            scope: row.get(0),
            sensor_type: row.get(1),
            sensor_id: row.get(2),
            location_id: row.get(3),
            measurement: row.get(4),
            unit: row.get(5),
            n: row.get(6),
            min: row.get(7),
            max: row.get(8),
            mean: row.get(9),
            stddev: row.get(10),
            first_ts: row.get(11),
            last_ts: row.get(12),
        })
        .collect())
}

/// Every arrival of a delivery's content, in order.
///
/// # Errors
/// The statement failed.
pub async fn file_deliveries(
    client: &impl GenericClient,
    file_id: i64,
) -> Result<Vec<DeliveryEntry>, StoreError> {
    let rows = query(
        client,
        "SELECT delivery_id, file_name, origin, outcome, delivered_at FROM v_deliveries \
             WHERE file_id = $1 ORDER BY delivery_id",
        &[&file_id],
    )
    .await?;
    Ok(rows
        .iter()
        .map(|row| DeliveryEntry {
            delivery_id: row.get(0),
            file_name: row.get(1),
            origin: row.get(2),
            outcome: row.get(3),
            delivered_at: row.get(4),
        })
        .collect())
}

/// The rejects of the first `limit` rejected lines of a delivery after line `after`: every
/// violation of each, by line.
///
/// # Errors
/// The statement failed.
pub async fn rejects(
    client: &impl GenericClient,
    file_id: i64,
    after: Option<i64>,
    limit: i64,
) -> Result<Vec<RejectEntry>, StoreError> {
    // A page holds whole rows: every violation of each of its `limit` lines.
    let rows = query(
        client,
        "SELECT line, column_name, value, code, message FROM v_rejects \
             WHERE file_id = $1 AND line IN (SELECT DISTINCT line FROM v_rejects \
                 WHERE file_id = $1 AND line > $2 ORDER BY line LIMIT $3) \
             ORDER BY line, code",
        &[&file_id, &after.unwrap_or(i64::MIN), &limit],
    )
    .await?;
    Ok(rows
        .iter()
        .map(|row| RejectEntry {
            line: row.get(0),
            column: row.get(1),
            value: row.get(2),
            code: row.get(3),
            message: row.get(4),
        })
        .collect())
}

/// Rejected rows by reason, the most frequent first.
///
/// # Errors
/// The statement failed.
pub async fn rejects_by_reason(
    client: &impl GenericClient,
) -> Result<Vec<ReasonCount>, StoreError> {
    let rows = query(
        client,
        "SELECT code, count(DISTINCT (file_id, line)) AS n FROM v_rejects GROUP BY code \
         ORDER BY n DESC, code",
        &[],
    )
    .await?;
    Ok(rows
        .iter()
        .map(|row| ReasonCount {
            code: row.get(0),
            rows: row.get(1),
        })
        .collect())
}

/// Deliveries finished and rows loaded in the last minute and hour.
///
/// # Errors
/// The statement failed.
pub async fn throughput(client: &impl GenericClient) -> Result<Throughput, StoreError> {
    let row = query_one(client,
            "SELECT count(*) FILTER (WHERE finished_at > now() - interval '1 minute'), \
                    coalesce(sum(rows_loaded) FILTER (WHERE finished_at > now() - interval '1 minute'), 0)::int8, \
                    count(*), coalesce(sum(rows_loaded), 0)::int8 \
             FROM v_files WHERE finished_at > now() - interval '1 hour'",
            &[],
        )
        .await?;
    Ok(Throughput {
        files_last_minute: row.get(0),
        rows_last_minute: row.get(1),
        files_last_hour: row.get(2),
        rows_last_hour: row.get(3),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(start_secs: i64, n: i64, values: &[f64]) -> RawBucket {
        let sum: f64 = values.iter().sum();
        RawBucket {
            start_secs,
            n,
            min: (n > 0).then(|| values.iter().copied().fold(f64::INFINITY, f64::min)),
            max: (n > 0).then(|| values.iter().copied().fold(f64::NEG_INFINITY, f64::max)),
            mean: (n > 0).then(|| sum / values.len() as f64),
            stddev: None,
            n_all: values.len() as i64,
            sum_all: sum,
        }
    }

    #[test]
    fn a_trailing_window_covers_whole_buckets_and_skips_gaps() {
        // Hourly buckets at 0h, 1h, 3h; a 2-hour window.
        let buckets = [
            raw(0, 0, &[10.0]), // before the range: only in windows
            raw(3600, 2, &[1.0, 3.0]),
            raw(3 * 3600, 1, &[8.0]),
        ];
        let out = with_rolling_means(&buckets, 3600, Some(7200));
        assert_eq!(out.len(), 2, "the bucket before the range is not shown");
        assert_eq!(out[0].rolling_mean, Some((10.0 + 1.0 + 3.0) / 3.0));
        // The window of the 3h bucket is [2h, 4h): only its own reading.
        assert_eq!(out[1].rolling_mean, Some(8.0));
    }

    #[test]
    fn buckets_are_counted_from_the_epoch() {
        let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        assert_eq!(
            bucket_count(at("2024-01-01T00:30:00Z"), at("2024-01-01T02:00:00Z"), 3600),
            2
        );
        assert_eq!(
            bucket_count(at("2024-01-01T00:30:00Z"), at("2024-01-01T02:00:01Z"), 3600),
            3
        );
        assert_eq!(
            bucket_count(at("2024-01-01T00:00:00Z"), at("2024-01-01T00:00:00Z"), 60),
            0
        );
    }
}
