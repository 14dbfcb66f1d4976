//! Exactly once per reading, on the database side: which sensors a transaction has claimed,
//! the readings already stored where a delivery's overlap them, and the replacement of stored
//! lines (`on_conflict = "replace"`). The pipeline decides (`pipeline::sift`); this module
//! reads and writes.
//!
//! Guarantees: a transaction claims a sensor before it writes any reading of it, by locking the
//! sensor's `sensor_spans` row (inserted first as a placeholder when the sensor may be new, that
//! is unless `Known` says it has committed readings), so two deliveries of the same sensor
//! never decide at once: the second waits for the first's commit and then sees its readings
//! and its span. Row locks, not advisory locks: a delivery of 100,000
//! sensors takes 100,000 of them without filling PostgreSQL's lock table. Claims are taken in
//! sensor order within a statement; deliveries whose chunks bring sensors in other orders can
//! deadlock, which PostgreSQL breaks by failing one of them, a transient error that is retried.
//! The committed span of a sensor bounds where its stored readings are: a reading outside it is
//! new without a look at the readings.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use futures_util::{pin_mut, TryStreamExt};
use tokio_postgres::types::ToSql;

use crate::store::known::Known;
use crate::store::{time_of_micros as time, Micros, StoreError};

type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The sensors one transaction has claimed, with the span of their readings committed before
/// the claim (`None`: no reading stored yet).
#[derive(Debug)]
pub struct SensorClaims {
    spans: HashMap<i64, Option<(i64, i64)>>,
    /// Sensors this transaction entered as placeholders.
    placeholders: Vec<i64>,
    /// Sensors whose span row is known to exist: claimed without a placeholder.
    known: Arc<Known>,
}

impl SensorClaims {
    /// No claims yet; sensors in `known` need no placeholder.
    pub fn new(known: Arc<Known>) -> Self {
        Self {
            spans: HashMap::new(),
            placeholders: Vec::new(),
            known,
        }
    }

    /// Whether `sensor_id` is claimed.
    pub fn holds(&self, sensor_id: i64) -> bool {
        self.spans.contains_key(&sensor_id)
    }

    /// The committed span (µs) of a claimed sensor's readings.
    pub fn stored_span(&self, sensor_id: i64) -> Option<(i64, i64)> {
        self.spans.get(&sensor_id).copied().flatten()
    }

    /// Sensors entered as placeholders by this transaction.
    pub fn placeholders(&self) -> &[i64] {
        &self.placeholders
    }

    /// Claims `sensors` (sorted, distinct, none held yet): waits for any transaction holding
    /// one of them to end, then reads their committed spans.
    ///
    /// # Errors
    /// A statement failed (a deadlock among claims included).
    pub async fn claim(&mut self, tx: &Transaction<'_>, sensors: &[i64]) -> Result<()> {
        if sensors.is_empty() {
            return Ok(());
        }
        // A placeholder spans nothing (first after last) and counts nothing, so the delivery's
        // own span merges into it exactly (`SensorState::write`).
        let insert = tx
            .prepare_cached(
                "INSERT INTO sensor_spans (sensor_id, first_ts, last_ts, readings) \
                 SELECT s, 'infinity', '-infinity', 0 FROM unnest($1::int8[]) AS s ORDER BY s \
                 ON CONFLICT (sensor_id) DO NOTHING RETURNING sensor_id",
            )
            .await?;
        let lock = tx
            .prepare_cached(
                "SELECT sensor_id, \
                   CASE WHEN readings > 0 THEN first_ts END, \
                   CASE WHEN readings > 0 THEN last_ts END \
                 FROM sensor_spans WHERE sensor_id = ANY($1) ORDER BY sensor_id FOR UPDATE",
            )
            .await?;
        let unknown = self.known.unknown_sensors(sensors);
        if !unknown.is_empty() {
            let entered = tx.query(&insert, &[&unknown]).await?;
            self.placeholders
                .extend(entered.iter().map(|row| row.get::<_, i64>(0)));
        }
        for row in tx.query(&lock, &[&sensors]).await? {
            let first: Option<DateTime<Utc>> = row.get(1);
            let last: Option<DateTime<Utc>> = row.get(2);
            let span = first
                .zip(last)
                .map(|(f, l)| (f.timestamp_micros(), l.timestamp_micros()));
            self.spans.insert(row.get(0), span);
        }
        Ok(())
    }
}

