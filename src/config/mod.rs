//! Configuration: built-in defaults < `sensor-etl.toml` < `SENSOR_ETL_*` environment < flags.
//!
//! `RawConfig` mirrors the file and the environment one to one (unknown keys are errors that
//! name the key). It is validated once into `Settings`, which the pipeline stages read; they
//! never see raw strings. Sensor types are data: the built-in catalogue (`sensor_types.toml`)
//! is merged with the user's `[[sensor_types]]` by name, so a type, a measurement or a range
//! changes with no code change and no schema migration.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::FixedOffset;
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

mod catalogue;
mod devices;
mod folders;
mod http;
mod tail;

pub use devices::{DeviceSettings, RawDevices, RawValueTarget, ValueTarget};
pub use http::{AccessToken, Acknowledge, HttpSettings, RawHttp, RawToken, Scope};
pub use tail::tail_patterns;

use catalogue::{build_catalogue, merge_sensor_types, BuiltinCatalogue, BUILTIN_SENSOR_TYPES};
pub use catalogue::{MeasurementSpec, RawMeasurement, RawSensorType, SensorType, UnitConversion};
use folders::check_folders_apart;

/// Name of the configuration file looked up in the working directory.
pub const DEFAULT_CONFIG_FILE: &str = "sensor-etl.toml";

/// The configuration as written by the operator (file, then environment).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// PostgreSQL connection string. Unset: the embedded default database is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
    /// Inbox watched by `run`.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Where rejected rows and rejected files go.
    #[serde(default = "default_quarantine_dir")]
    pub quarantine_dir: PathBuf,
    /// Where `run` moves a file once its transaction has committed.
    #[serde(default = "default_processed_dir")]
    pub processed_dir: PathBuf,
    /// Structured logs and the append-only error log.
    #[serde(default = "default_logs_dir")]
    pub logs_dir: PathBuf,
    /// Local state, e.g. the embedded PostgreSQL cluster.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// `run` deletes a committed file instead of moving it to `processed_dir`.
    #[serde(default)]
    pub delete_after_load: bool,
    /// Rows validated and written per chunk; bounds memory whatever the file size.
    #[serde(default = "default_chunk_rows")]
    pub chunk_rows: usize,
    /// A file whose share of rejected rows is above this is rejected whole (0.0..=1.0).
    #[serde(default = "default_max_reject_ratio")]
    pub max_reject_ratio: f64,
    /// UTC offset applied to timestamps that carry none, e.g. `+00:00` or `+02:00`.
    #[serde(default = "default_utc_offset")]
    pub default_utc_offset: String,
    /// A file with no close or rename event is taken once unchanged for this long.
    #[serde(default = "default_settle_ms")]
    pub settle_ms: u64,
    /// An inbox file with no data rows yet (empty, or a header alone) is taken only once it is
    /// this old: a writer may still be adding rows.
    #[serde(default = "default_empty_file_grace_secs")]
    pub empty_file_grace_secs: u64,
    /// Longest line kept, in bytes: a longer one is cut there and its row rejected
    /// (`line_too_long`), so one enormous line costs bounded memory.
    #[serde(default = "default_max_line_bytes")]
    pub max_line_bytes: u64,
    /// Period of the inbox scan that backs up the file-system events.
    #[serde(default = "default_rescan_interval_ms")]
    pub rescan_interval_ms: u64,
    /// Inbox files read in tail mode, as they grow (patterns relative to the inbox, `*` and
    /// `?` as in a shell, e.g. `["*.log.csv", "today/*.csv"]`): each new block of complete lines
    /// is a delivery, the offset reached committed with its rows.
    #[serde(default)]
    pub tail: Vec<String>,
    /// A tailed file quiet this long, every line of it loaded, is disposed of like any other.
    #[serde(default = "default_tail_quiet_secs")]
    pub tail_quiet_secs: u64,
    /// Address of the `/metrics`, `/healthz` and `/readyz` endpoints of `run`; empty disables.
    #[serde(default = "default_http_addr")]
    pub http_addr: String,
    /// How long a `run` worker's claim on a file lasts without a heartbeat; a killed worker's
    /// files are taken over by another worker after this.
    #[serde(default = "default_claim_lease_secs")]
    pub claim_lease_secs: u64,
    /// Failures (errors other than database outages, or crashes of a stage) after which a file
    /// is quarantined as poison.
    #[serde(default = "default_poison_attempts")]
    pub poison_attempts: u32,
    /// On SIGINT/SIGTERM, how long the file in hand may take to finish before it is rolled back.
    #[serde(default = "default_shutdown_grace_secs")]
    pub shutdown_grace_secs: u64,
    /// The lake `run` keeps up to date (Delta tables, as `export --to` writes); unset: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lake_dir: Option<PathBuf>,
    /// How often `run` exports to `lake_dir` what was delivered since the last export.
    #[serde(default = "default_lake_interval_secs")]
    pub lake_interval_secs: u64,
    /// A reading whose sensor and time are already stored with other values:
    /// `keep_first` (the line is rejected as `conflicting_reading`) or `replace` (the new
    /// value wins, the old one is kept in `v_replaced`).
    #[serde(default = "default_on_conflict")]
    pub on_conflict: String,
    /// Retry policy for transient database errors.
    #[serde(default)]
    pub retry: RawRetry,
    /// The HTTP API: access tokens and request limits.
    #[serde(default)]
    pub http: RawHttp,
    /// sensor.community devices pushing over HTTP: value types, pins, sensor ids.
    #[serde(default)]
    pub devices: RawDevices,
    /// Added or changed sensor types, merged by name into the built-in ones.
    #[serde(default)]
    pub sensor_types: Vec<RawSensorType>,
    /// Added unit conversions.
    #[serde(default)]
    pub unit_conversions: Vec<UnitConversion>,
}

