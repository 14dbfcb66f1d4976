//! Binary COPY of a file's rows: readings, rejects and aggregates.
//!
//! Each function writes into the caller's transaction; nothing is visible before its commit,
//! and an unfinished COPY is aborted with the transaction. Each column list and its field
//! count live side by side here; rows are encoded by `encode::CopyEncoder` in that order.
//! Text is stripped of NUL bytes, which PostgreSQL text cannot hold.

use deadpool_postgres::Transaction;
use futures_util::SinkExt;
use tokio_postgres::CopyInSink;

use crate::store::dictionary::Position;
use crate::store::encode::CopyEncoder;
use crate::store::{Store, StoreError};

type Result<T, E = StoreError> = std::result::Result<T, E>;
use crate::transform::aggregate::AggregateRow;
use crate::transform::normalize::{value_column, NormalizedFrame};
use crate::validate::reject::RejectedRow;

const READINGS_COPY: &str = "COPY readings (ts, file_id, sensor_id, line, set_id, position_id, \
                             \"values\", location_id, lat, lon) FROM STDIN BINARY";
const READINGS_FIELDS: i16 = 10;

/// A chunk keeps its positions in the rows when it has more distinct positions than one per
/// `INLINE_POSITIONS_RATIO` lines (each would be used by fewer lines than that), and more
/// than `INLINE_POSITIONS_MIN`.
const INLINE_POSITIONS_RATIO: usize = 4;
const INLINE_POSITIONS_MIN: usize = 256;

const REJECTS_COPY: &str = "COPY rejects (file_id, line, record, byte_offset, column_name, value, \
                            code, message) FROM STDIN BINARY";
const REJECTS_FIELDS: i16 = 8;

const AGGREGATES_COPY: &str = "COPY aggregates (file_id, scope, measurement_id, sensor_id, \
                               location_id, n, min, max, mean, stddev, first_ts, last_ts) \
                               FROM STDIN BINARY";
const AGGREGATES_FIELDS: i16 = 12;

/// One COPY statement in progress: the sink and the encoder feeding it.
pub(crate) struct CopyStream {
    sink: std::pin::Pin<Box<CopyInSink<bytes::Bytes>>>,
    pub(crate) encoder: CopyEncoder,
}

impl CopyStream {
    pub(crate) async fn start(tx: &Transaction<'_>, statement: &str) -> Result<Self> {
        let statement = tx
            .prepare_cached(statement)
            .await
            .map_err(StoreError::from)?;
        let sink = tx.copy_in(&statement).await.map_err(StoreError::from)?;
        Ok(Self {
            sink: Box::pin(sink),
            encoder: CopyEncoder::new(),
        })
    }

    /// Sends what is encoded once there is a block's worth.
    pub(crate) async fn flush_full(&mut self) -> Result<()> {
        if let Some(block) = self.encoder.full_block() {
            self.sink.send(block).await.map_err(StoreError::from)?;
        }
        Ok(())
    }

    /// Sends the rest and ends the COPY; returns the rows the server stored.
    pub(crate) async fn finish(mut self) -> Result<u64> {
        self.sink
            .send(self.encoder.finish())
            .await
            .map_err(StoreError::from)?;
        self.sink.as_mut().finish().await.map_err(StoreError::from)
    }
}

/// A delivery transaction and the readings COPY it may have open, travelling together: the
/// COPY starts with the first readings written and is closed before any other statement
/// ([`DeliveryTx::statement`]), so no statement can meet an open COPY on the connection.
pub struct DeliveryTx<'a, 't> {
    tx: &'a Transaction<'t>,
    copy: Option<ReadingsCopy>,
}

impl<'a, 't> DeliveryTx<'a, 't> {
    /// The transaction, with no COPY open.
    pub fn new(tx: &'a Transaction<'t>) -> Self {
        Self { tx, copy: None }
    }

    /// The transaction, for a statement: the open COPY, if any, is closed first.
    ///
    /// # Errors
    /// Closing the COPY failed.
    pub async fn statement(&mut self) -> Result<&'a Transaction<'t>> {
        if let Some(copy) = self.copy.take() {
            copy.finish().await?;
        }
        Ok(self.tx)
    }

    /// Writes a frame's readings into the COPY (see [`ReadingsCopy::write`]), starting it
    /// when none is open; returns the number of readings written.
    ///
    /// # Errors
    /// The COPY failed.
    pub async fn copy_readings(
        &mut self,
        store: &Store,
        normalized: &NormalizedFrame,
        file_ids: &[Option<i64>],
    ) -> Result<u64> {
        if normalized.frame.height() == 0 {
            return Ok(0);
        }
        let copy = match &mut self.copy {
            Some(copy) => copy,
            open => open.insert(ReadingsCopy::start(self.tx).await?),
        };
        copy.write(store, normalized, file_ids).await
    }
}

