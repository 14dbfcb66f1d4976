//! Aggregates per file at two scopes: (sensor type, measurement) and (sensor, location,
//! measurement): count, min, max, mean, sample standard deviation, first and last time.
//!
//! polars computes each chunk's partial statistics per sensor; those of the sensor type are
//! merged from them, and `FileAggregates` merges partials, exactly (Chan et al.'s parallel
//! variance: counts, means and M2 combine without revisiting rows), so a file read in any
//! number of chunks gets the same result as one pass. The standard
//! deviation is null below two readings. Beside them, the latest value of each (sensor,
//! measurement) with its position ([`Latest`]), merged the same way (the later time wins).
//! Pure: no I/O.

use std::collections::{BTreeMap, HashMap};

use polars::prelude::*;

use super::normalize::{value_column, NormalizedFrame};

/// Mergeable statistics of one group.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    /// Number of readings.
    pub n: u64,
    /// Mean.
    pub mean: f64,
    /// Sum of squared deviations from the mean.
    pub m2: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// Earliest reading, µs since the epoch.
    pub first_ts: i64,
    /// Latest reading, µs since the epoch.
    pub last_ts: i64,
}

impl Stats {
    /// Combines two groups' statistics exactly.
    pub fn merge(self, other: Stats) -> Stats {
        if self.n == 0 {
            return other;
        }
        if other.n == 0 {
            return self;
        }
        let n = self.n + other.n;
        let (na, nb, nf) = (self.n as f64, other.n as f64, n as f64);
        let delta = other.mean - self.mean;
        Stats {
            n,
            mean: self.mean + delta * nb / nf,
            m2: self.m2 + other.m2 + delta * delta * na * nb / nf,
            min: self.min.min(other.min),
            max: self.max.max(other.max),
            first_ts: self.first_ts.min(other.first_ts),
            last_ts: self.last_ts.max(other.last_ts),
        }
    }

    /// Sample standard deviation (n − 1 in the denominator); `None` below two readings.
    pub fn stddev(&self) -> Option<f64> {
        (self.n >= 2).then(|| (self.m2 / (self.n - 1) as f64).max(0.0).sqrt())
    }
}

/// Which group a statistic belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GroupKey {
    /// All readings of one catalogue entry (sensor type + measurement).
    SensorType {
        /// Catalogue key.
        key: u32,
    },
    /// Readings of one sensor at one location for one measurement.
    Sensor {
        /// Catalogue key.
        key: u32,
        /// Sensor id.
        sensor_id: i64,
        /// Location id, if the file has one.
        location_id: Option<i64>,
    },
}

/// One chunk's statistics at both scopes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PartialAggregates {
    /// Groups and their statistics.
    pub groups: Vec<(GroupKey, Stats)>,
    /// The latest value of each (sensor, measurement) in the chunk.
    pub latest: Vec<Latest>,
}

/// The latest value of one measurement of one sensor, and where it was measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Latest {
    /// Sensor id.
    pub sensor_id: i64,
    /// Catalogue key.
    pub key: u32,
    /// Reading time, µs since the epoch.
    pub ts: i64,
    /// Value in the canonical unit.
    pub value: f64,
    /// Location id.
    pub location_id: Option<i64>,
    /// Latitude.
    pub lat: Option<f64>,
    /// Longitude.
    pub lon: Option<f64>,
}

impl Latest {
    /// Whether `self` replaces `other` (a later time; the first one seen keeps a tie).
    pub fn supersedes(&self, other: &Latest) -> bool {
        self.ts > other.ts
    }
}

/// Length of an hour of data time, µs.
pub const HOUR_MICROS: i64 = 3_600_000_000;

/// The statistics of one sensor's measurements in one hour of data time (UTC).
#[derive(Debug, Clone, PartialEq)]
pub struct HourCell {
    /// Which file of a group the lines belong to.
    pub part: u32,
    /// Sensor id.
    pub sensor_id: i64,
    /// Start of the hour, µs since the epoch.
    pub hour: i64,
    /// Per catalogue key (ascending): count, mean, M2, min, max (times unused).
    pub stats: Vec<(u32, Stats)>,
}

