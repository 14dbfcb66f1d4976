//! The process-level harness the tests share: distinct inbox files, `sensor-etl run` workers
//! with the short periods the tests use, delivering into an inbox, stopping or killing a
//! worker, and the exactly-once check of the ledger and the readings.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::{connect, sensor_etl_in, wait_exit, Workspace};

pub const ROWS_PER_FILE: usize = 200;

/// Distinct files: DHT22, `ROWS_PER_FILE` rows each, two measurements per row.
pub fn make_files(dir: &Path, count: usize) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir).unwrap();
    (0..count)
        .map(|i| {
            let mut text = String::from(
                "sensor_id;sensor_type;location;lat;lon;timestamp;temperature;humidity\n",
            );
            for row in 0..ROWS_PER_FILE {
                text.push_str(&format!(
                    "{};DHT22;{};50.0;8.0;2021-03-{:02}T{:02}:{:02}:00;{}.{};{}\n",
                    100 + i,
                    500 + i,
                    1 + row / 1440,
                    (row / 60) % 24,
                    row % 60,
                    row % 30,
                    i % 10,
                    40 + row % 50
                ));
            }
            let path = dir.join(format!("2021-03-01_dht22_sensor_{}.csv", 100 + i));
            std::fs::write(&path, text).unwrap();
            path
        })
        .collect()
}

/// Renames a staged file into the inbox (a complete file appears atomically).
pub fn deliver(staged: &Path, inbox: &Path) {
    std::fs::create_dir_all(inbox).unwrap();
    std::fs::rename(staged, inbox.join(staged.file_name().unwrap())).unwrap();
}

pub fn worker(workspace: &Workspace, url: &str) -> Child {
    worker_command(workspace, url).spawn().unwrap()
}

/// `sensor-etl run` on the workspace with short settle, rescan, lease and retry periods.
pub fn worker_command(workspace: &Workspace, url: &str) -> Command {
    let mut command = sensor_etl_command(workspace);
    command.args(["run", "--database-url", url, "--http-addr", ""]);
    command
}

/// The binary in the workspace, with the short periods the tests use.
pub fn sensor_etl_command(workspace: &Workspace) -> Command {
    let mut command = sensor_etl_in(workspace);
    command
        .env("RUST_LOG", "warn")
        .env("SENSOR_ETL_SETTLE_MS", "100")
        .env("SENSOR_ETL_RESCAN_INTERVAL_MS", "100")
        .env("SENSOR_ETL_CLAIM_LEASE_SECS", "2")
        .env("SENSOR_ETL_RETRY__INITIAL_DELAY_MS", "100")
        .env("SENSOR_ETL_RETRY__MAX_DELAY_MS", "1000")
        .env("SENSOR_ETL_CHUNK_ROWS", "50");
    command
}

/// A number below `bound` from the clock's nanoseconds: a moment chosen at random.
pub fn pseudo_random(bound: u64) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    u64::from(nanos.wrapping_mul(2_654_435_761)) % bound
}

pub fn csv_files_in(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".csv"))
                .count()
        })
        .unwrap_or(0)
}

pub async fn wait_until_empty(inbox: &Path, limit: Duration) {
    let started = Instant::now();
    while csv_files_in(inbox) > 0 {
        assert!(
            started.elapsed() < limit,
            "inbox still holds {} files",
            csv_files_in(inbox)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn terminate(mut child: Child) {
    // Leave a worker that was just started time to install its signal handlers.
    std::thread::sleep(Duration::from_millis(700));
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let status = wait_exit(&mut child, Duration::from_secs(30));
    assert_eq!(
        status.code(),
        Some(0),
        "SIGTERM ends the worker with exit code 0"
    );
}

pub fn kill_hard(mut child: Child) {
    kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL).unwrap();
    wait_exit(&mut child, Duration::from_secs(10));
}

pub async fn assert_exactly_once(url: &str, files: usize) {
    let client = connect(url).await;
    let count = |sql: &'static str| {
        let client = &client;
        async move { client.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) }
    };
    assert_eq!(
        count("SELECT count(*) FROM v_files").await,
        files as i64,
        "one ledger row per file"
    );
    assert_eq!(
        count("SELECT count(*) FROM v_files WHERE rows_read <> rows_loaded + rows_rejected + rows_duplicate").await,
        0
    );
    assert_eq!(
        count("SELECT coalesce(sum(rows_loaded), 0)::int8 FROM v_files").await,
        (files * ROWS_PER_FILE) as i64
    );
    assert_eq!(
        count("SELECT count(*) FROM v_readings").await,
        (files * ROWS_PER_FILE * 2) as i64
    );
    assert_eq!(
        count("SELECT count(*) FROM (SELECT file_id, line, measurement FROM v_readings GROUP BY 1, 2, 3 HAVING count(*) > 1) d").await,
        0,
        "no reading twice"
    );
    assert_eq!(
        count("SELECT count(*) FROM (SELECT sensor_id, ts, measurement FROM v_readings GROUP BY 1, 2, 3 HAVING count(*) > 1) d").await,
        0,
        "no file loaded twice"
    );
}
