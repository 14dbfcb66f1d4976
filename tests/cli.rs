//! The binary as users run it: `validate` with no database, `ingest` and `status --json`
//! against a database, exit codes, and configuration errors that name the key.

use std::process::Command;

use crate::support::{fixture, fresh_database, Workspace};

fn sensor_etl(workspace: &Workspace) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sensor-etl"));
    command
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
