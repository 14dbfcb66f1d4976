//! The binary as users run it: `validate` with no database, `ingest` and `status --json`
//! against a database, exit codes, and configuration errors that name the key.

use std::process::Command;

use crate::support::{fixture, fresh_database, Workspace};

fn sensor_etl(workspace: &Workspace) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sensor-etl"));
    crate::support::die_with_test(&mut command)
        .current_dir(workspace.dir.path())
        .env_remove("DATABASE_URL")
        .env("RUST_LOG", "warn");
    command
}

#[test]
fn validate_needs_no_database_and_reports_every_violation() {
    let workspace = Workspace::new();
    let output = sensor_etl(&workspace)
        .args(["validate"])
        .arg(fixture("quarantine/mixed_violations_crlf.csv"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(3), "{stdout}");
    assert!(
        stdout.contains("would be REJECTED whole (too_many_rejects)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("[9 rows read, 6 with violations]"),
        "{stdout}"
    );
    assert!(
        stdout.contains("line 3: not_a_number column=P1 value=\"abc\""),
        "{stdout}"
    );
    assert!(stdout.contains("line 10: field_count"), "{stdout}");
    assert!(
        !workspace.path(".sensor-etl").exists(),
        "no database was started"
    );
}

#[test]
fn unknown_configuration_keys_are_named() {
    let workspace = Workspace::new();
    std::fs::write(workspace.path("sensor-etl.toml"), "chunk_rowz = 5\n").unwrap();
    let output = sensor_etl(&workspace)
        .args(["validate", "x.csv"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("chunk_rowz"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_then_status_json() {
    let url = fresh_database().await;
    let workspace = Workspace::new();
    let output = sensor_etl(&workspace)
        .args(["ingest", "--database-url", &url])
        .arg(fixture("quarantine"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(3),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("files: 0 loaded, 1 partially loaded, 2 rejected"),
        "{stdout}"
    );

    let output = sensor_etl(&workspace)
        .args(["status", "--json", "--database-url", &url])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0));
    let status: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let partial = status["files_by_status"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["status"] == "rejected")
        .unwrap();
    assert_eq!(partial["files"], 2);
    assert_eq!(
        partial["rows_read"].as_i64().unwrap(),
        partial["rows_loaded"].as_i64().unwrap() + partial["rows_rejected"].as_i64().unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_and_status_say_each_thing_once_without_colour_on_a_pipe() {
    let url = fresh_database().await;
    let workspace = Workspace::new();
    // The default log level: what a user sees without setting RUST_LOG.
    let quiet = |args: &[&str]| {
        let mut command = sensor_etl(&workspace);
        command.env_remove("RUST_LOG").args(args);
        command
    };
    let output = quiet(&["ingest", "--database-url", &url])
        .arg(fixture("quarantine"))
        .output()
        .unwrap();
    let terminal = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(output.status.code(), Some(3), "{terminal}");
    let inputs: Vec<String> = std::fs::read_dir(fixture("quarantine"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".csv"))
        .collect();
    assert_eq!(inputs.len(), 3);
    for name in &inputs {
        assert_eq!(
            terminal.matches(name.as_str()).count(),
            1,
            "{name} in:\n{terminal}"
        );
    }
    assert!(
        !terminal.contains('\u{1b}'),
        "no colour codes on a pipe:\n{terminal}"
    );
    // The detail is in the log file instead.
    let log = std::fs::read_dir(workspace.path("logs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".log") && !p.ends_with("errors.log"))
        .expect("a JSON log file");
    let log = std::fs::read_to_string(log).unwrap();
    assert_eq!(log.matches("Delivery processed.").count(), 3, "{log}");

    let output = quiet(&["status", "--database-url", &url]).output().unwrap();
    let terminal = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(output.status.code(), Some(0), "{terminal}");
    assert!(!terminal.to_lowercase().contains("migrat"), "{terminal}");
    assert!(!terminal.contains("NOTICE"), "{terminal}");
    assert_eq!(terminal.matches("database:").count(), 1, "{terminal}");
}

/// `ingest` of one fixture with no database configured (the embedded default), from a working
/// folder with the given mode; returns its stderr.
fn ingest_on_embedded_database(workspace: &Workspace, mode: u32) -> String {
    std::fs::set_permissions(
        workspace.dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(mode),
    )
    .unwrap();
    let output = sensor_etl(workspace)
        .arg("ingest")
        .arg(fixture("quarantine/dht22_unknown_type.csv"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    stderr
}

/// `db stop`; returns its stdout.
fn stop_embedded_database(workspace: &Workspace) -> String {
    let output = sensor_etl(workspace).args(["db", "stop"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[test]
fn ingest_and_status_work_on_the_embedded_default_database() {
    let workspace = Workspace::new();
    // The embedded cluster lives under the working folder; as root it runs as another user,
    // which must be able to reach it.
    let stderr = ingest_on_embedded_database(&workspace, 0o755);
    assert!(
        stderr.contains("psql -h 127.0.0.1 -p "),
        "tells how to connect: {stderr}"
    );
    let output = sensor_etl(&workspace)
        .args(["status", "--json"])
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let status: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(status["files_by_status"][0]["status"], "partially_loaded");
    assert_eq!(status["files_by_status"][0]["rows_loaded"], 2);
    stop_embedded_database(&workspace);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_serves_metrics_and_exits_zero_on_sigterm() {
    let url = fresh_database().await;
    let workspace = Workspace::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = sensor_etl(&workspace)
        .args([
            "run",
            "--database-url",
            &url,
            "--http-addr",
            &format!("127.0.0.1:{port}"),
        ])
        .env("SENSOR_ETL_SETTLE_MS", "100")
        .env("SENSOR_ETL_RESCAN_INTERVAL_MS", "100")
        .spawn()
        .unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let inbox = workspace.path("data");
    std::fs::create_dir_all(&inbox).unwrap();
    crate::support::deliver(
        &fixture("quarantine/dht22_unknown_type.csv"),
        &inbox,
        "dht22_unknown_type.csv",
    );
    let mut metrics = String::new();
    for _ in 0..200 {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        if let Ok(stream) = tokio::net::TcpStream::connect(addr).await {
            drop(stream);
            metrics = crate::support::http_get(addr, "/metrics").await.1;
            if metrics.contains("sensor_etl_files_total{status=\"partially_loaded\"} 1") {
                break;
            }
        }
    }
    assert!(
        metrics.contains("sensor_etl_files_total{status=\"partially_loaded\"} 1"),
        "{metrics}"
    );
    // The file leaves the inbox right after its commit is counted.
    let processed = workspace.path("processed/dht22_unknown_type.csv");
    crate::support::wait_until(
        "the committed file is in processed/",
        std::time::Duration::from_secs(10),
        || {
            let processed = processed.clone();
            async move { processed.exists() }
        },
    )
    .await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = crate::support::wait_exit(&mut child, std::time::Duration::from_secs(30));
    assert_eq!(status.code(), Some(0));
}

#[test]
fn the_embedded_database_works_from_a_folder_the_server_user_cannot_enter() {
    // A private folder (0700): as root, PostgreSQL's own user cannot enter it.
    let workspace = Workspace::new();
    ingest_on_embedded_database(&workspace, 0o700);
    let stdout = stop_embedded_database(&workspace);
    if nix::unistd::Uid::effective().is_root() {
        let root = stdout
            .trim()
            .strip_prefix("embedded PostgreSQL in ")
            .and_then(|s| s.strip_suffix(" stopped"))
            .unwrap();
        assert!(
            root.starts_with("/var/tmp/sensor-etl-postgres/"),
            "{stdout}"
        );
        let _ = std::fs::remove_dir_all(root);
    }
}

/// A file whose every line is stored already adds no index range: `ingest` does not summarize
/// the index for it, so it neither waits for another session holding the index (as a vacuum
/// does) nor warns that it could not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_of_lines_all_stored_already_leaves_the_index_alone() {
    let url = fresh_database().await;
    let workspace = Workspace::new();
    let text = "sensor_id;sensor_type;timestamp;P1;P2\n\
                1;SDS011;2021-01-01T00:00:00;1.5;0.5\n\
                1;SDS011;2021-01-01T00:02:30;1.6;0.6\n";
    let first = workspace.path("in/a_sds011.csv");
    let again = workspace.path("again/b_sds011.csv");
    crate::support::fixtures::write_file(&first, text);
    crate::support::fixtures::write_file(&again, &format!("{text}\n"));
    let ingest = |path: &std::path::Path| {
        sensor_etl(&workspace)
            .args(["ingest", "--database-url", &url])
            .arg(path)
            .output()
            .unwrap()
    };
    assert_eq!(ingest(&first).status.code(), Some(0));
    let mut client = crate::support::connect(&url).await;
    let holder = client.transaction().await.unwrap();
    holder
        .batch_execute("LOCK TABLE readings_y2021 IN SHARE UPDATE EXCLUSIVE MODE")
        .await
        .unwrap();
    let output = ingest(&again);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert_eq!(output.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("2 already stored"), "{stdout}");
    assert!(!stderr.contains("not summarized"), "{stderr}");
    holder.rollback().await.unwrap();
}
