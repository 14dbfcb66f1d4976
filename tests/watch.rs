//! `run` end to end: the watcher on a temporary inbox, files delivered by rename, by a slow
//! writer in place, already present at start-up, and under temporary names.

use std::io::Write;
use std::time::Duration;

use sensor_etl::sources::watch;
use tokio_util::sync::CancellationToken;

use crate::support::{deliver, Harness};

const HEADER: &str = "sensor_id;sensor_type;location;lat;lon;timestamp;temperature;humidity\n";

fn dht_rows(sensor: u32, count: u32) -> String {
    (0..count)
        .map(|i| {
            format!(
                "{sensor};DHT22;1;50.0;8.0;2020-01-01T00:{:02}:{:02};{}.5;60\n",
                i / 60,
                i % 60,
                i % 30
            )
        })
        .collect()
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..300 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Waits until `count` files are in the workspace's `processed/`.
async fn wait_for_processed(h: &Harness, count: usize) {
    let processed = h.workspace.path("processed");
    wait_for(&format!("{count} files in processed/"), || {
        std::fs::read_dir(&processed)
            .map(|d| d.count())
            .unwrap_or(0)
            == count
    })
    .await;
}

/// Runs the watcher on the harness's inbox until the inbox is empty, then stops it.
async fn run_until_inbox_is_empty(h: &Harness) -> sensor_etl::pipeline::IngestSummary {
    let inbox = h.workspace.path("data");
    let cancel = CancellationToken::new();
    let watcher = tokio::spawn(watch::run(h.ctx.clone(), cancel.clone()));
    wait_for("the inbox to empty", || {
        std::fs::read_dir(&inbox).map(|d| d.count()).unwrap_or(1) == 0
    })
    .await;
    cancel.cancel();
    watcher.await.unwrap().unwrap()
}

/// The watcher on a new harness's inbox with settle and rescan periods of an hour: only
/// rename events make files ready. Returns once it has had time for its first scan.
async fn watcher_on_events_alone() -> (Harness, CancellationToken, WatcherTask) {
    let h = Harness::with_config(|raw| {
        raw.settle_ms = 3_600_000;
        raw.rescan_interval_ms = 3_600_000;
    })
    .await;
    let (cancel, watcher) = start_watcher(&h).await;
    (h, cancel, watcher)
}

type WatcherTask =
    tokio::task::JoinHandle<sensor_etl::error::Result<sensor_etl::pipeline::IngestSummary>>;

/// Starts the watcher on the harness's inbox (created) and waits until its first scan passed,
/// so files delivered after it arrive as events.
async fn start_watcher(h: &Harness) -> (CancellationToken, WatcherTask) {
    std::fs::create_dir_all(h.workspace.path("data")).unwrap();
    let cancel = CancellationToken::new();
    let watcher = tokio::spawn(watch::run(h.ctx.clone(), cancel.clone()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    (cancel, watcher)
}

/// Writes every (name, text) to a staging folder first, then renames them all into the inbox.
fn deliver_burst(h: &Harness, files: impl IntoIterator<Item = (String, String)>) {
    let staging = h.workspace.path("staging");
    std::fs::create_dir_all(&staging).unwrap();
    let inbox = h.workspace.path("data");
    let names: Vec<String> = files
        .into_iter()
        .map(|(name, text)| {
            std::fs::write(staging.join(&name), text).unwrap();
            name
        })
        .collect();
    for name in names {
        deliver(&staging.join(&name), &inbox, &name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_loads_complete_files_and_empties_the_inbox() {
    let h = Harness::new().await;
    let inbox = h.workspace.path("data");
    std::fs::create_dir_all(&inbox).unwrap();
    // Present before the watcher starts.
    std::fs::write(
        inbox.join("early_dht22.csv"),
        format!("{HEADER}{}", dht_rows(1, 10)),
    )
    .unwrap();
    // A temporary name is never taken.
    std::fs::write(inbox.join("upload.csv.part"), "partial").unwrap();

    let cancel = CancellationToken::new();
    let watcher = tokio::spawn(watch::run(h.ctx.clone(), cancel.clone()));

    // Delivered by rename.
    let staging = h.workspace.path("staging");
    std::fs::create_dir_all(&staging).unwrap();
    let source = staging.join("renamed.csv");
    std::fs::write(&source, format!("{HEADER}{}", dht_rows(2, 20))).unwrap();
    deliver(&source, &inbox, "renamed_dht22.csv");

    // Written slowly in place, more often than the settle period.
    let slow_path = inbox.join("slow_dht22.csv");
    let mut slow = std::fs::File::create(&slow_path).unwrap();
    slow.write_all(HEADER.as_bytes()).unwrap();
    let rows = dht_rows(3, 30);
    for piece in rows.as_bytes().chunks(rows.len() / 6 + 1) {
        slow.write_all(piece).unwrap();
        slow.flush().unwrap();
        tokio::time::sleep(Duration::from_millis(120)).await;
    }
    drop(slow);

    wait_for_processed(&h, 3).await;
    cancel.cancel();
    let summary = watcher.await.unwrap().unwrap();
    assert_eq!(summary.loaded, 3);
    assert_eq!(
        h.count("SELECT count(*) FROM v_files WHERE status = 'loaded'")
            .await,
        3
    );
    assert_eq!(
        h.count("SELECT sum(rows_loaded)::int8 FROM v_files").await,
        60
    );
    assert_eq!(
        h.count("SELECT count(DISTINCT (file_id, line)) FROM v_readings")
            .await,
        60
    );
    assert!(!inbox.join("slow_dht22.csv").exists());
    assert!(
        inbox.join("upload.csv.part").exists(),
        "temporary names stay untouched"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_moves_rejected_files_to_quarantine() {
    let h = Harness::new().await;
    let inbox = h.workspace.path("data");
    std::fs::create_dir_all(&inbox).unwrap();
    std::fs::write(
        inbox.join("export.csv"),
        "Time;durP1;ratioP1;P1;SDS_P1;Samples;Signal\n2018/01/03 00:01:19;;;1;2;3;-80\n",
    )
    .unwrap();
    std::fs::write(
        inbox.join("one_bad_dht22.csv"),
        format!(
            "{HEADER}{}9;DHT22;1;50;8;2020-01-01T01:00:00;99;50\n",
            dht_rows(4, 5)
        ),
    )
    .unwrap();
    let summary = run_until_inbox_is_empty(&h).await;
    assert_eq!((summary.rejected, summary.partially_loaded), (1, 1));
    let quarantine: Vec<String> = std::fs::read_dir(h.workspace.path("quarantine"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        quarantine
            .iter()
            .any(|n| n.starts_with("export.") && n.ends_with(".reason.txt")),
        "{quarantine:?}"
    );
    let rejected_rows = quarantine
        .iter()
        .find(|n| n.starts_with("one_bad_dht22.") && n.ends_with(".rejected.csv"))
        .unwrap();
    let bytes =
        std::fs::read_to_string(h.workspace.path("quarantine").join(rejected_rows)).unwrap();
    assert_eq!(
        bytes,
        format!("{HEADER}9;DHT22;1;50;8;2020-01-01T01:00:00;99;50\n")
    );
    assert!(h.workspace.path("processed/one_bad_dht22.csv").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_keeps_failing_is_quarantined_as_poison() {
    let h = Harness::with_config(|raw| raw.poison_attempts = 3).await;
    // A database rule that refuses one file: a permanent error on every attempt.
    h.client
        .batch_execute(
            "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$ \
             BEGIN IF NEW.file_name LIKE 'poison%' THEN RAISE EXCEPTION 'refused by test'; END IF; \
             RETURN NEW; END $$; \
             CREATE TRIGGER refuse_poison BEFORE INSERT ON files FOR EACH ROW EXECUTE FUNCTION refuse_poison();",
        )
        .await
        .unwrap();
    let inbox = h.workspace.path("data");
    std::fs::create_dir_all(&inbox).unwrap();
    std::fs::write(
        inbox.join("poison_dht22.csv"),
        format!("{HEADER}{}", dht_rows(5, 3)),
    )
    .unwrap();
    std::fs::write(
        inbox.join("good_dht22.csv"),
        format!("{HEADER}{}", dht_rows(6, 3)),
    )
    .unwrap();
    let summary = run_until_inbox_is_empty(&h).await;
    assert_eq!((summary.loaded, summary.failed), (1, 1));
    assert_eq!(
        h.count("SELECT count(*) FROM v_files WHERE file_name = 'good_dht22.csv'")
            .await,
        1
    );
    let quarantine = h.workspace.path("quarantine");
    let reason = std::fs::read_dir(&quarantine)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.to_string_lossy().contains("poison_dht22.")
                && p.to_string_lossy().ends_with(".reason.txt")
        })
        .expect("reason file beside the quarantined poison file");
    let reason = std::fs::read_to_string(reason).unwrap();
    assert!(
        reason.contains("poison_file")
            && reason.contains("failed 3 times")
            && reason.contains("refused by test"),
        "{reason}"
    );
    let log = std::fs::read_to_string(h.workspace.path("logs/errors.log")).unwrap();
    assert!(log.contains("poison_dht22.csv"), "{log}");
}

/// A file renamed into the inbox, or written in place and closed, is complete on that event:
/// with a settle period of an hour, only the event can make it ready, and both load. The
/// inbox is named by a relative path, as with the default `data`, while the file-system
/// watcher reports absolute ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rename_and_close_events_make_a_fresh_file_ready_without_settling() {
    let h = Harness::with_config(|raw| {
        raw.settle_ms = 3_600_000;
        // From the working folder up to the root, then down to the workspace's inbox.
        let cwd = std::env::current_dir().unwrap();
        let up: std::path::PathBuf = cwd.components().skip(1).map(|_| "..").collect();
        raw.data_dir = up.join(raw.data_dir.strip_prefix("/").unwrap());
    })
    .await;
    let inbox = h.workspace.path("data");
    // After the watcher's first scan, so both files arrive as events.
    let (cancel, watcher) = start_watcher(&h).await;

    let staging = h.workspace.path("staging");
    std::fs::create_dir_all(&staging).unwrap();
    let source = staging.join("fresh.csv");
    std::fs::write(&source, format!("{HEADER}{}", dht_rows(4, 10))).unwrap();
    deliver(&source, &inbox, "fresh_dht22.csv");
    std::fs::write(
        inbox.join("closed_dht22.csv"),
        format!("{HEADER}{}", dht_rows(5, 10)),
    )
    .unwrap();

    wait_for_processed(&h, 2).await;
    cancel.cancel();
    let summary = watcher.await.unwrap().unwrap();
    assert_eq!(summary.loaded, 2);
    assert_eq!(
        h.count("SELECT sum(rows_loaded)::int8 FROM v_files").await,
        20
    );
}

/// A burst larger than one claim batch is worked off round after round without waiting for
/// the next scan: with settle and rescan periods of an hour, the rename events alone must
/// carry all of it through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_larger_than_a_claim_batch_is_worked_off_without_rescans() {
    let (h, cancel, watcher) = watcher_on_events_alone().await;

    let files = 300u32;
    deliver_burst(
        &h,
        (0..files).map(|i| {
            (
                format!("burst_{i}_dht22.csv"),
                format!("{HEADER}{}", dht_rows(100 + i, 3)),
            )
        }),
    );
    wait_for_processed(&h, files as usize).await;
    cancel.cancel();
    let summary = watcher.await.unwrap().unwrap();
    assert_eq!(summary.loaded, u64::from(files));
    assert_eq!(
        h.count("SELECT sum(rows_loaded)::int8 FROM v_files").await,
        i64::from(3 * files)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bursts_with_a_conflicting_file_load_every_other_file_and_reject_only_its_lines() {
    let (h, cancel, watcher) = watcher_on_events_alone().await;

    // Sensor 500's first three readings are stored; later, one file of each burst says
    // other values for them.
    let first = format!("{HEADER}{}", dht_rows(500, 3));
    deliver_burst(&h, [("first_dht22.csv".to_owned(), first.clone())]);
    wait_for_processed(&h, 1).await;
    let conflicting = first.replace(";60\n", ";61\n");
    let files = 600u32;
    deliver_burst(
        &h,
        (0..files).map(|i| {
            let text = if i % 200 == 7 {
                conflicting.clone()
            } else {
                format!("{HEADER}{}", dht_rows(1_000 + i, 3))
            };
            (format!("b{i}_dht22.csv"), text)
        }),
    );
    wait_for_processed(&h, 1 + files as usize).await;
    cancel.cancel();
    let summary = watcher.await.unwrap().unwrap();
    // The conflicting files say the same thing: the first of them is a delivery of its own,
    // its lines rejected; the others are duplicates of that one.
    assert_eq!(summary.loaded, u64::from(1 + files - 3));
    assert_eq!(
        h.count("SELECT count(*) FROM v_files WHERE status = 'loaded'")
            .await,
        i64::from(1 + files - 3)
    );
    assert_eq!(
        h.count("SELECT count(*) FROM v_rejects WHERE code = 'conflicting_reading'")
            .await,
        3,
        "only the conflicting lines are rejected, with their reason"
    );
    assert_eq!(
        h.count("SELECT count(*) FROM v_readings").await,
        i64::from(2 * 3 * (1 + files - 3)),
        "every other file's readings are stored, once"
    );
    assert_eq!(
        std::fs::read_dir(h.workspace.path("data")).unwrap().count(),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_whose_name_is_not_utf8_is_loaded_and_leaves_the_inbox() {
    use std::os::unix::ffi::OsStrExt;
    let h = Harness::new().await;
    let inbox = h.workspace.path("data");
    std::fs::create_dir_all(&inbox).unwrap();
    let name = std::ffi::OsStr::from_bytes(b"bad\xff\xfename_dht22.csv");
    std::fs::write(inbox.join(name), format!("{HEADER}{}", dht_rows(7, 12))).unwrap();
    run_until_inbox_is_empty(&h).await;
    assert_eq!(
        h.count("SELECT count(*) FROM v_readings WHERE sensor_id = 7")
            .await,
        24,
        "its 12 rows of two measurements are loaded"
    );
    wait_for_processed(&h, 1).await;
}

/// Appends `text` to `path` as `>>` does: open, write, close.
fn append(path: &std::path::Path, text: &str) {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    file.write_all(text.as_bytes()).unwrap();
}

/// A harness whose watcher reads `*.log.csv` in tail mode, and its inbox.
async fn tailing(quiet_secs: u64) -> (Harness, std::path::PathBuf) {
    let h = Harness::with_config(|raw| {
        raw.tail = vec!["*.log.csv".to_owned()];
        raw.tail_quiet_secs = quiet_secs;
    })
    .await;
    let inbox = h.workspace.path("data");
    std::fs::create_dir_all(&inbox).unwrap();
    (h, inbox)
}

/// Waits until the deliveries have read `lines` lines in all.
async fn wait_for_tailed_lines(h: &Harness, lines: i64) {
    crate::support::wait_until(
        &format!("{lines} lines loaded"),
        Duration::from_secs(20),
        || async move { tailed_deliveries(h).await.iter().map(|d| d.0).sum::<i64>() == lines },
    )
    .await;
}

async fn tailed_deliveries(h: &Harness) -> Vec<(i64, i64, i64)> {
    h.client
        .query(
            "SELECT rows_read, rows_loaded, rows_duplicate FROM v_files ORDER BY file_id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_mode_loads_each_appended_line_once_across_a_restart_and_disposes_when_quiet() {
    let (h, inbox) = tailing(3).await;
    let logger = inbox.join("garden_dht22.log.csv");
    append(&logger, HEADER);
    let cancel = CancellationToken::new();
    let watcher = tokio::spawn(watch::run(h.ctx.clone(), cancel.clone()));
    // An appender: a line every 0.4 s, the file closed after each; the fourth line is bad.
    let line = |i: u32, temperature: &str| {
        format!("5;DHT22;1;50.0;8.0;2020-01-01T00:{i:02}:00;{temperature};60\n")
    };
    for i in 0..6 {
        append(&logger, &line(i, if i == 3 { "abc" } else { "20.5" }));
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    // Half a line: not loaded until it ends.
    append(&logger, "5;DHT22;1;50.0;8.0;2020-01-01T00:06:00;");
    let h_ref = &h;
    wait_for_tailed_lines(h_ref, 6).await;
    // Stopped mid-line; the line ends and more come while it is down.
    cancel.cancel();
    watcher.await.unwrap().unwrap();
    append(&logger, "21.5;60\n");
    append(&logger, &line(7, "22.5"));
    let cancel = CancellationToken::new();
    let watcher = tokio::spawn(watch::run(h.ctx.clone(), cancel.clone()));
    wait_for_tailed_lines(h_ref, 8).await;
    let deliveries = tailed_deliveries(&h).await;
    assert_eq!(
        deliveries
            .iter()
            .map(|d| (d.0, d.1, d.2))
            .fold((0, 0, 0), |a, d| (a.0 + d.0, a.1 + d.1, a.2 + d.2)),
        (8, 7, 0),
        "every line once, the bad one rejected: {deliveries:?}"
    );
    assert_eq!(
        h.count("SELECT count(*) FROM v_readings WHERE sensor_id = 5")
            .await,
        14
    );
    let line_of_reject: i64 = h
        .client
        .query_one("SELECT line FROM v_rejects", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(line_of_reject, 5, "the file's own line number (header = 1)");
    // Quiet for tail_quiet with every line loaded: moved out of the inbox.
    wait_for_processed(&h, 1).await;
    assert!(!logger.exists());
    cancel.cancel();
    watcher.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_tail_file_keeps_its_place_and_the_new_one_starts_at_its_beginning() {
    let (h, inbox) = tailing(3600).await;
    let today = inbox.join("station_dht22.log.csv");
    let row =
        |day: u32, i: u32| format!("6;DHT22;1;50.0;8.0;2020-01-{day:02}T00:{i:02}:00;20.5;60\n");
    append(&today, HEADER);
    for i in 0..3 {
        append(&today, &row(1, i));
    }
    let cancel = CancellationToken::new();
    let watcher = tokio::spawn(watch::run(h.ctx.clone(), cancel.clone()));
    let h_ref = &h;
    wait_for_tailed_lines(h_ref, 3).await;
    // Midnight: the logger renames today's file, writes its last line there, starts a new one.
    std::fs::rename(&today, inbox.join("2020-01-01_dht22.log.csv")).unwrap();
    append(&inbox.join("2020-01-01_dht22.log.csv"), &row(1, 3));
    append(&today, HEADER);
    for i in 0..2 {
        append(&today, &row(2, i));
    }
    wait_for_tailed_lines(h_ref, 6).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let deliveries = tailed_deliveries(&h).await;
    assert!(
        deliveries.iter().all(|d| d.2 == 0),
        "no line read twice: {deliveries:?}"
    );
    assert_eq!(
        h.count("SELECT count(*) FROM v_readings WHERE sensor_id = 6")
            .await,
        12
    );
    cancel.cancel();
    watcher.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_tail_file_is_read_again_from_its_start_and_stores_nothing_twice() {
    let (h, inbox) = tailing(3600).await;
    let logger = inbox.join("shed_dht22.log.csv");
    let row = |i: u32| format!("7;DHT22;1;50.0;8.0;2020-01-03T00:{i:02}:00;20.5;60\n");
    append(&logger, HEADER);
    for i in 0..4 {
        append(&logger, &row(i));
    }
    let cancel = CancellationToken::new();
    let watcher = tokio::spawn(watch::run(h.ctx.clone(), cancel.clone()));
    wait_for_tailed_lines(&h, 4).await;
    // Cut back to its first two lines, then written on.
    let kept = HEADER.len() + row(0).len() + row(1).len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&logger)
        .unwrap()
        .set_len(kept as u64)
        .unwrap();
    for i in 10..12 {
        append(&logger, &row(i));
    }
    wait_for_tailed_lines(&h, 8).await;
    let deliveries = tailed_deliveries(&h).await;
    let duplicates: i64 = deliveries.iter().map(|d| d.2).sum();
    assert_eq!(
        duplicates, 2,
        "the two kept lines come back as duplicates: {deliveries:?}"
    );
    assert_eq!(
        h.count("SELECT count(*) FROM v_readings WHERE sensor_id = 7")
            .await,
        12
    );
    cancel.cancel();
    watcher.await.unwrap().unwrap();
}
