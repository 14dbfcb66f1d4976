//! Hourly and daily statistics of what a delivery writes (behind `v_hourly` and `v_daily`),
//! kept in its transaction.
//!
//! Each written frame adds its hourly statistics (computed by the transform stage, on the
//! producer's thread) to the pending (sensor, hour) and (sensor, day) cells. Past `FLUSH_CELLS` pending cells (and at the end) they are written: a
//! cell whose bucket may already be stored (inside the sensor's committed span, or written
//! earlier by this delivery) is merged with the stored row first (Chan et al.: exact); the
//! others are copied as they are, so a file of new readings reads nothing back. Buckets whose
//! stored values were replaced are computed again from the readings at the end.

use std::collections::{BTreeMap, HashMap};

use deadpool_postgres::Transaction;

use crate::store::once::SensorClaims;
use crate::store::rollup::{self, merge_cell, Bucket, Cell, DAY, HOUR};
use crate::store::{Store, StoreError};
use crate::transform::aggregate::{HourCell, Stats};

/// Pending cells (hours and days) past which they are written: bounded memory at any size.
/// A 4M-line file of 1,000 sensors has about 170,000 hour cells; writing them in four parts
/// took its peak RSS from 133–146 MB to 105–107 MB at the same speed.
const FLUSH_CELLS: usize = 50_000;

/// One bucket size's pending cells and what this delivery already wrote of it.
struct Pending {
    bucket: Bucket,
    cells: BTreeMap<(i64, i64), Cell>,
    /// Per sensor, the first and last bucket this delivery wrote.
    written: HashMap<i64, (i64, i64)>,
}

impl Pending {
    fn new(bucket: Bucket) -> Self {
        Self {
            bucket,
            cells: BTreeMap::new(),
            written: HashMap::new(),
        }
    }

    fn add(&mut self, key: (i64, i64), cell: &[(i16, Stats)]) {
        merge_cell(self.cells.entry(key).or_default(), cell);
    }

    /// Whether the bucket `start` of `sensor` may be stored already.
    fn may_be_stored(&self, claims: &SensorClaims, sensor: i64, start: i64) -> bool {
        let committed = claims.stored_span(sensor).is_some_and(|(first, last)| {
            self.bucket.of(first) <= start && start <= self.bucket.of(last)
        });
        committed
            || self
                .written
                .get(&sensor)
                .is_some_and(|(lo, hi)| *lo <= start && start <= *hi)
    }

    async fn flush(
        &mut self,
        tx: &Transaction<'_>,
        claims: &SensorClaims,
    ) -> Result<(), StoreError> {
        if self.cells.is_empty() {
            return Ok(());
        }
        let maybe: Vec<(i64, i64)> = self
            .cells
            .keys()
            .copied()
            .filter(|(sensor, start)| self.may_be_stored(claims, *sensor, *start))
            .collect();
        for (key, stored) in rollup::take_stored(tx, self.bucket, &maybe).await? {
            if let Some(cell) = self.cells.get_mut(&key) {
                merge_cell(cell, &stored);
            }
        }
        rollup::write(tx, self.bucket, &self.cells).await?;
        for (sensor, start) in self.cells.keys() {
            self.written
                .entry(*sensor)
                .and_modify(|(lo, hi)| {
                    *lo = (*lo).min(*start);
                    *hi = (*hi).max(*start);
                })
                .or_insert((*start, *start));
        }
        self.cells.clear();
        Ok(())
    }
}

/// A delivery's (or a group's) hourly and daily statistics on their way to the store.
pub(super) struct PendingStatistics {
    hours: Pending,
    days: Pending,
    /// (sensor, µs) of stored lines replaced: their buckets are computed again.
    replaced: Vec<(i64, i64)>,
}

impl PendingStatistics {
    pub fn new() -> Self {
        Self {
            hours: Pending::new(HOUR),
            days: Pending::new(DAY),
            replaced: Vec::new(),
        }
    }

    /// Adds the hourly statistics of lines about to be written (`file_ids[part]`: `None`
    /// for a part that is not written).
    pub fn add(&mut self, cells: &[HourCell], file_ids: &[Option<i64>], store: &Store) {
        for cell in cells {
            if file_ids
                .get(cell.part as usize)
                .copied()
                .flatten()
                .is_none()
            {
                continue;
            }
            let mut stats: Cell = cell
                .stats
                .iter()
                .map(|(key, stats)| (store.measurement_id(*key), *stats))
                .collect();
            stats.sort_by_key(|(id, _)| *id);
            self.add_hour((cell.sensor_id, cell.hour), &stats);
        }
    }

    fn add_hour(&mut self, (sensor, hour): (i64, i64), cell: &[(i16, Stats)]) {
        self.hours.add((sensor, hour), cell);
        self.days.add((sensor, DAY.of(hour)), cell);
    }

    /// Notes stored lines replaced by this delivery.
    pub fn replaced(&mut self, lines: &[(i64, i64)]) {
        self.replaced.extend_from_slice(lines);
    }

    /// The sensors whose stored lines were replaced, sorted.
    pub fn replaced_sensors(&self) -> Vec<i64> {
        let mut sensors: Vec<i64> = self.replaced.iter().map(|(sensor, _)| *sensor).collect();
        sensors.sort_unstable();
        sensors.dedup();
        sensors
    }

    /// Whether the pending cells should be written now.
    pub fn is_full(&self) -> bool {
        self.hours.cells.len() + self.days.cells.len() >= FLUSH_CELLS
    }

    /// Writes the pending cells.
    ///
    /// # Errors
    /// A statement failed.
    pub async fn flush(
        &mut self,
        tx: &Transaction<'_>,
        claims: &SensorClaims,
    ) -> Result<(), StoreError> {
        self.hours.flush(tx, claims).await?;
        self.days.flush(tx, claims).await
    }

    /// Writes the pending cells, then computes again the buckets of replaced lines.
    ///
    /// # Errors
    /// A statement failed.
    pub async fn finish(
        &mut self,
        tx: &Transaction<'_>,
        claims: &SensorClaims,
    ) -> Result<(), StoreError> {
        self.flush(tx, claims).await?;
        for bucket in [HOUR, DAY] {
            let mut keys: Vec<(i64, i64)> = self
                .replaced
                .iter()
                .map(|(sensor, ts)| (*sensor, bucket.of(*ts)))
                .collect();
            keys.sort_unstable();
            keys.dedup();
            rollup::recompute(tx, bucket, &keys).await?;
        }
        Ok(())
    }
}
