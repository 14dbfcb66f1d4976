//! What a delivery adds up to while it is read (`Tally`), and what the pipeline reports when
//! it is done (`DeliveryReport`). Shared by the streaming path and the group commit, so that
//! both write the same ledger row for the same bytes.
//!
//! Conservation holds by construction: every chunk adds its rows read, accepted and rejected,
//! and the validator guarantees `rows_read = rows_accepted + rejects` per chunk; lines sifted
//! out before the write (`sifted`) move from loaded to duplicate or rejected.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tracing::info;

use crate::config::Settings;
use crate::delivery::{FileStamp, RowCounts};
use crate::pipeline::Job;
use crate::store::ledger::{self, ExistingFile, FileRecord, FileStatus};
use crate::telemetry::{self, FileOutcome};
use crate::transform::aggregate::FileAggregates;
use crate::validate::rejection::FileRejection;
use crate::validate::ValidatedChunk;

/// The outcome of one delivery.
#[derive(Debug, Clone, Serialize)]
pub struct DeliveryReport {
    /// The source file, when the delivery is one.
    pub path: Option<PathBuf>,
    /// The delivery's name.
    pub file_name: String,
    /// Where it came from (`inbox:<path>`, `ingest:<path>`, `http:<client>`).
    pub origin: String,
    /// Hex SHA-256 of the content.
    pub fingerprint: String,
    /// Ledger id (the existing one for a duplicate).
    pub file_id: i64,
    /// Outcome.
    pub status: FileStatus,
    /// What became of its data rows.
    #[serde(flatten)]
    pub rows: RowCounts,
    /// Readings loaded.
    pub reading_count: u64,
    /// Delivery-level reason when rejected whole.
    pub rejection: Option<FileRejection>,
    /// Files written to quarantine.
    pub quarantine: Vec<PathBuf>,
    /// Where a consumed file source went (set by its source, after the commit).
    pub moved_to: Option<PathBuf>,
    /// What the file source looked like when it was read, for its source to tell whether it
    /// changed since.
    #[serde(skip)]
    pub taken: Option<FileStamp>,
    /// Violations by rule code.
    pub violation_counts: BTreeMap<&'static str, u64>,
    /// Wall time.
    pub elapsed_ms: u64,
}

impl DeliveryReport {
    /// The report of a delivery whose content was already in the ledger.
    pub(super) fn duplicate(job: &Job, existing: &ExistingFile, quarantine: Vec<PathBuf>) -> Self {
        Tally::default().report(job, existing.file_id, None, quarantine, true)
    }

    /// The answer for a delivery that is the stored delivery `file_id` under its key: a
    /// device's cycle sent again with the same `Idempotency-Key` (its bytes differ only by
    /// the receive time).
    pub fn same_delivery(file_id: i64, file_name: &str, origin: &str) -> Self {
        Self {
            path: None,
            file_name: file_name.to_owned(),
            origin: origin.to_owned(),
            fingerprint: String::new(),
            file_id,
            status: FileStatus::Duplicate,
            rows: RowCounts::default(),
            reading_count: 0,
            rejection: None,
            quarantine: Vec::new(),
            moved_to: None,
            taken: None,
            violation_counts: BTreeMap::new(),
            elapsed_ms: 0,
        }
    }

    /// Stamps the elapsed time, records metrics and logs the outcome.
    pub(super) fn finished(self, started: Instant) -> Self {
        let report = Self {
            elapsed_ms: started.elapsed().as_millis() as u64,
            ..self
        };
        let violations: Vec<(&'static str, u64)> = report
            .violation_counts
            .iter()
            .map(|(c, n)| (*c, *n))
            .collect();
        telemetry::record_file(FileOutcome {
            status: report.status.as_str(),
            rows: report.rows,
            violations: &violations,
            elapsed: started.elapsed(),
        });
        telemetry::record_database_available();
        info!(
            message = "Delivery processed.",
            file = %report.file_name,
            origin = %report.origin,
            fingerprint = %&report.fingerprint[..12],
            status = %report.status,
            rows_read = report.rows.read,
            rows_loaded = report.rows.loaded,
            rows_rejected = report.rows.rejected,
            rows_duplicate = report.rows.duplicate,
            elapsed_ms = report.elapsed_ms
        );
        report
    }
}

/// What a delivery added up to while it was read.
#[derive(Default)]
pub(super) struct Tally {
    pub rows: RowCounts,
    /// Rejected rows among `rows_rejected` that conflict with stored readings.
    pub rows_conflicting: u64,
    pub reading_count: u64,
    sensors: Vec<(i64, String)>,
    locations: Vec<(i64, Option<f64>, Option<f64>)>,
    pub aggregates: FileAggregates,
    violation_counts: BTreeMap<&'static str, u64>,
}

impl Tally {
    /// Adds one validated chunk (its readings are counted where they are written).
    pub fn absorb(&mut self, chunk: &ValidatedChunk, settings: &Settings) {
        self.rows.read += chunk.rows_read;
        self.rows.loaded += chunk.rows_accepted;
        self.rows.rejected += chunk.rejects.len() as u64;
        for violation in chunk.rejects.iter().flat_map(|r| &r.violations) {
            *self
                .violation_counts
                .entry(violation.reason.code())
                .or_default() += 1;
        }
        for (sensor_id, type_index) in &chunk.sensors {
            self.sensors
                .push((*sensor_id, settings.sensor_types[*type_index].name.clone()));
        }
        self.locations.extend(chunk.locations.iter().copied());
    }