/// A line stored by an earlier delivery.
#[derive(Debug, Clone)]
pub struct StoredLine {
    /// Delivery that stored it.
    pub file_id: i64,
    /// Its line there.
    pub line: i32,
    /// Its measurement set (`StoredLines::measurement_ids`).
    pub set_id: i32,
    /// The values.
    pub values: Vec<f64>,
}

/// The stored lines a lookup found, by (sensor, µs), with the measurement sets they use.
#[derive(Debug, Default)]
pub struct StoredLines {
    /// The lines.
    pub lines: foldhash::HashMap<(i64, i64), StoredLine>,
    sets: HashMap<i32, Vec<i16>>,
}

impl StoredLines {
    /// The measurement ids of `line`'s values, in order.
    pub fn measurement_ids(&self, line: &StoredLine) -> &[i16] {
        self.sets.get(&line.set_id).map_or(&[], Vec::as_slice)
    }
}

/// Windows closer than this in time are looked up in one range (µs).
const GATHER_GAP_MICROS: i64 = 3_600_000_000;

/// Up to this many sensors, a lookup lets the index narrow by sensor too.
const INDEXED_SENSORS: usize = 16;

/// How the lookups are planned: by the index, in the backend itself, without compiling
/// expressions. A partition loaded a moment ago has no statistics yet; the planner then takes
/// the index to cover the whole partition and reads all of it (534 ms against 27 ms for a
/// chunk of 1,000 sensors in a partition of 4M readings), and its cost estimate also brings
/// parallel workers and JIT compilation (20–97 ms a query) to a query of a few milliseconds.
const PLAN_FOR_RANGES: &str = "SET LOCAL enable_seqscan = off; SET LOCAL jit = off; \
     SET LOCAL max_parallel_workers_per_gather = 0";
/// The planner settings as they were.
const PLAN_AS_CONFIGURED: &str = "SET LOCAL enable_seqscan TO DEFAULT; SET LOCAL jit TO DEFAULT; \
     SET LOCAL max_parallel_workers_per_gather TO DEFAULT";

/// Every measurement set.
const ALL_SETS: &str = "SELECT set_id, measurement_ids FROM measurement_sets";

/// The committed lines of the sensors `$3` in the time range `$1..=$2`, leaving out those of
/// the deliveries `$4`; `sensor_test` compares `r.sensor_id` with the sensors: `r.sensor_id`
/// lets the BRIN index narrow by sensor too, `r.sensor_id + 0` keeps the sensors out of the
/// index condition (tested on the rows).
fn lines_query(sensor_test: &str) -> String {
    format!(
        "SELECT r.sensor_id, r.ts, r.file_id, r.line, r.set_id, r.\"values\" \
         FROM readings r \
         WHERE r.ts BETWEEN $1 AND $2 AND {sensor_test} = ANY($3) AND r.file_id <> ALL($4)"
    )
}

