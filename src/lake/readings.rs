//! The lake's `readings`: every reading of the deliveries after the table's horizon, one row
//! per measurement with the columns of `v_readings`, partitioned by the UTC date of `ts`.
//!
//! Two stages run at once. The reader streams the stored rows from PostgreSQL (binary COPY)
//! and expands them, through the dictionaries read in the same snapshot, into chunks of at
//! most `CHUNK_READINGS` readings. The writer, a task of its own, orders each chunk by date,
//! sensor and time and writes it as one Parquet file per date, so every file is sorted. Two
//! chunks go round between them, the writer handing each back emptied: memory stays bounded
//! whatever the size of the database. The files become visible together, in the table's one
//! commit.

use std::sync::Arc;

use deltalake::arrow::array::{
    ArrayRef, Date32Builder, Float64Builder, Int32Builder, Int64Builder, StringBuilder,
    TimestampMicrosecondBuilder,
};
use deltalake::arrow::datatypes::Schema;
use deltalake::arrow::record_batch::RecordBatch;
use deltalake::kernel::Add;
use futures_util::{pin_mut, TryStreamExt};
use tokio::sync::mpsc;
use tokio_postgres::Transaction;

use super::columns::READINGS;
use super::replaced;
use super::table::LakeTable;
use super::LakeError;
use crate::store::export::{self, MeasurementName, Position, StoredLine};

/// Readings per chunk (48 bytes each). Smaller chunks overlap the reader and the writer
/// better (the first chunk is read, and the last written, alone) but make more, smaller files:
/// at 250,000 an export of 3M readings writes a dozen.
const CHUNK_READINGS: usize = 250_000;
/// Chunks going round between the reader and the writer.
const CHUNKS: usize = 2;
/// Room for the readings of the line that fills a chunk (a line has at most 256).
const CHUNK_CAPACITY: usize = CHUNK_READINGS + 256;
/// Rows per Arrow batch handed to the Parquet writer.
const BATCH_ROWS: usize = 131_072;
/// Microseconds in a day.
const DAY_MICROS: i64 = 86_400_000_000;

/// One reading waiting to be written; its names and position are indexes.
#[derive(Debug, Clone, Copy)]
struct Reading {
    ts: i64,
    sensor_id: i64,
    file_id: i64,
    value: f64,
    line: i32,
    /// The UTC date, days since 1970-01-01: the partition.
    day: i32,
    /// Into the dictionary's positions, then past them into the chunk's own.
    position: u32,
    measurement: i16,
    /// The measurement's place in its row, to keep a row's readings in order.
    slot: u8,
}

impl Reading {
    /// The order within one sensor's day.
    fn order_in_group(&self, other: &Reading) -> std::cmp::Ordering {
        (self.ts, self.file_id, self.line, self.slot).cmp(&(
            other.ts,
            other.file_id,
            other.line,
            other.slot,
        ))
    }
}

/// The readings of a chunk in the order of the files (date, sensor, time), as indexes.
///
/// Grouped by (date, sensor) first, then each group sorted by time: the groups are few, and
/// a group arrives almost in time order (the store keeps each sensor's rows in time order),
/// which the stable sort takes in nearly one pass. Far cheaper than sorting the whole chunk.
fn file_order(readings: &[Reading]) -> Vec<u32> {
    let mut groups: std::collections::HashMap<(i32, i64), Vec<u32>> =
        std::collections::HashMap::new();
    for (index, reading) in readings.iter().enumerate() {
        groups
            .entry((reading.day, reading.sensor_id))
            .or_default()
            .push(index as u32);
    }
    let mut groups: Vec<((i32, i64), Vec<u32>)> = groups.into_iter().collect();
    groups.sort_unstable_by_key(|(key, _)| *key);
    let mut order = Vec::with_capacity(readings.len());
    for (_, mut members) in groups {
        members.sort_by(|&a, &b| readings[a as usize].order_in_group(&readings[b as usize]));
        order.extend(members);
    }
    order
}

/// What a reading's indexes point to, shared by the reader and the writer.
struct Names {
    measurements: std::collections::HashMap<i16, MeasurementName>,
    /// The dictionary's positions, by index.
    positions: Vec<Position>,
}

/// Readings on their way to the writer, with the positions kept in their rows.
#[derive(Default)]
struct Chunk {
    readings: Vec<Reading>,
    own_positions: Vec<Position>,
}

impl Chunk {
    /// Allocated once: a chunk never grows past its capacity.
    fn empty() -> Chunk {
        Chunk {
            readings: Vec::with_capacity(CHUNK_CAPACITY),
            own_positions: Vec::new(),
        }
    }

