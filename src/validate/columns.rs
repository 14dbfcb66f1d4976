//! What validation hands on: the accepted readings of a chunk as columns, and the chunk
//! with its rejects and what it saw first.

use super::reject::RejectedRow;
/// Accepted readings of one chunk, one entry per accepted row ("line"), with one value
/// column per catalogue key present (`None` where a line has no value for it), values still
/// in the file's units. Every column has one entry per line.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ReadingColumns {
    /// 1-based physical line of the row.
    pub line: Vec<u32>,
    /// Sensor id.
    pub sensor_id: Vec<i64>,
    /// Location id.
    pub location_id: Vec<Option<i64>>,
    /// Latitude.
    pub lat: Vec<Option<f64>>,
    /// Longitude.
    pub lon: Vec<Option<f64>>,
    /// Microseconds since the Unix epoch, UTC.
    pub ts_micros: Vec<i64>,
    /// Which file of a group the line belongs to (0 outside group commits).
    pub part: Vec<u32>,
    /// Value columns by catalogue key (`Settings::catalogue`), in ascending key order.
    pub values: Vec<(u32, Vec<Option<f64>>)>,
}

/// The per-line fields of an accepted row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LineFields {
    /// 1-based physical line.
    pub line: u32,
    /// Sensor id.
    pub sensor_id: i64,
    /// Location id.
    pub location_id: Option<i64>,
    /// Latitude.
    pub lat: Option<f64>,
    /// Longitude.
    pub lon: Option<f64>,
    /// Microseconds since the Unix epoch, UTC.
    pub ts_micros: i64,
}

impl ReadingColumns {
    /// Number of lines.
    pub fn line_count(&self) -> usize {
        self.line.len()
    }

    /// Number of readings: the values present over all lines and keys.
    pub fn reading_count(&self) -> usize {
        self.values
            .iter()
            .map(|(_, column)| column.iter().filter(|v| v.is_some()).count())
            .sum()
    }

    /// Whether there is no line.
    pub fn is_empty(&self) -> bool {
        self.line.is_empty()
    }

    /// Adds one line with its `(catalogue key, value)` pairs, as part 0.
    pub fn push(&mut self, fields: LineFields, values: &[(u32, f64)]) {
        let before = self.line.len();
        self.line.push(fields.line);
        self.sensor_id.push(fields.sensor_id);
        self.location_id.push(fields.location_id);
        self.lat.push(fields.lat);
        self.lon.push(fields.lon);
        self.ts_micros.push(fields.ts_micros);
        self.part.push(0);
        for (key, value) in values {
            self.column(*key, before).push(Some(*value));
        }
        // Keys this line has no value for.
        for (_, column) in &mut self.values {
            column.resize(before + 1, None);
        }
    }

    /// The value column of `key`, created with `lines` nulls when new. A chunk has a handful
    /// of keys, so a linear search beats any map.
    fn column(&mut self, key: u32, lines: usize) -> &mut Vec<Option<f64>> {
        let at = match self.values.iter().position(|(k, _)| *k >= key) {
            Some(at) if self.values[at].0 == key => at,
            Some(at) => {
                self.values.insert(at, (key, vec![None; lines]));
                at
            }
            None => {
                self.values.push((key, vec![None; lines]));
                self.values.len() - 1
            }
        };
        &mut self.values[at].1
    }

    /// Moves `other`'s lines to the end of these, as part `part` of a group.
    pub fn append(&mut self, mut other: ReadingColumns, part: u32) {
        let (before, added) = (self.line.len(), other.line.len());
        self.line.append(&mut other.line);
        self.sensor_id.append(&mut other.sensor_id);
        self.location_id.append(&mut other.location_id);
        self.lat.append(&mut other.lat);
        self.lon.append(&mut other.lon);
        self.ts_micros.append(&mut other.ts_micros);
        self.part.resize(before + added, part);
        for (key, mut column) in other.values {
            self.column(key, before).append(&mut column);
        }
        for (_, column) in &mut self.values {
            column.resize(before + added, None);
        }
    }
}

/// One chunk of a file after validation.
#[derive(Debug, Default, Clone)]
pub struct ValidatedChunk {
    /// Data rows read in this chunk (blank lines are not rows).
    pub rows_read: u64,
    /// Rows that passed every rule.
    pub rows_accepted: u64,
    /// Their readings.
    pub readings: ReadingColumns,
    /// Rows that broke a rule, each with all its violations.
    pub rejects: Vec<RejectedRow>,
    /// Sensors first seen in this chunk's accepted rows: (sensor id, sensor type index).
    pub sensors: Vec<(i64, usize)>,
    /// Locations first seen in this chunk's accepted rows: (location id, lat, lon).
    pub locations: Vec<(i64, Option<f64>, Option<f64>)>,
}