/// Backoff for transient database errors.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawRetry {
    /// First delay.
    #[serde(default = "default_retry_initial_ms")]
    pub initial_delay_ms: u64,
    /// Largest delay between two attempts.
    #[serde(default = "default_retry_max_ms")]
    pub max_delay_ms: u64,
    /// Attempts before giving up on a file for now; 0 retries forever.
    #[serde(default)]
    pub max_attempts: usize,
}

impl Default for RawRetry {
    fn default() -> Self {
        Self {
            initial_delay_ms: default_retry_initial_ms(),
            max_delay_ms: default_retry_max_ms(),
            max_attempts: 0,
        }
    }
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("data")
}
fn default_quarantine_dir() -> PathBuf {
    PathBuf::from("quarantine")
}
fn default_processed_dir() -> PathBuf {
    PathBuf::from("processed")
}
fn default_logs_dir() -> PathBuf {
    PathBuf::from("logs")
}
fn default_state_dir() -> PathBuf {
    PathBuf::from(".sensor-etl")
}
const fn default_chunk_rows() -> usize {
    50_000
}
const fn default_max_reject_ratio() -> f64 {
    0.5
}
fn default_utc_offset() -> String {
    "+00:00".to_owned()
}
const fn default_settle_ms() -> u64 {
    1_000
}
const fn default_max_line_bytes() -> u64 {
    1024 * 1024
}
const fn default_empty_file_grace_secs() -> u64 {
    60
}
const fn default_tail_quiet_secs() -> u64 {
    3_600
}
const fn default_rescan_interval_ms() -> u64 {
    1_000
}
const fn default_claim_lease_secs() -> u64 {
    15
}
const fn default_poison_attempts() -> u32 {
    3
}
const fn default_shutdown_grace_secs() -> u64 {
    30
}
fn default_on_conflict() -> String {
    "keep_first".to_owned()
}