/// One COPY into `readings` that any number of frames are written into, so that a file's
/// chunks stream to the server without a pause between them. Nothing else can run on the
/// transaction's connection until `finish`.
struct ReadingsCopy {
    stream: CopyStream,
}

impl ReadingsCopy {
    /// Starts the COPY.
    ///
    /// # Errors
    /// The database refused it.
    pub async fn start(tx: &Transaction<'_>) -> Result<Self> {
        Ok(Self {
            stream: CopyStream::start(tx, READINGS_COPY).await?,
        })
    }

    /// Ends the COPY; returns the rows stored.
    ///
    /// # Errors
    /// The database failed.
    pub async fn finish(self) -> Result<u64> {
        self.stream.finish().await
    }

    /// Writes a normalized frame's readings, one database row per source line: its
    /// measurement set (the ids of the values present, in key order), its position and the
    /// values, aligned. `file_ids[part]` is the file id of each part of the frame (one part
    /// outside group commits); lines of a part with no id (a duplicate file) are skipped.
    /// Returns the number of readings written.
    ///
    /// Two passes: the first finds the lines' distinct sets and positions and resolves them
    /// to ids in one batch (on another connection), the second encodes the rows.
    ///
    /// # Errors
    /// The COPY failed, registering a set or position failed, or the frame lacks a column.
    pub async fn write(
        &mut self,
        store: &Store,
        normalized: &NormalizedFrame,
        file_ids: &[Option<i64>],
    ) -> Result<u64> {
        let frame = &normalized.frame;
        if frame.height() == 0 {
            return Ok(0);
        }
        let column = |name: &str| frame.column(name).map_err(StoreError::Frame);
        let line = column("line")?.u32()?;
        let sensor_id = column("sensor_id")?.i64()?;
        let location_id = column("location_id")?.i64()?;
        let lat = column("lat")?.f64()?;
        let lon = column("lon")?.f64()?;
        let ts = column("ts")?.i64()?;
        let part = column("part")?.u32()?;
        let mut value_columns = Vec::with_capacity(normalized.keys.len());
        for key in &normalized.keys {
            value_columns.push(column(value_column(*key).as_str())?.f64()?);
        }
        let measurement_ids: Vec<i16> = normalized
            .keys
            .iter()
            .map(|key| store.measurement_id(*key))
            .collect();

        // First pass: each line's set and position, as indexes into the chunk's distinct ones.
        // A chunk with many distinct positions (moving sensors, jittered coordinates) keeps
        // them in the rows: a dictionary entry per line would cost more than it saves, so
        // positions stop being collected once there are too many.
        let max_positions = INLINE_POSITIONS_MIN.max(frame.height() / INLINE_POSITIONS_RATIO);
        let mut sets: Distinct<Vec<i16>> = Distinct::default();
        let mut positions: Distinct<Position> = Distinct::default();
        let mut inline_positions = false;
        let mut line_keys: Vec<Option<(u32, u32)>> = Vec::with_capacity(frame.height());
        {
            let mut values = value_columns.iter().map(|c| c.iter()).collect::<Vec<_>>();
            let mut ids: Vec<i16> = Vec::with_capacity(measurement_ids.len());
            let places = location_id.iter().zip(lat.iter()).zip(lon.iter());
            for ((location_id, lat), lon) in places {
                ids.clear();
                for (column, id) in values.iter_mut().zip(&measurement_ids) {
                    if column.next().flatten().is_some() {
                        ids.push(*id);
                    }
                }
                if ids.is_empty() {
                    line_keys.push(None);
                    continue;
                }
                let set = sets.index(&ids);
                let position = if inline_positions {
                    0
                } else {
                    let position = positions.index(&Position::new(location_id, lat, lon));
                    inline_positions = positions.items.len() > max_positions;
                    position
                };
                line_keys.push(Some((set, position)));
            }
        }
        let dictionaries = store.dictionaries();
        let set_ids = dictionaries
            .set_ids(store.dictionary_pool(), &sets.items)
            .await?;
        let position_ids = if inline_positions {
            Vec::new()
        } else {
            dictionaries
                .position_ids(store.dictionary_pool(), &positions.items)
                .await?
        };

        // Second pass: the rows.
        let stream = &mut self.stream;
        let mut values_in = value_columns.iter().map(|c| c.iter()).collect::<Vec<_>>();
        let mut values: Vec<f64> = Vec::with_capacity(measurement_ids.len());
        let mut readings = 0u64;
        let rows = line
            .iter()
            .zip(sensor_id.iter())
            .zip(ts.iter())
            .zip(part.iter())
            .zip(location_id.iter().zip(lat.iter()).zip(lon.iter()))
            .zip(line_keys);
        for (((((line, sensor_id), ts), part), ((location_id, lat), lon)), keys) in rows {
            values.clear();
            values.extend(values_in.iter_mut().filter_map(|c| c.next().flatten()));
            let (Some(line), Some(sensor_id), Some(ts), Some((set, position))) =
                (line, sensor_id, ts, keys)
            else {
                continue;
            };
            let Some(file_id) = part.and_then(|p| file_ids.get(p as usize).copied().flatten())
            else {
                continue;
            };
            let encoder = &mut stream.encoder;
            encoder.row(READINGS_FIELDS);
            encoder.timestamp_micros(ts);
            encoder.i64(file_id);
            encoder.i64(sensor_id);
            encoder.i32(i32::try_from(line).unwrap_or(i32::MAX));
            encoder.i32(set_ids[set as usize]);
            if inline_positions {
                encoder.null();
                encoder.f64_array(&values);
                encoder.opt_i64(location_id);
                encoder.opt_f64(lat);
                encoder.opt_f64(lon);
            } else {
                encoder.i32(position_ids[position as usize]);
                encoder.f64_array(&values);
                encoder.null();
                encoder.null();
                encoder.null();
            }
            readings += values.len() as u64;
            stream.flush_full().await?;
        }
        Ok(readings)
    }
}