/// The lines committed for each `(sensor, first µs, last µs)` window, by (sensor, µs).
/// Lines of the caller's own deliveries `own` (written in this transaction) are left out.
///
/// Windows near each other in time are looked up together, one time range for all their
/// sensors (the chunks of a file with many interleaved sensors share their time range), so
/// the readings' BRIN index narrows each query to the pages of that range. The statement is
/// planned for its values each time (not prepared once): a generic plan cannot see how
/// narrow the range is, under `PLAN_FOR_RANGES`. The measurement sets are read once per
/// lookup, not joined to every line.
///
/// Each line is offered to `settled` as it arrives, with its key and its measurement ids
/// (empty when its set is not known yet): a line the caller settles there (a duplicate of its
/// own line) is not kept, so a re-load compares while the database still reads and keeps
/// only the lines that need a second look.
///
/// # Errors
/// The query failed.
pub async fn stored_lines(
    tx: &Transaction<'_>,
    windows: &[(i64, i64, i64)],
    own: &[i64],
    mut settled: impl FnMut((i64, i64), &StoredLine, &[i16]) -> bool,
) -> Result<StoredLines> {
    let mut stored = StoredLines::default();
    let mut windows = windows.to_vec();
    windows.sort_by_key(|w| w.1);
    // Sets are few and never change once made: all of them, before the lines.
    for row in tx.query(&tx.prepare_cached(ALL_SETS).await?, &[]).await? {
        stored.sets.insert(row.get(0), row.get(1));
    }
    tx.batch_execute(PLAN_FOR_RANGES).await?;
    let mut start = 0;
    while start < windows.len() {
        let (mut end, mut hi) = (start + 1, windows[start].2);
        while end < windows.len() && windows[end].1 <= hi.saturating_add(GATHER_GAP_MICROS) {
            hi = hi.max(windows[end].2);
            end += 1;
        }
        let group = &windows[start..end];
        let wanted: HashMap<i64, (i64, i64)> = group.iter().map(|w| (w.0, (w.1, w.2))).collect();
        let sensors: Vec<i64> = wanted.keys().copied().collect();
        // The BRIN index tests a list of sensors range by range, element by element: worth
        // it for a few sensors, slower than reading the time range for many (a 50,000-line
        // chunk of 1,000 sensors: 561 ms in the index against a few ms).
        let statement = lines_query(if sensors.len() <= INDEXED_SENSORS {
            "r.sensor_id"
        } else {
            "r.sensor_id + 0"
        });
        let (from, to) = (time(group[0].1), time(hi));
        let params: [&(dyn ToSql + Sync); 4] = [&from, &to, &sensors, &own];
        // Rows are taken as they arrive: the process decodes while the database still reads.
        let rows = tx
            .query_raw(statement.as_str(), params.iter().map(|p| *p as &dyn ToSql))
            .await?;
        pin_mut!(rows);
        while let Some(row) = rows.try_next().await? {
            let sensor: i64 = row.get(0);
            let Micros(ts) = row.get(1);
            if !wanted
                .get(&sensor)
                .is_some_and(|(lo, hi)| (*lo..=*hi).contains(&ts))
            {
                continue;
            }
            let line = StoredLine {
                file_id: row.get(2),
                line: row.get(3),
                set_id: row.get(4),
                values: row.get(5),
            };
            if !settled((sensor, ts), &line, stored.measurement_ids(&line)) {
                stored.lines.insert((sensor, ts), line);
            }
        }
        start = end;
    }
    tx.batch_execute(PLAN_AS_CONFIGURED).await?;
    // A set made by another transaction since the sets were read.
    let mut set_ids: Vec<i32> = stored
        .lines
        .values()
        .map(|l| l.set_id)
        .filter(|id| !stored.sets.contains_key(id))
        .collect();
    set_ids.sort_unstable();
    set_ids.dedup();
    if !set_ids.is_empty() {
        let statement = tx
            .prepare_cached(
                "SELECT set_id, measurement_ids FROM measurement_sets WHERE set_id = ANY($1)",
            )
            .await?;
        for row in tx.query(&statement, &[&set_ids]).await? {
            stored.sets.insert(row.get(0), row.get(1));
        }
    }
    Ok(stored)
}

/// The names of the deliveries `file_ids` (for messages about their lines): one statement
/// for the few deliveries a frame's stored lines come from, instead of a name per line.
///
/// # Errors
/// The query failed.
pub async fn file_names(tx: &Transaction<'_>, file_ids: &[i64]) -> Result<HashMap<i64, String>> {
    let rows = tx
        .query(
            "SELECT file_id, file_name FROM files WHERE file_id = ANY($1)",
            &[&file_ids],
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect())
}

/// A stored line to be replaced: (sensor, µs, the delivery holding it, the one replacing it).
pub type Replacement = (i64, i64, i64, i64);