const fn default_lake_interval_secs() -> u64 {
    60
}
fn default_http_addr() -> String {
    "127.0.0.1:9898".to_owned()
}
const fn default_retry_initial_ms() -> u64 {
    200
}
const fn default_retry_max_ms() -> u64 {
    30_000
}
impl Default for RawConfig {
    fn default() -> Self {
        Self {
            database_url: None,
            data_dir: default_data_dir(),
            quarantine_dir: default_quarantine_dir(),
            processed_dir: default_processed_dir(),
            logs_dir: default_logs_dir(),
            state_dir: default_state_dir(),
            delete_after_load: false,
            chunk_rows: default_chunk_rows(),
            max_reject_ratio: default_max_reject_ratio(),
            default_utc_offset: default_utc_offset(),
            settle_ms: default_settle_ms(),
            empty_file_grace_secs: default_empty_file_grace_secs(),
            max_line_bytes: default_max_line_bytes(),
            rescan_interval_ms: default_rescan_interval_ms(),
            tail: Vec::new(),
            tail_quiet_secs: default_tail_quiet_secs(),
            http_addr: default_http_addr(),
            claim_lease_secs: default_claim_lease_secs(),
            poison_attempts: default_poison_attempts(),
            shutdown_grace_secs: default_shutdown_grace_secs(),
            lake_dir: None,
            lake_interval_secs: default_lake_interval_secs(),
            on_conflict: default_on_conflict(),
            retry: RawRetry::default(),
            http: RawHttp::default(),
            devices: RawDevices::default(),
            sensor_types: Vec::new(),
            unit_conversions: Vec::new(),
        }
    }
}

impl RawConfig {
    /// Loads defaults, then the TOML file (if it exists, or fails if it was named explicitly
    /// and is missing), then `SENSOR_ETL_*` variables (`__` separates nested keys) and
    /// `DATABASE_URL`.
    ///
    /// # Errors
    /// A file that does not parse, an unknown key, or a value of the wrong type.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(RawConfig::default()));
        match file {
            Some(path) if !path.exists() => {
                return Err(ConfigError::MissingFile(path.to_path_buf()));
            }
            Some(path) => figment = figment.merge(Toml::file_exact(path)),
            None => figment = figment.merge(Toml::file(DEFAULT_CONFIG_FILE)),
        }
        figment = figment
            .merge(Env::prefixed("SENSOR_ETL_").split("__"))
            .merge(
                Env::raw()
                    .only(&["DATABASE_URL"])
                    .map(|_| "database_url".into()),
            );
        figment
            .extract()
            .map_err(|source| ConfigError::Invalid(Box::new(source)))
    }
}

/// Retry policy for transient database errors.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// First delay.
    pub initial_delay: std::time::Duration,
    /// Largest delay.
    pub max_delay: std::time::Duration,
    /// `None` retries forever.
    pub max_attempts: Option<usize>,
}

/// Validated configuration read by every stage.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Explicit database; `None` selects the embedded default database.
    pub database_url: Option<String>,
    /// Inbox.
    pub data_dir: PathBuf,
    /// Quarantine folder.
    pub quarantine_dir: PathBuf,
    /// Folder for committed files (`run`).
    pub processed_dir: PathBuf,
    /// Logs folder; holds `errors.log`.
    pub logs_dir: PathBuf,
    /// Local state folder.
    pub state_dir: PathBuf,
    /// Delete instead of moving to `processed_dir`.
    pub delete_after_load: bool,
    /// Rows per chunk.
    pub chunk_rows: usize,
    /// Reject ratio above which a file is rejected whole.
    pub max_reject_ratio: f64,
    /// Offset for timestamps without one.
    pub default_utc_offset: FixedOffset,
    /// Settle period for files without close/rename events.
    pub settle: std::time::Duration,
    /// An inbox file with no data rows is taken only once it is this old.
    pub empty_file_grace: std::time::Duration,
    /// Longest line kept, in bytes.
    pub max_line_bytes: u64,
    /// Inbox rescan period.
    pub rescan_interval: std::time::Duration,
    /// Inbox files read in tail mode (validated glob patterns, relative to the inbox).
    pub tail: Vec<String>,
    /// How long a tailed file stays quiet before it is disposed of.
    pub tail_quiet: std::time::Duration,
    /// Operator endpoints of `run`, when enabled.
    pub http_addr: Option<std::net::SocketAddr>,
    /// Lease of a worker's claim on a file.
    pub claim_lease: std::time::Duration,
    /// Failures before a file is quarantined as poison.
    pub poison_attempts: u32,
    /// Time the file in hand may take to finish after a shutdown request.
    pub shutdown_grace: std::time::Duration,
    /// The lake `run` keeps up to date, if any.
    pub lake_dir: Option<PathBuf>,
    /// How often `run` updates the lake.
    pub lake_interval: std::time::Duration,
    /// What a reading with other values for a stored (sensor, time) does.
    pub on_conflict: OnConflict,
    /// The HTTP API's access tokens and limits.
    pub http: HttpSettings,
    /// Retry policy.
    pub retry: RetryPolicy,
    /// How device pushes map to the catalogue.
    pub devices: DeviceSettings,
    /// Sensor types in catalogue order (shared, never changed once built: what was detected
    /// from a header with them can be kept by their address).
    pub sensor_types: Arc<Vec<SensorType>>,
    /// Every measurement of every type; `MeasurementSpec::key` indexes it (shared, never
    /// changed once built).
    pub catalogue: Arc<Vec<MeasurementSpec>>,
}

