//! One delivery, one transaction, against a real PostgreSQL: the same content again is a
//! duplicate that loads nothing, an interrupted file leaves nothing and loads once later,
//! whole-file rejection, group commits that keep each delivery its own outcome (and its
//! idempotency key, and split off the one at fault), rejects across many chunks, and a
//! delivery from memory.

use sensor_etl::delivery::{ByteSource, Delivery, Disposition};
use sensor_etl::pipeline::process;
use sensor_etl::store::ledger::FileStatus;

use crate::support::fixtures::write_file;
use crate::support::{deliver, Harness};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivered_content_is_a_duplicate_and_loads_nothing() {
    let h = Harness::new().await;
    let first = h.workspace.path("in/a_sds011.csv");
    write_file(
        &first,
        "sensor_id;sensor_type;timestamp;P1;P2\n1;SDS011;2021-01-01T00:00:00;1.5;0.5\n",
    );
    process(
        &h.ctx,
        &Delivery::input_file(&first, Disposition::LeaveInPlace),
    )
    .await
    .unwrap();
    let again = deliver(&first, &h.workspace.path("in2"), "other_name.csv");
    let report = process(
        &h.ctx,
        &Delivery::input_file(&again, Disposition::LeaveInPlace),
    )
    .await
    .unwrap();
    assert_eq!(report.status, FileStatus::Duplicate);
    assert_eq!(h.count("SELECT count(*) FROM v_readings").await, 2);
    assert_eq!(h.count("SELECT count(*) FROM v_files").await, 1);

    // Different bytes under the old name are a new file.
    write_file(
        &first,
        "sensor_id;sensor_type;timestamp;P1;P2\n1;SDS011;2021-01-01T00:02:30;1.6;0.6\n",
    );
    let report = process(
        &h.ctx,
        &Delivery::input_file(&first, Disposition::LeaveInPlace),
    )
    .await
    .unwrap();
    assert_eq!(report.status, FileStatus::Loaded);
    assert_eq!(h.count("SELECT count(*) FROM v_files").await, 2);
}

/// `lines` BME280 lines of 50 interleaved sensors, one second apart, from 2022-01-01.
fn bme280_lines(lines: i64) -> String {
    let mut text = String::from("sensor_id;sensor_type;location;lat;lon;timestamp;pressure;altitude;pressure_sealevel;temperature;humidity\n");
    let start = chrono::DateTime::from_timestamp(1_640_995_200, 0).unwrap();
    for i in 0..lines {
        let ts = (start + chrono::Duration::seconds(i)).format("%Y-%m-%dT%H:%M:%SZ");
        text.push_str(&format!(
            "{};BME280;9;48.1;9.2;{ts};{};;;{};{}\n",
            i % 50,
            99_000 + i % 1000,
            (i % 40) as f64 / 2.0,
            (i % 100) as f64
        ));
    }
    text
}

