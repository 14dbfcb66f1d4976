//! The lake, read back by an independent engine: `sensor-etl export` and `run` with `lake_dir`
//! write Delta tables that DuckDB (its Python package and Delta extension, see
//! `support/duckdb_query.py`) reads with the same counts and sums as PostgreSQL's views;
//! exports are incremental and exactly once, also when killed at random moments.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::support::workers::pseudo_random;
use crate::support::{
    connect, free_local_addr, fresh_database, http_get, realdata_dir, sensor_etl_in,
    terminate_child, wait_until, Workspace,
};

/// Rows of `sql` as DuckDB answers it over the lake at `lake`.
fn duckdb(lake: &Path, sql: &str) -> Vec<Vec<Value>> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/duckdb_query.py");
    let output = Command::new("python3")
        .arg(script)
        .arg(lake)
        .arg(sql)
        .output()
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "DuckDB failed on {sql}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// One number DuckDB answers.
fn duckdb_number(lake: &Path, sql: &str) -> f64 {
    duckdb(lake, sql)[0][0]
        .as_f64()
        .unwrap_or_else(|| panic!("{sql}: not a number"))
}

fn run_ok(command: &mut Command) -> String {
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{command:?}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn export(workspace: &Workspace, url: &str, lake: &Path) -> String {
    run_ok(
        sensor_etl_in(workspace)
            .args(["--database-url", url, "export", "--to"])
            .arg(lake),
    )
}

/// Loads `file`; rows rejected (exit code 3) are fine, failures are not.
fn ingest(workspace: &Workspace, url: &str, file: &Path) {
    let output = sensor_etl_in(workspace)
        .args(["--database-url", url, "ingest"])
        .arg(file)
        .output()
        .unwrap();
    assert!(
        matches!(output.status.code(), Some(0 | 3)),
        "ingest {}: {}",
        file.display(),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Generated BME280 files (3 readings a row) in a folder of the workspace.
fn generate(workspace: &Workspace, name: &str, files: usize, rows: usize, seed: u64) -> PathBuf {
    let out = workspace.path(name);
    run_ok(sensor_etl_in(workspace).args([
        "generate",
        "--out",
        name,
        "--files",
        &files.to_string(),
        "--rows",
        &rows.to_string(),
        "--sensors",
        "40",
        "--kind",
        "bme280",
        "--seed",
        &seed.to_string(),
    ]));
    out
}

fn csv_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "csv"))
        .collect();
    files.sort();
    files
}

/// PostgreSQL's answers to the questions the lake must answer the same.
struct Truth {
    readings: i64,
    value_sum: f64,
    files: i64,
    rows_loaded: i64,
    aggregates: i64,
    aggregate_n: i64,
    aggregate_mean_sum: f64,
    days: i64,
}

async fn truth(url: &str) -> Truth {
    let client = connect(url).await;
    let row = client
        .query_one(
            "SELECT count(*), sum(value), count(DISTINCT (ts AT TIME ZONE 'UTC')::date) \
             FROM v_readings",
            &[],
        )
        .await
        .unwrap();
    let files = client
        .query_one(
            "SELECT count(*), coalesce(sum(rows_loaded), 0)::int8 FROM v_files",
            &[],
        )
        .await
        .unwrap();
    let aggregates = client
        .query_one(
            "SELECT count(*), coalesce(sum(n), 0)::int8, coalesce(sum(mean), 0) FROM v_aggregates",
            &[],
        )
        .await
        .unwrap();
    Truth {
        readings: row.get(0),
        value_sum: row.get::<_, Option<f64>>(1).unwrap_or(0.0),
        days: row.get(2),
        files: files.get(0),
        rows_loaded: files.get(1),
        aggregates: aggregates.get(0),
        aggregate_n: aggregates.get(1),
        aggregate_mean_sum: aggregates.get(2),
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

/// The lake answers every question of `truth` the same.
fn assert_lake_matches(lake: &Path, truth: &Truth) {
    let readings = &duckdb(
        lake,
        "SELECT count(*), sum(value), count(DISTINCT date), \
                count(DISTINCT (file_id, line, measurement)) FROM readings",
    )[0];
    assert_eq!(readings[0].as_i64(), Some(truth.readings), "readings");
    assert!(
        close(readings[1].as_f64().unwrap(), truth.value_sum),
        "sum of values {readings:?} vs {}",
        truth.value_sum
    );
    assert_eq!(readings[2].as_i64(), Some(truth.days), "date partitions");
    assert_eq!(
        readings[3].as_i64(),
        Some(truth.readings),
        "no reading twice"
    );
    let files = &duckdb(lake, "SELECT count(*), sum(rows_loaded) FROM files")[0];
    assert_eq!(files[0].as_i64(), Some(truth.files), "files");
    assert_eq!(
        files[1].as_f64().map(|v| v as i64),
        Some(truth.rows_loaded),
        "rows loaded"
    );
    let aggregates = &duckdb(lake, "SELECT count(*), sum(n), sum(mean) FROM aggregates")[0];
    assert_eq!(aggregates[0].as_i64(), Some(truth.aggregates), "aggregates");
    assert_eq!(
        aggregates[1].as_f64().map(|v| v as i64),
        Some(truth.aggregate_n),
        "aggregate n"
    );
    assert!(close(
        aggregates[2].as_f64().unwrap(),
        truth.aggregate_mean_sum
    ));
}

fn bytes_under(dir: &Path, extension: &str) -> u64 {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|e| e == extension))
        .map(|e| e.metadata().unwrap().len())
        .sum()
}

