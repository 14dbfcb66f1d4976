//! Hourly and daily statistics of what a delivery writes (behind `v_hourly` and `v_daily`),
//! kept in its transaction.
//!
//! Each written frame adds its hourly statistics (computed by the transform stage, on the
//! producer's thread) to the pending (sensor, hour) and (sensor, day) cells. Past
//! `FLUSH_CELLS` pending cells the settled ones are written (each sensor's but its latest
//! bucket; all of them if that leaves too many), and at the end the rest: a cell whose bucket
//! may already be stored (inside the sensor's committed span, or written earlier by this
//! delivery) is merged with the stored row first (Chan et al.: exact); the others are copied
//! as they are, so a file of new readings reads nothing back. Buckets whose stored values
//! were replaced are computed again from the readings at the end.

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

    /// Writes every pending cell.
    async fn flush(
        &mut self,
        tx: &Transaction<'_>,
        claims: &SensorClaims,
    ) -> Result<(), StoreError> {
        let cells = std::mem::take(&mut self.cells);
        self.write(tx, claims, cells).await
    }

    /// Writes the cells of each sensor but its latest: lines come in about the order of
    /// their times, so a sensor's earlier buckets are complete. A line that comes later for
    /// one of them is merged with what was written, as any stored bucket is: exact either way.
    async fn flush_settled(
        &mut self,
        tx: &Transaction<'_>,
        claims: &SensorClaims,
    ) -> Result<(), StoreError> {
        let mut settled = BTreeMap::new();
        let mut latest = BTreeMap::new();
        // Keys are sorted by sensor, then bucket: a sensor's latest is its last key.
        let mut cells = std::mem::take(&mut self.cells).into_iter().peekable();
        while let Some((key, cell)) = cells.next() {
            let has_later = cells
                .peek()
                .is_some_and(|((sensor, _), _)| *sensor == key.0);
            if has_later { &mut settled } else { &mut latest }.insert(key, cell);
        }
        self.cells = latest;
        self.write(tx, claims, settled).await
    }

    async fn write(
        &mut self,
        tx: &Transaction<'_>,
        claims: &SensorClaims,
        mut cells: BTreeMap<(i64, i64), Cell>,
    ) -> Result<(), StoreError> {
        if cells.is_empty() {
            return Ok(());
        }
        let maybe: Vec<(i64, i64)> = cells
            .keys()
            .copied()
            .filter(|(sensor, start)| self.may_be_stored(claims, *sensor, *start))
            .collect();
        for (key, stored) in rollup::take_stored(tx, self.bucket, &maybe).await? {
            if let Some(cell) = cells.get_mut(&key) {
                merge_cell(cell, &stored);
            }
        }
        rollup::write(tx, self.bucket, &cells).await?;
        for (sensor, start) in cells.keys() {
            self.written
                .entry(*sensor)
                .and_modify(|(lo, hi)| {
                    *lo = (*lo).min(*start);
                    *hi = (*hi).max(*start);
                })
                .or_insert((*start, *start));
        }
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

    fn pending(&self) -> usize {
        self.hours.cells.len() + self.days.cells.len()
    }

    /// Whether the pending cells should be written now.
    pub fn is_full(&self) -> bool {
        self.pending() >= FLUSH_CELLS
    }

    /// Writes the cells the delivery is done with (each sensor's but its latest bucket), and
    /// all of them when that leaves too many: a cell written and then added to costs its
    /// stored row read back and written again.
    ///
    /// # Errors
    /// A statement failed.
    pub async fn flush(
        &mut self,
        tx: &Transaction<'_>,
        claims: &SensorClaims,
    ) -> Result<(), StoreError> {
        self.hours.flush_settled(tx, claims).await?;
        self.days.flush_settled(tx, claims).await?;
        if self.is_full() {
            self.hours.flush(tx, claims).await?;
            self.days.flush(tx, claims).await?;
        }
        Ok(())
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
        self.hours.flush(tx, claims).await?;
        self.days.flush(tx, claims).await?;
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
