//! Test-data generator (`sensor-etl generate`): realistic sensor.community files for load tests
//! and benchmarks.
//!
//! Writes archive-style (`;`, with `sensor_type`) or Kaggle-style (`,`, pandas index column, no
//! `sensor_type`) files for BME280, SDS011 or DHT22 sensors, with a configurable share of bad
//! rows of each kind (bad number, out of range, bad timestamp, truncated line, duplicate key,
//! empty row). Files are written under a temporary name and renamed into place, so a watcher
//! never sees half a file; scenarios pace the drops (steady, burst, variable rate). Output is
//! deterministic for a given seed. With `--http URL`, the same bodies are posted to
//! `POST /v1/ingest` instead ([`http`], the load generator of the HTTP API).

pub mod http;

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// File layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Layout {
    /// sensor.community archive: `;`, `sensor_type` column.
    Archive,
    /// Kaggle re-packaging: `,`, index column, type in the file name.
    Kaggle,
}

/// Sensor type of the generated rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// Pressure (Pa), temperature, humidity.
    Bme280,
    /// PM10, PM2.5.
    Sds011,
    /// Temperature, humidity.
    Dht22,
}

/// How files are dropped (or requests sent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// All files (requests) as fast as they are taken.
    Burst,
    /// `rate` files (requests) per second.
    Steady,
    /// A rate that swings between 0.2 and 1.8 times `rate`.
    Variable,
}

/// What to generate (also the arguments of `sensor-etl generate`).
#[derive(Debug, Clone, clap::Args)]
pub struct GenerateSpec {
    /// Output folder (e.g. the inbox of a running `sensor-etl run`).
    #[arg(long, value_name = "DIR", required_unless_present = "http")]
    pub out: Option<PathBuf>,
    /// Post the bodies to this ingest endpoint instead of writing files, e.g.
    /// `http://127.0.0.1:9898/v1/ingest`, and print what the server answered.
    #[arg(long, value_name = "URL", conflicts_with = "out")]
    pub http: Option<String>,
    /// Number of files.
    #[arg(long, default_value_t = 1)]
    pub files: usize,
    /// Data rows per file (per request body with `--http`).
    #[arg(long, default_value_t = 1000)]
    pub rows: usize,
    /// Sensors per file.
    #[arg(long, default_value_t = 10)]
    pub sensors: usize,
    /// File layout.
    #[arg(long, value_enum, default_value = "archive")]
    pub layout: Layout,
    /// Sensor type.
    #[arg(long, value_enum, default_value = "bme280")]
    pub kind: Kind,
    /// Share of bad rows (spread over every kind of fault), 0.0..=1.0.
    #[arg(long, default_value_t = 0.0)]
    pub bad_share: f64,
    /// How files are dropped.
    #[arg(long, value_enum, default_value = "burst")]
    pub scenario: Scenario,
    /// Files (requests) per second for the steady and variable scenarios.
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,
    /// Seconds to send requests for (`--http`).
    #[arg(long, default_value_t = 30.0)]
    pub duration: f64,
    /// Requests under way at once (`--http`).
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Send an `Idempotency-Key` with every request (`--http`).
    #[arg(long)]
    pub idempotency_keys: bool,
    /// Bearer token for the endpoint (`--http`), from the environment.
    #[arg(long, env = "SENSOR_ETL_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Random seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Seconds added at random to each reading's time (0 to 149), as devices report: each
    /// sensor still reports every 150 s on average, its readings in order and each at a time
    /// of its own, but the sensors of a file no longer share timestamps.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u16).range(0..150))]
    pub jitter: u16,
}

/// A small, fast, deterministic generator (SplitMix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn range(&mut self, low: f64, high: f64) -> f64 {
        low + (high - low) * self.unit()
    }
}

/// Writes the files, pacing them per the scenario; returns their paths.
///
/// # Errors
/// The output folder cannot be written.
pub fn generate(spec: &GenerateSpec) -> std::io::Result<Vec<PathBuf>> {
    let out = spec.out.as_deref().unwrap_or(Path::new("."));
    std::fs::create_dir_all(out)?;
    let mut rng = Rng(spec.seed);
    let mut paths = Vec::with_capacity(spec.files);
    for index in 0..spec.files {
        let name = file_name(spec, index);
        let text = file_text(spec, Placement::of_file(spec, index), &mut rng);
        paths.push(write_atomically(out, &name, text.as_bytes())?);
        if let Some(pause) = pause(spec, index) {
            std::thread::sleep(pause);
        }
    }
    Ok(paths)
}

/// The pause after file (request) `index` that the scenario asks for.
fn pause(spec: &GenerateSpec, index: usize) -> Option<Duration> {
    let rate = spec.rate.max(0.001);
    match spec.scenario {
        Scenario::Burst => None,
        Scenario::Steady => Some(Duration::from_secs_f64(1.0 / rate)),
        Scenario::Variable => {
            let phase = (index as f64 / 20.0).sin();
            Some(Duration::from_secs_f64(1.0 / (rate * (1.0 + 0.8 * phase))))
        }
    }
}