/// Adds one value to a statistic (Welford).
fn add_value(stats: &mut Stats, value: f64) {
    if stats.n == 0 {
        stats.min = value;
        stats.max = value;
    }
    stats.n += 1;
    let delta = value - stats.mean;
    stats.mean += delta / stats.n as f64;
    stats.m2 += delta * (value - stats.mean);
    stats.min = stats.min.min(value);
    stats.max = stats.max.max(value);
}

/// The hourly statistics of a frame's lines. The frame is ordered by part, sensor and time
/// (`normalize`), so each (part, sensor, hour) is one run of lines, summed as it passes; a
/// frame in another order gives the same statistics split over more cells.
///
/// # Errors
/// The frame lacks a column.
pub fn hourly_cells(normalized: &NormalizedFrame) -> PolarsResult<Vec<HourCell>> {
    let frame = &normalized.frame;
    let sensor_id = frame.column("sensor_id")?.i64()?;
    let ts = frame.column("ts")?.i64()?;
    let part = frame.column("part")?.u32()?;
    let mut values = Vec::with_capacity(normalized.keys.len());
    for key in &normalized.keys {
        values.push(frame.column(&value_column(*key))?.f64()?.iter());
    }
    let empty = Stats {
        n: 0,
        mean: 0.0,
        m2: 0.0,
        min: 0.0,
        max: 0.0,
        first_ts: 0,
        last_ts: 0,
    };
    let mut cells: Vec<HourCell> = Vec::new();
    let mut run: Vec<Stats> = vec![empty; normalized.keys.len()];
    let mut key: Option<(u32, i64, i64)> = None;
    let finish = |cells: &mut Vec<HourCell>, key: (u32, i64, i64), run: &mut [Stats]| {
        let stats: Vec<(u32, Stats)> = normalized
            .keys
            .iter()
            .zip(run.iter_mut())
            .filter(|(_, s)| s.n > 0)
            .map(|(k, s)| (*k, std::mem::replace(s, empty)))
            .collect();
        if !stats.is_empty() {
            cells.push(HourCell {
                part: key.0,
                sensor_id: key.1,
                hour: key.2,
                stats,
            });
        }
    };
    for ((sensor, ts), part) in sensor_id.iter().zip(ts.iter()).zip(part.iter()) {
        let (Some(sensor), Some(ts)) = (sensor, ts) else {
            for column in values.iter_mut() {
                column.next();
            }
            continue;
        };
        let this = (
            part.unwrap_or(0),
            sensor,
            ts.div_euclid(HOUR_MICROS) * HOUR_MICROS,
        );
        if key != Some(this) {
            if let Some(done) = key.replace(this) {
                finish(&mut cells, done, &mut run);
            }
        }
        for (column, stats) in values.iter_mut().zip(run.iter_mut()) {
            if let Some(value) = column.next().flatten() {
                add_value(stats, value);
            }
        }
    }
    if let Some(done) = key {
        finish(&mut cells, done, &mut run);
    }
    Ok(cells)
}

/// Computes a chunk's statistics with polars (a chunk of one file: part 0).
///
/// # Errors
/// A polars failure.
pub fn partial_aggregates(normalized: &NormalizedFrame) -> PolarsResult<PartialAggregates> {
    Ok(partial_aggregates_by_part(normalized)?
        .remove(&0)
        .unwrap_or_default())
}

