//! Crashes and signals at the worst moments: between a commit and the move of its files, a
//! worker killed while it holds claims (others take over), a crash inside a COPY after earlier
//! files committed, SIGTERM or SIGINT with a delivery in hand (finished; or rolled back after
//! the grace period), a delivery held past its lease, and a stage that panics.

use std::time::Duration;

use nix::sys::signal::Signal;

use crate::support::faulted::{assert_crashed_at, count, hold_one_file, Held, Watched, LIMIT};
use crate::support::workers::{
    assert_exactly_once, csv_files_in, deliver, make_files, sensor_etl_command, terminate,
    wait_until_empty, worker, worker_command, ROWS_PER_FILE,
};
use crate::support::{fresh_database, Workspace};

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