fn log_versions(table: &Path) -> usize {
    std::fs::read_dir(table.join("_delta_log"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "json")
        })
        .count()
}

#[tokio::test]
async fn duckdb_reads_what_was_loaded_and_a_second_export_adds_nothing() {
    let workspace = Workspace::new();
    let url = fresh_database().await;
    let generated = generate(&workspace, "generated", 1, 30_000, 11);
    let csv = &csv_files(&generated)[0];
    ingest(&workspace, &url, csv);
    // A file with rejected rows (partially loaded), of another sensor type and other days.
    let partial = workspace.path("sds011_fixture.csv");
    std::fs::write(&partial, crate::support::fixtures::fixture_csv()).unwrap();
    ingest(&workspace, &url, &partial);
    let lake = workspace.path("lake");
    let printed = export(&workspace, &url, &lake);
    assert!(printed.contains("readings: "), "{printed}");

    let truth = truth(&url).await;
    assert!(truth.readings >= 90_000, "{}", truth.readings);
    assert_lake_matches(&lake, &truth);

    // Typed columns: integers, doubles, timestamps with time zone, the partition a date.
    let types: Vec<(String, String)> = duckdb(&lake, "DESCRIBE readings")
        .into_iter()
        .map(|row| {
            (
                row[0].as_str().unwrap().into(),
                row[1].as_str().unwrap().into(),
            )
        })
        .collect();
    for (column, kind) in [
        ("file_id", "BIGINT"),
        ("line", "INTEGER"),
        ("sensor_id", "BIGINT"),
        ("lat", "DOUBLE"),
        ("ts", "TIMESTAMP WITH TIME ZONE"),
        ("value", "DOUBLE"),
        ("measurement", "VARCHAR"),
        ("date", "DATE"),
    ] {
        assert!(
            types.contains(&(column.to_owned(), kind.to_owned())),
            "{column} {kind} in {types:?}"
        );
    }
    // The same reading, value for value: one sensor's first readings in both.
    let client = connect(&url).await;
    let expected: Vec<(i64, String, f64)> = client
        .query(
            "SELECT (extract(epoch FROM ts) * 1000000)::int8, measurement, value FROM v_readings \
             WHERE sensor_id = (SELECT min(sensor_id) FROM v_readings) \
             ORDER BY ts, measurement LIMIT 12",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let seen: Vec<(i64, String, f64)> = duckdb(
        &lake,
        "SELECT epoch_us(ts), measurement, value FROM readings \
         WHERE sensor_id = (SELECT min(sensor_id) FROM readings) ORDER BY ts, measurement LIMIT 12",
    )
    .into_iter()
    .map(|r| {
        (
            r[0].as_i64().unwrap(),
            r[1].as_str().unwrap().to_owned(),
            r[2].as_f64().unwrap(),
        )
    })
    .collect();
    assert_eq!(seen, expected);

    // Every Parquet file is zstd and sorted by sensor and time.
    let unsorted = duckdb_number(
        &lake,
        "SELECT count(*) FROM ( \
           SELECT sensor_id, ts, lag(sensor_id) OVER w AS ps, lag(ts) OVER w AS pt \
           FROM read_parquet('{lake}/readings/*/*.parquet', filename = true, file_row_number = true) \
           WINDOW w AS (PARTITION BY filename ORDER BY file_row_number)) \
         WHERE ps > sensor_id OR (ps = sensor_id AND pt > ts)",
    );
    assert_eq!(unsorted, 0.0);
    let codecs = duckdb(
        &lake,
        "SELECT DISTINCT compression FROM parquet_metadata('{lake}/readings/*/*.parquet')",
    );
    assert_eq!(codecs, vec![vec![Value::from("ZSTD")]]);
    // At most a quarter of the bytes of the CSV it came from.
    let parquet = bytes_under(&lake.join("readings"), "parquet");
    let source = std::fs::metadata(csv).unwrap().len();
    assert!(
        parquet * 4 <= source,
        "readings take {parquet} bytes for {source} of CSV"
    );

    // Again: nothing new, no new commit.
    let versions = log_versions(&lake.join("readings"));
    let printed = export(&workspace, &url, &lake);
    assert!(printed.contains("readings: up to date"), "{printed}");
    assert_eq!(log_versions(&lake.join("readings")), versions);
    assert_lake_matches(&lake, &truth);

    // One more file adds exactly its readings.
    let before = truth.readings;
    let more = generate(&workspace, "more", 1, 2_000, 12);
    ingest(&workspace, &url, &csv_files(&more)[0]);
    export(&workspace, &url, &lake);
    let truth = self::truth(&url).await;
    assert_lake_matches(&lake, &truth);
    let added = client
        .query_one(
            "SELECT reading_count FROM v_files ORDER BY file_id DESC LIMIT 1",
            &[],
        )
        .await
        .unwrap()
        .get::<_, i64>(0);
    assert_eq!(truth.readings - before, added);
    assert_eq!(added, 6_000);
}

#[tokio::test]
async fn an_export_killed_at_random_moments_is_completed_by_the_next() {
    let workspace = Workspace::new();
    let url = fresh_database().await;
    let generated = generate(&workspace, "generated", 6, 8_000, 21);
    let lake = workspace.path("lake");
    let files = csv_files(&generated);
    // How long one whole export of one file takes here, to aim the kills inside it.
    ingest(&workspace, &url, &files[0]);
    let started = std::time::Instant::now();
    export(&workspace, &url, &lake);
    let span = started.elapsed().as_millis().max(50) as u64;
    for (round, file) in files[1..].iter().enumerate() {
        ingest(&workspace, &url, file);
        let mut child = sensor_etl_in(&workspace)
            .args(["--database-url", &url, "export", "--to"])
            .arg(&lake)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // A random moment in the round's share of the export's span (and a little past it).
        let rounds = files.len() as u64 - 1;
        let delay = (span * 5 / 4) * (round as u64 * 1000 + pseudo_random(1000)) / (rounds * 1000);
        std::thread::sleep(Duration::from_millis(delay));
        let _ = child.kill();
        let _ = child.wait();
        // Whatever was visible is whole: each table holds the deliveries up to its marker.
        let client = connect(&url).await;
        let lake_files: Vec<i64> = duckdb(&lake, "SELECT DISTINCT file_id FROM readings")
            .into_iter()
            .map(|r| r[0].as_i64().unwrap())
            .collect();
        let horizon = lake_files.iter().copied().max().unwrap_or(0);
        let expected: i64 = client
            .query_one(
                "SELECT count(*) FROM v_readings WHERE file_id <= $1",
                &[&horizon],
            )
            .await
            .unwrap()
            .get(0);
        let seen = duckdb_number(&lake, "SELECT count(*) FROM readings") as i64;
        assert_eq!(seen, expected, "round {round}: delay {delay} ms of {span}");
    }
    export(&workspace, &url, &lake);
    assert_lake_matches(&lake, &truth(&url).await);
    // Whatever the killed exports wrote and never committed is gone.
    for table in ["readings", "files", "aggregates"] {
        assert_eq!(
            parquet_files(&lake.join(table)),
            added_files(&lake.join(table)),
            "{table}"
        );
    }
}

fn parquet_files(table: &Path) -> usize {
    walkdir::WalkDir::new(table)
        .into_iter()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "parquet"))
        .count()
}