/// Which sensors a file or body carries and when its readings start.
#[derive(Debug, Clone, Copy)]
struct Placement {
    first_sensor: u64,
    start: i64,
}

/// 2019-01-01T00:00:00Z, where generated time starts (for seed 0).
const EPOCH: i64 = 1_546_300_800;

/// Sensor ids set apart for the fleet of each seed of a body stream.
const SENSORS_PER_SEED: u64 = 1_000_000;

/// Seconds between two readings of a sensor.
const INTERVAL: i64 = 150;

/// Where the readings of a seed start: each seed (modulo 100) has a span of time of its own as
/// long as all the files of the spec, so files of other seeds hold other readings (a reading
/// is stored once per sensor and time).
fn seed_start(spec: &GenerateSpec) -> i64 {
    let sensors = spec.sensors.max(1);
    let span = spec.files.max(1) as i64 * ((spec.rows / sensors) as i64 + 1) * INTERVAL;
    EPOCH + (spec.seed % 100) as i64 * span
}

impl Placement {
    /// File `index`: sensors of its own, its time after the previous file's.
    fn of_file(spec: &GenerateSpec, index: usize) -> Self {
        let sensors = spec.sensors.max(1);
        Self {
            first_sensor: 1_000 + (index * sensors) as u64,
            start: seed_start(spec)
                + (index as i64) * ((spec.rows / sensors) as i64 + 1) * INTERVAL,
        }
    }

    /// Body `index` of a stream: the sensors of `groups` groups take turns, so a long run
    /// keeps a fixed fleet (`groups` x `sensors`) whose time moves on, every reading unique.
    /// Each seed (modulo 1,000) has a fleet of its own: a stream runs for as long as it is
    /// asked, so time alone cannot keep the readings of two seeds apart.
    fn of_body(spec: &GenerateSpec, index: usize, groups: usize) -> Self {
        let sensors = spec.sensors.max(1);
        let round = (index / groups) as i64;
        let fleet = (spec.seed % 1_000) * SENSORS_PER_SEED;
        Self {
            first_sensor: 1_000 + fleet + ((index % groups) * sensors) as u64,
            start: seed_start(spec) + round * ((spec.rows / sensors) as i64 + 1) * INTERVAL,
        }
    }
}

fn kind_name(kind: Kind) -> (&'static str, &'static str) {
    match kind {
        Kind::Bme280 => ("BME280", "bme280"),
        Kind::Sds011 => ("SDS011", "sds011"),
        Kind::Dht22 => ("DHT22", "dht22"),
    }
}

fn file_name(spec: &GenerateSpec, index: usize) -> String {
    let (_, lower) = kind_name(spec.kind);
    match spec.layout {
        Layout::Archive => format!("gen-{:06}_{lower}_sensor_{}.csv", index, 10_000 + index),
        Layout::Kaggle => format!("gen-{index:06}_{lower}sof.csv"),
    }
}

fn header(spec: &GenerateSpec) -> String {
    let measurements = match spec.kind {
        Kind::Bme280 => "pressure;altitude;pressure_sealevel;temperature;humidity",
        Kind::Sds011 => "P1;durP1;ratioP1;P2;durP2;ratioP2",
        Kind::Dht22 => "temperature;humidity",
    };
    match spec.layout {
        Layout::Archive => {
            format!("sensor_id;sensor_type;location;lat;lon;timestamp;{measurements}\n")
        }
        Layout::Kaggle => format!(
            ",sensor_id,location,lat,lon,timestamp,{}\n",
            measurements.replace(';', ",")
        ),
    }
}