/// Computes the statistics of each file (`part`) of a group's frame: one polars `group_by` at
/// the sensor scope, every value column aggregated in it; the sensor-type scope is the exact
/// merge of its sensors' statistics (a second `group_by` cost more than the merge, most of all
/// for the many small frames of request bodies).
///
/// # Errors
/// A polars failure.
pub fn partial_aggregates_by_part(
    normalized: &NormalizedFrame,
) -> PolarsResult<HashMap<u32, PartialAggregates>> {
    let mut parts: HashMap<u32, PartialAggregates> = HashMap::new();
    let keys = &normalized.keys;
    if normalized.frame.height() == 0 || keys.is_empty() {
        return Ok(parts);
    }
    let by_sensor = grouped(
        &normalized.frame,
        &["part", "sensor_id", "location_id"],
        keys,
    )?;
    let part = by_sensor.column("part")?.u32()?;
    let sensors = by_sensor.column("sensor_id")?.i64()?;
    let locations = by_sensor.column("location_id")?.i64()?;
    let mut by_type: BTreeMap<(u32, u32), Stats> = BTreeMap::new();
    let mut by_sensor_rows = Vec::new();
    for key in keys {
        for (i, stats) in stats_rows(&by_sensor, *key)? {
            let part = part.get(i).expect("parts are not null");
            by_type
                .entry((part, *key))
                .and_modify(|merged| *merged = merged.merge(stats))
                .or_insert(stats);
            let group = GroupKey::Sensor {
                key: *key,
                sensor_id: sensors.get(i).expect("sensor ids are not null"),
                location_id: locations.get(i),
            };
            by_sensor_rows.push((part, group, stats));
        }
    }
    for ((part, key), stats) in by_type {
        parts
            .entry(part)
            .or_default()
            .groups
            .push((GroupKey::SensorType { key }, stats));
    }
    for (part, group, stats) in by_sensor_rows {
        parts.entry(part).or_default().groups.push((group, stats));
    }
    for (part, latest) in latest_by_part(&normalized.frame, keys)? {
        parts.entry(part).or_default().latest = latest;
    }
    Ok(parts)
}

/// The latest value of each (part, sensor, key): the frame is sorted by part, sensor and time,
/// so it is the last row of a sensor's run that has a value for the key.
fn latest_by_part(frame: &DataFrame, keys: &[u32]) -> PolarsResult<HashMap<u32, Vec<Latest>>> {
    let part = frame.column("part")?.u32()?;
    let sensor = frame.column("sensor_id")?.i64()?;
    let ts = frame.column("ts")?.i64()?;
    let location = frame.column("location_id")?.i64()?;
    let lat = frame.column("lat")?.f64()?;
    let lon = frame.column("lon")?.f64()?;
    let values = keys
        .iter()
        .map(|key| Ok((*key, frame.column(value_column(*key).as_str())?.f64()?)))
        .collect::<PolarsResult<Vec<_>>>()?;
    let mut latest: HashMap<u32, Vec<Latest>> = HashMap::new();
    let height = frame.height();
    let mut start = 0;
    while start < height {
        let run = (part.get(start), sensor.get(start));
        let mut end = start + 1;
        while end < height && (part.get(end), sensor.get(end)) == run {
            end += 1;
        }
        let (Some(run_part), Some(sensor_id)) = run else {
            start = end;
            continue;
        };
        for (key, column) in &values {
            let Some(row) = (start..end).rev().find(|&row| column.get(row).is_some()) else {
                continue;
            };
            latest.entry(run_part).or_default().push(Latest {
                sensor_id,
                key: *key,
                ts: ts.get(row).unwrap_or(0),
                value: column.get(row).unwrap_or(f64::NAN),
                location_id: location.get(row),
                lat: lat.get(row),
                lon: lon.get(row),
            });
        }
        start = end;
    }
    Ok(latest)
}

/// Name of one statistic of one value column in a grouped frame.
fn stat_column(key: u32, stat: &str) -> String {
    format!("{}_{stat}", value_column(key))
}

fn grouped(frame: &DataFrame, by: &[&str], keys: &[u32]) -> PolarsResult<DataFrame> {
    let by: Vec<Expr> = by.iter().map(|c| col(*c)).collect();
    let mut aggregations = Vec::with_capacity(keys.len() * 7);
    for key in keys {
        let name = value_column(*key);
        let value = col(name.as_str());
        let present = value.clone().is_not_null();
        aggregations.extend([
            value
                .clone()
                .count()
                .cast(DataType::UInt64)
                .alias(stat_column(*key, "n")),
            value.clone().mean().alias(stat_column(*key, "mean")),
            value.clone().var(1).alias(stat_column(*key, "var")),
            value.clone().min().alias(stat_column(*key, "min")),
            value.max().alias(stat_column(*key, "max")),
            col("ts")
                .filter(present.clone())
                .min()
                .alias(stat_column(*key, "first_ts")),
            col("ts")
                .filter(present)
                .max()
                .alias(stat_column(*key, "last_ts")),
        ]);
    }
    // Sorted by group: the order `FileAggregates::merge` keeps.
    frame
        .clone()
        .lazy()
        .group_by(by.clone())
        .agg(aggregations)
        .sort_by_exprs(by, SortMultipleOptions::default())
        .collect()
}

