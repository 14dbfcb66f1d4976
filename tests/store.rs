//! The store against a real PostgreSQL: COPY round trip with NULLs, the ledger's duplicate
//! detection, all-or-nothing file transactions, whole-file rejection, and sensor types added
//! by configuration alone.

use std::path::Path;

use sensor_etl::config::RawMeasurement;
use sensor_etl::config::RawSensorType;
use sensor_etl::delivery::{ByteSource, Delivery, Disposition};
use sensor_etl::pipeline::process;
use sensor_etl::store::ledger::FileStatus;

use crate::support::fixtures::assert_sensor_state_matches_the_readings;
use crate::support::{deliver, Harness};

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_round_trip_keeps_values_and_nulls() {
    let h = Harness::new().await;
    let path = h.workspace.path("in/station_dht22.csv");
    write(
        &path,
        "sensor_id,timestamp,temperature,humidity\n7,2020-05-01T10:00:00+02:00,-3.25,\n7,2020-05-01 08:01:00.5,21.5,55\n",
    );
    let report = process(
        &h.ctx,
        &Delivery::input_file(&path, Disposition::LeaveInPlace),
    )
    .await
    .unwrap();
    assert_eq!(report.status, FileStatus::Loaded);
    let rows = h
        .client
        .query(
            "SELECT line, sensor_type, location_id, lat, lon, to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.MS'), \
             measurement, value, unit FROM v_readings ORDER BY line, measurement",
            &[],
        )
        .await
        .unwrap();
    type Reading = (
        i32,
        String,
        Option<i64>,
        Option<f64>,
        Option<f64>,
        String,
        String,
        f64,
        String,
    );
    let got: Vec<Reading> = rows
        .iter()
        .map(|r| {
            (
                r.get(0),
                r.get(1),
                r.get(2),
                r.get(3),
                r.get(4),
                r.get(5),
                r.get(6),
                r.get(7),
                r.get(8),
            )
        })
        .collect();
    let dht = |line, ts: &str, m: &str, v, u: &str| {
        (
            line,
            "DHT22".to_owned(),
            None,
            None,
            None,
            ts.to_owned(),
            m.to_owned(),
            v,
            u.to_owned(),
        )
    };
    assert_eq!(
        got,
        vec![
            dht(2, "2020-05-01 08:00:00.000", "temperature", -3.25, "°C"),
            dht(3, "2020-05-01 08:01:00.500", "humidity", 55.0, "%RH"),
            dht(3, "2020-05-01 08:01:00.500", "temperature", 21.5, "°C"),
        ]
    );
    assert_eq!(
        h.count("SELECT count(*) FROM sensors WHERE sensor_id = 7 AND sensor_type = 'DHT22'")
            .await,
        1
    );
    let stddev: Option<f64> = h
        .client
        .query_one("SELECT stddev FROM v_aggregates WHERE scope = 'sensor_type' AND measurement = 'humidity'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stddev, None, "one reading has no sample standard deviation");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivered_content_is_a_duplicate_and_loads_nothing() {
    let h = Harness::new().await;
    let first = h.workspace.path("in/a_sds011.csv");
    write(
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
    write(
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_file_leaves_nothing_and_loads_once_later() {
    let h = Harness::with_config(|raw| raw.chunk_rows = 200).await;
    let path = h.workspace.path("in/big_bme280.csv");
    let mut text = String::from("sensor_id;sensor_type;location;lat;lon;timestamp;pressure;altitude;pressure_sealevel;temperature;humidity\n");
    let start = chrono::DateTime::from_timestamp(1_640_995_200, 0).unwrap();
    for i in 0..40_000i64 {
        let ts = (start + chrono::Duration::seconds(i)).format("%Y-%m-%dT%H:%M:%SZ");
        text.push_str(&format!(
            "{};BME280;9;48.1;9.2;{ts};{};;;{};{}\n",
            i % 50,
            99_000 + i % 1000,
            (i % 40) as f64 / 2.0,
            (i % 100) as f64
        ));
    }
    write(&path, &text);

    let ctx = h.ctx.clone();
    let task_path = path.clone();
    let task = tokio::spawn(async move {
        process(
            &ctx,
            &Delivery::input_file(&task_path, Disposition::LeaveInPlace),
        )
        .await
    });
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
    write(
        &path,
        "sensor_id;timestamp;temperature;humidity\n1;2020-01-01T00:00:00;20;50\n1;2020-01-01T00:01:00;99;50\n1;2020-01-01T00:02:00;x;50\n",
    );
    let report = process(
        &h.ctx,
        &Delivery::input_file(&path, Disposition::LeaveInPlace),
    )
    .await
    .unwrap();
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
async fn a_sensor_type_added_by_configuration_loads_without_migration() {
    let h = Harness::with_config(|raw| {
        raw.sensor_types.push(RawSensorType {
            name: "SCD30".to_owned(),
            measurements: vec![RawMeasurement {
                name: "co2".to_owned(),
                columns: Some(vec!["co2".to_owned(), "CO2_ppm".to_owned()]),
                unit: Some("ppm".to_owned()),
                min: Some(0.0),
                max: Some(10_000.0),
                ..RawMeasurement::default()
            }],
            ..RawSensorType::default()
        });
    })
    .await;
    let path = h.workspace.path("in/2024-01-01_scd30_sensor_9.csv");
    write(&path, "sensor_id;sensor_type;timestamp;CO2_ppm\n9;SCD30;2024-01-01T00:00:00;415\n9;SCD30;2024-01-01T00:01:00;20000\n");
    let report = process(
        &h.ctx,
        &Delivery::input_file(&path, Disposition::LeaveInPlace),
    )
    .await
    .unwrap();
    assert_eq!((report.rows.loaded, report.rows.rejected), (1, 1));
    let row = h
        .client
        .query_one(
            "SELECT sensor_type, measurement, value, unit FROM v_readings",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (
            row.get::<_, String>(0),
            row.get::<_, String>(1),
            row.get::<_, f64>(2),
            row.get::<_, String>(3)
        ),
        (
            "SCD30".to_owned(),
            "co2".to_owned(),
            415.0,
            "ppm".to_owned()
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_keeps_each_file_its_own_outcome() {
    let h = Harness::new().await;
    let dir = h.workspace.path("in");
    let good = dir.join("good_dht22.csv");
    write(&good, "sensor_id;timestamp;temperature;humidity\n1;2020-01-01T00:00:00;20;50\n1;2020-01-01T00:01:00;21;51\n");
    let same = deliver(&good, &dir, "same_bytes_dht22.csv");
    let bad = dir.join("bad_dht22.csv");
    write(&bad, "sensor_id;timestamp;temperature;humidity\n2;2020-01-01T00:00:00;99;50\n2;2020-01-01T00:01:00;x;50\n2;2020-01-01T00:02:00;20;50\n");
    let unknown = dir.join("unknown.csv");
    write(
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
    write(&path, &text);
    let report = process(
        &h.ctx,
        &Delivery::input_file(&path, Disposition::LeaveInPlace),
    )
    .await
    .unwrap();
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

/// Upgrading a database that already holds readings in the schema of migration 4 keeps every
/// reading, its position and its measurement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrading_to_narrow_readings_keeps_every_reading() {
    let url = crate::support::fresh_database().await;
    let pool = sensor_etl::store::build_pool(&url, 2).unwrap();
    sensor_etl::store::migrate_to(&pool, 4).await.unwrap();
    let client = crate::support::connect(&url).await;
    client
        .batch_execute(
            "INSERT INTO files (content_sha256, file_name, size_bytes, status, rows_read, rows_loaded, \
                                rows_rejected, reading_count, received_at) \
             VALUES ('abc', 'old_dht22.csv', 100, 'loaded', 3, 3, 0, 5, now());
             INSERT INTO measurements (sensor_type, name, unit) \
             VALUES ('DHT22', 'temperature', '°C'), ('DHT22', 'humidity', '%');
             INSERT INTO reading_rows (file_id, line, sensor_id, location_id, lat, lon, ts, measurement_ids, \"values\")
             SELECT f.file_id, r.line, 7, r.location_id, r.lat, r.lon, r.ts::timestamptz, r.ids, r.vals
             FROM files f, (VALUES
               (2, 11::bigint, 42.5::float8, 23.25::float8, '2020-01-01 00:00:00Z', '{1,2}'::smallint[], '{20.5,55}'::float8[]),
               (3, NULL, NULL, NULL, '2020-01-01 00:01:00Z', '{1,2}', '{21.5,56}'),
               (4, 11, 42.5, 23.25, '2031-06-01 00:02:00Z', '{1}', '{22.5}')
             ) AS r(line, location_id, lat, lon, ts, ids, vals);",
        )
        .await
        .unwrap();
    sensor_etl::store::migrate(&pool).await.unwrap();
    let rows = client
        .query(
            "SELECT line, location_id, lat, lon, measurement, value FROM v_readings \
             ORDER BY line, measurement",
            &[],
        )
        .await
        .unwrap();
    type Row = (i32, Option<i64>, Option<f64>, Option<f64>, String, f64);
    let got: Vec<Row> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5)))
        .collect();
    let at = (Some(11), Some(42.5), Some(23.25));
    let row = |line, (location, lat, lon): (Option<i64>, Option<f64>, Option<f64>), m: &str, v| {
        (line, location, lat, lon, m.to_owned(), v)
    };
    assert_eq!(
        got,
        vec![
            row(2, at, "humidity", 55.0),
            row(2, at, "temperature", 20.5),
            row(3, (None, None, None), "humidity", 56.0),
            row(3, (None, None, None), "temperature", 21.5),
            row(4, at, "temperature", 22.5),
        ]
    );
    assert_eq!(
        crate::support::connect(&url)
            .await
            .query_one("SELECT count(*) FROM positions", &[])
            .await
            .unwrap()
            .get::<_, i64>(0),
        2
    );
}

/// The plan PostgreSQL chooses for `sql`, one line per node.
async fn plan_of(client: &tokio_postgres::Client, sql: &str) -> String {
    let lines: Vec<String> = client
        .query(&format!("EXPLAIN {sql}"), &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    lines.join("\n")
}

/// The two common questions, one sensor over a time range and everything in a time range,
/// are answered through the readings index and partition pruning, through the public view.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn common_questions_use_the_readings_index() {
    let h = Harness::new().await;
    let path = h.workspace.path("in/station_dht22.csv");
    let mut text = String::from("sensor_id,timestamp,temperature,humidity\n");
    for i in 0..500 {
        text.push_str(&format!(
            "{},2022-02-01T{:02}:{:02}:00Z,1.5,50\n",
            i % 5,
            i / 60,
            i % 60
        ));
    }
    write(&path, &text);
    process(
        &h.ctx,
        &Delivery::input_file(&path, Disposition::LeaveInPlace),
    )
    .await
    .unwrap();
    h.client
        .batch_execute("SET enable_seqscan = off")
        .await
        .unwrap();
    for question in [
        "SELECT avg(value) FROM v_readings WHERE sensor_id = 3 \
         AND ts >= '2022-02-01 01:00Z' AND ts < '2022-02-01 02:00Z'",
        "SELECT count(*) FROM v_readings WHERE ts >= '2022-02-01 01:00Z' AND ts < '2022-02-01 02:00Z'",
    ] {
        let plan = plan_of(&h.client, question).await;
        assert!(
            plan.contains("Bitmap Index Scan on readings_y2022_"),
            "{question}:\n{plan}"
        );
        assert!(!plan.contains("readings_y2021"), "pruned: {plan}");
    }
    let in_hour = h
        .count(
            "SELECT count(*) FROM v_readings WHERE sensor_id = 3 \
             AND ts >= '2022-02-01 01:00Z' AND ts < '2022-02-01 02:00Z'",
        )
        .await;
    assert_eq!(in_hour, 2 * 12);
}

/// Each (sensor, hour) and (sensor, day) of the kept statistics is one row, found by its key:
/// a delivery adding to stored buckets (every push of a gateway adds to the current hour and
/// day) reads only those rows, however large the tables grow, and the database refuses a
/// second row for a bucket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_statistics_bucket_is_one_row_found_by_its_key() {
    let h = Harness::new().await;
    let dir = h.workspace.path("in");
    for (name, minute) in [("a_dht22.csv", 0), ("b_dht22.csv", 30)] {
        let path = dir.join(name);
        write(
            &path,
            &format!(
                "sensor_id,timestamp,temperature,humidity\n\
                 7,2022-02-01T01:{minute:02}:00Z,1.5,50\n8,2022-02-01T01:{minute:02}:00Z,2.5,60\n"
            ),
        );
        process(
            &h.ctx,
            &Delivery::input_file(&path, Disposition::LeaveInPlace),
        )
        .await
        .unwrap();
    }
    assert_sensor_state_matches_the_readings(&h.client).await;
    for (table, column) in [("hourly_stats", "hour"), ("daily_stats", "day")] {
        assert_eq!(
            h.count(&format!("SELECT count(*) FROM sensor_etl.{table}"))
                .await,
            2,
            "{table}: one row per sensor"
        );
        let second = h
            .client
            .execute(
                &format!("INSERT INTO sensor_etl.{table} SELECT * FROM sensor_etl.{table} LIMIT 1"),
                &[],
            )
            .await
            .expect_err("a second row for a bucket is refused");
        assert_eq!(
            second.code(),
            Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION),
            "{table}: {second}"
        );
        h.client
            .batch_execute("SET enable_seqscan = off")
            .await
            .unwrap();
        let plan = plan_of(
            &h.client,
            &format!(
                "DELETE FROM sensor_etl.{table} t \
                 USING unnest('{{7}}'::int8[], '{{2022-02-01 00:00Z}}'::timestamptz[]) AS k(s, b) \
                 WHERE t.sensor_id = k.s AND t.{column} = k.b"
            ),
        )
        .await;
        assert!(
            plan.contains(&format!("Index Scan using {table}_pkey")),
            "{plan}"
        );
        h.client
            .batch_execute("RESET enable_seqscan")
            .await
            .unwrap();
    }
}

/// A file whose every line has its own coordinates (a moving sensor) keeps them in the rows
/// instead of filling the positions dictionary, and reads back the same through the view.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_distinct_positions_stay_in_the_rows() {
    let h = Harness::new().await;
    let path = h.workspace.path("in/moving_sds011.csv");
    let mut text = String::from("sensor_id;sensor_type;location;lat;lon;timestamp;P1;P2\n");
    let lines: u32 = 1_000;
    for i in 0..lines {
        text.push_str(&format!(
            "77;SDS011;{};{:.4};23.3;2023-05-01T{:02}:{:02}:{:02};{}.5;3\n",
            500 + i % 3,
            42.0 + f64::from(i) * 0.0001,
            i / 3600,
            (i / 60) % 60,
            i % 60,
            i % 40
        ));
    }
    write(&path, &text);
    let report = process(
        &h.ctx,
        &Delivery::input_file(&path, Disposition::LeaveInPlace),
    )
    .await
    .unwrap();
    assert_eq!(report.rows.loaded, u64::from(lines));
    assert_eq!(h.count("SELECT count(*) FROM positions").await, 0);
    assert_eq!(
        h.count("SELECT count(*) FROM readings WHERE position_id IS NULL AND lat IS NOT NULL")
            .await,
        i64::from(lines)
    );
    // Each line reads back with its own location and coordinates.
    assert_eq!(
        h.count(
            "SELECT count(*) FROM v_readings \
             WHERE location_id = 500 + (line - 2) % 3 \
               AND abs(lat - (42.0 + (line - 2) * 0.0001)) < 1e-9 AND lon = 23.3"
        )
        .await,
        2 * i64::from(lines)
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
async fn latest_values_and_sensor_spans_follow_every_delivery() {
    // Small chunks: the streamed file's latest values are merged across chunks.
    let h = Harness::with_config(|raw| raw.chunk_rows = 7).await;
    let dir = h.workspace.path("in");
    let streamed = dir.join("a_dht22.csv");
    let mut text = String::from("sensor_id;location;lat;lon;timestamp;temperature;humidity\n");
    for minute in 0..30 {
        // Sensor 1 moves from location 10 to 11 half-way; sensor 2 has no humidity at the end.
        let (location, lat) = if minute < 15 { (10, 50.0) } else { (11, 51.0) };
        text.push_str(&format!(
            "1;{location};{lat};8.0;2020-03-01T00:{minute:02}:00;{}.5;{}\n",
            minute,
            40 + minute
        ));
        let humidity = if minute < 25 {
            format!("{}", 60 + minute)
        } else {
            String::new()
        };
        text.push_str(&format!(
            "2;20;52.0;9.0;2020-03-01T00:{minute:02}:30;{}.25;{humidity}\n",
            minute
        ));
    }
    write(&streamed, &text);
    let report = process(
        &h.ctx,
        &Delivery::input_file(&streamed, Disposition::LeaveInPlace),
    )
    .await
    .unwrap();
    assert_eq!(report.rows.loaded, 60);
    assert_sensor_state_matches_the_readings(&h.client).await;

    // A group: older readings of sensor 1 (nothing latest changes), newer ones of sensor 2,
    // sensor 2's newest reading again in another file (a duplicate, stored once), and a new
    // sensor 3 in two files of the group.
    let older = dir.join("b_dht22.csv");
    write(&older, "sensor_id;location;lat;lon;timestamp;temperature;humidity\n1;10;50.0;8.0;2020-02-01T00:00:00;1;2\n");
    let newer = dir.join("c_dht22.csv");
    write(&newer, "sensor_id;location;lat;lon;timestamp;temperature;humidity\n2;21;52.5;9.5;2020-03-02T00:00:00;7;70\n3;30;53.0;10.0;2020-03-01T00:00:00;3;30\n");
    let tie = dir.join("d_dht22.csv");
    write(&tie, "sensor_id;location;lat;lon;timestamp;temperature;humidity\n2;21;52.5;9.5;2020-03-02T00:00:00;7;70\n3;30;53.0;10.0;2020-03-01T00:05:00;4;\n");
    let deliveries: Vec<Delivery> = [&older, &newer, &tie]
        .into_iter()
        .map(|path| Delivery::input_file(path, Disposition::LeaveInPlace))
        .collect();
    let outcomes = sensor_etl::pipeline::process_group(&h.ctx, &deliveries)
        .await
        .unwrap();
    assert!(outcomes.iter().all(|(_, outcome)| outcome.is_ok()));
    assert_sensor_state_matches_the_readings(&h.client).await;
    let latest: (f64, i64) = {
        let row = h
            .client
            .query_one(
                "SELECT value, readings FROM v_latest JOIN v_sensors USING (sensor_id) \
                 WHERE sensor_id = 2 AND measurement = 'temperature'",
                &[],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!(latest, (7.0, 55 + 2), "the repeated reading is stored once");

    // Another value for that reading in a group: the group goes file by file (where the line
    // is rejected with its reason), nothing of it committed.
    let conflicting = dir.join("e_dht22.csv");
    write(&conflicting, "sensor_id;location;lat;lon;timestamp;temperature;humidity\n2;21;52.5;9.5;2020-03-02T00:00:00;8;80\n");
    let files = h.count("SELECT count(*) FROM v_files").await;
    let failed = sensor_etl::pipeline::process_group(
        &h.ctx,
        &[Delivery::input_file(
            &conflicting,
            Disposition::LeaveInPlace,
        )],
    )
    .await;
    assert!(
        matches!(failed, Err(sensor_etl::error::Error::GroupConflict(_))),
        "{failed:?}"
    );
    assert_eq!(h.count("SELECT count(*) FROM v_files").await, files);
    let alone = process(
        &h.ctx,
        &Delivery::input_file(&conflicting, Disposition::LeaveInPlace),
    )
    .await
    .unwrap();
    assert_eq!((alone.rows.loaded, alone.rows.rejected), (0, 1));
    assert_sensor_state_matches_the_readings(&h.client).await;
}

/// Readings loaded before the per-sensor state existed get theirs from its migration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrading_fills_the_per_sensor_state_from_the_readings() {
    let url = crate::support::fresh_database().await;
    let pool = sensor_etl::store::build_pool(&url, 2).unwrap();
    sensor_etl::store::migrate_to(&pool, 9).await.unwrap();
    let client = crate::support::connect(&url).await;
    client
        .batch_execute(
            "INSERT INTO files (content_sha256, file_name, size_bytes, status, rows_read, rows_loaded, \
                                rows_rejected, reading_count, received_at) \
             VALUES ('abc', 'old_dht22.csv', 100, 'loaded', 4, 4, 0, 7, now()), \
                    ('def', 'older_dht22.csv', 100, 'loaded', 1, 1, 0, 2, now());
             INSERT INTO measurements (sensor_type, name, unit) \
             VALUES ('DHT22', 'temperature', '°C'), ('DHT22', 'humidity', '%RH');
             INSERT INTO measurement_sets (measurement_ids) VALUES ('{1,2}'), ('{1}');
             INSERT INTO positions (location_id, lat, lon) VALUES (11, 42.5, 23.25), (12, 43.0, 24.0);
             INSERT INTO sensors (sensor_id, sensor_type, first_file_id) VALUES (7, 'DHT22', 1), (8, 'DHT22', 1);
             INSERT INTO readings (ts, file_id, sensor_id, line, set_id, position_id, \"values\", location_id, lat, lon)
             VALUES ('2020-01-01 00:00:00Z', 1, 7, 2, 1, 1, '{20.5,55}', NULL, NULL, NULL),
                    ('2020-01-01 00:10:00Z', 1, 7, 3, 2, 2, '{21.5}', NULL, NULL, NULL),
                    ('2020-01-01 00:05:00Z', 1, 8, 4, 1, NULL, '{19,60}', 13, 44.0, 25.0),
                    ('2020-01-01 00:07:00Z', 1, 8, 5, 1, 1, '{18,61}', NULL, NULL, NULL),
                    ('2019-12-31 00:00:00Z', 2, 7, 2, 1, 1, '{1,2}', NULL, NULL, NULL);",
        )
        .await
        .unwrap();
    sensor_etl::store::migrate(&pool).await.unwrap();
    assert_sensor_state_matches_the_readings(&client).await;
    let sensor_7: (f64, i64) = {
        let row = client
            .query_one(
                "SELECT s.lat, s.readings FROM v_sensors s WHERE sensor_id = 7",
                &[],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!(
        sensor_7,
        (43.0, 5),
        "the position of its latest reading; 5 readings"
    );
}

/// The analyst's search path holds the views and nothing else of sensor-etl's: the tables and
/// partitions live in the schema `sensor_etl`, and the views answer a plain connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_public_schema_holds_only_the_views() {
    let h = Harness::new().await;
    let path = h.workspace.path("in/station_dht22.csv");
    write(
        &path,
        "sensor_id,timestamp,temperature,humidity\n7,2020-05-01T10:00:00,20.5,50\n\
         7,2020-05-01T10:01:00,abc,50\n",
    );
    process(
        &h.ctx,
        &Delivery::input_file(&path, Disposition::LeaveInPlace),
    )
    .await
    .unwrap();
    let (plain, connection) = tokio_postgres::connect(&h.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let tables: Vec<String> = plain
        .query(
            "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(tables, Vec::<String>::new(), "no table in public");
    let internal: i64 = plain
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'sensor_etl'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        internal > 50,
        "tables and partitions in sensor_etl: {internal}"
    );
    for view in [
        "v_files",
        "v_readings",
        "v_aggregates",
        "v_rejects",
        "v_sensors",
        "v_latest",
        "v_hourly",
        "v_deliveries",
    ] {
        let rows: i64 = plain
            .query_one(&format!("SELECT count(*) FROM {view}"), &[])
            .await
            .unwrap()
            .get(0);
        assert!(rows > 0, "{view} answers a plain connection");
    }
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
