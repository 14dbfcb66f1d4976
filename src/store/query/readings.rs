//! A sensor's readings of one measurement, page by page in `(ts, file_id, line)` order.

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;

use super::query;
use crate::store::StoreError;
/// One reading of one measurement, with its provenance (file and line).
#[derive(Debug, Clone)]
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

/// The measurement sets holding measurement `$1` (of sensor type `$2`, when not null) and
/// where its value is in each set's arrays: a reading row of another set is never unpacked.
/// The read API's row questions join this to `readings` instead of unnesting every row as
/// `v_readings` does (the same answers; the tests compare them).
pub(super) const WANTED: &str = "WITH wanted AS ( \
     SELECT s.set_id, array_position(s.measurement_ids, m.measurement_id) AS i, m.unit \
     FROM measurement_sets s \
     JOIN measurements m ON m.measurement_id = ANY (s.measurement_ids) \
     WHERE m.name = $1 AND ($2::text IS NULL OR m.sensor_type = $2))";

/// A reading's location id, latitude and longitude, from its position entry or its own
/// columns (as `v_readings` has them), then its file and line.
pub(super) const POSITION: &str =
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
