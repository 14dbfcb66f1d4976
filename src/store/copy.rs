//! Binary COPY of a file's rows: readings, rejects and aggregates.
//!
//! Each function writes into the caller's transaction; nothing is visible before its commit,
//! and an unfinished COPY is aborted with the transaction. Each column list and its `TYPES`
//! live side by side here, because a count mismatch is a bug the COPY writer panics on.
//! Text is stripped of NUL bytes, which PostgreSQL text cannot hold.

use chrono::{DateTime, Utc};
use futures_util::pin_mut;
use polars::prelude::DataFrame;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::Transaction;

use crate::error::Result;
use crate::store::{Store, StoreError};
use crate::transform::aggregate::AggregateRow;
use crate::validate::reject::RejectedRow;

const READINGS_COPY: &str = "COPY reading_rows (file_id, line, sensor_id, location_id, lat, lon, \
                             ts, measurement_ids, \"values\") FROM STDIN BINARY";
const READINGS_TYPES: [Type; 9] = [
    Type::INT8,
    Type::INT4,
    Type::INT8,
    Type::INT8,
    Type::FLOAT8,
    Type::FLOAT8,
    Type::TIMESTAMPTZ,
    Type::INT2_ARRAY,
    Type::FLOAT8_ARRAY,
];

const REJECTS_COPY: &str = "COPY rejects (file_id, line, record, byte_offset, column_name, value, \
                            code, message) FROM STDIN BINARY";
const REJECTS_TYPES: [Type; 8] = [
    Type::INT8,
    Type::INT8,
    Type::INT8,
    Type::INT8,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
];

const AGGREGATES_COPY: &str = "COPY aggregates (file_id, scope, measurement_id, sensor_id, \
                               location_id, n, min, max, mean, stddev, first_ts, last_ts) \
                               FROM STDIN BINARY";
const AGGREGATES_TYPES: [Type; 12] = [
    Type::INT8,
    Type::TEXT,
    Type::INT2,
    Type::INT8,
    Type::INT8,
    Type::INT8,
    Type::FLOAT8,
    Type::FLOAT8,
    Type::FLOAT8,
    Type::FLOAT8,
    Type::TIMESTAMPTZ,
    Type::TIMESTAMPTZ,
];

fn micros_to_utc(micros: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(micros).unwrap_or_default()
}

/// One source line's readings, gathered from consecutive rows of the long-format frame.
struct LineRow {
    file_id: i64,
    line: i32,
    sensor_id: i64,
    location_id: Option<i64>,
    lat: Option<f64>,
    lon: Option<f64>,
    ts: DateTime<Utc>,
    measurement_ids: Vec<i16>,
    values: Vec<f64>,
}

impl LineRow {
    async fn write(&self, writer: std::pin::Pin<&mut BinaryCopyInWriter>) -> Result<()> {
        let row: [&(dyn ToSql + Sync); 9] = [
            &self.file_id,
            &self.line,
            &self.sensor_id,
            &self.location_id,
            &self.lat,
            &self.lon,
            &self.ts,
            &self.measurement_ids,
            &self.values,
        ];
        writer.write(&row).await.map_err(StoreError::from)?;
        Ok(())
    }
}

