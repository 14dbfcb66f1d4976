//! The ledger as the read API shows it: deliveries, their aggregates, arrivals and rejects,
//! rejects by reason, throughput.

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use super::{query, query_one, query_opt};
use crate::store::StoreError;
/// A delivery in the ledger (a file or a request body).
#[derive(Debug, Clone)]
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
#[derive(Debug, Clone)]
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
#[derive(Debug, Clone)]
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
#[derive(Debug, Clone)]
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
#[derive(Debug, Clone)]
pub struct ReasonCount {
    /// Stable reason code (e.g. `out_of_range`).
    pub code: String,
    /// Rejected rows.
    pub rows: i64,
}

/// What was loaded lately.
#[derive(Debug, Clone, Default)]
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
