//! Files that change while they load: truncated, replaced by a rename, removed, held open by a
//! writer that pauses, appended to line by line, unreadable for a while, and a tailed file
//! killed between a block's commit and what follows.

use std::process::Command;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::support::faulted::{
    committed_at_least, hold_one_file, hold_one_file_at, sha256_hex, with_inbox, Held, Watched,
    LIMIT,
};
use crate::support::workers::{
    assert_exactly_once, csv_files_in, deliver, make_files, sensor_etl_command, wait_until_empty,
    worker_command, ROWS_PER_FILE,
};
use crate::support::{connect, fresh_database, wait_until, Workspace};

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

/// Holds one delivered file at the fault point `point`, removes it there, and checks that it
/// is committed whole, without a failure.
async fn removed_at_loads_whole(point: &str) {
    // The workspace is kept alive until the end of the test.
    let Held {
        url,
        workspace: _workspace,
        file,
        running,
        ..
    } = hold_one_file_at(point, 1500, &[]).await;
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
async fn a_file_removed_while_it_loads_commits_without_a_failure() {
    removed_at_loads_whole("pipeline::chunk-read").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_removed_before_anything_of_it_is_read_loads_whole_from_the_open_file() {
    // The worker opened the file (its delivery is taken) and read nothing yet; the producer
    // removes it. Every pass over it (identity, validation, quarantine) reads the file taken.
    removed_at_loads_whole("pipeline::taken").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_of_a_group_removed_while_it_is_prepared_load_whole_if_taken_and_are_gone_if_not() {
    // Both files wait in the inbox before the worker starts: its first claim takes them
    // together, as one group. The group holds at its first file's take; then both are removed.
    let (url, workspace, inbox) = with_inbox().await;
    for staged in make_files(&workspace.path("staging"), 2) {
        deliver(&staged, &inbox);
    }
    let running = Watched::spawn(
        worker_command(&workspace, &url),
        "pipeline::taken=1*return(sleep:1500)",
    );
    running.reached("pipeline::taken").await;
    for entry in std::fs::read_dir(&inbox).unwrap() {
        std::fs::remove_file(entry.unwrap().path()).unwrap();
    }
    committed_at_least(&url, 1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    running.signal(Signal::SIGTERM);
    let (status, stderr) = running.exit();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("ERROR"), "{stderr}");
    // The file taken loads whole; the other was gone before it was opened: nothing of it.
    assert_exactly_once(&url, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_file_quarantines_its_rejected_line_byte_for_byte_from_the_open_file() {
    let (url, workspace, inbox) = with_inbox().await;
    let header = "sensor_id;sensor_type;location;lat;lon;timestamp;temperature;humidity\n";
    let bad = "7;DHT22;70;50.0;8.0;2021-03-01T00:02:00;hot;50\n";
    let staged = workspace.path("staging").join("one_bad_dht22.csv");
    std::fs::create_dir_all(staged.parent().unwrap()).unwrap();
    std::fs::write(
        &staged,
        format!(
            "{header}7;DHT22;70;50.0;8.0;2021-03-01T00:00:00;20.5;50\n\
             7;DHT22;70;50.0;8.0;2021-03-01T00:01:00;20.6;51\n{bad}"
        ),
    )
    .unwrap();
    let running = Watched::spawn(
        worker_command(&workspace, &url),
        "pipeline::taken=1*return(sleep:1500)",
    );
    deliver(&staged, &inbox);
    running.reached("pipeline::taken").await;
    std::fs::remove_file(inbox.join("one_bad_dht22.csv")).unwrap();
    committed_at_least(&url, 1).await;
    running.signal(Signal::SIGTERM);
    let (status, stderr) = running.exit();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("ERROR"), "{stderr}");
    let counts: (String, i64, i64) = {
        let row = connect(&url)
            .await
            .query_one(
                "SELECT status, rows_loaded, rows_rejected FROM v_files",
                &[],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1), row.get(2))
    };
    assert_eq!(counts, ("partially_loaded".to_owned(), 2, 1));
    let quarantine = workspace.path("quarantine");
    let rejected = std::fs::read_dir(&quarantine)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".rejected.csv"))
        .expect("the rejected rows beside the error log");
    assert_eq!(
        std::fs::read_to_string(rejected).unwrap(),
        format!("{header}{bad}")
    );
    let reasons = std::fs::read_dir(&quarantine)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".errors.jsonl"))
        .expect("the reasons of the rejected rows");
    let reasons = std::fs::read_to_string(reasons).unwrap();
    assert!(
        reasons.contains(r#""line":4,"#) && reasons.contains(r#""code":"not_a_number""#),
        "{reasons}"
    );
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
