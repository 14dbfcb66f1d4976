//! Full disks under `quarantine/` and `processed/`: waited out, no partial files, no poison,
//! and the file moved soon after space returns.

use std::time::Duration;

use nix::sys::signal::Signal;

use crate::support::faulted::{committed_at_least, count, lines_with, Watched, LIMIT};
use crate::support::workers::{
    assert_exactly_once, csv_files_in, deliver, make_files, wait_until_empty, worker_command,
};
use crate::support::{fresh_database, wait_until, SmallDisk, Workspace};

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
    wait_until("the local fault is said", LIMIT, || {
        let said = lines_with(&running.stderr(), "noisy_dht22.csv", "Local fault") > 0;
        async move { said }
    })
    .await;
    // Time for a loop of errors to show, were there one.
    tokio::time::sleep(Duration::from_secs(2)).await;
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
    // An attempt under way may hold temporary files for a moment; none stays behind.
    let leftovers = || std::fs::read_dir(&quarantine).unwrap().flatten().count();
    wait_until("no partial or temporary file stays", LIMIT, || {
        let empty = leftovers() == 0;
        async move { empty }
    })
    .await;
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
