//! The hardest guarantees, each driven to its situation by a named fault point (feature
//! `failpoints`, see `src/faults.rs`) instead of a lucky moment: a crash between the commit and
//! the move, a worker killed while it holds claims (two others take over), a crash inside a
//! COPY after earlier files committed, SIGTERM or SIGINT with a delivery in hand (finished; or
//! rolled back after the grace period), a delivery held longer than its lease, a stage that
//! panics, database outages (mid-stream, and before the watcher starts), and an HTTP request
//! in flight when the server is killed (never acknowledged; whole or nothing). Each test first
//! asserts that the binary reported reaching its point, then asserts the outcome.

use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::support::workers::{
    assert_exactly_once, csv_files_in, deliver, make_files, sensor_etl_command, terminate,
    wait_until_empty, worker, worker_command, ROWS_PER_FILE,
};
use crate::support::{
    connect, fresh_database, wait_exit, wait_until, RestartableCluster, SmallDisk, Workspace,
};

const LIMIT: Duration = Duration::from_secs(60);

/// A child whose stderr is collected as it is written.
struct Watched {
    child: Child,
    stderr: Arc<Mutex<String>>,
}

impl Watched {
    fn spawn(mut command: Command, failpoints: &str) -> Self {
        let mut child = command
            .env("FAILPOINTS", failpoints)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let pipe = child.stderr.take().unwrap();
        let sink = Arc::clone(&stderr);
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut text = sink.lock().unwrap();
                text.push_str(&line);
                text.push('\n');
            }
        });
        Self { child, stderr }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits until the binary says it reached `point`.
    async fn reached(&self, point: &str) {
        let marker = format!("fault point {point} reached");
        wait_until(&format!("{point} is reached"), LIMIT, || {
            let seen = self.stderr().contains(&marker);
            async move { seen }
        })
        .await;
    }

    /// Waits for the exit; returns the status and everything written to stderr.
    fn exit(mut self) -> (ExitStatus, String) {
        let status = wait_exit(&mut self.child, LIMIT);
        std::thread::sleep(Duration::from_millis(100));
        (status, self.stderr())
    }

    fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), signal).unwrap();
    }
}

/// A worker that took one delivered file and holds it at its first chunk for `hold_ms`.
struct Held {
    url: String,
    workspace: Workspace,
    inbox: std::path::PathBuf,
    /// The held file, in the inbox.
    file: std::path::PathBuf,
    running: Watched,
}

/// Delivers one file to a worker (with `env` on top of the usual settings) and waits until it
/// holds the file at its first chunk.
async fn hold_one_file(hold_ms: u64, env: &[(&str, &str)]) -> Held {
    let url = fresh_database().await;
    let workspace = Workspace::new();
    let inbox = workspace.path("data");
    let staged = make_files(&workspace.path("staging"), 1);
    let mut command = worker_command(&workspace, &url);
    for (key, value) in env {
        command.env(key, value);
    }
    let running = Watched::spawn(
        command,
        &format!("pipeline::chunk-read=1*return(sleep:{hold_ms})"),
    );
    deliver(&staged[0], &inbox);
    running.reached("pipeline::chunk-read").await;
    let file = inbox.join(staged[0].file_name().unwrap());
    Held {
        url,
        workspace,
        inbox,
        file,
        running,
    }
}

/// The process died on the spot at `point`, as under `kill -9`.
fn assert_crashed_at(status: ExitStatus, stderr: &str, point: &str) {
    assert!(
        stderr.contains(&format!("fault point {point} reached")),
        "{point} was not reached:\n{stderr}"
    );
    assert_eq!(status.signal(), Some(6), "aborted at {point}:\n{stderr}");
}

async fn count(url: &str, sql: &str) -> i64 {
    connect(url).await.query_one(sql, &[]).await.unwrap().get(0)
}