    fn position<'a>(&'a self, names: &'a Names, index: u32) -> &'a Position {
        let index = index as usize;
        match index.checked_sub(names.positions.len()) {
            Some(own) => &self.own_positions[own],
            None => &names.positions[index],
        }
    }
}

/// Expands stored lines into chunks.
struct Reader {
    /// Measurement sets by id (ids are small, dense integers).
    sets: Vec<Option<Vec<i16>>>,
    /// The index in `Names::positions` of each position id.
    position_index: Vec<Option<u32>>,
    dictionary_positions: u32,
    chunk: Chunk,
}

/// `entries` as a vector indexed by id.
fn by_id<T>(entries: impl IntoIterator<Item = (i32, T)>) -> Vec<Option<T>> {
    let mut table: Vec<Option<T>> = Vec::new();
    for (id, entry) in entries {
        let Ok(index) = usize::try_from(id) else {
            continue;
        };
        if table.len() <= index {
            table.resize_with(index + 1, || None);
        }
        table[index] = Some(entry);
    }
    table
}

fn lookup<T>(table: &[Option<T>], id: i32) -> Option<&T> {
    usize::try_from(id)
        .ok()
        .and_then(|i| table.get(i))
        .and_then(Option::as_ref)
}

impl Reader {
    /// Adds the readings of one stored line to the chunk.
    fn add(&mut self, line: StoredLine) -> Result<(), LakeError> {
        let inconsistent = |what: &str| LakeError::Inconsistent {
            file_id: line.file_id,
            line: line.line,
            what: what.to_owned(),
        };
        let set = lookup(&self.sets, line.set_id)
            .ok_or_else(|| inconsistent("its measurement set is not in the dictionary"))?;
        if set.len() != line.values.len() {
            return Err(inconsistent("it has another number of values than its set"));
        }
        let own = &mut self.chunk.own_positions;
        let position = match line.position_id {
            Some(id) => *lookup(&self.position_index, id)
                .ok_or_else(|| inconsistent("its position is not in the dictionary"))?,
            None => {
                // Consecutive rows of a moving sensor often share it.
                if own.last() != Some(&line.position) {
                    own.push(line.position);
                }
                self.dictionary_positions + (own.len() - 1) as u32
            }
        };
        for (slot, (&measurement, &value)) in set.iter().zip(&line.values).enumerate() {
            self.chunk.readings.push(Reading {
                ts: line.ts_micros,
                sensor_id: line.sensor_id,
                file_id: line.file_id,
                value,
                line: line.line,
                day: i32::try_from(line.ts_micros.div_euclid(DAY_MICROS)).unwrap_or(i32::MAX),
                position,
                measurement,
                slot: u8::try_from(slot).unwrap_or(u8::MAX),
            });
        }
        Ok(())
    }
}

/// Appends the readings of the deliveries in `(after, up_to]`, read in `tx`'s snapshot, to
/// `table` in one commit. Returns the number of readings added.
///
/// # Errors
/// The database or the table failed; nothing of this append is visible then.
pub async fn append(
    tx: &Transaction<'_>,
    table: LakeTable,
    after: i64,
    up_to: i64,
) -> Result<u64, LakeError> {
    // Lines these deliveries replaced leave the files that hold them, in the same commit.
    let rewrite = replaced::rewrite(tx, &table, after, up_to).await?;
    if rewrite.dropped > 0 {
        tracing::info!(
            message = "Replaced readings leave the lake.",
            readings = rewrite.dropped,
            files_rewritten = rewrite.removed.len()
        );
    }
    let dictionaries = export::reading_dictionaries(tx).await?;
    let mut positions = Vec::with_capacity(dictionaries.positions.len());
    let mut indexes = Vec::with_capacity(dictionaries.positions.len());
    for (id, position) in dictionaries.positions {
        indexes.push((id, positions.len() as u32));
        positions.push(position);
    }
    let names = Arc::new(Names {
        measurements: dictionaries.measurements,
        positions,
    });
    let mut reader = Reader {
        sets: by_id(dictionaries.sets),
        dictionary_positions: names.positions.len() as u32,
        position_index: by_id(indexes),
        chunk: Chunk::empty(),
    };
    let (full, to_write) = mpsc::channel::<Chunk>(1);
    let (written, mut emptied) = mpsc::channel::<Chunk>(CHUNKS);
    let writer = tokio::spawn(write_chunks(table, Arc::clone(&names), to_write, written));

    let mut added = 0u64;
    let mut allocated = 1;
    let read = async {
        let lines = export::stored_lines(tx, after, up_to).await?;
        pin_mut!(lines);
        while let Some(line) = lines.try_next().await? {
            reader.add(line)?;
            if reader.chunk.readings.len() >= CHUNK_READINGS {
                let next = if allocated < CHUNKS {
                    allocated += 1;
                    Some(Chunk::empty())
                } else {
                    emptied.recv().await
                };
                // No chunk back, or no writer to take this one: the writer stopped, and its
                // error is the one to report.
                let Some(next) = next else { break };
                let chunk = std::mem::replace(&mut reader.chunk, next);
                added += chunk.readings.len() as u64;
                if full.send(chunk).await.is_err() {
                    break;
                }
            }
        }
        let last = std::mem::take(&mut reader.chunk);
        added += last.readings.len() as u64;
        let _ = full.send(last).await;
        Ok::<(), LakeError>(())
    };
    let read_outcome = read.await;
    drop(full);
    let (mut table, mut files) = writer
        .await
        .map_err(|e| LakeError::Writer(e.to_string()))??;
    read_outcome?;
    files.extend(rewrite.files);
    table.commit(files, rewrite.removed, up_to).await?;
    Ok(added)
}

