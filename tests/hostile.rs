//! Hostile and unlucky inputs and surroundings, as users meet them: secrets in connection
//! strings, and the other cases of losing or leaking nothing.

use std::process::Command;
use std::time::Duration;

use crate::support::{fixture, fresh_database, wait_exit, Workspace};

fn sensor_etl(workspace: &Workspace) -> Command {
    let mut command = crate::support::sensor_etl_in(workspace);
    command.env_remove("RUST_LOG");
    command
}

/// Everything under `dir`, as text.
fn all_text_under(dir: &std::path::Path) -> String {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .map(|e| String::from_utf8_lossy(&std::fs::read(e.path()).unwrap_or_default()).into_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_password_is_never_printed_or_logged() {
    const SECRET: &str = "s3cr3t-pw";
    let url = fresh_database().await;
    let with_password = url.replacen("://postgres@", &format!("://postgres:{SECRET}@"), 1);
    assert!(with_password.contains(SECRET));
    let workspace = Workspace::new();
    let mut seen = String::new();
    for args in [
        vec!["status", "--json"],
        vec!["status"],
        vec!["migrate"],
        vec!["db", "url"],
    ] {
        let output = sensor_etl(&workspace)
            .args(&args)
            .args(["--database-url", &with_password])
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(0), "{args:?}");
        seen.push_str(&String::from_utf8_lossy(&output.stdout));
        seen.push_str(&String::from_utf8_lossy(&output.stderr));
    }
    let output = sensor_etl(&workspace)
        .args(["ingest", "--database-url", &with_password])
        .arg(fixture("quarantine/dht22_unknown_type.csv"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(3));
    seen.push_str(&String::from_utf8_lossy(&output.stdout));
    seen.push_str(&String::from_utf8_lossy(&output.stderr));
    // A database that does not answer: the waiting watcher names it in its log lines.
    let unreachable = format!("postgres://etl:{SECRET}@127.0.0.1:1/none");
    let mut child = sensor_etl(&workspace)
        .args(["run", "--http-addr", "", "--database-url", &unreachable])
        .env("SENSOR_ETL_RETRY__INITIAL_DELAY_MS", "100")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert_eq!(
        wait_exit(&mut child, Duration::from_secs(30)).code(),
        Some(0)
    );
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(stderr.contains("Waiting for the database"), "{stderr}");
    seen.push_str(&stderr);
    seen.push_str(&all_text_under(workspace.dir.path()));
    assert!(
        seen.contains("postgres://postgres@127.0.0.1"),
        "the database is still named"
    );
    assert!(!seen.contains(SECRET), "the password leaked:\n{seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reads_without_migrating_and_works_for_a_read_only_role() {
    let url = fresh_database().await;
    let workspace = Workspace::new();
    let status = |url: &str| {
        sensor_etl(&workspace)
            .args(["status", "--json", "--database-url", url])
            .output()
            .unwrap()
    };
    // A database sensor-etl never touched: status reports nothing and creates nothing.
    let output = status(&url);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(summary["reading_count"], 0);
    let client = crate::support::connect(&url).await;
    let created: bool = client
        .query_one("SELECT to_regclass('files') IS NOT NULL", &[])
        .await
        .unwrap()
        .get(0);
    assert!(!created, "status created no tables");
    // Loaded, then read by a role that may only read.
    let output = sensor_etl(&workspace)
        .args(["ingest", "--database-url", &url])
        .arg(fixture("quarantine/dht22_unknown_type.csv"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(3));
    let role = format!("reader_{}", std::process::id());
    client
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN; GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role};"
        ))
        .await
        .unwrap();
    let reader_url = url.replacen("://postgres@", &format!("://{role}@"), 1);
    let output = status(&reader_url);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(summary["files_by_status"][0]["rows_loaded"], 2);
    client
        .batch_execute(&format!("DROP OWNED BY {role}; DROP ROLE {role};"))
        .await
        .unwrap();
}

#[test]
fn status_and_db_url_leave_a_stopped_embedded_database_stopped() {
    let workspace = Workspace::new();
    std::fs::set_permissions(
        workspace.dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let run = |args: &[&str]| sensor_etl(&workspace).args(args).output().unwrap();
    assert_eq!(run(&["db", "start"]).status.code(), Some(0));
    assert_eq!(run(&["db", "stop"]).status.code(), Some(0));
    for args in [&["status"][..], &["db", "url"][..]] {
        let output = run(args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains("is not running"), "{stderr}");
        assert!(stderr.contains("sensor-etl db start"), "{stderr}");
    }
    let pid_files = walkdir::WalkDir::new(workspace.dir.path())
        .into_iter()
        .flatten()
        .filter(|e| e.file_name() == "postmaster.pid")
        .count();
    assert_eq!(pid_files, 0, "still stopped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_file_rejections_are_logged_and_names_cannot_forge_log_lines() {
    let url = fresh_database().await;
    let workspace = Workspace::new();
    let inputs = workspace.path("inputs");
    std::fs::create_dir_all(&inputs).unwrap();
    // Not text: no data row can be read at all.
    std::fs::copy(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("sample_data/not_a_csv.csv"),
        inputs.join("not_a_csv.csv"),
    )
    .unwrap();
    // A name that carries a forged log entry after a line break.
    let forged = "2001-01-01T00:00:00.000Z file=\"forged.csv\" status=loaded";
    let evil = format!("evil\n{forged}.csv");
    std::fs::write(inputs.join(&evil), "what;ever\n1;2\n").unwrap();
    let output = sensor_etl(&workspace)
        .args(["ingest", "--database-url", &url])
        .arg(&inputs)
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let log = std::fs::read_to_string(workspace.path("logs/errors.log")).unwrap();
    assert!(
        log.lines()
            .any(|l| l.contains("file=\"not_a_csv.csv\"") && l.contains("status=rejected")),
        "a whole-file rejection with no rows has its entry:\n{log}"
    );
    assert!(
        !log.lines().any(|l| l.starts_with("2001-01-01")),
        "a name forged an entry:\n{log}"
    );
    assert!(
        log.contains("file=\"evil\\n2001"),
        "the name is escaped:\n{log}"
    );
    // Every path a log or reason file points to exists.
    let quarantine = workspace.path("quarantine");
    for entry in std::fs::read_dir(&quarantine).unwrap() {
        let path = entry.unwrap().path();
        if path.to_string_lossy().ends_with(".reason.txt") {
            let reason = std::fs::read_to_string(&path).unwrap();
            assert_eq!(
                reason.lines().count(),
                7,
                "one line per field, names escaped: {reason}"
            );
            let pointed = reason
                .lines()
                .find_map(|l| l.strip_prefix("per-row reasons: "))
                .unwrap();
            assert!(
                pointed.starts_with("none")
                    || workspace
                        .dir
                        .path()
                        .join(serde_json::from_str::<String>(pointed).unwrap())
                        .exists(),
                "{path:?} points to a missing file: {reason}"
            );
        }
    }
    for line in log.lines().filter_map(|l| l.strip_prefix("  quarantine: ")) {
        let path: String = serde_json::from_str(line).unwrap();
        assert!(workspace.dir.path().join(&path).exists(), "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_does_not_follow_symlinks_in_folders_and_quarantine_is_never_more_readable() {
    use std::os::unix::fs::PermissionsExt;
    let url = fresh_database().await;
    let workspace = Workspace::new();
    let inputs = workspace.path("inputs");
    let secret_dir = workspace.path("secret");
    std::fs::create_dir_all(&inputs).unwrap();
    std::fs::create_dir_all(&secret_dir).unwrap();
    // A private file with a bad header, reachable through a link in the folder.
    let private = secret_dir.join("private.csv");
    std::fs::write(&private, "TOP-SECRET-HEADER;x\n1;2\n").unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::symlink(&private, inputs.join("link.csv")).unwrap();
    let output = sensor_etl(&workspace)
        .args(["ingest", "--database-url", &url])
        .arg(&inputs)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("--follow-symlinks"),
        "the skipped link is named: {stderr}"
    );
    assert!(
        !all_text_under(workspace.dir.path())
            .replace(&std::fs::read_to_string(&private).unwrap(), "")
            .contains("TOP-SECRET"),
        "no byte of the linked file was copied anywhere"
    );
    // Asked to follow, the file is read, and its quarantine copies keep its 0600.
    let output = sensor_etl(&workspace)
        .args(["ingest", "--follow-symlinks", "--database-url", &url])
        .arg(&inputs)
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let quarantine = workspace.path("quarantine");
    let mut checked = 0;
    for entry in std::fs::read_dir(&quarantine).unwrap() {
        let entry = entry.unwrap();
        let mode = entry.metadata().unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & !0o600, 0, "{:?} is {mode:o}", entry.path());
        checked += 1;
    }
    assert!(checked >= 2, "the copy and its reason");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_run_does_not_take_are_logged_once_and_counted_like_status() {
    use std::os::unix::ffi::OsStrExt;
    let url = fresh_database().await;
    let workspace = Workspace::new();
    let inbox = workspace.path("data");
    std::fs::create_dir_all(inbox.join("subfolder")).unwrap();
    nix::unistd::mkfifo(&inbox.join("pipe.csv"), nix::sys::stat::Mode::S_IRWXU).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", inbox.join("link.csv")).unwrap();
    std::fs::write(inbox.join("notes.txt"), "hello\n").unwrap();
    let latin1 = std::ffi::OsStr::from_bytes(b"caf\xe9.csv");
    std::fs::write(inbox.join(latin1), "x\n1\n").unwrap();
    let addr = crate::support::free_local_addr();
    let mut child = sensor_etl(&workspace)
        .args([
            "run",
            "--database-url",
            &url,
            "--http-addr",
            &addr.to_string(),
        ])
        .env("RUST_LOG", "warn")
        .env("SENSOR_ETL_RESCAN_INTERVAL_MS", "100")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The watcher has scanned (its gauge is out), then several more scans go by.
    crate::support::wait_until(
        "the first scan is counted",
        Duration::from_secs(30),
        || async move {
            crate::support::http_get(addr, "/metrics")
                .await
                .1
                .contains("sensor_etl_files_waiting ")
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (status, metrics) = crate::support::http_get(addr, "/metrics").await;
    assert!(
        metrics.contains("sensor_etl_files_waiting 0"),
        "{status} {metrics}"
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
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    for (entry, reason) in [
        ("subfolder", "folders"),
        ("pipe.csv", "FIFO"),
        ("link.csv", "symbolic links"),
        ("notes.txt", ".csv"),
    ] {
        let lines = stderr
            .lines()
            .filter(|l| l.contains("not taken") && l.contains(entry))
            .collect::<Vec<_>>();
        assert_eq!(lines.len(), 1, "{entry} once:\n{stderr}");
        assert!(lines[0].contains(reason), "{}", lines[0]);
    }
    // A name that is not UTF-8 is made one, said once, and the file is taken.
    let renamed = stderr
        .lines()
        .filter(|l| l.contains("renamed") && l.contains("caf"))
        .count();
    assert_eq!(renamed, 1, "{stderr}");
    assert!(!inbox.join(latin1).exists());
    let status = sensor_etl(&workspace)
        .args(["status", "--json", "--database-url", &url])
        .output()
        .unwrap();
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(
        status["files_waiting"], 0,
        "status counts what the watcher counts"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_with_bare_cr_line_ends_loads_and_quarantines_its_rows_as_they_were() {
    let url = fresh_database().await;
    let workspace = Workspace::new();
    let path = workspace.path("2020-01-01_dht22_sensor_1.csv");
    std::fs::write(
        &path,
        b"sensor_id;timestamp;temperature;humidity\r1;2020-01-01T00:00:00;20;50\r\
          1;2020-01-01T00:01:00;abc;50\r1;2020-01-01T00:02:00;21;50\r",
    )
    .unwrap();
    let output = sensor_etl(&workspace)
        .args(["ingest", "--database-url", &url])
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(3), "{stdout}");
    assert!(
        stdout.contains("rows read 3, loaded 2, rejected 1"),
        "{stdout}"
    );
    let rejected = std::fs::read_dir(workspace.path("quarantine"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".rejected.csv"))
        .unwrap();
    assert_eq!(
        std::fs::read(rejected).unwrap(),
        b"sensor_id;timestamp;temperature;humidity\r1;2020-01-01T00:01:00;abc;50\r"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_enormous_line_is_rejected_in_bounded_memory_and_cut_everywhere() {
    const LINE: usize = 64 * 1024 * 1024;
    let url = fresh_database().await;
    let workspace = Workspace::new();
    let path = workspace.path("2020-01-01_dht22_sensor_1.csv");
    {
        use std::io::Write;
        let mut file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        file.write_all(b"sensor_id;timestamp;temperature;humidity\n1;2020-01-01T00:00:00;20;50\n1;2020-01-01T00:01:00;")
            .unwrap();
        let block = vec![b'7'; 1024 * 1024];
        for _ in 0..LINE / block.len() {
            file.write_all(&block).unwrap();
        }
        file.write_all(b";50\n1;2020-01-01T00:02:00;21;50\n")
            .unwrap();
    }
    let mut child = sensor_etl(&workspace)
        .args(["ingest", "--database-url", &url])
        .arg(&path)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak_kb = 0u64;
    while child.try_wait().unwrap().is_none() {
        if let Ok(status) = std::fs::read_to_string(&status_file) {
            if let Some(kb) = status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
            {
                peak_kb = peak_kb.max(kb);
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let output = child.wait_with_output().unwrap();
    let printed = output.stdout.len() + output.stderr.len();
    assert_eq!(
        output.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert!(printed < 10_000, "{printed} bytes printed");
    assert!(
        peak_kb > 0 && peak_kb < 160 * 1024,
        "peak RSS {peak_kb} kB for a {LINE}-byte line"
    );
    let client = crate::support::connect(&url).await;
    let row = client
        .query_one(
            "SELECT line, code, length(coalesce(value, '')) + length(message) FROM v_rejects",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 3);
    assert_eq!(row.get::<_, String>(1), "line_too_long");
    assert!(
        row.get::<_, i32>(2) < 4096,
        "the database keeps a cut value"
    );
    let loaded: i64 = client
        .query_one("SELECT rows_loaded FROM v_files", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(loaded, 2, "the rows around the long line load");
    for entry in std::fs::read_dir(workspace.path("quarantine")).unwrap() {
        let entry = entry.unwrap();
        let size = entry.metadata().unwrap().len();
        assert!(size < 2 * 1024 * 1024, "{:?} is {size} bytes", entry.path());
    }
    let log = std::fs::read_to_string(workspace.path("logs/errors.log")).unwrap();
    assert!(log.len() < 10_000);
}
