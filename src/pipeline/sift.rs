//! Exactly once per reading: before a frame's rows are written, each line whose sensor and
//! time are already stored (by an earlier delivery, or by an earlier file of the same group)
//! is sifted out. The same values make it a duplicate (counted, not stored, not quarantined);
//! other values a conflict, settled by `on_conflict`: `keep_first` rejects the line
//! (`conflicting_reading`, the message naming the delivery that holds the stored line and its
//! values), `replace` stores it and moves the stored line to the audit table.
//!
//! Cost: a sensor is claimed once per transaction (`store::once::SensorClaims`); only lines inside
//! the committed span of their sensor are looked up, in one query per frame. A file of new
//! readings (the usual case) costs one claim statement per new set of sensors and nothing per
//! line. Within one file, the validator already rejects a second line of the same key. A
//! delivery loaded again (every line stored) compares each stored line with its own line as
//! the lookup's rows arrive, so the comparison runs while the database still reads, and keeps
//! only the lines that differ for the messages and replacements.

use std::collections::HashMap;

use polars::prelude::*;

use crate::config::{OnConflict, Settings};
use crate::error::{Error, Result};
use crate::store::copy::DeliveryTx;
use crate::store::once::{self, Replacement, SensorClaims, StoredLine, StoredLines};
use crate::store::{Store, StoreError};
use crate::transform::aggregate::{partial_aggregates_by_part, GroupKey, PartialAggregates};
use crate::transform::normalize::{value_column, NormalizedFrame};

/// A line of the frame rejected as a conflict: (part, line, message).
pub(super) type Conflict = (u32, u32, String);

/// What sifting one frame found.
#[derive(Debug, Default)]
pub(super) struct Sifted {
    /// The frame without the lines sifted out, and its partial aggregates by part; `None`
    /// when every line stays.
    pub kept: Option<(NormalizedFrame, HashMap<u32, PartialAggregates>)>,
    /// Duplicate lines per part.
    pub duplicates: HashMap<u32, u64>,
    /// Conflicting lines rejected (`keep_first`).
    pub conflicts: Vec<Conflict>,
    /// Stored lines replaced (`replace`): (sensor, µs).
    pub replaced: Vec<(i64, i64)>,
}

impl Sifted {
    /// Duplicate lines of `part`.
    pub fn duplicates_of(&self, part: u32) -> u64 {
        self.duplicates.get(&part).copied().unwrap_or(0)
    }

    /// Conflicting lines of `part`.
    pub fn conflicts_of(&self, part: u32) -> u64 {
        self.conflicts.iter().filter(|c| c.0 == part).count() as u64
    }
}

/// Readings (values) counted by a part's partial aggregates.
pub(super) fn readings_in(partials: Option<&PartialAggregates>) -> u64 {
    partials.map_or(0, |p| {
        p.groups
            .iter()
            .filter(|(key, _)| matches!(key, GroupKey::Sensor { .. }))
            .map(|(_, stats)| stats.n)
            .sum()
    })
}

/// One transaction's sifting: its claims and policy.
pub(super) struct Sifter {
    claims: SensorClaims,
    policy: OnConflict,
    /// Measurement names by database id, for conflict messages.
    measurement_names: HashMap<i16, String>,
    /// The deliveries whose lines this transaction has written (sorted): their lines are not
    /// stored ones.
    own: Vec<i64>,
}

/// The columns of a frame that sifting reads.
struct Lines<'f> {
    sensor_id: &'f Int64Chunked,
    ts: &'f Int64Chunked,
    part: &'f UInt32Chunked,
    line: &'f UInt32Chunked,
    values: Vec<(i16, &'f Float64Chunked)>,
}

impl<'f> Lines<'f> {
    fn of(normalized: &'f NormalizedFrame, store: &Store) -> Result<Self, StoreError> {
        let frame = &normalized.frame;
        let column = |name: &str| frame.column(name).map_err(StoreError::Frame);
        let mut values = Vec::with_capacity(normalized.keys.len());
        for key in &normalized.keys {
            values.push((
                store.measurement_id(*key),
                column(value_column(*key).as_str())?.f64()?,
            ));
        }
        Ok(Self {
            sensor_id: column("sensor_id")?.i64()?,
            ts: column("ts")?.i64()?,
            part: column("part")?.u32()?,
            line: column("line")?.u32()?,
            values,
        })
    }

