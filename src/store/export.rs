//! What the lake reads from the store: the delivery horizon an export may go up to, and the
//! rows of the deliveries after a given one, in one REPEATABLE READ snapshot opened by the
//! caller.
//!
//! The horizon is the highest ledger id below which no delivery is still being written. Every
//! delivery transaction holds the ledger's ROW EXCLUSIVE lock from the moment it allocates its
//! ids (see `ledger::next_file_ids`), so reading `max(file_id)` under a brief SHARE lock waits
//! for the deliveries in flight and sees every id up to the horizon committed or gone: a
//! delivery with a smaller id that commits later cannot be skipped.
//!
//! Readings are streamed from the narrow table with `COPY … TO STDOUT (FORMAT binary)`, the
//! way PostgreSQL hands out rows fastest; the caller expands each row into its measurements
//! with the dictionaries read in the same snapshot.

use std::collections::HashMap;

use deadpool_postgres::Pool;
use futures_util::{Stream, StreamExt};
use tokio_postgres::binary_copy::BinaryCopyOutStream;
use tokio_postgres::types::Type;
use tokio_postgres::Transaction;

use super::StoreError;

/// How long an export waits for the deliveries in flight before giving up.
const HORIZON_LOCK_TIMEOUT: &str = "60s";

/// The highest delivery id an export may include now (0 when nothing was delivered).
///
/// # Errors
/// The database failed, or the deliveries in flight did not finish within a minute.
pub async fn horizon(pool: &Pool) -> Result<i64, StoreError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    tx.batch_execute(&format!(
        "SET LOCAL lock_timeout = '{HORIZON_LOCK_TIMEOUT}'; LOCK TABLE files IN SHARE MODE"
    ))
    .await?;
    let horizon: i64 = tx
        .query_one("SELECT coalesce(max(file_id), 0)::int8 FROM files", &[])
        .await?
        .get(0);
    tx.commit().await?;
    Ok(horizon)
}

/// The highest delivery id committed so far, read without waiting for anyone: a cheap check
/// of whether an export would find anything.
///
/// # Errors
/// The database failed.
pub async fn latest_delivery(pool: &Pool) -> Result<i64, StoreError> {
    let client = pool.get().await?;
    Ok(client
        .query_one("SELECT coalesce(max(file_id), 0)::int8 FROM files", &[])
        .await?
        .get(0))
}

/// A measurement as the readings' dictionary names it.
#[derive(Debug, Clone)]
pub struct MeasurementName {
    /// Its sensor type.
    pub sensor_type: String,
    /// Its name.
    pub name: String,
    /// Its unit.
    pub unit: String,
}

/// Where a reading was measured.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Position {
    /// The sensor.community location id.
    pub location_id: Option<i64>,
    /// Latitude.
    pub lat: Option<f64>,
    /// Longitude.
    pub lon: Option<f64>,
}

/// The dictionaries a stored reading row points into.
#[derive(Debug, Default)]
pub struct ReadingDictionaries {
    /// Measurements by id.
    pub measurements: HashMap<i16, MeasurementName>,
    /// Measurement sets by id: the measurements of a row's values, in order.
    pub sets: HashMap<i32, Vec<i16>>,
    /// Positions by id.
    pub positions: HashMap<i32, Position>,
}

/// Reads the dictionaries in the caller's snapshot.
///
/// # Errors
/// The database failed.
pub async fn reading_dictionaries(tx: &Transaction<'_>) -> Result<ReadingDictionaries, StoreError> {
    let measurements = tx
        .query(
            "SELECT measurement_id, sensor_type, name, unit FROM measurements",
            &[],
        )
        .await?
        .into_iter()
        .map(|row| {
            (
                row.get(0),
                MeasurementName {
                    sensor_type: row.get(1),
                    name: row.get(2),
                    unit: row.get(3),
                },
            )
        })
        .collect();
    let sets = tx
        .query("SELECT set_id, measurement_ids FROM measurement_sets", &[])
        .await?
        .into_iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    let positions = tx
        .query(
            "SELECT position_id, location_id, lat, lon FROM positions",
            &[],
        )
        .await?
        .into_iter()
        .map(|row| {
            (
                row.get(0),
                Position {
                    location_id: row.get(1),
                    lat: row.get(2),
                    lon: row.get(3),
                },
            )
        })
        .collect();
    Ok(ReadingDictionaries {
        measurements,
        sets,
        positions,
    })
}