/// The distinct values seen in a chunk, each with its index; consecutive lines usually
/// repeat the previous one, which is checked before any hashing.
struct Distinct<T> {
    items: Vec<T>,
    index_of: foldhash::HashMap<T, u32>,
    last: Option<u32>,
}

impl<T> Default for Distinct<T> {
    fn default() -> Self {
        Self {
            items: Vec::new(),
            index_of: foldhash::HashMap::default(),
            last: None,
        }
    }
}

impl<T: Clone + Eq + std::hash::Hash> Distinct<T> {
    fn index(&mut self, item: &T) -> u32 {
        if let Some(last) = self.last {
            if self.items[last as usize] == *item {
                return last;
            }
        }
        let index = match self.index_of.get(item) {
            Some(index) => *index,
            None => {
                let index = u32::try_from(self.items.len()).unwrap_or(u32::MAX);
                self.items.push(item.clone());
                self.index_of.insert(item.clone(), index);
                index
            }
        };
        self.last = Some(index);
        index
    }
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
    let mut stream = CopyStream::start(tx, REJECTS_COPY).await?;
    for (file_id, rejects) in files {
        for reject in *rejects {
            let line = i64::try_from(reject.position.line).unwrap_or(i64::MAX);
            let record = i64::try_from(reject.position.record).unwrap_or(i64::MAX);
            let byte = i64::try_from(reject.position.byte).unwrap_or(i64::MAX);
            for violation in &reject.violations {
                let column = violation.column.as_deref().map(clean_text);
                let value = violation.value.as_deref().map(clean_text);
                let encoder = &mut stream.encoder;
                encoder.row(REJECTS_FIELDS);
                encoder.i64(*file_id);
                encoder.i64(line);
                encoder.i64(record);
                encoder.i64(byte);
                encoder.opt_text(column.as_deref());
                encoder.opt_text(value.as_deref());
                encoder.text(violation.reason.code());
                encoder.text(&clean_text(&violation.message));
                stream.flush_full().await?;
            }
        }
    }
    stream.finish().await
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
    let mut stream = CopyStream::start(tx, AGGREGATES_COPY).await?;
    for (file_id, rows) in files {
        for row in *rows {
            let stats = &row.stats;
            let encoder = &mut stream.encoder;
            encoder.row(AGGREGATES_FIELDS);
            encoder.i64(*file_id);
            encoder.text(row.scope);
            encoder.i16(store.measurement_id(row.key));
            encoder.opt_i64(row.sensor_id);
            encoder.opt_i64(row.location_id);
            encoder.i64(i64::try_from(stats.n).unwrap_or(i64::MAX));
            encoder.f64(stats.min);
            encoder.f64(stats.max);
            encoder.f64(stats.mean);
            encoder.opt_f64(stats.stddev());
            encoder.timestamp_micros(stats.first_ts);
            encoder.timestamp_micros(stats.last_ts);
            stream.flush_full().await?;
        }
    }
    stream.finish().await
}