    /// The rows inside the `(sensor, first µs, last µs)` windows, by (sensor, µs).
    fn row_index(&self, windows: &[(i64, i64, i64)]) -> foldhash::HashMap<(i64, i64), usize> {
        let windows: foldhash::HashMap<i64, (i64, i64)> =
            windows.iter().map(|w| (w.0, (w.1, w.2))).collect();
        let mut index = foldhash::HashMap::default();
        for (row, key) in self.sensor_id.iter().zip(self.ts.iter()).enumerate() {
            if let (Some(sensor), Some(ts)) = key {
                if windows
                    .get(&sensor)
                    .is_some_and(|(from, to)| (*from..=*to).contains(&ts))
                {
                    index.insert((sensor, ts), row);
                }
            }
        }
        index
    }

    /// Whether line `row` has exactly the values `values` of the measurements `ids` (bit-equal,
    /// no other value), without building either side's pairs: each of the line's values must
    /// be the stored one of its measurement, and the line must have as many as are stored.
    fn has_values(&self, row: usize, ids: &[i16], values: &[f64]) -> bool {
        if ids.len() != values.len() {
            return false;
        }
        let mut present = 0;
        for (id, column) in &self.values {
            let Some(value) = column.get(row) else {
                continue;
            };
            present += 1;
            let stored = ids
                .iter()
                .position(|stored| stored == id)
                .map(|at| values[at]);
            if stored.map(f64::to_bits) != Some(value.to_bits()) {
                return false;
            }
        }
        present == ids.len()
    }

    /// Line `row`'s (measurement id, value) pairs, in id order.
    fn values(&self, row: usize) -> Vec<(i16, f64)> {
        let mut pairs: Vec<(i16, f64)> = self
            .values
            .iter()
            .filter_map(|(id, column)| column.get(row).map(|v| (*id, v)))
            .collect();
        pairs.sort_by_key(|(id, _)| *id);
        pairs
    }
}

fn stored_values(lines: &StoredLines, stored: &StoredLine) -> Vec<(i16, f64)> {
    let mut pairs: Vec<(i16, f64)> = lines
        .measurement_ids(stored)
        .iter()
        .copied()
        .zip(stored.values.iter().copied())
        .collect();
    pairs.sort_by_key(|(id, _)| *id);
    pairs
}

/// Equal values: the same measurements with bit-equal values.
fn same(a: &[(i16, f64)], b: &[(i16, f64)]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.0 == y.0 && x.1.to_bits() == y.1.to_bits())
}

impl Sifter {
    pub fn new(settings: &Settings, store: &Store) -> Self {
        Self {
            claims: SensorClaims::new(std::sync::Arc::clone(store.known())),
            policy: settings.on_conflict,
            measurement_names: settings
                .catalogue
                .iter()
                .map(|m| (store.measurement_id(m.key), m.name.clone()))
                .collect(),
            own: Vec::new(),
        }
    }

    /// Sensors entered as placeholders by this transaction.
    pub fn placeholders(&self) -> &[i64] {
        self.claims.placeholders()
    }

    /// The sensors this transaction has claimed.
    pub fn claims(&self) -> &SensorClaims {
        &self.claims
    }