/// One stored row of readings: one source line, its values in the order of its set.
#[derive(Debug, Clone)]
pub struct StoredLine {
    /// Data time, microseconds since the Unix epoch (UTC).
    pub ts_micros: i64,
    /// The delivery.
    pub file_id: i64,
    /// The sensor.
    pub sensor_id: i64,
    /// The source line.
    pub line: i32,
    /// The measurement set of `values`.
    pub set_id: i32,
    /// The dictionary position, or none when the position is kept in the row.
    pub position_id: Option<i32>,
    /// The values.
    pub values: Vec<f64>,
    /// The position kept in the row (when `position_id` is none).
    pub position: Position,
}

/// The stored rows of the deliveries in `(after, up_to]`, in no particular order.
///
/// # Errors
/// The database failed; the stream's items fail when the connection does.
pub async fn stored_lines<'a>(
    tx: &'a Transaction<'a>,
    after: i64,
    up_to: i64,
) -> Result<impl Stream<Item = Result<StoredLine, StoreError>> + 'a, StoreError> {
    // Integers formatted in, as COPY takes no parameters.
    let sink = tx
        .copy_out(&format!(
            "COPY (SELECT ts, file_id, sensor_id, line, set_id, position_id, \"values\", \
                          location_id, lat, lon \
                   FROM readings WHERE file_id > {after} AND file_id <= {up_to}) \
             TO STDOUT (FORMAT binary)"
        ))
        .await?;
    let types = [
        Type::TIMESTAMPTZ,
        Type::INT8,
        Type::INT8,
        Type::INT4,
        Type::INT4,
        Type::INT4,
        Type::FLOAT8_ARRAY,
        Type::INT8,
        Type::FLOAT8,
        Type::FLOAT8,
    ];
    let rows = BinaryCopyOutStream::new(sink, &types);
    Ok(rows.map(|row| {
        let row = row?;
        let ts: chrono::DateTime<chrono::Utc> = row.try_get(0)?;
        Ok(StoredLine {
            ts_micros: ts.timestamp_micros(),
            file_id: row.try_get(1)?,
            sensor_id: row.try_get(2)?,
            line: row.try_get(3)?,
            set_id: row.try_get(4)?,
            position_id: row.try_get(5)?,
            values: row.try_get(6)?,
            position: Position {
                location_id: row.try_get(7)?,
                lat: row.try_get(8)?,
                lon: row.try_get(9)?,
            },
        })
    }))
}

/// The ledger views the lake copies whole rows of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LedgerView {
    /// `v_files`: one row per delivery.
    Files,
    /// `v_aggregates`: the statistics of each delivery.
    Aggregates,
}

impl LedgerView {
    /// The view's name.
    pub fn name(self) -> &'static str {
        match self {
            LedgerView::Files => "v_files",
            LedgerView::Aggregates => "v_aggregates",
        }
    }
}

/// Opens a cursor named `cursor` over the rows of `view` of the deliveries in `(after, up_to]`,
/// selecting `columns` in order; read it with `fetch`.
///
/// # Errors
/// The database failed.
pub async fn open_ledger_cursor(
    tx: &Transaction<'_>,
    cursor: &str,
    view: LedgerView,
    columns: &[&str],
    after: i64,
    up_to: i64,
) -> Result<(), StoreError> {
    let order = match view {
        LedgerView::Files => "file_id",
        LedgerView::Aggregates => "file_id, scope, sensor_id, measurement",
    };
    tx.execute(
        &format!(
            "DECLARE {cursor} NO SCROLL CURSOR FOR SELECT {} FROM {} \
             WHERE file_id > $1 AND file_id <= $2 ORDER BY {order}",
            columns.join(", "),
            view.name()
        ),
        &[&after, &up_to],
    )
    .await?;
    Ok(())
}

/// The next `count` rows of `cursor` (none when it is exhausted).
///
/// # Errors
/// The database failed.
pub async fn fetch(
    tx: &Transaction<'_>,
    cursor: &str,
    count: usize,
) -> Result<Vec<tokio_postgres::Row>, StoreError> {
    Ok(tx
        .query(&format!("FETCH {count} FROM {cursor}"), &[])
        .await?)
}

/// Stored lines that deliveries in `(after, up_to]` replaced (`on_conflict = "replace"`) and
/// that were themselves delivered up to `after`: (sensor, time in µs, delivery that held them).
/// An export to `after` holds these lines, which PostgreSQL no longer does.
///
/// # Errors
/// The statement failed.
pub async fn replaced_lines(
    tx: &Transaction<'_>,
    after: i64,
    up_to: i64,
) -> Result<Vec<(i64, i64, i64)>, StoreError> {
    let rows = tx
        .query(
            "SELECT sensor_id, ts, file_id FROM replaced_readings \
             WHERE replaced_by > $1 AND replaced_by <= $2 AND file_id <= $1",
            &[&after, &up_to],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| {
            let ts: chrono::DateTime<chrono::Utc> = row.get(1);
            (row.get(0), ts.timestamp_micros(), row.get(2))
        })
        .collect())
}