/// What a reading does whose sensor and time are already stored with other values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnConflict {
    /// The stored value stays; the line is rejected as `conflicting_reading`.
    KeepFirst,
    /// The new value replaces the stored one, which is kept in the audit table.
    Replace,
}

impl Settings {
    /// Built-in defaults only (no file, no environment): what tests and `validate` start from.
    pub fn builtin() -> Self {
        Self::from_raw(RawConfig::default()).expect("built-in configuration is valid")
    }

    /// Validates a raw configuration.
    ///
    /// # Errors
    /// A bad offset, ratio, chunk size, sensor type or unit with no conversion.
    pub fn from_raw(raw: RawConfig) -> Result<Self, ConfigError> {
        let builtin: BuiltinCatalogue =
            toml::from_str(BUILTIN_SENSOR_TYPES).map_err(ConfigError::Builtin)?;
        if !(0.0..=1.0).contains(&raw.max_reject_ratio) {
            return Err(ConfigError::Value {
                key: "max_reject_ratio",
                message: format!("must be between 0 and 1, got {}", raw.max_reject_ratio),
            });
        }
        if raw.chunk_rows == 0 {
            return Err(ConfigError::Value {
                key: "chunk_rows",
                message: "must be at least 1".to_owned(),
            });
        }
        check_folders_apart(&raw)?;
        let default_utc_offset =
            parse_offset(&raw.default_utc_offset).ok_or_else(|| ConfigError::Value {
                key: "default_utc_offset",
                message: format!("`{}` is not an offset like +02:00", raw.default_utc_offset),
            })?;

        let http_addr = match raw.http_addr.trim() {
            "" => None,
            text => Some(text.parse().map_err(|_| ConfigError::Value {
                key: "http_addr",
                message: format!("`{text}` is not an address like 127.0.0.1:9898"),
            })?),
        };
        let on_conflict = match raw.on_conflict.trim() {
            "keep_first" => OnConflict::KeepFirst,
            "replace" => OnConflict::Replace,
            other => {
                return Err(ConfigError::Value {
                    key: "on_conflict",
                    message: format!("must be \"keep_first\" or \"replace\", got `{other}`"),
                })
            }
        };
        let mut conversions = builtin.unit_conversions;
        conversions.extend(raw.unit_conversions);
        let types = merge_sensor_types(builtin.sensor_types, raw.sensor_types);
        let (sensor_types, catalogue) = build_catalogue(types, &conversions)?;
        let devices = DeviceSettings::build(raw.devices, &sensor_types, &catalogue)?;

        Ok(Self {
            database_url: raw.database_url.filter(|url| !url.trim().is_empty()),
            data_dir: raw.data_dir,
            quarantine_dir: raw.quarantine_dir,
            processed_dir: raw.processed_dir,
            logs_dir: raw.logs_dir,
            state_dir: raw.state_dir,
            delete_after_load: raw.delete_after_load,
            chunk_rows: raw.chunk_rows,
            max_reject_ratio: raw.max_reject_ratio,
            default_utc_offset,
            settle: std::time::Duration::from_millis(raw.settle_ms),
            empty_file_grace: std::time::Duration::from_secs(raw.empty_file_grace_secs),
            max_line_bytes: raw.max_line_bytes.max(MAX_HEADER_BYTES_FLOOR),
            rescan_interval: std::time::Duration::from_millis(raw.rescan_interval_ms.max(10)),
            tail: tail::validated_patterns(raw.tail)?,
            tail_quiet: std::time::Duration::from_secs(raw.tail_quiet_secs),
            http_addr,
            claim_lease: std::time::Duration::from_secs(raw.claim_lease_secs.max(1)),
            poison_attempts: raw.poison_attempts.max(1),
            shutdown_grace: std::time::Duration::from_secs(raw.shutdown_grace_secs),
            lake_dir: raw.lake_dir.filter(|dir| !dir.as_os_str().is_empty()),
            lake_interval: std::time::Duration::from_secs(raw.lake_interval_secs.max(1)),
            on_conflict,
            http: HttpSettings::from_raw(raw.http)?,
            retry: RetryPolicy {
                initial_delay: std::time::Duration::from_millis(raw.retry.initial_delay_ms),
                max_delay: std::time::Duration::from_millis(raw.retry.max_delay_ms),
                max_attempts: (raw.retry.max_attempts > 0).then_some(raw.retry.max_attempts),
            },
            devices,
            sensor_types: Arc::new(sensor_types),
            catalogue: Arc::new(catalogue),
        })
    }