    /// Sifts a frame before it is written (see the module header). `file_ids[part]` is each
    /// part's delivery (`None`: a duplicate delivery, whose lines are not written) and
    /// `names[part]` its name. `copy` is finished first when the database must be asked.
    /// Replaced stored lines are moved to the audit table here.
    ///
    /// # Errors
    /// The database failed, or two files of one group conflict under `replace` (the group
    /// then goes file by file).
    pub async fn sift(
        &mut self,
        writing: &mut DeliveryTx<'_, '_>,
        store: &Store,
        normalized: &NormalizedFrame,
        file_ids: &[Option<i64>],
        names: &[&str],
    ) -> Result<Sifted> {
        let lines = Lines::of(normalized, store)?;
        for file_id in file_ids.iter().flatten() {
            if let Err(at) = self.own.binary_search(file_id) {
                self.own.insert(at, *file_id);
            }
        }
        let height = normalized.frame.height();
        let written = |row: usize| {
            let part = lines.part.get(row).unwrap_or(0) as usize;
            file_ids.get(part).copied().flatten()
        };
        // Each sensor's span in this frame (the frame is ordered by part, sensor and time, so
        // a run of one sensor is extended, not looked up, line by line).
        let mut spans: HashMap<i64, (i64, i64)> = HashMap::new();
        let mut run: Option<(i64, i64, i64)> = None;
        let rows = lines
            .sensor_id
            .iter()
            .zip(lines.ts.iter())
            .zip(lines.part.iter());
        for ((sensor, ts), part) in rows {
            let (Some(sensor), Some(ts)) = (sensor, ts) else {
                continue;
            };
            if file_ids
                .get(part.unwrap_or(0) as usize)
                .copied()
                .flatten()
                .is_none()
            {
                continue;
            }
            match &mut run {
                Some((id, lo, hi)) if *id == sensor => {
                    *lo = (*lo).min(ts);
                    *hi = (*hi).max(ts);
                }
                _ => {
                    if let Some((id, lo, hi)) = run.replace((sensor, ts, ts)) {
                        extend_span(&mut spans, id, lo, hi);
                    }
                }
            }
        }
        if let Some((id, lo, hi)) = run {
            extend_span(&mut spans, id, lo, hi);
        }
        let mut unclaimed: Vec<i64> = spans
            .keys()
            .copied()
            .filter(|s| !self.claims.holds(*s))
            .collect();
        unclaimed.sort_unstable();
        if !unclaimed.is_empty() {
            self.claims
                .claim(writing.statement().await?, &unclaimed)
                .await?;
        }
        let windows: Vec<(i64, i64, i64)> = spans
            .iter()
            .filter_map(|(sensor, (lo, hi))| {
                let (first, last) = self.claims.stored_span(*sensor)?;
                let (from, to) = ((*lo).max(first), (*hi).min(last));
                (from <= to).then_some((*sensor, from, to))
            })
            .collect();
        let several_parts = file_ids.len() > 1;
        // A line of a single delivery whose stored line has the same values is settled as a
        // duplicate while the stored lines arrive (across the parts of a group, an earlier
        // part may hold the key first: those lines are compared below, in order).
        let mut duplicate = vec![false; if several_parts { 0 } else { height }];
        let (stored, stored_names) = if windows.is_empty() {
            (StoredLines::default(), HashMap::new())
        } else {
            let index = if several_parts {
                foldhash::HashMap::default()
            } else {
                lines.row_index(&windows)
            };
            let tx = writing.statement().await?;
            let settled = |key, line: &StoredLine, ids: &[i16]| {
                let Some(&row) = index.get(&key) else {
                    // No line of this single delivery has that key: nothing to compare with.
                    return !several_parts;
                };
                let same = lines.has_values(row, ids, &line.values);
                duplicate[row] |= same;
                same
            };
            let stored = once::stored_lines(tx, &windows, &self.own, settled).await?;
            let mut holders: Vec<i64> = stored.lines.values().map(|s| s.file_id).collect();
            holders.sort_unstable();
            holders.dedup();
            let names = once::file_names(tx, &holders).await?;
            (stored, names)
        };
        if stored.lines.is_empty() && !several_parts && !duplicate.contains(&true) {
            return Ok(Sifted::default());
        }

        let mut sifted = Sifted::default();
        let mut keep = vec![true; height];
        let mut replaced: Vec<Replacement> = Vec::new();
        // Lines kept so far in this frame, by key (only needed across the files of a group).
        let mut kept_here: HashMap<(i64, i64), usize> = HashMap::new();
        for (row, kept) in keep.iter_mut().enumerate() {
            let Some(file_id) = written(row) else {
                continue;
            };
            let (Some(sensor), Some(ts)) = (lines.sensor_id.get(row), lines.ts.get(row)) else {
                continue;
            };
            let part = lines.part.get(row).unwrap_or(0);
            if duplicate.get(row).copied().unwrap_or(false) {
                *kept = false;
                *sifted.duplicates.entry(part).or_default() += 1;
                continue;
            }
            let line = lines.line.get(row).unwrap_or(0);
            let key = (sensor, ts);
            let (earlier, holder): (Vec<(i16, f64)>, Holder) =
                if let Some(&first) = kept_here.get(&key) {
                    let first_part = lines.part.get(first).unwrap_or(0) as usize;
                    (
                        lines.values(first),
                        Holder::Group {
                            file_id: file_ids[first_part].unwrap_or_default(),
                            name: names.get(first_part).copied().unwrap_or_default(),
                            line: lines.line.get(first).unwrap_or(0),
                        },
                    )
                } else if let Some(s) = stored.lines.get(&key) {
                    let name = stored_names.get(&s.file_id).map_or("", String::as_str);
                    (stored_values(&stored, s), Holder::Stored(s, name))
                } else {
                    if several_parts {
                        kept_here.insert(key, row);
                    }
                    continue;
                };
            let values = lines.values(row);
            if same(&values, &earlier) {
                *kept = false;
                *sifted.duplicates.entry(part).or_default() += 1;
                continue;
            }
            match (self.policy, &holder) {
                (OnConflict::KeepFirst, _) => {
                    *kept = false;
                    let message = conflict_message(
                        sensor,
                        ts,
                        &holder,
                        &earlier,
                        &values,
                        &self.measurement_names,
                    );
                    sifted.conflicts.push((part, line, message));
                }
                (OnConflict::Replace, Holder::Stored(s, _)) => {
                    replaced.push((sensor, ts, s.file_id, file_id));
                    if several_parts {
                        kept_here.insert(key, row);
                    }
                }
                (OnConflict::Replace, Holder::Group { .. }) => {
                    return Err(Error::GroupConflict(format!("sensor {sensor}")));
                }
            }
        }
        if !replaced.is_empty() {
            once::replace(writing.statement().await?, &replaced).await?;
            sifted.replaced = replaced.iter().map(|r| (r.0, r.1)).collect();
        }
        if keep.iter().all(|k| *k) {
            return Ok(sifted);
        }
        let mask = BooleanChunked::from_slice("keep".into(), &keep);
        let frame = normalized.frame.filter(&mask).map_err(Error::Transform)?;
        let kept = NormalizedFrame {
            frame,
            keys: normalized.keys.clone(),
        };
        let partials = partial_aggregates_by_part(&kept).map_err(Error::Transform)?;
        sifted.kept = Some((kept, partials));
        Ok(sifted)
    }
}

