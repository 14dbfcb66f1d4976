//! The ingest ledger: one row per distinct file content, keyed by its SHA-256.
//!
//! Within a file's transaction, `lock_content` serializes workers that hold the same bytes,
//! `find_file` detects a re-delivery (reported as a duplicate, loading nothing), and
//! `insert_file` records the outcome together with the file's data, so the ledger can never
//! claim a file whose rows did not commit, nor miss one whose rows did.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use serde::Serialize;

use crate::delivery::DeviceMark;
use crate::delivery::RowCounts;
use crate::store::known::Known;
use crate::store::StoreError;
use crate::validate::rejection::FileRejection;

/// Final status of a file in the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FileStatus {
    /// Every row loaded.
    Loaded,
    /// Some rows loaded, some rejected.
    PartiallyLoaded,
    /// Nothing loaded: the file was rejected as a whole.
    Rejected,
    /// A header and no data rows.
    Empty,
    /// The same bytes were already in the ledger; nothing was loaded again.
    Duplicate,
}

impl FileStatus {
    /// The value stored in `files.status`.
    pub const fn as_str(self) -> &'static str {
        match self {
            FileStatus::Loaded => "loaded",
            FileStatus::PartiallyLoaded => "partially_loaded",
            FileStatus::Rejected => "rejected",
            FileStatus::Empty => "empty",
            FileStatus::Duplicate => "duplicate",
        }
    }

    /// Parses a stored status.
    pub fn parse(text: &str) -> Option<Self> {
        [
            FileStatus::Loaded,
            FileStatus::PartiallyLoaded,
            FileStatus::Rejected,
            FileStatus::Empty,
            FileStatus::Duplicate,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }
}

impl std::fmt::Display for FileStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A file already in the ledger.
#[derive(Debug, Clone, PartialEq)]
pub struct ExistingFile {
    /// Its id.
    pub file_id: i64,
    /// Its status.
    pub status: FileStatus,
    /// The name it was first loaded under.
    pub file_name: String,
}

/// The ledger row of a processed file.
#[derive(Debug, Clone)]
pub struct FileRecord<'a> {
    /// Pre-allocated id.
    pub file_id: i64,
    /// Hex SHA-256 of the content.
    pub content_sha256: &'a str,
    /// File name.
    pub file_name: &'a str,
    /// Where the delivery came from (`inbox:<path>`, `ingest:<path>`, `http:<client>`).
    pub origin: &'a str,
    /// Size in bytes.
    pub size_bytes: u64,
    /// Outcome.
    pub status: FileStatus,
    /// What became of its data rows.
    pub rows: RowCounts,
    /// Readings loaded.
    pub reading_count: u64,
    /// When processing started.
    pub received_at: DateTime<Utc>,
    /// File-level reason, for rejected files.
    pub error: Option<&'a str>,
}

fn as_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// What an `Idempotency-Key` names, read under a lock held until the transaction ends.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyedDelivery {
    /// The content the key was first given with.
    pub content_sha256: String,
    /// Its ledger id.
    pub file_id: i64,
}

/// Locks `key` for the transaction and returns what it names, if anything.
///
/// # Errors
/// The statement failed.
pub async fn lock_key(
    tx: &Transaction<'_>,
    key: &str,
) -> Result<Option<KeyedDelivery>, StoreError> {
    tx.execute(
        &tx.prepare_cached(
            "SELECT pg_advisory_xact_lock(hashtextextended('idempotency-key:' || $1, 0))",
        )
        .await?,
        &[&key],
    )
    .await?;
    Ok(tx
        .query_opt(
            &tx.prepare_cached(
                "SELECT content_sha256, file_id FROM idempotency_keys WHERE key = $1",
            )
            .await?,
            &[&key],
        )
        .await?
        .map(|row| KeyedDelivery {
            content_sha256: row.get(0),
            file_id: row.get(1),
        }))
}

/// Records that `key` names the content of `file_id`.
///
/// # Errors
/// The statement failed.
pub async fn record_key(
    tx: &Transaction<'_>,
    key: &str,
    content_sha256: &str,
    file_id: i64,
) -> Result<(), StoreError> {
    tx.execute(
        &tx.prepare_cached(
            "INSERT INTO idempotency_keys (key, content_sha256, file_id) VALUES ($1, $2, $3) \
         ON CONFLICT (key) DO NOTHING",
        )
        .await?,
        &[&key, &content_sha256, &file_id],
    )
    .await?;
    Ok(())
}