/// Moves stored lines into `replaced_readings`, with the delivery replacing each, and takes
/// their count out of `sensor_spans`; their sensors' latest values are set again afterwards
/// (`recompute_latest`).
///
/// # Errors
/// A statement failed.
pub async fn replace(tx: &Transaction<'_>, lines: &[Replacement]) -> Result<u64> {
    if lines.is_empty() {
        return Ok(0);
    }
    let sensors: Vec<i64> = lines.iter().map(|l| l.0).collect();
    let times: Vec<DateTime<Utc>> = lines.iter().map(|l| time(l.1)).collect();
    let holders: Vec<i64> = lines.iter().map(|l| l.2).collect();
    let replacers: Vec<i64> = lines.iter().map(|l| l.3).collect();
    let statement = tx
        .prepare_cached(
            "WITH gone AS ( \
               DELETE FROM readings r \
               USING unnest($1::int8[], $2::timestamptz[], $3::int8[], $4::int8[]) \
                 AS k(sensor_id, ts, file_id, replaced_by) \
               WHERE r.sensor_id = k.sensor_id AND r.ts = k.ts AND r.file_id = k.file_id \
               RETURNING r.*, k.replaced_by), \
             kept AS ( \
               INSERT INTO replaced_readings (ts, file_id, sensor_id, line, measurement_ids, \
                 \"values\", location_id, lat, lon, replaced_by) \
               SELECT g.ts, g.file_id, g.sensor_id, g.line, s.measurement_ids, g.\"values\", \
                 CASE WHEN g.position_id IS NULL THEN g.location_id ELSE p.location_id END, \
                 CASE WHEN g.position_id IS NULL THEN g.lat ELSE p.lat END, \
                 CASE WHEN g.position_id IS NULL THEN g.lon ELSE p.lon END, \
                 g.replaced_by \
               FROM gone g \
               JOIN measurement_sets s ON s.set_id = g.set_id \
               LEFT JOIN positions p ON p.position_id = g.position_id), \
             counted AS ( \
               UPDATE sensor_spans sp SET readings = sp.readings - n.readings \
               FROM (SELECT sensor_id, sum(cardinality(\"values\")) AS readings \
                     FROM gone GROUP BY sensor_id) n \
               WHERE sp.sensor_id = n.sensor_id) \
             SELECT count(*) FROM gone",
        )
        .await?;
    tx.execute(&statement, &[&sensors, &times, &holders, &replacers])
        .await?;
    Ok(lines.len() as u64)
}

/// Sets the latest values of `sensors` again from their readings (after stored lines were
/// replaced, once the delivery's own state is written): the later time wins; on a tie, the
/// value stored first.
///
/// # Errors
/// A statement failed.
pub async fn recompute_latest(tx: &Transaction<'_>, sensors: &[i64]) -> Result<()> {
    if sensors.is_empty() {
        return Ok(());
    }
    let clear = tx
        .prepare_cached("DELETE FROM latest_values WHERE sensor_id = ANY($1)")
        .await?;
    tx.execute(&clear, &[&sensors]).await?;
    let statement = tx
        .prepare_cached(
            "INSERT INTO latest_values \
               (sensor_id, measurement_id, ts, value, location_id, lat, lon, file_id) \
             SELECT DISTINCT ON (r.sensor_id, u.measurement_id) \
                    r.sensor_id, u.measurement_id, r.ts, u.value, \
                    CASE WHEN r.position_id IS NULL THEN r.location_id ELSE p.location_id END, \
                    CASE WHEN r.position_id IS NULL THEN r.lat ELSE p.lat END, \
                    CASE WHEN r.position_id IS NULL THEN r.lon ELSE p.lon END, \
                    r.file_id \
             FROM readings r \
             JOIN measurement_sets s ON s.set_id = r.set_id \
             LEFT JOIN positions p ON p.position_id = r.position_id \
             CROSS JOIN LATERAL unnest(s.measurement_ids, r.\"values\") AS u(measurement_id, value) \
             WHERE r.sensor_id = ANY($1) \
             ORDER BY r.sensor_id, u.measurement_id, r.ts DESC, r.file_id, r.line",
        )
        .await?;
    tx.execute(&statement, &[&sensors]).await?;
    Ok(())
}

/// Removes the placeholders of sensors that ended up with no reading in this transaction.
///
/// # Errors
/// The statement failed.
pub async fn drop_empty_placeholders(tx: &Transaction<'_>, sensors: &[i64]) -> Result<()> {
    if sensors.is_empty() {
        return Ok(());
    }
    let statement = tx
        .prepare_cached("DELETE FROM sensor_spans WHERE sensor_id = ANY($1) AND readings = 0")
        .await?;
    tx.execute(&statement, &[&sensors]).await?;
    Ok(())
}