/// The data files a Delta table's log holds: added and not removed since.
fn added_files(table: &Path) -> usize {
    std::fs::read_dir(table.join("_delta_log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .flat_map(|p| {
            std::fs::read_to_string(p)
                .unwrap()
                .lines()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .map(|line| {
            let action = serde_json::from_str::<Value>(&line).unwrap();
            i64::from(action.get("add").is_some()) - i64::from(action.get("remove").is_some())
        })
        .sum::<i64>() as usize
}

#[cfg(feature = "failpoints")]
#[tokio::test]
async fn an_export_that_dies_before_its_commit_shows_nothing_and_the_next_deletes_its_files() {
    let workspace = Workspace::new();
    let url = fresh_database().await;
    let generated = generate(&workspace, "generated", 1, 5_000, 41);
    ingest(&workspace, &url, &csv_files(&generated)[0]);
    let lake = workspace.path("lake");
    let output = sensor_etl_in(&workspace)
        .args(["--database-url", &url, "export", "--to"])
        .arg(&lake)
        .env("FAILPOINTS", "lake::before-commit=return(abort)")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("fault point lake::before-commit reached"),
        "{stderr}"
    );
    // The files were written, the table shows none of them.
    let readings = lake.join("readings");
    assert!(bytes_under(&readings, "parquet") > 0);
    assert_eq!(added_files(&readings), 0);
    assert_eq!(duckdb_number(&lake, "SELECT count(*) FROM readings"), 0.0);

    export(&workspace, &url, &lake);
    assert_lake_matches(&lake, &truth(&url).await);
    for table in ["readings", "files", "aggregates"] {
        assert_eq!(
            parquet_files(&lake.join(table)),
            added_files(&lake.join(table)),
            "{table}"
        );
    }
}

#[tokio::test]
async fn run_keeps_the_lake_up_to_date_while_files_arrive() {
    let workspace = Workspace::new();
    let url = fresh_database().await;
    let staged = generate(&workspace, "staged", 8, 1_000, 31);
    let lake = workspace.path("lake");
    let addr = free_local_addr();
    std::fs::create_dir_all(workspace.path("data")).unwrap();
    let mut run = sensor_etl_in(&workspace)
        .args(["--database-url", &url, "run"])
        .env("SENSOR_ETL_HTTP_ADDR", addr.to_string())
        .env("SENSOR_ETL_SETTLE_MS", "100")
        .env("SENSOR_ETL_RESCAN_INTERVAL_MS", "100")
        .env("SENSOR_ETL_LAKE_DIR", &lake)
        .env("SENSOR_ETL_LAKE_INTERVAL_SECS", "1")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    for file in csv_files(&staged) {
        let name = file.file_name().unwrap();
        std::fs::rename(&file, workspace.path("data").join(name)).unwrap();
        std::thread::sleep(Duration::from_millis(300));
    }
    let client = connect(&url).await;
    wait_until("all files loaded", Duration::from_secs(60), || async {
        client
            .query_one("SELECT count(*) FROM v_files", &[])
            .await
            .map(|r| r.get::<_, i64>(0) == 8)
            .unwrap_or(false)
    })
    .await;
    let expected = truth(&url).await;
    wait_until("the lake caught up", Duration::from_secs(60), || async {
        lake.join("files/_delta_log").is_dir()
            && duckdb_number(&lake, "SELECT count(*) FROM files") as i64 == expected.files
            && duckdb_number(&lake, "SELECT count(*) FROM readings") as i64 == expected.readings
    })
    .await;
    // What /metrics says of it.
    let horizon: i64 = client
        .query_one("SELECT max(file_id) FROM v_files", &[])
        .await
        .unwrap()
        .get(0);
    wait_until(
        "the metrics show the export",
        Duration::from_secs(10),
        || async {
            let (_, metrics) = http_get(addr, "/metrics").await;
            metrics.contains(&format!(
                "sensor_etl_lake_rows_exported_total{{table=\"readings\"}} {}",
                expected.readings
            )) && metrics.contains(&format!("sensor_etl_lake_horizon {horizon}"))
        },
    )
    .await;
    assert_eq!(terminate_child(&mut run), Some(0));
    assert_lake_matches(&lake, &expected);
}

#[tokio::test]
async fn a_real_month_becomes_31_date_partitions_at_a_quarter_of_its_bytes() {
    let Some(realdata) = realdata_dir() else {
        assert!(
            std::env::var("CI").is_err(),
            "../shared/realdata is missing under CI=true"
        );
        eprintln!("../shared/realdata not present; skipping");
        return;
    };
    let month = realdata.join("archive_style/month_2018-12_aberdeen");
    let workspace = Workspace::new();
    let url = fresh_database().await;
    ingest(&workspace, &url, &month);
    let lake = workspace.path("lake");
    export(&workspace, &url, &lake);
    let truth = truth(&url).await;
    assert_eq!(truth.files, 62);
    assert!(truth.days >= 31, "{} days", truth.days);
    assert_lake_matches(&lake, &truth);
    let parquet = bytes_under(&lake.join("readings"), "parquet");
    let source = bytes_under(&month, "csv");
    assert!(
        parquet * 4 <= source,
        "readings take {parquet} bytes for {source} of CSV"
    );
}

const SDS011_HEADER: &str = "sensor_id;sensor_type;location;lat;lon;timestamp;P1;P2\n";

/// SDS011 rows (no header) of sensors `sensors` at each of `times`, P1 = `p1`.
fn sds011(sensors: std::ops::RangeInclusive<u32>, times: &[&str], p1: f64) -> String {
    let mut text = String::new();
    for sensor in sensors {
        for time in times {
            text.push_str(&format!(
                "{sensor};SDS011;{sensor};50.0;8.0;{time};{p1};{}\n",
                p1 / 2.0
            ));
        }
    }
    text
}

#[cfg(feature = "failpoints")]
#[tokio::test]
async fn readings_replaced_after_an_export_leave_the_lake_with_their_replacements() {
    let workspace = Workspace::new();
    let url = fresh_database().await;
    let lake = workspace.path("lake");
    let first = workspace.path("first.csv");
    let times = [
        "2021-05-01T10:00:00",
        "2021-05-01T11:00:00",
        "2021-05-02T10:00:00",
    ];
    std::fs::write(
        &first,
        SDS011_HEADER.to_owned() + &sds011(1..=8, &times, 20.0),
    )
    .unwrap();
    ingest(&workspace, &url, &first);
    export(&workspace, &url, &lake);
    let before = duckdb_number(&lake, "SELECT count(*) FROM readings");
    assert_eq!(before, 48.0);

    // Other values for some of those lines, and new lines of a new day, replacing.
    let second = workspace.path("second.csv");
    let mut text = SDS011_HEADER.to_owned() + &sds011(1..=5, &times[..2], 35.5);
    text.push_str(&sds011(6..=6, &["2021-05-03T10:00:00"], 12.0));
    std::fs::write(&second, text).unwrap();
    let output = sensor_etl_in(&workspace)
        .args(["--database-url", &url, "ingest"])
        .arg(&second)
        .env("SENSOR_ETL_ON_CONFLICT", "replace")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let replaced: i64 = connect(&url)
        .await
        .query_one("SELECT count(*) FROM v_replaced", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(replaced, 20, "10 lines of 2 measurements replaced");

    // Killed before its commit: the lake is still the first export, whole.
    let killed = sensor_etl_in(&workspace)
        .args(["--database-url", &url, "export", "--to"])
        .arg(&lake)
        .env("FAILPOINTS", "lake::before-commit=return(abort)")
        .output()
        .unwrap();
    assert!(!killed.status.success());
    assert_eq!(
        duckdb_number(&lake, "SELECT count(*) FROM readings"),
        before
    );
    assert_eq!(
        duckdb_number(
            &lake,
            "SELECT sum(value) FROM readings WHERE measurement = 'pm10'"
        ),
        8.0 * 3.0 * 20.0
    );

    export(&workspace, &url, &lake);
    let truth = truth(&url).await;
    assert_lake_matches(&lake, &truth);
    let once = duckdb_number(
        &lake,
        "SELECT count(DISTINCT (sensor_id, ts, measurement)) FROM readings",
    );
    assert_eq!(once, truth.readings as f64, "no key twice");
    assert_eq!(
        duckdb_number(
            &lake,
            "SELECT sum(value) FROM readings WHERE measurement = 'pm10'"
        ),
        3.0 * 8.0 * 20.0 - 10.0 * 20.0 + 10.0 * 35.5 + 12.0
    );
    // Again: nothing changes.
    export(&workspace, &url, &lake);
    assert_lake_matches(&lake, &truth);
    for table in ["readings", "files", "aggregates"] {
        assert_eq!(
            parquet_files(&lake.join(table)),
            added_files(&lake.join(table)),
            "{table}: no file left behind"
        );
    }
}