/// Copies a normalized frame's readings, one database row per source line (the frame holds
/// one row per measurement, a line's measurements next to each other). `file_ids[part]` is
/// the file id of each part of the frame (one part outside group commits); rows of a part
/// with no id (a duplicate file) are skipped. Returns the number of readings written.
///
/// # Errors
/// The COPY failed, or the frame lacks an expected column.
pub async fn copy_readings(
    tx: &Transaction<'_>,
    store: &Store,
    frame: &DataFrame,
    file_ids: &[Option<i64>],
) -> Result<u64> {
    if frame.height() == 0 {
        return Ok(0);
    }
    let column = |name: &str| frame.column(name).map_err(crate::error::Error::Transform);
    let line = column("line")?.u32()?;
    let sensor_id = column("sensor_id")?.i64()?;
    let location_id = column("location_id")?.i64()?;
    let lat = column("lat")?.f64()?;
    let lon = column("lon")?.f64()?;
    let ts = column("ts")?.i64()?;
    let key = column("key")?.u32()?;
    let value = column("value")?.f64()?;
    let part = column("part")?.u32()?;

    let sink = tx.copy_in(READINGS_COPY).await.map_err(StoreError::from)?;
    let writer = BinaryCopyInWriter::new(sink, &READINGS_TYPES);
    pin_mut!(writer);
    let rows = line
        .iter()
        .zip(sensor_id.iter())
        .zip(location_id.iter())
        .zip(lat.iter())
        .zip(lon.iter())
        .zip(ts.iter())
        .zip(key.iter())
        .zip(value.iter())
        .zip(part.iter());
    // One row buffer, reused: its arrays keep their capacity from line to line.
    let mut current = LineRow {
        file_id: 0,
        line: -1,
        sensor_id: 0,
        location_id: None,
        lat: None,
        lon: None,
        ts: DateTime::default(),
        measurement_ids: Vec::with_capacity(8),
        values: Vec::with_capacity(8),
    };
    let mut readings = 0u64;
    for ((((((((line, sensor_id), location_id), lat), lon), ts), key), value), part) in rows {
        let (Some(line), Some(sensor_id), Some(ts), Some(key), Some(value)) =
            (line, sensor_id, ts, key, value)
        else {
            continue;
        };
        let Some(file_id) = part.and_then(|p| file_ids.get(p as usize).copied().flatten()) else {
            continue;
        };
        let line = i32::try_from(line).unwrap_or(i32::MAX);
        if current.line != line || current.file_id != file_id {
            if !current.values.is_empty() {
                current.write(writer.as_mut()).await?;
            }
            current.file_id = file_id;
            current.line = line;
            current.sensor_id = sensor_id;
            current.location_id = location_id;
            current.lat = lat;
            current.lon = lon;
            current.ts = micros_to_utc(ts);
            current.measurement_ids.clear();
            current.values.clear();
        }
        current.measurement_ids.push(store.measurement_id(key));
        current.values.push(value);
        readings += 1;
    }
    if !current.values.is_empty() {
        current.write(writer.as_mut()).await?;
    }
    writer.finish().await.map_err(StoreError::from)?;
    Ok(readings)
}

fn clean_text(text: &str) -> String {
    text.replace('\0', "\u{FFFD}")
}

/// Copies one row per violation of each rejected row of each file, in one COPY; returns the
/// number written.
///
/// # Errors
/// The COPY failed.
pub async fn copy_rejects(tx: &Transaction<'_>, files: &[(i64, &[RejectedRow])]) -> Result<u64> {
    if files.iter().all(|(_, rejects)| rejects.is_empty()) {
        return Ok(0);
    }
    let sink = tx.copy_in(REJECTS_COPY).await.map_err(StoreError::from)?;
    let writer = BinaryCopyInWriter::new(sink, &REJECTS_TYPES);
    pin_mut!(writer);
    for (file_id, rejects) in files {
        for reject in *rejects {
            let line = i64::try_from(reject.position.line).unwrap_or(i64::MAX);
            let record = i64::try_from(reject.position.record).unwrap_or(i64::MAX);
            let byte = i64::try_from(reject.position.byte).unwrap_or(i64::MAX);
            for violation in &reject.violations {
                let column = violation.column.as_deref().map(clean_text);
                let value = violation.value.as_deref().map(clean_text);
                let code = violation.reason.code();
                let message = clean_text(&violation.message);
                let row: [&(dyn ToSql + Sync); 8] = [
                    file_id, &line, &record, &byte, &column, &value, &code, &message,
                ];
                writer
                    .as_mut()
                    .write(&row)
                    .await
                    .map_err(StoreError::from)?;
            }
        }
    }
    Ok(writer.finish().await.map_err(StoreError::from)?)
}

/// Copies files' aggregates, in one COPY.
///
/// # Errors
/// The COPY failed.
pub async fn copy_aggregates(
    tx: &Transaction<'_>,
    store: &Store,
    files: &[(i64, &[AggregateRow])],
) -> Result<u64> {
    if files.iter().all(|(_, rows)| rows.is_empty()) {
        return Ok(0);
    }
    let sink = tx
        .copy_in(AGGREGATES_COPY)
        .await
        .map_err(StoreError::from)?;
    let writer = BinaryCopyInWriter::new(sink, &AGGREGATES_TYPES);
    pin_mut!(writer);
    for (file_id, rows) in files {
        for row in *rows {
            let measurement_id = store.measurement_id(row.key);
            let n = i64::try_from(row.stats.n).unwrap_or(i64::MAX);
            let stddev = row.stats.stddev();
            let first = micros_to_utc(row.stats.first_ts);
            let last = micros_to_utc(row.stats.last_ts);
            let values: [&(dyn ToSql + Sync); 12] = [
                file_id,
                &row.scope,
                &measurement_id,
                &row.sensor_id,
                &row.location_id,
                &n,
                &row.stats.min,
                &row.stats.max,
                &row.stats.mean,
                &stddev,
                &first,
                &last,
            ];
            writer
                .as_mut()
                .write(&values)
                .await
                .map_err(StoreError::from)?;
        }
    }
    Ok(writer.finish().await.map_err(StoreError::from)?)
}