fn file_text(spec: &GenerateSpec, placement: Placement, rng: &mut Rng) -> String {
    let (type_name, _) = kind_name(spec.kind);
    let sep = match spec.layout {
        Layout::Archive => ';',
        Layout::Kaggle => ',',
    };
    let mut text = header(spec).replace(';', &sep.to_string());
    let sensors = spec.sensors.max(1);
    for row in 0..spec.rows {
        let sensor = placement.first_sensor + (row % sensors) as u64;
        let jitter = if spec.jitter > 0 {
            (rng.next() % u64::from(spec.jitter)) as i64
        } else {
            0
        };
        let ts = placement.start + (row / sensors) as i64 * INTERVAL + jitter;
        let timestamp = chrono::DateTime::from_timestamp(ts, 0)
            .unwrap_or_default()
            .format("%Y-%m-%dT%H:%M:%S")
            .to_string();
        let lat = 48.0 + (sensor % 1000) as f64 / 1000.0;
        let lon = 9.0 + (sensor % 997) as f64 / 1000.0;
        let mut values = match spec.kind {
            Kind::Bme280 => format!(
                "{:.2}{sep}{sep}{sep}{:.2}{sep}{:.2}",
                rng.range(95_000.0, 103_000.0),
                rng.range(-10.0, 35.0),
                rng.range(20.0, 100.0)
            ),
            Kind::Sds011 => format!(
                "{:.2}{sep}{sep}{sep}{:.2}{sep}{sep}",
                rng.range(0.5, 150.0),
                rng.range(0.3, 80.0)
            ),
            Kind::Dht22 => format!(
                "{:.2}{sep}{:.2}",
                rng.range(-10.0, 35.0),
                rng.range(20.0, 100.0)
            ),
        };
        let mut timestamp_field = timestamp;
        let mut truncated = false;
        if rng.unit() < spec.bad_share {
            match rng.next() % 6 {
                0 => values = values.replacen(|c: char| c.is_ascii_digit(), "x", 1),
                1 => values = format!("99999{values}"),
                2 => timestamp_field = timestamp_field.replace('T', "/"),
                3 => truncated = true,
                4 => {
                    timestamp_field = chrono::DateTime::from_timestamp(ts - INTERVAL, 0)
                        .unwrap_or_default()
                        .format("%Y-%m-%dT%H:%M:%S")
                        .to_string()
                }
                _ => {
                    values = values
                        .chars()
                        .map(|c| if c == sep { c } else { ' ' })
                        .collect::<String>()
                        .replace(' ', "")
                }
            }
        }
        let line = match spec.layout {
            Layout::Archive => format!(
                "{sensor};{type_name};{};{lat:.3};{lon:.3};{timestamp_field};{values}",
                sensor + 50_000
            ),
            Layout::Kaggle => format!(
                "{row},{sensor},{},{lat:.3},{lon:.3},{timestamp_field},{values}",
                sensor + 50_000
            ),
        };
        if truncated {
            let cut = line.len() / 3;
            let _ = writeln!(text, "{}", &line[..cut]);
        } else {
            let _ = writeln!(text, "{line}");
        }
    }
    text
}

fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<PathBuf> {
    let temp = dir.join(format!(".{name}.tmp"));
    let mut file = std::fs::File::create(&temp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    let target = dir.join(name);
    std::fs::rename(&temp, &target)?;
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;
    use crate::validate::dry_run;

    fn spec(dir: &Path, layout: Layout, kind: Kind, bad_share: f64) -> GenerateSpec {
        GenerateSpec {
            out: Some(dir.to_path_buf()),
            http: None,
            files: 2,
            rows: 500,
            sensors: 5,
            layout,
            kind,
            bad_share,
            scenario: Scenario::Burst,
            rate: 1.0,
            duration: 1.0,
            concurrency: 1,
            idempotency_keys: false,
            token: None,
            seed: 7,
            jitter: 0,
        }
    }

    #[test]
    fn generated_files_validate_as_expected() {
        let settings = Settings::builtin();
        for layout in [Layout::Archive, Layout::Kaggle] {
            for kind in [Kind::Bme280, Kind::Sds011, Kind::Dht22] {
                let dir = tempfile::tempdir().unwrap();
                let clean = generate(&spec(dir.path(), layout, kind, 0.0)).unwrap();
                let run = dry_run(&clean[0], &settings).unwrap();
                assert_eq!(
                    (run.rows_read, run.rejects.len()),
                    (500, 0),
                    "{layout:?} {kind:?}"
                );
                let dir = tempfile::tempdir().unwrap();
                let dirty = generate(&spec(dir.path(), layout, kind, 0.2)).unwrap();
                let run = dry_run(&dirty[1], &settings).unwrap();
                let rejected = run.rejects.len();
                assert!(
                    (50..=150).contains(&rejected),
                    "{layout:?} {kind:?}: {rejected} rejected"
                );
                assert_eq!(run.rows_read, run.rows_accepted + rejected as u64);
            }
        }
    }

    #[test]
    fn jittered_times_stay_in_order_and_unique_per_sensor() {
        let dir = tempfile::tempdir().unwrap();
        let mut jittered = spec(dir.path(), Layout::Archive, Kind::Dht22, 0.0);
        jittered.jitter = 120;
        jittered.files = 1;
        let path = &generate(&jittered).unwrap()[0];
        let text = std::fs::read_to_string(path).unwrap();
        let mut last: std::collections::HashMap<String, String> = Default::default();
        let mut off_grid = 0;
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split(';').collect();
            let (sensor, time) = (fields[0].to_owned(), fields[5].to_owned());
            if !time.ends_with(":00") && !time.ends_with(":30") {
                off_grid += 1;
            }
            if let Some(before) = last.insert(sensor.clone(), time.clone()) {
                assert!(before < time, "sensor {sensor}: {before} then {time}");
            }
        }
        assert_eq!(last.len(), 5);
        assert!(
            off_grid > 100,
            "times are jittered: {off_grid} of 500 off the grid"
        );
        let settings = Settings::builtin();
        assert_eq!(dry_run(path, &settings).unwrap().rejects.len(), 0);
    }
}