/// The statistics of one key in each group row that has at least one value for it.
fn stats_rows(frame: &DataFrame, key: u32) -> PolarsResult<Vec<(usize, Stats)>> {
    let column = |stat: &str| frame.column(stat_column(key, stat).as_str());
    let n = column("n")?.u64()?;
    let mean = column("mean")?.f64()?;
    let var = column("var")?.f64()?;
    let min = column("min")?.f64()?;
    let max = column("max")?.f64()?;
    let first = column("first_ts")?.i64()?;
    let last = column("last_ts")?.i64()?;
    Ok((0..frame.height())
        .filter_map(|i| {
            let count = n.get(i).unwrap_or(0);
            (count > 0).then(|| {
                let stats = Stats {
                    n: count,
                    mean: mean.get(i).unwrap_or(0.0),
                    m2: var.get(i).unwrap_or(0.0) * count.saturating_sub(1) as f64,
                    min: min.get(i).unwrap_or(f64::NAN),
                    max: max.get(i).unwrap_or(f64::NAN),
                    first_ts: first.get(i).unwrap_or(0),
                    last_ts: last.get(i).unwrap_or(0),
                };
                (i, stats)
            })
        })
        .collect())
}

/// A file's aggregates, merged chunk by chunk: a vector sorted by group, so that merging a
/// chunk is one sequential pass (a file can have tens of thousands of groups, and a hash map
/// paid a cache miss per group per chunk).
#[derive(Debug, Clone, Default)]
pub struct FileAggregates {
    groups: Vec<(GroupKey, Stats)>,
    latest: HashMap<(i64, u32), Latest>,
}

/// One output row, ready for the database.
#[derive(Debug, Clone, PartialEq)]
pub struct AggregateRow {
    /// `sensor_type` or `sensor`.
    pub scope: &'static str,
    /// Catalogue key (sensor type, measurement, unit).
    pub key: u32,
    /// Sensor id (sensor scope only).
    pub sensor_id: Option<i64>,
    /// Location id (sensor scope only, when known).
    pub location_id: Option<i64>,
    /// Merged statistics.
    pub stats: Stats,
}

impl FileAggregates {
    /// Merges one chunk's partials.
    pub fn merge(&mut self, partials: PartialAggregates) {
        for latest in partials.latest {
            self.latest
                .entry((latest.sensor_id, latest.key))
                .and_modify(|kept| {
                    if latest.supersedes(kept) {
                        *kept = latest;
                    }
                })
                .or_insert(latest);
        }
        let mut incoming = partials.groups;
        // polars hands each scope's groups over sorted: the adaptive sort then costs about
        // one pass.
        incoming.sort_by_key(|(key, _)| *key);
        let mut merged: Vec<(GroupKey, Stats)> =
            Vec::with_capacity(self.groups.len() + incoming.len());
        let mut ours = std::mem::take(&mut self.groups).into_iter().peekable();
        let mut theirs = incoming.into_iter().peekable();
        loop {
            let next = match (ours.peek(), theirs.peek()) {
                (Some(a), Some(b)) if a.0 <= b.0 => ours.next(),
                (_, Some(_)) => theirs.next(),
                (Some(_), None) => ours.next(),
                (None, None) => break,
            };
            let Some((key, stats)) = next else { break };
            match merged.last_mut() {
                Some((last, existing)) if *last == key => *existing = existing.merge(stats),
                _ => merged.push((key, stats)),
            }
        }
        self.groups = merged;
    }

    /// The latest value of each (sensor, measurement) of the file, in no particular order.
    pub fn latest(&self) -> impl Iterator<Item = &Latest> + '_ {
        self.latest.values()
    }

    /// The output rows in a stable order.
    pub fn rows(&self) -> Vec<AggregateRow> {
        self.groups
            .iter()
            .map(|(group, stats)| {
                let stats = *stats;
                match *group {
                    GroupKey::SensorType { key } => AggregateRow {
                        scope: "sensor_type",
                        key,
                        sensor_id: None,
                        location_id: None,
                        stats,
                    },
                    GroupKey::Sensor {
                        key,
                        sensor_id,
                        location_id,
                    } => AggregateRow {
                        scope: "sensor",
                        key,
                        sensor_id: Some(sensor_id),
                        location_id,
                        stats,
                    },
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