/// The writer stage: sorts and writes each chunk, hands it back emptied; returns the files
/// written.
async fn write_chunks(
    table: LakeTable,
    names: Arc<Names>,
    mut to_write: mpsc::Receiver<Chunk>,
    written: mpsc::Sender<Chunk>,
) -> Result<(LakeTable, Vec<Add>), LakeError> {
    let mut writer = table.writer(READINGS)?;
    let schema = writer.arrow_schema();
    let mut files = Vec::new();
    while let Some(mut chunk) = to_write.recv().await {
        let order = file_order(&chunk.readings);
        let mut start = 0;
        while start < order.len() {
            let day = chunk.readings[order[start] as usize].day;
            let end =
                start + order[start..].partition_point(|&i| chunk.readings[i as usize].day == day);
            for rows in order[start..end].chunks(BATCH_ROWS) {
                let batch = batch(&schema, &chunk, rows, &names)?;
                table.write_date(&mut writer, batch, day).await?;
            }
            // Closed per date: each file holds one sorted run.
            files.extend(table.close_files(&mut writer).await?);
            start = end;
        }
        chunk.readings.clear();
        chunk.own_positions.clear();
        // The reader may be done and gone.
        let _ = written.try_send(chunk);
    }
    Ok((table, files))
}

fn batch(
    schema: &Arc<Schema>,
    chunk: &Chunk,
    rows: &[u32],
    names: &Names,
) -> Result<RecordBatch, LakeError> {
    let n = rows.len();
    let mut file_id = Int64Builder::with_capacity(n);
    let mut line = Int32Builder::with_capacity(n);
    let mut sensor_id = Int64Builder::with_capacity(n);
    let mut sensor_type = StringBuilder::with_capacity(n, n * 8);
    let mut location_id = Int64Builder::with_capacity(n);
    let mut lat = Float64Builder::with_capacity(n);
    let mut lon = Float64Builder::with_capacity(n);
    let mut ts = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut measurement = StringBuilder::with_capacity(n, n * 12);
    let mut value = Float64Builder::with_capacity(n);
    let mut unit = StringBuilder::with_capacity(n, n * 4);
    let mut date = Date32Builder::with_capacity(n);
    for &row in rows {
        let reading = &chunk.readings[row as usize];
        let name = names
            .measurements
            .get(&reading.measurement)
            .ok_or_else(|| LakeError::Inconsistent {
                file_id: reading.file_id,
                line: reading.line,
                what: format!(
                    "measurement {} is not in the dictionary",
                    reading.measurement
                ),
            })?;
        let position = chunk.position(names, reading.position);
        file_id.append_value(reading.file_id);
        line.append_value(reading.line);
        sensor_id.append_value(reading.sensor_id);
        sensor_type.append_value(&name.sensor_type);
        location_id.append_option(position.location_id);
        lat.append_option(position.lat);
        lon.append_option(position.lon);
        ts.append_value(reading.ts);
        measurement.append_value(&name.name);
        value.append_value(reading.value);
        unit.append_value(&name.unit);
        date.append_value(reading.day);
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(file_id.finish()),
        Arc::new(line.finish()),
        Arc::new(sensor_id.finish()),
        Arc::new(sensor_type.finish()),
        Arc::new(location_id.finish()),
        Arc::new(lat.finish()),
        Arc::new(lon.finish()),
        Arc::new(ts.finish()),
        Arc::new(measurement.finish()),
        Arc::new(value.finish()),
        Arc::new(unit.finish()),
        Arc::new(date.finish()),
    ];
    Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
}
