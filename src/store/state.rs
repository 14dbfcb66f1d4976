//! What the store keeps per sensor beside its readings, written in each delivery's
//! transaction: the span and count of its readings (`sensor_spans`, behind `v_sensors`) and the
//! latest value of each of its measurements with its position (`latest_values`, behind
//! `v_latest`). The views so never lag the readings and never rescan them.
//!
//! A delivery (or a group of them) brings its merged statistics; rows are merged per key
//! first (one row per key in a statement) and written in key order, so concurrent
//! transactions lock shared rows in the same order. The later reading time wins a latest
//! value; on a tie the value stored first stays.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;

use crate::store::{time_of_micros as time, Store, StoreError};
use crate::transform::aggregate::{FileAggregates, Latest};

/// Per-sensor state of one or more deliveries, merged, ready to be written.
#[derive(Debug, Default)]
pub struct SensorState {
    /// Sensor id -> (first µs, last µs, readings).
    spans: BTreeMap<i64, (i64, i64, i64)>,
    /// (sensor id, catalogue key) -> latest value and the delivery it came from.
    latest: BTreeMap<(i64, u32), (Latest, i64)>,
}

impl SensorState {
    /// Adds what delivery `file_id` loaded.
    pub fn add(&mut self, file_id: i64, aggregates: &FileAggregates) {
        for row in aggregates.rows() {
            let Some(sensor_id) = row.sensor_id else {
                continue;
            };
            let n = i64::try_from(row.stats.n).unwrap_or(i64::MAX);
            self.spans
                .entry(sensor_id)
                .and_modify(|(first, last, count)| {
                    *first = (*first).min(row.stats.first_ts);
                    *last = (*last).max(row.stats.last_ts);
                    *count += n;
                })
                .or_insert((row.stats.first_ts, row.stats.last_ts, n));
        }
        for latest in aggregates.latest() {
            self.latest
                .entry((latest.sensor_id, latest.key))
                .and_modify(|(kept, kept_file)| {
                    if latest.supersedes(kept) {
                        *kept = *latest;
                        *kept_file = file_id;
                    }
                })
                .or_insert((*latest, file_id));
        }
    }

    /// The sensors this state has readings of.
    pub fn sensors(&self) -> Vec<i64> {
        self.spans.keys().copied().collect()
    }

    /// Those of `sensors` this state has no span for.
    pub fn uncovered(&self, sensors: &[i64]) -> Vec<i64> {
        sensors
            .iter()
            .copied()
            .filter(|s| !self.spans.contains_key(s))
            .collect()
    }

    /// Writes the state into the transaction.
    ///
    /// # Errors
    /// A statement failed.
    pub async fn write(&self, tx: &Transaction<'_>, store: &Store) -> Result<(), StoreError> {
        if !self.spans.is_empty() {
            let ids: Vec<i64> = self.spans.keys().copied().collect();
            let firsts: Vec<DateTime<Utc>> = self.spans.values().map(|s| time(s.0)).collect();
            let lasts: Vec<DateTime<Utc>> = self.spans.values().map(|s| time(s.1)).collect();
            let counts: Vec<i64> = self.spans.values().map(|s| s.2).collect();
            let statement = tx
                .prepare_cached(
                    "INSERT INTO sensor_spans (sensor_id, first_ts, last_ts, readings) \
                     SELECT * FROM unnest($1::int8[], $2::timestamptz[], $3::timestamptz[], $4::int8[]) \
                     ON CONFLICT (sensor_id) DO UPDATE SET \
                       first_ts = least(sensor_spans.first_ts, excluded.first_ts), \
                       last_ts = greatest(sensor_spans.last_ts, excluded.last_ts), \
                       readings = sensor_spans.readings + excluded.readings",
                )
                .await?;
            tx.execute(&statement, &[&ids, &firsts, &lasts, &counts])
                .await?;
        }
        if !self.latest.is_empty() {
            let rows: Vec<&(Latest, i64)> = self.latest.values().collect();
            let ids: Vec<i64> = rows.iter().map(|(l, _)| l.sensor_id).collect();
            let measurements: Vec<i16> = rows
                .iter()
                .map(|(l, _)| store.measurement_id(l.key))
                .collect();
            let times: Vec<DateTime<Utc>> = rows.iter().map(|(l, _)| time(l.ts)).collect();
            let values: Vec<f64> = rows.iter().map(|(l, _)| l.value).collect();
            let locations: Vec<Option<i64>> = rows.iter().map(|(l, _)| l.location_id).collect();
            let lats: Vec<Option<f64>> = rows.iter().map(|(l, _)| l.lat).collect();
            let lons: Vec<Option<f64>> = rows.iter().map(|(l, _)| l.lon).collect();
            let files: Vec<i64> = rows.iter().map(|(_, file)| *file).collect();
            let statement = tx
                .prepare_cached(
                    "INSERT INTO latest_values \
                       (sensor_id, measurement_id, ts, value, location_id, lat, lon, file_id) \
                     SELECT * FROM unnest($1::int8[], $2::int2[], $3::timestamptz[], \
                       $4::float8[], $5::int8[], $6::float8[], $7::float8[], $8::int8[]) \
                     ON CONFLICT (sensor_id, measurement_id) DO UPDATE SET \
                       ts = excluded.ts, value = excluded.value, \
                       location_id = excluded.location_id, lat = excluded.lat, \
                       lon = excluded.lon, file_id = excluded.file_id \
                     WHERE excluded.ts > latest_values.ts",
                )
                .await?;
            tx.execute(
                &statement,
                &[
                    &ids,
                    &measurements,
                    &times,
                    &values,
                    &locations,
                    &lats,
                    &lons,
                    &files,
                ],
            )
            .await?;
        }
        Ok(())
    }
}