/// Inserts the ledger rows and deliveries of several new files with two statements.
///
/// # Errors
/// The statement failed.
pub async fn insert_files(
    tx: &Transaction<'_>,
    records: &[FileRecord<'_>],
) -> Result<(), StoreError> {
    if records.is_empty() {
        return Ok(());
    }
    let column = |f: fn(&FileRecord<'_>) -> i64| records.iter().map(f).collect::<Vec<i64>>();
    let ids = column(|r| r.file_id);
    let hashes: Vec<&str> = records.iter().map(|r| r.content_sha256).collect();
    let names: Vec<&str> = records.iter().map(|r| r.file_name).collect();
    let origins: Vec<&str> = records.iter().map(|r| r.origin).collect();
    let sizes = column(|r| as_i64(r.size_bytes));
    let statuses: Vec<&str> = records.iter().map(|r| r.status.as_str()).collect();
    let read = column(|r| as_i64(r.rows.read));
    let loaded = column(|r| as_i64(r.rows.loaded));
    let rejected = column(|r| as_i64(r.rows.rejected));
    let readings = column(|r| as_i64(r.reading_count));
    let duplicate = column(|r| as_i64(r.rows.duplicate));
    let received: Vec<DateTime<Utc>> = records.iter().map(|r| r.received_at).collect();
    let errors: Vec<Option<&str>> = records.iter().map(|r| r.error).collect();
    tx.execute(
        &tx.prepare_cached("INSERT INTO files (file_id, content_sha256, file_name, size_bytes, status, rows_read, \
         rows_loaded, rows_rejected, reading_count, received_at, error, rows_duplicate) OVERRIDING SYSTEM VALUE \
         SELECT * FROM unnest($1::int8[], $2::text[], $3::text[], $4::int8[], $5::text[], $6::int8[], \
         $7::int8[], $8::int8[], $9::int8[], $10::timestamptz[], $11::text[], $12::int8[])").await?,
        &[&ids, &hashes, &names, &sizes, &statuses, &read, &loaded, &rejected, &readings, &received, &errors, &duplicate],
    )
    .await?;
    tx.execute(
        &tx.prepare_cached(
            "INSERT INTO file_deliveries (file_id, file_name, origin, outcome) \
         SELECT id, name, origin, 'new' FROM unnest($1::int8[], $2::text[], $3::text[]) \
         AS d(id, name, origin)",
        )
        .await?,
        &[&ids, &names, &origins],
    )
    .await?;
    Ok(())
}

/// Records one delivery of a file (`new` or `duplicate`) and where it came from.
///
/// # Errors
/// The statement failed.
pub async fn record_delivery(
    tx: &Transaction<'_>,
    file_id: i64,
    file_name: &str,
    origin: &str,
    outcome: &str,
) -> Result<(), StoreError> {
    tx.execute(
        &tx.prepare_cached("INSERT INTO file_deliveries (file_id, file_name, origin, outcome) VALUES ($1, $2, $3, $4)").await?,
        &[&file_id, &file_name, &origin, &outcome],
    )
    .await?;
    Ok(())
}

/// Adds sensors not seen before, each with the file it was first seen in (in a stable
/// order, so concurrent workers cannot deadlock); those `known` to be stored are left out.
///
/// # Errors
/// The statement failed.
pub async fn upsert_sensors(
    tx: &Transaction<'_>,
    known: &Known,
    sensors: &[(i64, String, i64)],
) -> Result<(), StoreError> {
    let ids: Vec<i64> = sensors.iter().map(|(id, _, _)| *id).collect();
    let unknown: HashSet<i64> = known.unknown_sensors(&ids).into_iter().collect();
    let mut sorted: Vec<(i64, String, i64)> = sensors
        .iter()
        .filter(|(id, _, _)| unknown.contains(id))
        .cloned()
        .collect();
    if sorted.is_empty() {
        return Ok(());
    }
    sorted.sort();
    sorted.dedup_by_key(|(id, _, _)| *id);
    let ids: Vec<i64> = sorted.iter().map(|(id, _, _)| *id).collect();
    let types: Vec<&str> = sorted.iter().map(|(_, t, _)| t.as_str()).collect();
    let files: Vec<i64> = sorted.iter().map(|(_, _, f)| *f).collect();
    tx.execute(
        &tx.prepare_cached(
            "INSERT INTO sensors (sensor_id, sensor_type, first_file_id) \
         SELECT * FROM unnest($1::int8[], $2::text[], $3::int8[]) \
         ON CONFLICT (sensor_id) DO NOTHING",
        )
        .await?,
        &[&ids, &types, &files],
    )
    .await?;
    Ok(())
}

/// A location first seen in a file: (location id, lat, lon, file id).
pub type LocationSeen = (i64, Option<f64>, Option<f64>, i64);

/// Adds locations not seen before, with the coordinates first reported for them; those
/// `known` to be stored are left out.
///
/// # Errors
/// The statement failed.
pub async fn upsert_locations(
    tx: &Transaction<'_>,
    known: &Known,
    locations: &[LocationSeen],
) -> Result<(), StoreError> {
    let ids: Vec<i64> = locations.iter().map(|(id, _, _, _)| *id).collect();
    let unknown: HashSet<i64> = known.unknown_locations(&ids).into_iter().collect();
    let mut sorted: Vec<LocationSeen> = locations
        .iter()
        .filter(|(id, _, _, _)| unknown.contains(id))
        .copied()
        .collect();
    if sorted.is_empty() {
        return Ok(());
    }
    sorted.sort_by_key(|(id, _, _, file)| (*id, *file));
    sorted.dedup_by_key(|(id, _, _, _)| *id);
    let ids: Vec<i64> = sorted.iter().map(|(id, _, _, _)| *id).collect();
    let lats: Vec<Option<f64>> = sorted.iter().map(|(_, lat, _, _)| *lat).collect();
    let lons: Vec<Option<f64>> = sorted.iter().map(|(_, _, lon, _)| *lon).collect();
    let files: Vec<i64> = sorted.iter().map(|(_, _, _, f)| *f).collect();
    tx.execute(
        &tx.prepare_cached(
            "INSERT INTO locations (location_id, lat, lon, first_file_id) \
         SELECT * FROM unnest($1::int8[], $2::float8[], $3::float8[], $4::int8[]) \
         ON CONFLICT (location_id) DO NOTHING",
        )
        .await?,
        &[&ids, &lats, &lons, &files],
    )
    .await?;
    Ok(())
}

/// Takes the content locks of several files at once, in a stable order.
///
/// # Errors
/// The statement failed.
pub async fn lock_contents(tx: &Transaction<'_>, hashes: &[String]) -> Result<(), StoreError> {
    tx.execute(
        &tx.prepare_cached(
            "SELECT count(pg_advisory_xact_lock(hashtextextended(h, 0))) \
         FROM (SELECT DISTINCT unnest($1::text[]) AS h ORDER BY 1) s",
        )
        .await?,
        &[&hashes],
    )
    .await?;
    Ok(())
}

/// The ledger rows of these contents, by hash.
///
/// # Errors
/// The query failed.
pub async fn find_files(
    tx: &Transaction<'_>,
    hashes: &[String],
) -> Result<std::collections::HashMap<String, ExistingFile>, StoreError> {
    let rows = tx
        .query(
            &tx.prepare_cached("SELECT content_sha256, file_id, status, file_name FROM files WHERE content_sha256 = ANY($1)").await?,
            &[&hashes],
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            (
                row.get(0),
                ExistingFile {
                    file_id: row.get(1),
                    status: FileStatus::parse(row.get(2)).unwrap_or(FileStatus::Loaded),
                    file_name: row.get(3),
                },
            )
        })
        .collect())
}

