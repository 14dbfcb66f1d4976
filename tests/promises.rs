//! README promises as a user meets them, with the real binary: configuration precedence, the
//! exit codes, the embedded database's `db start` / `db url`, every metric with its value, the
//! JSON log and its rotation, and "fix the rows and drop the file back".

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use crate::support::{connect, fixture, fresh_database, http_get, wait_exit, Workspace};

fn sensor_etl(workspace: &Workspace) -> Command {
    let mut command = crate::support::sensor_etl_in(workspace);
    command.env("RUST_LOG", "warn");
    command
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configuration_layers_defaults_file_environment_then_flags() {
    let url = fresh_database().await;
    let workspace = Workspace::new();
    let inbox_named = |extra: &dyn Fn(&mut Command)| {
        let mut command = sensor_etl(&workspace);
        command.args(["status", "--database-url", &url]);
        extra(&mut command);
        let output = command.output().unwrap();
        assert_eq!(output.status.code(), Some(0), "{}", text(&output));
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        stdout
            .lines()
            .find_map(|l| l.strip_prefix("files waiting in "))
            .and_then(|l| l.split(':').next())
            .unwrap()
            .to_owned()
    };
    assert_eq!(inbox_named(&|_| {}), "data", "the default");
    std::fs::write(
        workspace.path("sensor-etl.toml"),
        "data_dir = \"from_file\"\n",
    )
    .unwrap();
    assert_eq!(
        inbox_named(&|_| {}),
        "from_file",
        "the file over the default"
    );
    let env = |c: &mut Command| {
        c.env("SENSOR_ETL_DATA_DIR", "from_env");
    };
    assert_eq!(
        inbox_named(&env),
        "from_env",
        "the environment over the file"
    );
    let flag = |c: &mut Command| {
        c.env("SENSOR_ETL_DATA_DIR", "from_env")
            .args(["--data-dir", "from_flag"]);
    };
    assert_eq!(
        inbox_named(&flag),
        "from_flag",
        "the flag over the environment"
    );
    // The database: the flag wins over DATABASE_URL.
    let output = sensor_etl(&workspace)
        .args(["status", "--database-url", &url])
        .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_say_usage_error_failure_and_rejects() {
    let url = fresh_database().await;
    let workspace = Workspace::new();
    let code = |args: &[&str]| {
        let output = sensor_etl(&workspace).args(args).output().unwrap();
        (output.status.code(), text(&output))
    };
    let (status, out) = code(&["--no-such-flag"]);
    assert_eq!(status, Some(2), "{out}");
    let (status, out) = code(&["ingest"]);
    assert_eq!(status, Some(2), "a path is required: {out}");
    let (status, out) = code(&["ingest", "--database-url", &url, "no/such/file.csv"]);
    assert_eq!(status, Some(1), "{out}");
    assert!(out.contains("no/such/file.csv does not exist"), "{out}");
    let unreachable = "postgres://postgres@127.0.0.1:1/none";
    let fixture_path = fixture("quarantine/dht22_unknown_type.csv");
    let fixture_path = fixture_path.to_str().unwrap();
    let (status, out) = code(&["ingest", "--database-url", unreachable, fixture_path]);
    assert_eq!(status, Some(1), "database unreachable: {out}");
    assert!(out.contains("cannot use the database"), "{out}");
    let (status, out) = code(&["ingest", "--database-url", &url, fixture_path]);
    assert_eq!(status, Some(3), "rows rejected: {out}");
    let (status, out) = code(&["ingest", "--database-url", &url, fixture_path]);
    assert_eq!(status, Some(0), "a duplicate is a success: {out}");
}

#[test]
fn db_start_and_url_name_a_database_one_can_connect_to() {
    let workspace = Workspace::new();
    std::fs::set_permissions(
        workspace.dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let start = sensor_etl(&workspace)
        .args(["db", "start"])
        .output()
        .unwrap();
    assert_eq!(start.status.code(), Some(0), "{}", text(&start));
    let started = String::from_utf8_lossy(&start.stdout).trim().to_owned();
    let url = sensor_etl(&workspace).args(["db", "url"]).output().unwrap();
    assert_eq!(url.status.code(), Some(0), "{}", text(&url));
    assert_eq!(String::from_utf8_lossy(&url.stdout).trim(), started);
    // `psql -h 127.0.0.1 -p PORT -U postgres sensor_etl`: connect with exactly those.
    let words: Vec<&str> = started.split_whitespace().collect();
    assert_eq!(&words[..3], ["psql", "-h", "127.0.0.1"], "{started}");
    let port = words[4];
    let database = words[7];
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let answer: i32 = runtime.block_on(async {
        let client = connect(&format!("postgres://postgres@127.0.0.1:{port}/{database}")).await;
        client.query_one("SELECT 41 + 1", &[]).await.unwrap().get(0)
    });
    assert_eq!(answer, 42);
    let stop = sensor_etl(&workspace)
        .args(["db", "stop"])
        .output()
        .unwrap();
    assert_eq!(stop.status.code(), Some(0), "{}", text(&stop));
    let refused = runtime.block_on(tokio_postgres::connect(
        &format!("postgres://postgres@127.0.0.1:{port}/{database}"),
        tokio_postgres::NoTls,
    ));
    assert!(refused.is_err(), "stopped");
}

/// The value of an unlabelled or labelled sample in Prometheus text.
fn sample(metrics: &str, name: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let (key, value) = line.rsplit_once(' ')?;
        (key == name).then(|| value.parse().ok()).flatten()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_reports_what_happened() {
    let url = fresh_database().await;
    let workspace = Workspace::new();
    let addr = crate::support::free_local_addr();
    let mut child = sensor_etl(&workspace)
        .args([
            "run",
            "--database-url",
            &url,
            "--http-addr",
            &addr.to_string(),
        ])
        .env("SENSOR_ETL_SETTLE_MS", "100")
        .env("SENSOR_ETL_RESCAN_INTERVAL_MS", "100")
        .spawn()
        .unwrap();
    let inbox = workspace.path("data");
    for name in ["dht22_unknown_type.csv", "mixed_violations_crlf.csv"] {
        crate::support::deliver(&fixture(&format!("quarantine/{name}")), &inbox, name);
    }
    // A file that waits: a temporary name is never taken, but a visible one is counted.
    let mut metrics = String::new();
    for _ in 0..300 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            metrics = http_get(addr, "/metrics").await.1;
            let files: f64 = ["partially_loaded", "rejected"]
                .iter()
                .filter_map(|s| {
                    sample(
                        &metrics,
                        &format!("sensor_etl_files_total{{status=\"{s}\"}}"),
                    )
                })
                .sum();
            if files == 2.0 && sample(&metrics, "sensor_etl_files_waiting") == Some(0.0) {
                break;
            }
        }
    }
    let client = connect(&url).await;
    let ledger = |sql: &str| {
        let client = &client;
        let sql = sql.to_owned();
        async move { client.query_one(&sql, &[]).await.unwrap().get::<_, i64>(0) as f64 }
    };
    let expect = [
        (
            "sensor_etl_files_total{status=\"partially_loaded\"}".to_owned(),
            ledger("SELECT count(*) FROM v_files WHERE status = 'partially_loaded'").await,
        ),
        (
            "sensor_etl_files_total{status=\"rejected\"}".to_owned(),
            ledger("SELECT count(*) FROM v_files WHERE status = 'rejected'").await,
        ),
        (
            "sensor_etl_rows_loaded_total".to_owned(),
            ledger("SELECT sum(rows_loaded)::int8 FROM v_files").await,
        ),
        (
            "sensor_etl_rows_rejected_total".to_owned(),
            ledger("SELECT sum(rows_rejected)::int8 FROM v_files").await,
        ),
        (
            "sensor_etl_violations_total{code=\"unknown_sensor_type\"}".to_owned(),
            ledger("SELECT count(*) FROM v_rejects WHERE code = 'unknown_sensor_type'").await,
        ),
        (
            "sensor_etl_violations_total{code=\"not_a_number\"}".to_owned(),
            ledger("SELECT count(*) FROM v_rejects WHERE code = 'not_a_number'").await,
        ),
        ("sensor_etl_file_processing_seconds_count".to_owned(), 2.0),
        ("sensor_etl_files_waiting".to_owned(), 0.0),
        ("sensor_etl_oldest_waiting_file_age_seconds".to_owned(), 0.0),
        ("sensor_etl_database_waiting".to_owned(), 0.0),
    ];
    for (name, value) in &expect {
        assert_eq!(
            sample(&metrics, name),
            Some(*value),
            "{name} in:\n{metrics}"
        );
    }
    assert!(
        expect[2].1 > 0.0 && expect[3].1 > 0.0,
        "the files had rows of both kinds"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert_eq!(
        wait_exit(&mut child, Duration::from_secs(30)).code(),
        Some(0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_and_the_database_gauge_follow_an_outage() {
    let mut cluster = crate::support::RestartableCluster::start();
    let url = cluster.url();
    cluster.stop();
    let workspace = Workspace::new();
    let addr = crate::support::free_local_addr();
    let mut child = sensor_etl(&workspace)
        .args([
            "run",
            "--database-url",
            &url,
            "--http-addr",
            &addr.to_string(),
        ])
        .env("SENSOR_ETL_RETRY__INITIAL_DELAY_MS", "100")
        .env("SENSOR_ETL_RETRY__MAX_DELAY_MS", "300")
        .spawn()
        .unwrap();
    let scrape = || async move {
        match tokio::net::TcpStream::connect(addr).await {
            Ok(_) => http_get(addr, "/metrics").await.1,
            Err(_) => String::new(),
        }
    };
    let mut metrics = String::new();
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        metrics = scrape().await;
        if sample(&metrics, "sensor_etl_retries_total").unwrap_or(0.0) >= 2.0 {
            break;
        }
    }
    assert!(
        sample(&metrics, "sensor_etl_retries_total").unwrap_or(0.0) >= 2.0,
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "sensor_etl_database_waiting"),
        Some(1.0),
        "{metrics}"
    );
    // Files wait in the inbox and pushes in the push journal: the server stays ready, and says
    // why the database is not used.
    let (status, body) = http_get(addr, "/readyz").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("push journal"), "{body}");
    cluster.restart();
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        metrics = scrape().await;
        if sample(&metrics, "sensor_etl_database_waiting") == Some(0.0) {
            break;
        }
    }
    assert_eq!(
        sample(&metrics, "sensor_etl_database_waiting"),
        Some(0.0),
        "{metrics}"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert_eq!(
        wait_exit(&mut child, Duration::from_secs(30)).code(),
        Some(0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_json_log_is_dated_structured_and_keeps_fourteen_days() {
    let url = fresh_database().await;
    let workspace = Workspace::new();
    let logs = workspace.path("logs");
    std::fs::create_dir_all(&logs).unwrap();
    for day in 1..=20 {
        std::fs::write(
            logs.join(format!("sensor-etl.2025-01-{day:02}.log")),
            "{}\n",
        )
        .unwrap();
    }
    let output = sensor_etl(&workspace)
        .env_remove("RUST_LOG")
        .args(["ingest", "--database-url", &url])
        .arg(fixture("quarantine/dht22_unknown_type.csv"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(3), "{}", text(&output));
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let current = logs.join(format!("sensor-etl.{today}.log"));
    let content = std::fs::read_to_string(&current).unwrap();
    let mut processed = 0;
    for line in content.lines() {
        let event: serde_json::Value = serde_json::from_str(line).expect("one JSON object a line");
        assert!(
            event["timestamp"].is_string() && event["level"].is_string(),
            "{line}"
        );
        if event["fields"]["message"] == "Delivery processed." {
            processed += 1;
            assert_eq!(event["fields"]["file"], "dht22_unknown_type.csv");
            assert_eq!(event["fields"]["status"], "partially_loaded");
        }
    }
    assert_eq!(processed, 1, "{content}");
    let kept = std::fs::read_dir(&logs)
        .unwrap()
        .filter(|e| {
            let name = e
                .as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .into_owned();
            name.starts_with("sensor-etl.") && name.ends_with(".log")
        })
        .count();
    assert!(kept <= 14, "{kept} daily logs kept");
}

/// The rows of `path` after its first line, as text.
fn rows_of(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .skip(1)
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixed_rows_dropped_back_load_and_complete_the_file() {
    let url = fresh_database().await;
    let workspace = Workspace::new();
    let inbox = workspace.path("in");
    std::fs::create_dir_all(&inbox).unwrap();
    let original = inbox.join("2020-01-01_dht22_sensor_7.csv");
    std::fs::write(
        &original,
        "sensor_id;sensor_type;location;lat;lon;timestamp;temperature;humidity\n\
         7;DHT22;70;50.0;8.0;2020-01-01T00:00:00;5.0;80.0\n\
         7;DHT22;70;50.0;8.0;2020-01-01T00:05:00;abc;80.0\n\
         7;DHT22;70;50.0;8.0;2020-01-01T00:10:00;5.2;80.0\n\
         7;DHT22;70;50.0;8.0;2020-01-01T00:15:00;99.0;80.0\n\
         7;DHT22;70;50.0;8.0;2020-01-01T00:20:00;5.4;80.0\n",
    )
    .unwrap();
    let ingest = |path: &Path| {
        sensor_etl(&workspace)
            .args(["ingest", "--database-url", &url])
            .arg(path)
            .output()
            .unwrap()
    };
    let first = ingest(&original);
    assert_eq!(first.status.code(), Some(3), "{}", text(&first));
    let rejected = std::fs::read_dir(workspace.path("quarantine"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".rejected.csv"))
        .expect("the rejected rows");
    assert_eq!(rows_of(&rejected).len(), 2);
    // The user fixes the two values and drops the file back.
    let fixed = inbox.join("2020-01-01_dht22_sensor_7.fixed.csv");
    let text_fixed = std::fs::read_to_string(&rejected)
        .unwrap()
        .replace(";abc;", ";5.1;")
        .replace(";99.0;", ";5.3;");
    std::fs::write(&fixed, text_fixed).unwrap();
    let second = ingest(&fixed);
    assert_eq!(second.status.code(), Some(0), "{}", text(&second));
    let client = connect(&url).await;
    let temperatures: Vec<f64> = client
        .query(
            "SELECT value FROM v_readings WHERE measurement = 'temperature' ORDER BY ts",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(temperatures, vec![5.0, 5.1, 5.2, 5.3, 5.4]);
    let sums: (i64, i64, i64) = {
        let row = client
            .query_one(
                "SELECT sum(rows_read)::int8, sum(rows_loaded)::int8, sum(rows_rejected)::int8 FROM v_files",
                &[],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1), row.get(2))
    };
    assert_eq!(
        sums,
        (7, 5, 2),
        "every row accounted for across both deliveries"
    );
}