    /// The sensor type called `name` (case-insensitive).
    pub fn sensor_type_index(&self, name: &str) -> Option<usize> {
        self.sensor_types
            .iter()
            .position(|t| t.name.eq_ignore_ascii_case(name.trim()))
    }

    /// The path of the append-only error log.
    pub fn error_log_path(&self) -> PathBuf {
        self.logs_dir.join("errors.log")
    }
}

/// Parses `+HH:MM`, `-HH:MM`, `+HHMM`, `+HH` or `Z`.
pub fn parse_offset(text: &str) -> Option<FixedOffset> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("z") || text.eq_ignore_ascii_case("utc") {
        return FixedOffset::east_opt(0);
    }
    let (sign, rest) = match text.as_bytes().first()? {
        b'+' => (1, &text[1..]),
        b'-' => (-1, &text[1..]),
        _ => return None,
    };
    let digits: String = rest.chars().filter(|c| *c != ':').collect();
    if !digits.bytes().all(|b| b.is_ascii_digit()) || !(digits.len() == 2 || digits.len() == 4) {
        return None;
    }
    let hours: i32 = digits[..2].parse().ok()?;
    let minutes: i32 = if digits.len() == 4 {
        digits[2..].parse().ok()?
    } else {
        0
    };
    if hours > 23 || minutes > 59 {
        return None;
    }
    FixedOffset::east_opt(sign * (hours * 3600 + minutes * 60))
}

/// `max_line_bytes` is never below this: a header line must fit.
const MAX_HEADER_BYTES_FLOOR: u64 = 1024;

/// Configuration problems, reported before anything runs.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The named file does not exist.
    #[error("configuration file {} not found", .0.display())]
    MissingFile(PathBuf),
    /// The file or environment does not match the schema (unknown key, wrong type).
    #[error("configuration is invalid")]
    Invalid(#[source] Box<figment::Error>),
    /// The built-in sensor catalogue does not parse (a bug).
    #[error("built-in sensor catalogue is invalid")]
    Builtin(#[source] toml::de::Error),
    /// A value is out of its domain.
    #[error("`{key}` {message}")]
    Value {
        /// The key.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
    /// A sensor type definition is inconsistent.
    #[error("sensor type `{sensor_type}`: {message}")]
    SensorType {
        /// The type.
        sensor_type: String,
        /// What is wrong.
        message: String,
    },
}

#[cfg(test)]
mod tests;