    /// Takes the lines sifted out of the loaded ones: `duplicates` already stored with the
    /// same values, `conflicts` rejected for other values.
    pub fn sifted(&mut self, duplicates: u64, conflicts: u64) {
        self.rows.loaded = self.rows.loaded.saturating_sub(duplicates + conflicts);
        self.rows.duplicate += duplicates;
        self.rows.rejected += conflicts;
        self.rows_conflicting += conflicts;
        if conflicts > 0 {
            *self
                .violation_counts
                .entry(crate::validate::reject::RejectReason::ConflictingReading.code())
                .or_default() += conflicts;
        }
    }

    /// Rows rejected by the row rules (the ratio that can reject a delivery as a whole).
    pub fn rows_invalid(&self) -> u64 {
        self.rows.rejected - self.rows_conflicting
    }

    /// The ledger status: `rejected_whole` when the delivery got a delivery-level rejection.
    pub fn status(&self, rejected_whole: bool) -> FileStatus {
        match (rejected_whole, self.rows.read, self.rows.rejected) {
            (true, _, _) => FileStatus::Rejected,
            (false, 0, _) => FileStatus::Empty,
            (false, _, 0) => FileStatus::Loaded,
            (false, _, _) => FileStatus::PartiallyLoaded,
        }
    }

    /// Sensors first seen in this delivery, as the ledger takes them.
    pub fn sensors_of(&self, file_id: i64) -> impl Iterator<Item = (i64, String, i64)> + '_ {
        self.sensors
            .iter()
            .map(move |(id, t)| (*id, t.clone(), file_id))
    }

    /// Locations first seen in this delivery, as the ledger takes them.
    pub fn locations_of(&self, file_id: i64) -> impl Iterator<Item = ledger::LocationSeen> + '_ {
        self.locations
            .iter()
            .map(move |(id, lat, lon)| (*id, *lat, *lon, file_id))
    }

    /// The delivery's ledger row.
    pub fn record<'a>(
        &self,
        job: &'a Job,
        origin: &'a str,
        file_id: i64,
        rejection: Option<&'a str>,
        received_at: DateTime<Utc>,
    ) -> FileRecord<'a> {
        FileRecord {
            file_id,
            content_sha256: job.fingerprint(),
            file_name: job.name(),
            origin,
            size_bytes: job.identity.size_bytes,
            status: self.status(rejection.is_some()),
            rows: self.rows,
            reading_count: self.reading_count,
            received_at,
            error: rejection,
        }
    }

    /// The delivery's report (`duplicate`: the content was already in the ledger).
    pub fn report(
        self,
        job: &Job,
        file_id: i64,
        rejection: Option<&FileRejection>,
        quarantine: Vec<PathBuf>,
        duplicate: bool,
    ) -> DeliveryReport {
        let status = if duplicate {
            FileStatus::Duplicate
        } else {
            self.status(rejection.is_some())
        };
        DeliveryReport {
            path: job.path(),
            file_name: job.name().to_owned(),
            origin: job.delivery.origin.to_string(),
            fingerprint: job.fingerprint().to_owned(),
            file_id,
            status,
            rows: self.rows,
            reading_count: self.reading_count,
            rejection: rejection.cloned(),
            quarantine,
            moved_to: None,
            taken: job.stamp,
            violation_counts: self.violation_counts,
            elapsed_ms: 0,
        }
    }
}

/// Totals of an ingest run.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct IngestSummary {
    /// Files fully loaded.
    pub loaded: u64,
    /// Files partially loaded.
    pub partially_loaded: u64,
    /// Files rejected whole.
    pub rejected: u64,
    /// Files with a header and no rows.
    pub empty: u64,
    /// Re-deliveries of known content.
    pub duplicate: u64,
    /// Files that failed (I/O, database after retries).
    pub failed: u64,
    /// What became of its data rows.
    #[serde(flatten)]
    pub rows: RowCounts,
}

impl IngestSummary {
    /// Adds one file's outcome.
    pub fn add(&mut self, report: &DeliveryReport) {
        match report.status {
            FileStatus::Loaded => self.loaded += 1,
            FileStatus::PartiallyLoaded => self.partially_loaded += 1,
            FileStatus::Rejected => self.rejected += 1,
            FileStatus::Empty => self.empty += 1,
            FileStatus::Duplicate => self.duplicate += 1,
        }
        self.rows += report.rows;
    }

    /// Whether anything was rejected (rows or whole files).
    pub fn has_rejects(&self) -> bool {
        self.rows.rejected > 0 || self.rejected > 0
    }
}