fn extend_span(spans: &mut HashMap<i64, (i64, i64)>, sensor: i64, lo: i64, hi: i64) {
    spans
        .entry(sensor)
        .and_modify(|span| {
            span.0 = span.0.min(lo);
            span.1 = span.1.max(hi);
        })
        .or_insert((lo, hi));
}

/// Who holds the line a new one collides with.
enum Holder<'a> {
    /// A committed delivery: the line, and the delivery's name.
    Stored(&'a StoredLine, &'a str),
    /// An earlier file of the same group.
    Group {
        file_id: i64,
        name: &'a str,
        line: u32,
    },
}

fn conflict_message(
    sensor: i64,
    ts: i64,
    holder: &Holder<'_>,
    stored: &[(i16, f64)],
    new: &[(i16, f64)],
    names: &HashMap<i16, String>,
) -> String {
    let list = |pairs: &[(i16, f64)]| {
        pairs
            .iter()
            .map(|(id, v)| {
                let name = names.get(id).map_or("?", String::as_str);
                format!("{name} {v}")
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let at = chrono::DateTime::<chrono::Utc>::from_timestamp_micros(ts)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
        .unwrap_or_default();
    let (file_id, name, line) = match holder {
        Holder::Stored(s, name) => (s.file_id, *name, i64::from(s.line)),
        Holder::Group {
            file_id,
            name,
            line,
        } => (*file_id, *name, i64::from(*line)),
    };
    format!(
        "sensor {sensor} already has a reading at {at} with other values: {} stored by delivery {file_id} ({name}, line {line}); this line has {}",
        list(stored),
        list(new)
    )
}