/// Loads `path` where it is, on a task of its own.
fn spawn_load(
    h: &Harness,
    path: &std::path::Path,
) -> tokio::task::JoinHandle<sensor_etl::error::Result<sensor_etl::pipeline::DeliveryReport>> {
    let (ctx, path) = (h.ctx.clone(), path.to_path_buf());
    tokio::spawn(async move {
        process(
            &ctx,
            &Delivery::input_file(&path, Disposition::LeaveInPlace),
        )
        .await
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_file_leaves_nothing_and_loads_once_later() {
    let h = Harness::with_config(|raw| raw.chunk_rows = 200).await;
    let path = h.workspace.path("in/big_bme280.csv");
    write_file(&path, &bme280_lines(40_000));

    let task = spawn_load(&h, &path);
    // Wait until the file's transaction has written something, then kill the work.
    for _ in 0..200 {
        let writing = h
            .count("SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'COPY readings%'")
            .await;
        if writing > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    task.abort();
    assert!(
        task.await.unwrap_err().is_cancelled(),
        "the file was still in progress"
    );
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(h.count("SELECT count(*) FROM v_readings").await, 0);
    assert_eq!(h.count("SELECT count(*) FROM files").await, 0);

    let report = process(
        &h.ctx,
        &Delivery::input_file(&path, Disposition::LeaveInPlace),
    )
    .await
    .unwrap();
    assert_eq!(
        (report.status, report.rows.loaded),
        (FileStatus::Loaded, 40_000)
    );
    assert_eq!(h.count("SELECT count(*) FROM v_readings").await, 120_000);
    assert_eq!(
        h.count("SELECT count(*) FROM (SELECT DISTINCT file_id, line FROM v_readings) d")
            .await,
        40_000
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_rejects_quarantine_the_whole_file() {
    let h = Harness::with_config(|raw| raw.max_reject_ratio = 0.5).await;
    let path = h.workspace.path("in/mostly_bad_dht22.csv");
    let report = h
        .load(
            &path,
            "sensor_id;timestamp;temperature;humidity\n1;2020-01-01T00:00:00;20;50\n1;2020-01-01T00:01:00;99;50\n1;2020-01-01T00:02:00;x;50\n",
        )
        .await;
    assert_eq!(
        (report.status, report.rows.loaded, report.rows.rejected),
        (FileStatus::Rejected, 0, 3)
    );
    assert_eq!(
        report.rejection.map(|r| r.code.as_str()),
        Some("too_many_rejects")
    );
    assert_eq!(h.count("SELECT count(*) FROM v_readings").await, 0);
    assert_eq!(h.count("SELECT count(*) FROM v_aggregates").await, 0);
    let codes = h
        .client
        .query("SELECT line, code FROM v_rejects ORDER BY line", &[])
        .await
        .unwrap();
    let codes: Vec<(i64, String)> = codes.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        codes,
        vec![
            (2, "file_rejected".to_owned()),
            (3, "out_of_range".to_owned()),
            (4, "not_a_number".to_owned())
        ]
    );
    let quarantine = h.workspace.path("quarantine");
    let names: Vec<String> = std::fs::read_dir(&quarantine)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let copy = names
        .iter()
        .find(|n| n.ends_with(".csv"))
        .expect("whole file copied");
    assert_eq!(
        std::fs::read(quarantine.join(copy)).unwrap(),
        std::fs::read(&path).unwrap()
    );
    let reason = names
        .iter()
        .find(|n| n.ends_with(".reason.txt"))
        .expect("reason file");
    assert!(std::fs::read_to_string(quarantine.join(reason))
        .unwrap()
        .contains("too_many_rejects"));
    assert!(path.exists(), "ingest leaves its input in place");
    let log = std::fs::read_to_string(h.workspace.path("logs/errors.log")).unwrap();
    assert!(
        log.contains("mostly_bad_dht22.csv") && log.contains("rows_rejected=3"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_keeps_each_file_its_own_outcome() {
    let h = Harness::new().await;
    let dir = h.workspace.path("in");
    let good = dir.join("good_dht22.csv");
    write_file(&good, "sensor_id;timestamp;temperature;humidity\n1;2020-01-01T00:00:00;20;50\n1;2020-01-01T00:01:00;21;51\n");
    let same = deliver(&good, &dir, "same_bytes_dht22.csv");
    let bad = dir.join("bad_dht22.csv");
    write_file(&bad, "sensor_id;timestamp;temperature;humidity\n2;2020-01-01T00:00:00;99;50\n2;2020-01-01T00:01:00;x;50\n2;2020-01-01T00:02:00;20;50\n");
    let unknown = dir.join("unknown.csv");
    write_file(
        &unknown,
        "sensor_id;timestamp;foo\n3;2020-01-01T00:00:00;1\n",
    );
    let deliveries: Vec<Delivery> = [&good, &same, &bad, &unknown]
        .into_iter()
        .map(|path| Delivery::input_file(path, Disposition::LeaveInPlace))
        .collect();
    let outcomes = sensor_etl::pipeline::process_group(&h.ctx, &deliveries)
        .await
        .unwrap();
    let statuses: Vec<(String, FileStatus)> = outcomes
        .iter()
        .map(|(delivery, outcome)| (delivery.name.clone(), outcome.as_ref().unwrap().status))
        .collect();
    assert_eq!(
        statuses,
        vec![
            ("good_dht22.csv".to_owned(), FileStatus::Loaded),
            ("same_bytes_dht22.csv".to_owned(), FileStatus::Duplicate),
            ("bad_dht22.csv".to_owned(), FileStatus::Rejected),
            ("unknown.csv".to_owned(), FileStatus::Rejected),
        ]
    );
    assert_eq!(h.count("SELECT count(*) FROM v_files").await, 3);
    // Every delivery, the duplicate included, records where it came from.
    assert_eq!(
        h.count(&format!(
            "SELECT count(*) FROM file_deliveries WHERE origin = 'ingest:{}'",
            same.display()
        ))
        .await,
        1
    );
    assert_eq!(
        h.count("SELECT count(*) FROM file_deliveries WHERE origin LIKE 'ingest:%'")
            .await,
        4
    );
    assert_eq!(
        h.count("SELECT count(*) FROM v_readings").await,
        4,
        "only the good file's readings"
    );
    assert_eq!(
        h.count("SELECT count(DISTINCT (file_id, line)) FROM v_rejects")
            .await,
        4
    );
    assert_eq!(
        h.count("SELECT count(*) FROM v_files WHERE rows_read <> rows_loaded + rows_rejected")
            .await,
        0
    );
}

/// A file of many chunks with rejects in most of them: the readings COPY pauses for the
/// rejects and resumes, and every line ends up exactly once, loaded or rejected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejects_in_many_chunks_leave_every_line_accounted_for_once() {
    let h = Harness::with_config(|raw| raw.chunk_rows = 100).await;
    let path = h.workspace.path("in/many_chunks_dht22.csv");
    let mut text = String::from("sensor_id,location,lat,lon,timestamp,temperature,humidity\n");
    let rows = 3_000i64;
    let mut bad_lines = Vec::new();
    for i in 0..rows {
        let line = i + 2;
        let sensor = i % 7;
        // Sensors move between two places, so positions differ within a chunk.
        let (location, lat) = if i % 2 == 0 { (10, 42.5) } else { (11, 42.75) };
        let humidity = if i % 9 == 4 {
            bad_lines.push(line);
            "wet".to_owned()
        } else {
            format!("{}", 40 + i % 50)
        };
        text.push_str(&format!(
            "{sensor},{location},{lat},23.3,2021-03-01T00:{:02}:{:02},{}.5,{humidity}\n",
            (i / 60) % 60,
            i % 60,
            i % 30
        ));
    }
    let report = h.load(&path, &text).await;
    let bad = bad_lines.len() as u64;
    assert_eq!(report.status, FileStatus::PartiallyLoaded);
    assert_eq!(
        (report.rows.read, report.rows.loaded, report.rows.rejected),
        (rows as u64, rows as u64 - bad, bad)
    );
    let loaded: Vec<i32> = h
        .client
        .query("SELECT line FROM readings ORDER BY line", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let rejected: Vec<i64> = h
        .client
        .query("SELECT line FROM v_rejects ORDER BY line", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(rejected, bad_lines);
    let mut all: Vec<i64> = loaded.iter().map(|l| i64::from(*l)).collect();
    all.extend(&rejected);
    all.sort_unstable();
    assert_eq!(all, (2..rows + 2).collect::<Vec<_>>());
    // Each loaded line has both values and the position it was read with.
    assert_eq!(
        h.count(
            "SELECT count(*) FROM v_readings WHERE (line % 2 = 0 AND location_id = 10 AND lat = 42.5) \
             OR (line % 2 = 1 AND location_id = 11 AND lat = 42.75)"
        )
        .await,
        2 * (rows - bad as i64)
    );
}

/// A delivery whose bytes are in memory (as a request body will be) goes through the same
/// pipeline: readings, rejects, quarantine from the bytes, origin in the ledger; the same
/// bytes again are a duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_from_memory_loads_like_a_file() {
    let h = Harness::new().await;
    let body = "sensor_id;timestamp;temperature;humidity\n\
                8;2020-01-01T00:00:00;20;50\n\
                8;2020-01-01T00:01:00;abc;50\n\
                8;2020-01-01T00:02:00;21;50\n";
    let delivery = Delivery::pushed(
        "gateway_dht22.csv".to_owned(),
        ByteSource::Memory(bytes::Bytes::from_static(body.as_bytes())),
        "127.0.0.1".to_owned(),
        None,
    );
    let report = process(&h.ctx, &delivery).await.unwrap();
    assert_eq!(report.status, FileStatus::PartiallyLoaded);
    assert_eq!(
        (report.rows.read, report.rows.loaded, report.rows.rejected),
        (3, 2, 1)
    );
    assert_eq!(report.path, None);
    assert_eq!(
        h.count("SELECT count(*) FROM v_rejects WHERE line = 3 AND code = 'not_a_number'")
            .await,
        1
    );
    assert_eq!(
        h.count("SELECT count(*) FROM file_deliveries WHERE origin = 'http:127.0.0.1'")
            .await,
        1
    );
    let rejected = report
        .quarantine
        .iter()
        .find(|p| p.to_string_lossy().ends_with(".rejected.csv"))
        .expect("the rejected row in quarantine");
    assert_eq!(
        std::fs::read_to_string(rejected).unwrap(),
        "sensor_id;timestamp;temperature;humidity\n8;2020-01-01T00:01:00;abc;50\n"
    );
    let again = process(&h.ctx, &delivery).await.unwrap();
    assert_eq!(again.status, FileStatus::Duplicate);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_hold_inside_group_commits() {
    let h = Harness::new().await;
    let body = |sensor: u32| {
        format!("sensor_id;timestamp;temperature;humidity\n{sensor};2020-01-01T00:00:00;20;50\n")
    };
    let keyed = |key: &str, text: String| {
        Delivery::pushed(
            "gateway_dht22.csv".to_owned(),
            ByteSource::Memory(bytes::Bytes::from(text)),
            "127.0.0.1".to_owned(),
            Some(key.to_owned()),
        )
    };
    let first = vec![keyed("a", body(11)), keyed("b", body(12))];
    let outcomes = sensor_etl::pipeline::process_group(&h.ctx, &first)
        .await
        .unwrap();
    assert!(outcomes
        .iter()
        .all(|(_, o)| o.as_ref().unwrap().status == FileStatus::Loaded));
    assert_eq!(h.count("SELECT count(*) FROM idempotency_keys").await, 2);
    // The same key and bytes again in a group: a duplicate of the first.
    let again = vec![keyed("a", body(11)), keyed("c", body(13))];
    let outcomes = sensor_etl::pipeline::process_group(&h.ctx, &again)
        .await
        .unwrap();
    let statuses: Vec<FileStatus> = outcomes
        .iter()
        .map(|(_, o)| o.as_ref().unwrap().status)
        .collect();
    assert_eq!(statuses, vec![FileStatus::Duplicate, FileStatus::Loaded]);
    // A key naming other content fails the group as a whole; alone, that one is refused.
    let reused = vec![keyed("b", body(14)), keyed("d", body(15))];
    assert!(sensor_etl::pipeline::process_group(&h.ctx, &reused)
        .await
        .is_err());
    assert_eq!(
        h.count("SELECT count(*) FROM v_readings WHERE sensor_id IN (14, 15)")
            .await,
        0
    );
    let refused = process(&h.ctx, &reused[0]).await.unwrap_err();
    assert!(
        matches!(refused, sensor_etl::error::Error::KeyReused(_)),
        "{refused}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_with_a_conflicting_delivery_is_split_until_that_one_goes_alone() {
    let h = Harness::new().await;
    let body = |sensor: u32, value: u32| {
        format!("sensor_id;timestamp;temperature;humidity\n{sensor};2020-01-01T00:00:00;{value};50\n{sensor};2020-01-01T00:01:00;{value};50\n")
    };
    let memory = |text: String| {
        Delivery::pushed(
            "gateway_dht22.csv".to_owned(),
            ByteSource::Memory(bytes::Bytes::from(text)),
            "127.0.0.1".to_owned(),
            None,
        )
    };
    process(&h.ctx, &memory(body(20, 20))).await.unwrap();
    let group: Vec<Delivery> = [(21, 20), (22, 20), (20, 25), (23, 20), (24, 20)]
        .into_iter()
        .map(|(sensor, value)| memory(body(sensor, value)))
        .collect();
    let outcomes = sensor_etl::pipeline::process_in_groups(&h.ctx, &group).await;
    let statuses: Vec<FileStatus> = outcomes
        .iter()
        .map(|(_, o)| o.as_ref().unwrap().as_ref().unwrap().status)
        .collect();
    assert_eq!(
        statuses,
        vec![
            FileStatus::Loaded,
            FileStatus::Loaded,
            FileStatus::PartiallyLoaded,
            FileStatus::Loaded,
            FileStatus::Loaded
        ]
    );
    assert_eq!(
        h.count("SELECT count(*) FROM v_rejects WHERE code = 'conflicting_reading'")
            .await,
        2,
        "the conflicting lines are rejected with their reason"
    );
    assert_eq!(h.count("SELECT count(*) FROM v_readings").await, 5 * 4);
}

/// A long delivery's index ranges are summarized while its transaction is under way (not all
/// at its end), and reads through ranges summarized that early stay exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_delivery_is_summarized_while_it_is_written_and_reads_stay_exact() {
    let h = Harness::with_config(|raw| raw.chunk_rows = 2_000).await;
    let path = h.workspace.path("in/big_bme280.csv");
    write_file(&path, &bme280_lines(40_000));
    // The delivery's last statements wait behind this lock, its readings all copied.
    let mut blocker = crate::support::connect(&h.url).await;
    let lock = blocker.transaction().await.unwrap();
    lock.batch_execute("LOCK TABLE aggregates IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let task = spawn_load(&h, &path);
    let mut waiting = false;
    for _ in 0..600 {
        waiting = h
            .count(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE query LIKE 'COPY aggregates%' AND wait_event_type = 'Lock'",
            )
            .await
            > 0;
        if waiting {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(waiting, "the delivery reached its last statements");
    // The summarizer's pass after the last chunk (it coalesces wake-ups for 200 ms).
    tokio::time::sleep(std::time::Duration::from_millis(1_500)).await;
    let ranges = h
        .count(
            "SELECT (pg_relation_size('readings_y2022') / current_setting('block_size')::int8 + 15) / 16",
        )
        .await;
    // Summarizing now finds only what the summarizer left (it counts what it does itself).
    let left = h
        .count(
            "SELECT coalesce(sum(brin_summarize_new_values(i.inhrelid::regclass)), 0)::int8 \
             FROM pg_inherits i WHERE i.inhparent = 'readings_brin'::regclass",
        )
        .await;
    assert!(ranges >= 8, "the delivery fills many ranges: {ranges}");
    assert!(
        left * 2 < ranges,
        "most of the {ranges} ranges were summarized before the commit; {left} were not"
    );
    lock.rollback().await.unwrap();
    let report = task.await.unwrap().unwrap();
    assert_eq!(
        (report.status, report.rows.loaded),
        (FileStatus::Loaded, 40_000)
    );
    // Through the index (ranges summarized mid-transaction) and without it: the same rows.
    let by_sensor = "SELECT count(*) FROM v_readings WHERE sensor_id = 7 \
                     AND ts BETWEEN '2022-01-01T01:00:00Z' AND '2022-01-01T05:00:00Z'";
    h.client
        .batch_execute("SET enable_seqscan = off")
        .await
        .unwrap();
    let through_index = h.count(by_sensor).await;
    h.client
        .batch_execute("SET enable_seqscan = on; SET enable_bitmapscan = off")
        .await
        .unwrap();
    let scanned = h.count(by_sensor).await;
    assert_eq!(through_index, scanned);
    // Sensor 7's lines of those 4 hours (line i is second i, of sensor i % 50), 3 values each.
    let lines = (3_600..=18_000).filter(|i| i % 50 == 7).count();
    assert_eq!(scanned, i64::try_from(lines * 3).unwrap());
}