/// Delivers `files` files, crashes right after the first commit, restarts: every file ends in
/// `processed/` once, and each one committed before the crash is moved later as a duplicate.
async fn crash_between_commit_and_move(files: usize) {
    let url = fresh_database().await;
    let workspace = Workspace::new();
    let inbox = workspace.path("data");
    for path in make_files(&workspace.path("staging"), files) {
        deliver(&path, &inbox);
    }
    let crashed = Watched::spawn(
        worker_command(&workspace, &url),
        "pipeline::after-commit=return(abort)",
    );
    let (status, stderr) = crashed.exit();
    assert_crashed_at(status, &stderr, "pipeline::after-commit");
    let committed = count(&url, "SELECT count(*) FROM v_files").await;
    assert!(committed > 0, "the crash came after a commit");
    assert_eq!(
        csv_files_in(&inbox),
        files,
        "committed files are still in the inbox after the crash"
    );
    let child = worker(&workspace, &url);
    wait_until_empty(&inbox, LIMIT).await;
    terminate(child);
    assert_eq!(csv_files_in(&workspace.path("processed")), files);
    assert_eq!(
        count(
            &url,
            "SELECT count(*) FROM file_deliveries WHERE outcome = 'duplicate'"
        )
        .await,
        committed,
        "each file committed before the crash is moved later, as a duplicate delivery"
    );
    assert_exactly_once(&url, files).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_commit_and_move_of_one_file_moves_it_once_later() {
    crash_between_commit_and_move(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_group_commit_and_moves_moves_each_file_once_later() {
    crash_between_commit_and_move(6).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_while_holding_claims_has_its_files_taken_over() {
    let url = fresh_database().await;
    let workspace = Workspace::new();
    let inbox = workspace.path("data");
    for path in make_files(&workspace.path("staging"), 12) {
        deliver(&path, &inbox);
    }
    let doomed = Watched::spawn(
        worker_command(&workspace, &url),
        "watch::claimed=return(abort)",
    );
    let (status, stderr) = doomed.exit();
    assert_crashed_at(status, &stderr, "watch::claimed");
    let held = count(
        &url,
        "SELECT count(*) FROM inbox_claims WHERE worker IS NOT NULL AND lease_expires_at > now()",
    )
    .await;
    assert!(held > 0, "the killed worker held live claims");
    assert_eq!(count(&url, "SELECT count(*) FROM v_files").await, 0);
    let survivors = [worker(&workspace, &url), worker(&workspace, &url)];
    wait_until_empty(&inbox, LIMIT).await;
    for child in survivors {
        terminate(child);
    }
    assert_eq!(csv_files_in(&workspace.path("processed")), 12);
    assert_exactly_once(&url, 12).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_inside_a_copy_after_earlier_files_committed_keeps_only_those() {
    let url = fresh_database().await;
    let workspace = Workspace::new();
    let inputs = workspace.path("inputs");
    make_files(&inputs, 3);
    let ingest = |failpoints: &str| {
        let mut command = sensor_etl_command(&workspace);
        command
            .args(["ingest", "--database-url", &url])
            .arg(&inputs);
        Watched::spawn(command, failpoints)
    };
    // 50-row chunks, 200 rows a file: four chunks each; the ninth is the third file's first.
    let chunks_per_file = ROWS_PER_FILE / 50;
    let (status, stderr) = ingest(&format!(
        "pipeline::copy-chunk={}*off->return(abort)",
        2 * chunks_per_file
    ))
    .exit();
    assert_crashed_at(status, &stderr, "pipeline::copy-chunk");
    assert_eq!(count(&url, "SELECT count(*) FROM v_files").await, 2);
    assert_eq!(
        count(&url, "SELECT count(*) FROM v_readings").await,
        (2 * ROWS_PER_FILE * 2) as i64,
        "the first two files committed, nothing of the third"
    );
    let (status, stderr) = ingest("").exit();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert_exactly_once(&url, 3).await;
    assert_eq!(
        count(
            &url,
            "SELECT count(*) FROM file_deliveries WHERE outcome = 'duplicate'"
        )
        .await,
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_a_delivery_in_hand_finishes_it() {
    stop_with_a_delivery_in_hand_finishes_it(Signal::SIGTERM).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_with_a_delivery_in_hand_finishes_it() {
    stop_with_a_delivery_in_hand_finishes_it(Signal::SIGINT).await;
}

async fn stop_with_a_delivery_in_hand_finishes_it(signal: Signal) {
    let Held {
        url,
        workspace,
        inbox,
        running,
        ..
    } = hold_one_file(1500, &[]).await;
    running.signal(signal);
    let (status, stderr) = running.exit();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert_eq!(csv_files_in(&inbox), 0, "the file in hand was finished");
    assert_eq!(csv_files_in(&workspace.path("processed")), 1);
    assert_exactly_once(&url, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_rolls_a_delivery_back_after_the_grace_period() {
    let Held {
        url,
        workspace,
        inbox,
        running,
        ..
    } = hold_one_file(8000, &[("SENSOR_ETL_SHUTDOWN_GRACE_SECS", "1")]).await;
    let signalled = std::time::Instant::now();
    running.signal(Signal::SIGTERM);
    let (status, stderr) = running.exit();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(
        signalled.elapsed() < Duration::from_secs(6),
        "the grace period, not the held delivery, ended the wait"
    );
    assert!(stderr.contains("rolling the file back"), "{stderr}");
    assert_eq!(count(&url, "SELECT count(*) FROM v_files").await, 0);
    assert_eq!(csv_files_in(&inbox), 1, "the file stays in the inbox");
    let child = worker(&workspace, &url);
    wait_until_empty(&inbox, LIMIT).await;
    terminate(child);
    assert_exactly_once(&url, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_heartbeat_keeps_a_delivery_held_past_its_lease_from_being_taken_twice() {
    // The lease is 2 s; the first worker holds the file for 5 s.
    let Held {
        url,
        workspace,
        inbox,
        running: slow,
        ..
    } = hold_one_file(5000, &[]).await;
    let other = worker(&workspace, &url);
    wait_until_empty(&inbox, LIMIT).await;
    terminate(other);
    slow.signal(Signal::SIGTERM);
    let (status, stderr) = slow.exit();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert_eq!(
        count(&url, "SELECT count(*) FROM file_deliveries").await,
        1,
        "one delivery: the second worker never took the held file"
    );
    assert_exactly_once(&url, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stage_that_panics_makes_the_file_poison_with_its_reason() {
    let url = fresh_database().await;
    let workspace = Workspace::new();
    let inbox = workspace.path("data");
    let staged = make_files(&workspace.path("staging"), 1);
    let name = staged[0]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let mut command = worker_command(&workspace, &url);
    command.env("SENSOR_ETL_POISON_ATTEMPTS", "2");
    let running = Watched::spawn(command, "pipeline::chunk-read=return(panic)");
    deliver(&staged[0], &inbox);
    wait_until_empty(&inbox, LIMIT).await;
    running.signal(Signal::SIGTERM);
    let (status, stderr) = running.exit();
    assert_eq!(
        status.code(),
        Some(0),
        "the process survives its stage's panics:\n{stderr}"
    );
    assert!(
        stderr.contains("fault point pipeline::chunk-read reached"),
        "{stderr}"
    );
    assert_eq!(count(&url, "SELECT count(*) FROM v_files").await, 0);
    let quarantine: Vec<String> = std::fs::read_dir(workspace.path("quarantine"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let stem = name.trim_end_matches(".csv");
    assert!(
        quarantine
            .iter()
            .any(|n| n.starts_with(stem) && n.ends_with(".csv")),
        "{quarantine:?}"
    );
    let reason_file = quarantine
        .iter()
        .find(|n| n.starts_with(stem) && n.ends_with(".reason.txt"))
        .expect("a reason file");
    let reason = std::fs::read_to_string(workspace.path("quarantine").join(reason_file)).unwrap();
    assert!(reason.contains("poison_file"), "{reason}");
    assert!(reason.contains("crashed"), "{reason}");
    let log = std::fs::read_to_string(workspace.path("logs/errors.log")).unwrap();
    assert!(
        log.contains(&name) && log.contains("status=failed"),
        "{log}"
    );
}

/// Waits until the database holds at least `files` ledger rows.
async fn committed_at_least(url: &str, files: i64) {
    let client = connect(url).await;
    wait_until(&format!("{files} files are committed"), LIMIT, || {
        let client = &client;
        async move {
            client
                .query_one("SELECT count(*) FROM v_files", &[])
                .await
                .map(|row| row.get::<_, i64>(0) >= files)
                .unwrap_or(false)
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_mid_stream_loses_nothing() {
    let mut cluster = RestartableCluster::start();
    let url = cluster.url();
    let workspace = Workspace::new();
    let inbox = workspace.path("data");
    let staged = make_files(&workspace.path("staging"), 25);
    // Every chunk takes 100 ms, so a burst takes seconds to read: the outage comes after the
    // first burst committed and while the second is being read.
    let running = Watched::spawn(
        worker_command(&workspace, &url),
        "pipeline::chunk-read=return(sleep:100)",
    );
    let marker = "fault point pipeline::chunk-read reached";
    for path in &staged[..5] {
        deliver(path, &inbox);
    }
    committed_at_least(&url, 5).await;
    let chunks_before = running.stderr().matches(marker).count();
    for path in &staged[5..20] {
        deliver(path, &inbox);
    }
    wait_until("the second burst is being read", LIMIT, || {
        let reading = running.stderr().matches(marker).count() > chunks_before;
        async move { reading }
    })
    .await;
    cluster.stop();
    assert!(csv_files_in(&inbox) > 0, "the outage came mid-stream");
    for path in &staged[20..] {
        deliver(path, &inbox);
    }
    wait_until("the worker reports the outage", LIMIT, || {
        let text = running.stderr();
        async move { text.contains("Database unavailable") || text.contains("Waiting for the database") }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        csv_files_in(&inbox) >= 5,
        "files wait in the inbox while the database is down"
    );
    cluster.restart();
    wait_until_empty(&inbox, LIMIT).await;
    running.signal(Signal::SIGTERM);
    let (status, stderr) = running.exit();
    assert_eq!(
        status.code(),
        Some(0),
        "the worker survived the outage:\n{stderr}"
    );
    assert_exactly_once(&url, 25).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_started_while_its_database_is_down_loads_everything_once_it_returns() {
    let mut cluster = RestartableCluster::start();
    let url = cluster.url();
    cluster.stop();
    let workspace = Workspace::new();
    let inbox = workspace.path("data");
    for path in make_files(&workspace.path("staging"), 5) {
        deliver(&path, &inbox);
    }
    let running = Watched::spawn(worker_command(&workspace, &url), "");
    wait_until("the worker says it waits for the database", LIMIT, || {
        let text = running.stderr();
        async move { text.contains("Waiting for the database") }
    })
    .await;
    assert_eq!(csv_files_in(&inbox), 5);
    cluster.restart();
    wait_until_empty(&inbox, LIMIT).await;
    running.signal(Signal::SIGTERM);
    let (status, stderr) = running.exit();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert_exactly_once(&url, 5).await;
}

/// Hex SHA-256 of `bytes`.
fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_truncated_while_it_loads_is_rolled_back_and_loaded_as_it_ends_up() {
    let Held {
        url,
        workspace,
        inbox,
        file: in_inbox,
        running,
    } = hold_one_file(1500, &[]).await;
    let intact = std::fs::read(&in_inbox).unwrap();
    // Truncated in place while the first chunk is held: the first 51 lines remain.
    let cut: usize = intact
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'\n')
        .nth(50)
        .unwrap()
        .0
        + 1;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&in_inbox)
        .unwrap()
        .set_len(cut as u64)
        .unwrap();
    wait_until_empty(&inbox, LIMIT).await;
    let client = connect(&url).await;
    let rows = client
        .query("SELECT content_sha256, rows_read FROM v_files", &[])
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get::<_, String>(0), sha256_hex(&intact[..cut]));
    assert_eq!(
        rows[0].get::<_, i64>(1),
        50,
        "the load matches the bytes that remained"
    );
    // The intact file, delivered again, is new content: never refused as a duplicate.
    let again = workspace.path("staging/intact_again.csv");
    std::fs::write(&again, &intact).unwrap();
    deliver(&again, &inbox);
    wait_until_empty(&inbox, LIMIT).await;
    let full: i64 = client
        .query_one(
            "SELECT count(*) FROM v_files WHERE content_sha256 = $1 AND status = 'loaded'",
            &[&sha256_hex(&intact)],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(full, 1);
    running.signal(Signal::SIGTERM);
    assert_eq!(running.exit().0.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_replaced_by_rename_while_it_loads_has_its_replacement_loaded() {
    let url = fresh_database().await;
    let workspace = Workspace::new();
    let inbox = workspace.path("data");
    let staged = make_files(&workspace.path("staging"), 2);
    let replacement = std::fs::read(&staged[1]).unwrap();
    let running = Watched::spawn(
        worker_command(&workspace, &url),
        "pipeline::chunk-read=1*return(sleep:1500)",
    );
    std::fs::create_dir_all(&inbox).unwrap();
    let same = inbox.join("same.csv");
    std::fs::rename(&staged[0], &same).unwrap();
    running.reached("pipeline::chunk-read").await;
    std::fs::rename(&staged[1], &same).unwrap();
    wait_until_empty(&inbox, LIMIT).await;
    running.signal(Signal::SIGTERM);
    assert_eq!(running.exit().0.code(), Some(0));
    let client = connect(&url).await;
    let loaded: i64 = client
        .query_one(
            "SELECT count(*) FROM v_files WHERE content_sha256 = $1 AND rows_loaded = $2",
            &[&sha256_hex(&replacement), &(ROWS_PER_FILE as i64)],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(loaded, 1, "the replacement was loaded");
    let processed = std::fs::read(workspace.path("processed/same.csv")).unwrap();
    assert_eq!(
        processed, replacement,
        "processed/ holds the bytes that were loaded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tailed_file_killed_between_a_blocks_commit_and_what_follows_repeats_no_line() {
    use std::io::Write;
    let (url, workspace, inbox) = with_inbox().await;
    let logger = inbox.join("balcony_dht22.log.csv");
    let mut file = std::fs::File::create(&logger).unwrap();
    file.write_all(b"sensor_id;sensor_type;location;lat;lon;timestamp;temperature;humidity\n")
        .unwrap();
    for minute in 0..4 {
        writeln!(
            file,
            "4;DHT22;40;50.0;8.0;2021-03-01T00:0{minute}:00;20.{minute};50"
        )
        .unwrap();
    }
    let tail = |command: &mut Command| {
        command.env("SENSOR_ETL_TAIL", r#"["*.log.csv"]"#);
    };
    // The first block commits, then the process dies on the spot.
    let mut command = worker_command(&workspace, &url);
    tail(&mut command);
    let running = Watched::spawn(command, "pipeline::after-commit=return(abort)");
    let (status, stderr) = running.exit();
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains("fault point pipeline::after-commit reached"),
        "{stderr}"
    );
    // More lines while it is down; the next worker goes on from where the database says.
    for minute in 4..6 {
        writeln!(
            file,
            "4;DHT22;40;50.0;8.0;2021-03-01T00:0{minute}:00;20.{minute};50"
        )
        .unwrap();
    }
    let mut command = worker_command(&workspace, &url);
    tail(&mut command);
    let running = Watched::spawn(command, "");
    let client = connect(&url).await;
    let probe = &client;
    wait_until("every line is loaded", LIMIT, || async move {
        probe
            .query_one(
                "SELECT coalesce(sum(rows_read), 0)::bigint FROM v_files",
                &[],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
            == 6
    })
    .await;
    running.signal(Signal::SIGTERM);
    let (status, stderr) = running.exit();
    assert_eq!(status.code(), Some(0), "{stderr}");
    let (loaded, duplicate): (i64, i64) = client
        .query_one(
            "SELECT sum(rows_loaded)::bigint, sum(rows_duplicate)::bigint FROM v_files",
            &[],
        )
        .await
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    assert_eq!((loaded, duplicate), (6, 0), "each line once, none again");
    assert!(
        logger.exists(),
        "a tailed file stays until it has been quiet"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_held_open_for_writing_is_not_taken_however_long_its_pauses() {
    use std::io::Write;
    let (url, workspace, inbox) = with_inbox().await;
    let running = Watched::spawn(worker_command(&workspace, &url), "");
    // A logger: the header, then a line every 1.5 s (longer than the 1 s settle period), the
    // file open all along.
    let mut writer = std::fs::File::create(inbox.join("logger_dht22.csv")).unwrap();
    writer
        .write_all(b"sensor_id;sensor_type;location;lat;lon;timestamp;temperature;humidity\n")
        .unwrap();
    writer.flush().unwrap();
    for minute in 0..6 {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        writeln!(
            writer,
            "8;DHT22;80;50.0;8.0;2021-03-01T00:0{minute}:00;20.{minute};50"
        )
        .unwrap();
        writer.flush().unwrap();
    }
    assert!(
        inbox.join("logger_dht22.csv").exists(),
        "not taken while its writer holds it"
    );
    drop(writer);
    wait_until_empty(&inbox, LIMIT).await;
    running.signal(Signal::SIGTERM);
    let (status, stderr) = running.exit();
    assert_eq!(status.code(), Some(0), "{stderr}");
    let client = connect(&url).await;
    let files: Vec<(String, i64)> = client
        .query("SELECT status, rows_read FROM v_files", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        files,
        vec![("loaded".to_owned(), 6)],
        "one delivery with all six lines"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_that_keeps_the_file_open_and_pauses_loses_no_row() {
    use std::io::Write;
    let url = fresh_database().await;
    let workspace = Workspace::new();
    let inbox = workspace.path("data");
    std::fs::create_dir_all(&inbox).unwrap();
    // The writer pauses 300 ms between rows, within the settle period (1 s), but after the
    // header alone it pauses longer than that.
    let mut command = worker_command(&workspace, &url);
    command.env("SENSOR_ETL_SETTLE_MS", "1000");
    let running = Watched::spawn(command, "");
    let mut writer = std::fs::File::create(inbox.join("slow_dht22.csv")).unwrap();
    // Half a header line, a pause past the settle period, the rest of it, another pause.
    writer.write_all(b"sensor_id;sensor_type;loc").unwrap();
    writer.flush().unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    writer
        .write_all(b"ation;lat;lon;timestamp;temperature;humidity\n")
        .unwrap();
    writer.flush().unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    for minute in 0..5 {
        writeln!(
            writer,
            "9;DHT22;90;50.0;8.0;2021-03-01T00:0{minute}:00;20.{minute};50"
        )
        .unwrap();
        writer.flush().unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    drop(writer);
    wait_until_empty(&inbox, LIMIT).await;
    running.signal(Signal::SIGTERM);
    let (status, stderr) = running.exit();
    assert_eq!(status.code(), Some(0), "{stderr}");
    let client = connect(&url).await;
    let files = client
        .query("SELECT status, rows_read, rows_loaded FROM v_files", &[])
        .await
        .unwrap();
    let files: Vec<(String, i64, i64)> = files
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        files,
        vec![("loaded".to_owned(), 5, 5)],
        "one file with every row; the header alone was never taken as an empty file"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_file_waits_without_a_hot_loop_and_loads_once_readable() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let url = fresh_database().await;
    let workspace = Workspace::new();
    let inbox = workspace.path("data");
    let staged = make_files(&workspace.path("staging"), 2);
    for path in &staged {
        deliver(path, &inbox);
    }
    let locked = inbox.join(staged[1].file_name().unwrap());
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
    // Everything else is open to the unprivileged user the worker runs as.
    for dir in ["", "data", "staging"] {
        std::fs::set_permissions(workspace.path(dir), std::fs::Permissions::from_mode(0o777))
            .unwrap();
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut command = sensor_etl_command(&workspace);
    command
        .args([
            "run",
            "--database-url",
            &url,
            "--http-addr",
            &addr.to_string(),
        ])
        .env("RUST_LOG", "info")
        .uid(65534)
        .gid(65534);
    let running = Watched::spawn(command, "");
    // The readable file loads; the other waits, said once, with /readyz saying why.
    committed_at_least(&url, 1).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (ready, body) = crate::support::http_get(addr, "/readyz").await;
    assert_eq!(ready, 503, "{body}");
    assert!(body.contains("local fault"), "{body}");
    let name = locked.file_name().unwrap().to_string_lossy().into_owned();
    let said = running
        .stderr()
        .lines()
        .filter(|l| l.contains(&name) && l.contains("Local fault"))
        .count();
    assert_eq!(said, 1, "said once:\n{}", running.stderr());
    assert!(
        running
            .stderr()
            .lines()
            .filter(|l| l.contains(&name))
            .count()
            <= 2,
        "no line per attempt:\n{}",
        running.stderr()
    );
    let attempts: i32 = connect(&url)
        .await
        .query_one(
            "SELECT attempts FROM inbox_claims WHERE file_name = $1",
            &[&name],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(attempts, 0, "a local fault is not a failed attempt");
    assert!(
        !workspace.path("quarantine").exists() || csv_files_in(&workspace.path("quarantine")) == 0
    );
    // The fault clears: the file loads by itself.
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o644)).unwrap();
    wait_until_empty(&inbox, LIMIT).await;
    let (ready, body) = crate::support::http_get(addr, "/readyz").await;
    assert_eq!(ready, 200, "{body}");
    running.signal(Signal::SIGTERM);
    let (status, stderr) = running.exit();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert_exactly_once(&url, 2).await;
}

/// A fresh database and a workspace with its inbox made.
async fn with_inbox() -> (String, Workspace, std::path::PathBuf) {
    let url = fresh_database().await;
    let workspace = Workspace::new();
    let inbox = workspace.path("data");
    std::fs::create_dir_all(&inbox).unwrap();
    (url, workspace, inbox)
}

/// Lines of `text` that mention `name` and `what`.
fn lines_with(text: &str, name: &str, what: &str) -> usize {
    text.lines()
        .filter(|l| l.contains(name) && l.contains(what))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_quarantine_disk_is_waited_out_without_poison_or_partial_files() {
    let url = fresh_database().await;
    let workspace = Workspace::new();
    let inbox = workspace.path("data");
    std::fs::create_dir_all(&inbox).unwrap();
    // 400 rows, 150 of them out of range: quarantine output far over the 4 KiB disk.
    let mut text =
        String::from("sensor_id;sensor_type;location;lat;lon;timestamp;temperature;humidity\n");
    for row in 0..400 {
        let temperature = if row % 8 < 3 { "99.0" } else { "20.0" };
        text.push_str(&format!(
            "7;DHT22;70;50.0;8.0;2021-03-01T{:02}:{:02}:00;{temperature};50\n",
            row / 60,
            row % 60
        ));
    }
    std::fs::write(inbox.join("noisy_dht22.csv"), &text).unwrap();
    let quarantine = workspace.path("quarantine");
    let disk = SmallDisk::mount(&quarantine, 4096);
    let mut command = worker_command(&workspace, &url);
    command.env("RUST_LOG", "info");
    let running = Watched::spawn(command, "");
    tokio::time::sleep(Duration::from_secs(4)).await;
    let stderr = running.stderr();
    assert_eq!(
        lines_with(&stderr, "noisy_dht22.csv", "Local fault"),
        1,
        "said once:\n{stderr}"
    );
    let problems = stderr
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .count();
    assert!(problems < 5, "no loop of errors:\n{stderr}");
    assert_eq!(csv_files_in(&inbox), 1, "the file waits in the inbox");
    assert_eq!(count(&url, "SELECT count(*) FROM v_files").await, 0);
    let left: Vec<_> = std::fs::read_dir(&quarantine).unwrap().flatten().collect();
    assert!(left.is_empty(), "no partial or temporary file: {left:?}");
    disk.unmount();
    wait_until_empty(&inbox, LIMIT).await;
    running.signal(Signal::SIGTERM);
    let (status, stderr) = running.exit();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert_eq!(
        count(&url, "SELECT count(*) FROM v_files WHERE status = 'partially_loaded' AND rows_rejected = 150 AND rows_loaded = 250").await,
        1,
        "loaded once the disk has room, not quarantined as poison"
    );
    assert!(stderr.contains("Local fault cleared"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_processed_disk_leaves_no_partial_copy_and_moves_the_file_later() {
    let url = fresh_database().await;
    let workspace = Workspace::new();
    let inbox = workspace.path("data");
    let staged = make_files(&workspace.path("staging"), 1);
    let processed = workspace.path("processed");
    let disk = SmallDisk::mount(&processed, 4096);
    let running = Watched::spawn(worker_command(&workspace, &url), "");
    deliver(&staged[0], &inbox);
    committed_at_least(&url, 1).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let left: Vec<_> = std::fs::read_dir(&processed).unwrap().flatten().collect();
    assert!(left.is_empty(), "no truncated or empty copy: {left:?}");
    assert_eq!(
        csv_files_in(&inbox),
        1,
        "the committed file waits in the inbox"
    );
    let stderr = running.stderr();
    assert!(stderr.lines().count() < 10, "no loop of errors:\n{stderr}");
    assert!(
        !workspace.path("quarantine").exists() || csv_files_in(&workspace.path("quarantine")) == 0,
        "a committed file is never made poison"
    );
    disk.unmount();
    wait_until_empty(&inbox, LIMIT).await;
    running.signal(Signal::SIGTERM);
    assert_eq!(running.exit().0.code(), Some(0));
    assert_eq!(csv_files_in(&processed), 1);
    assert_exactly_once(&url, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_processed_disk_full_for_long_gets_the_file_soon_after_space_returns() {
    let url = fresh_database().await;
    let workspace = Workspace::new();
    let inbox = workspace.path("data");
    let staged = make_files(&workspace.path("staging"), 1);
    let processed = workspace.path("processed");
    let disk = SmallDisk::mount(&processed, 16 * 1024);
    let filler = processed.join(".filler");
    let _ = std::fs::write(&filler, vec![0u8; 16 * 1024]);
    // The retry policy's default cap (30 s) for database outages.
    let mut command = worker_command(&workspace, &url);
    command.env("SENSOR_ETL_RETRY__MAX_DELAY_MS", "30000");
    let running = Watched::spawn(command, "");
    deliver(&staged[0], &inbox);
    committed_at_least(&url, 1).await;
    // Full for long enough that the pauses grow past 10 s (with the outage cap they reach 30 s).
    tokio::time::sleep(Duration::from_secs(35)).await;
    assert_eq!(
        csv_files_in(&inbox),
        1,
        "the committed file waits in the inbox"
    );
    std::fs::remove_file(&filler).unwrap();
    let freed = std::time::Instant::now();
    wait_until_empty(&inbox, LIMIT).await;
    assert!(
        freed.elapsed() < Duration::from_secs(15),
        "moved {:?} after space returned",
        freed.elapsed()
    );
    assert_eq!(csv_files_in(&processed), 1);
    running.signal(Signal::SIGTERM);
    assert_eq!(running.exit().0.code(), Some(0));
    assert_exactly_once(&url, 1).await;
    disk.unmount();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_removed_while_it_loads_commits_without_a_failure() {
    // The workspace is kept alive until the end of the test.
    let Held {
        url,
        workspace: _workspace,
        file,
        running,
        ..
    } = hold_one_file(1500, &[]).await;
    std::fs::remove_file(&file).unwrap();
    committed_at_least(&url, 1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    running.signal(Signal::SIGTERM);
    let (status, stderr) = running.exit();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("File failed"), "{stderr}");
    assert!(!stderr.contains("ERROR"), "{stderr}");
    assert_exactly_once(&url, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_appender_that_closes_after_every_line_is_loaded_once_whole() {
    use std::io::Write;
    let url = fresh_database().await;
    let workspace = Workspace::new();
    let inbox = workspace.path("data");
    std::fs::create_dir_all(&inbox).unwrap();
    let running = Watched::spawn(worker_command(&workspace, &url), "");
    let path = inbox.join("appended_dht22.csv");
    std::fs::write(
        &path,
        "sensor_id;sensor_type;location;lat;lon;timestamp;temperature;humidity\n",
    )
    .unwrap();
    // `>> file` a line at a time: open, append, close, with short pauses.
    for minute in 0..20 {
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        writeln!(
            file,
            "9;DHT22;90;50.0;8.0;2021-03-01T00:{minute:02}:00;20.5;50"
        )
        .unwrap();
        drop(file);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    wait_until_empty(&inbox, LIMIT).await;
    running.signal(Signal::SIGTERM);
    let (status, stderr) = running.exit();
    assert_eq!(status.code(), Some(0), "{stderr}");
    let client = connect(&url).await;
    let files: Vec<(String, i64, i64)> = client
        .query("SELECT status, rows_read, rows_loaded FROM v_files", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        files,
        vec![("loaded".to_owned(), 20, 20)],
        "one delivery, every line"
    );
}

/// A CSV POST to `/v1/ingest` that may get no answer: the status, or `None` when the
/// connection ended without one.
fn post_maybe(addr: std::net::SocketAddr, body: &[u8]) -> Option<u16> {
    crate::support::http::post_maybe(addr, "/v1/ingest", &["Content-Type: text/csv"], body)
}

/// `sensor-etl serve` in `workspace` with fault points, once it takes requests.
async fn serve_watched(
    workspace: &Workspace,
    url: &str,
    failpoints: &str,
) -> (Watched, std::net::SocketAddr) {
    let (mut command, addr) = crate::support::http::serve_command(workspace, url);
    command.env("SENSOR_ETL_CHUNK_ROWS", "5000");
    let server = Watched::spawn(command, failpoints);
    crate::support::http::until_ready(addr, LIMIT).await;
    (server, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_request_in_flight_when_killed_is_never_acknowledged_and_commits_whole_or_not_at_all(
) {
    let url = fresh_database().await;
    let workspace = Workspace::new();
    // A large body streams through a spool file; a small one goes through a group commit.
    let large = crate::support::fixtures::body_of(51, 3_000_000);
    let small = crate::support::fixtures::body_of(52, 20_000);
    let lines = |body: &[u8]| body.iter().filter(|&&b| b == b'\n').count() as i64 - 1;
    let readings = |sensor: i64| {
        let url = url.clone();
        async move {
            count(
                &url,
                &format!("SELECT count(*) FROM v_readings WHERE sensor_id = {sensor}"),
            )
            .await
        }
    };
    // (where the server is killed, the body's sensor, whether its transaction had committed)
    let cases = [
        ("pipeline::copy-chunk", 51, false),
        ("pipeline::chunk-read", 52, false),
        ("pipeline::after-commit", 52, true),
    ];
    for (point, sensor, committed) in cases {
        let (server, addr) =
            serve_watched(&workspace, &url, &format!("{point}=1*return(sleep:60000)")).await;
        let body = if sensor == 51 {
            large.clone()
        } else {
            small.clone()
        };
        let rows = lines(&body);
        let client = std::thread::spawn(move || post_maybe(addr, &body));
        server.reached(point).await;
        if point == "pipeline::copy-chunk" {
            let spooled = crate::support::spool_files(&workspace);
            assert_eq!(spooled, 1, "the large body streams through a spool file");
        }
        server.signal(Signal::SIGKILL);
        let _ = server.exit();
        assert_eq!(
            client.join().unwrap(),
            None,
            "{point}: no answer, so no 2xx"
        );
        // Two readings (temperature, humidity) a line.
        let expected = if committed { rows * 2 } else { 0 };
        assert_eq!(
            readings(sensor).await,
            expected,
            "{point}: whole or nothing"
        );
    }
    // Sent again, each body is stored whole, once (the committed one is a duplicate).
    let (server, addr) = serve_watched(&workspace, &url, "").await;
    assert_eq!(post_maybe(addr, &large), Some(200));
    assert_eq!(post_maybe(addr, &small), Some(200));
    assert_eq!(readings(51).await, lines(&large) * 2);
    assert_eq!(readings(52).await, lines(&small) * 2);
    let left = crate::support::spool_files(&workspace);
    assert_eq!(
        left, 0,
        "spool files of a killed server are swept, answered ones removed"
    );
    server.signal(Signal::SIGTERM);
    let (status, _) = server.exit();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_push_killed_before_its_commit_leaves_no_device_behind() {
    let url = fresh_database().await;
    let workspace = Workspace::new();
    let (server, addr) =
        serve_watched(&workspace, &url, "pipeline::chunk-read=1*return(abort)").await;
    let body = r#"{"esp8266id": "777", "sensordatavalues":[{"value_type":"SDS_P1","value":"5.10"},{"value_type":"SDS_P2","value":"2.30"},{"value_type":"BME280_temperature","value":"21.5"}]}"#;
    let answered = std::thread::spawn(move || {
        crate::support::http::post_maybe(
            addr,
            "/v1/ingest",
            &["Content-Type: application/json", "X-Sensor: esp8266-777"],
            body.as_bytes(),
        )
    });
    server.reached("pipeline::chunk-read").await;
    let (status, _) = server.exit();
    assert_eq!(status.signal(), Some(6), "killed at the point");
    assert_eq!(answered.join().unwrap(), None, "never acknowledged");
    // Nothing of the delivery is stored: not its readings, not its device's sensors.
    let client = connect(&url).await;
    let count = |sql: &'static str| {
        let client = &client;
        async move { client.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) }
    };
    assert_eq!(count("SELECT count(*) FROM v_readings").await, 0);
    assert_eq!(
        count("SELECT count(*) FROM sensor_etl.device_sensors").await,
        0,
        "the device of a push that never committed is not recorded"
    );
}
