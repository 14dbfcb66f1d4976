//! The hourly and daily statistics behind `v_hourly` and `v_daily`: one row per (sensor,
//! bucket of data time): its measurement ids, and count, mean, M2, min and max of each in one
//! array (`STATS_PER_MEASUREMENT` numbers per measurement).
//! The pipeline computes a delivery's rows (`pipeline::statistics`); this module reads the stored
//! rows a delivery must merge with (taking them out), writes rows by binary COPY, and
//! recomputes buckets from the readings where values were replaced.
//!
//! Guarantees: written in the delivery's transaction; a (sensor, bucket) row is only touched by
//! the transaction that has claimed the sensor (`store::once::SensorClaims`), so reading, merging and
//! writing it back needs no lock of its own, and a bucket is never stored twice.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;

use crate::store::copy::CopyStream;
use crate::store::{time_of_micros as time, StoreError};
use crate::transform::aggregate::Stats;

type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A bucket of data time and the table that keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket {
    /// Length in µs.
    pub micros: i64,
    table: &'static str,
    column: &'static str,
}

/// Hours of data time (UTC).
pub const HOUR: Bucket = Bucket {
    micros: 3_600_000_000,
    table: "hourly_stats",
    column: "hour",
};

/// Days of data time (UTC).
pub const DAY: Bucket = Bucket {
    micros: 86_400_000_000,
    table: "daily_stats",
    column: "day",
};

impl Bucket {
    /// The start of the bucket holding `micros`.
    pub fn of(&self, micros: i64) -> i64 {
        micros.div_euclid(self.micros) * self.micros
    }
}

/// Numbers kept per measurement: count, mean, M2, min, max.
const STATS_PER_MEASUREMENT: usize = 5;

/// One bucket's statistics, per measurement id (ascending).
pub type Cell = Vec<(i16, Stats)>;

/// Merges `other` into `cell` measurement by measurement.
pub fn merge_cell(cell: &mut Cell, other: &[(i16, Stats)]) {
    for (id, stats) in other {
        match cell.binary_search_by_key(id, |(i, _)| *i) {
            Ok(at) => cell[at].1 = cell[at].1.merge(*stats),
            Err(at) => cell.insert(at, (*id, *stats)),
        }
    }
}

/// Takes the stored rows of `keys` (sensor, bucket start µs) out of the table and returns them.
///
/// # Errors
/// The statement failed.
pub async fn take_stored(
    tx: &Transaction<'_>,
    bucket: Bucket,
    keys: &[(i64, i64)],
) -> Result<HashMap<(i64, i64), Cell>> {
    let mut stored = HashMap::new();
    if keys.is_empty() {
        return Ok(stored);
    }
    let sensors: Vec<i64> = keys.iter().map(|k| k.0).collect();
    let starts: Vec<DateTime<Utc>> = keys.iter().map(|k| time(k.1)).collect();
    // Each key is found by the table's primary key.
    let statement = format!(
        "DELETE FROM {table} t USING unnest($1::int8[], $2::timestamptz[]) AS k(sensor_id, b) \
         WHERE t.sensor_id = k.sensor_id AND t.{column} = k.b \
         RETURNING t.sensor_id, t.{column}, t.measurement_ids, t.stats",
        table = bucket.table,
        column = bucket.column
    );
    let rows = tx
        .query(&tx.prepare_cached(&statement).await?, &[&sensors, &starts])
        .await?;
    for row in rows {
        let start: DateTime<Utc> = row.get(1);
        let ids: Vec<i16> = row.get(2);
        let numbers: Vec<f64> = row.get(3);
        let cell: Cell = ids
            .iter()
            .zip(numbers.chunks_exact(STATS_PER_MEASUREMENT))
            .map(|(id, x)| {
                (
                    *id,
                    Stats {
                        n: x[0] as u64,
                        mean: x[1],
                        m2: x[2],
                        min: x[3],
                        max: x[4],
                        first_ts: 0,
                        last_ts: 0,
                    },
                )
            })
            .collect();
        stored.insert((row.get(0), start.timestamp_micros()), cell);
    }
    Ok(stored)
}

/// Writes rows (none of which is stored) by binary COPY.
///
/// # Errors
/// The COPY failed (a bucket already stored included).
pub async fn write(
    tx: &Transaction<'_>,
    bucket: Bucket,
    rows: &BTreeMap<(i64, i64), Cell>,
) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let statement = format!(
        "COPY {} (sensor_id, {}, measurement_ids, stats) FROM STDIN BINARY",
        bucket.table, bucket.column
    );
    let mut stream = CopyStream::start(tx, &statement).await?;
    let (mut ids, mut numbers) = (Vec::new(), Vec::new());
    for ((sensor_id, start), cell) in rows {
        ids.clear();
        numbers.clear();
        for (id, stats) in cell {
            ids.push(*id);
            numbers.extend([stats.n as f64, stats.mean, stats.m2, stats.min, stats.max]);
        }
        let encoder = &mut stream.encoder;
        encoder.row(4);
        encoder.i64(*sensor_id);
        encoder.timestamp_micros(*start);
        encoder.i16_array(&ids);
        encoder.f64_array(&numbers);
        stream.flush_full().await?;
    }
    stream.finish().await?;
    Ok(())
}

/// Computes the rows of `keys` again from the readings (after stored values were replaced).
///
/// # Errors
/// A statement failed.
pub async fn recompute(tx: &Transaction<'_>, bucket: Bucket, keys: &[(i64, i64)]) -> Result<()> {
    if keys.is_empty() {
        return Ok(());
    }
    take_stored(tx, bucket, keys).await?;
    let sensors: Vec<i64> = keys.iter().map(|k| k.0).collect();
    let starts: Vec<DateTime<Utc>> = keys.iter().map(|k| time(k.1)).collect();
    let statement = tx
        .prepare_cached(&format!(
            "INSERT INTO {table} (sensor_id, {column}, measurement_ids, stats) \
             SELECT sensor_id, b, \
               array_agg(measurement_id ORDER BY measurement_id) FILTER (WHERE pos = 1), \
               array_agg(x ORDER BY measurement_id, pos) \
             FROM ( \
               SELECT k.sensor_id, k.b, u.measurement_id, count(*) AS n, avg(u.value) AS mean, \
                 coalesce(var_samp(u.value) * (count(*) - 1), 0) AS m2, \
                 min(u.value) AS lo, max(u.value) AS hi \
               FROM unnest($1::int8[], $2::timestamptz[]) AS k(sensor_id, b) \
               JOIN readings r ON r.sensor_id = k.sensor_id \
                 AND r.ts >= k.b AND r.ts < k.b + interval '{seconds} seconds' \
               JOIN measurement_sets s ON s.set_id = r.set_id \
               CROSS JOIN LATERAL unnest(s.measurement_ids, r.\"values\") AS u(measurement_id, value) \
               GROUP BY 1, 2, 3) g \
             CROSS JOIN LATERAL unnest(ARRAY[n::float8, mean, m2, lo, hi]) WITH ORDINALITY AS st(x, pos) \
             GROUP BY sensor_id, b",
            table = bucket.table,
            column = bucket.column,
            seconds = bucket.micros / 1_000_000,
        ))
        .await?;
    tx.execute(&statement, &[&sensors, &starts]).await?;
    Ok(())
}