/// Allocates `count` file ids, holding the ledger's lock as `next_file_id` does.
///
/// # Errors
/// The query failed.
pub async fn next_file_ids(tx: &Transaction<'_>, count: usize) -> Result<Vec<i64>, StoreError> {
    allocate_file_ids(tx, count).await
}

/// The lock and the ids in one round trip (the simple protocol runs both statements). The
/// sequence is named once, as a constant: `pg_get_serial_sequence` per id looked it up in the
/// catalogue for every row (2.4–2.9 ms for 500 ids, 0.4 ms named).
async fn allocate_file_ids(tx: &Transaction<'_>, count: usize) -> Result<Vec<i64>, StoreError> {
    let messages = tx
        .simple_query(&format!(
            "LOCK TABLE files IN ROW EXCLUSIVE MODE; \
             SELECT nextval('files_file_id_seq') FROM generate_series(1, {count})"
        ))
        .await?;
    let ids: Vec<i64> = messages
        .iter()
        .filter_map(|message| match message {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0)?.parse().ok(),
            _ => None,
        })
        .collect();
    if ids.len() != count {
        return Err(StoreError::Allocation(format!(
            "asked for {count} file ids, got {}",
            ids.len()
        )));
    }
    Ok(ids)
}

/// What became of a stored delivery: its status and, when it was rejected as a whole, why.
///
/// # Errors
/// The statement failed.
pub async fn stored_outcome(
    client: &impl deadpool_postgres::GenericClient,
    file_id: i64,
) -> Result<(FileStatus, Option<FileRejection>), StoreError> {
    let row = client
        .query_one(
            "SELECT status, error FROM v_files WHERE file_id = $1",
            &[&file_id],
        )
        .await?;
    let status: String = row.get(0);
    let error: Option<String> = row.get(1);
    Ok((
        FileStatus::parse(&status).unwrap_or(FileStatus::Rejected),
        error.as_deref().and_then(FileRejection::parse),
    ))
}

/// Records which device each sensor of `devices` belongs to (`v_sensors.device`), in the
/// transaction of the deliveries that brought them. A sensor id keeps its first device.
///
/// # Errors
/// The statement failed.
pub async fn record_device_sensors(
    tx: &Transaction<'_>,
    devices: &[&DeviceMark],
) -> Result<(), StoreError> {
    let pairs = devices.iter().flat_map(|mark| {
        mark.sensors
            .iter()
            .map(|(id, t)| (*id, mark.device.as_str(), t.as_str()))
    });
    let (mut ids, mut names, mut types) = (Vec::new(), Vec::new(), Vec::new());
    for (id, device, sensor_type) in pairs {
        ids.push(id);
        names.push(device);
        types.push(sensor_type);
    }
    if ids.is_empty() {
        return Ok(());
    }
    let statement = tx
        .prepare_cached(
            "INSERT INTO device_sensors (sensor_id, device, sensor_type) \
             SELECT id, d, t FROM unnest($1::bigint[], $2::text[], $3::text[]) AS u(id, d, t) \
             ON CONFLICT (sensor_id) DO NOTHING",
        )
        .await?;
    tx.execute(&statement, &[&ids, &names, &types]).await?;
    Ok(())
}
