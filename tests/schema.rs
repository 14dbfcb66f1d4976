//! The store's tables and views against a real PostgreSQL: the COPY round trip with NULLs,
//! sensor types added by configuration alone, upgrades that keep every reading, the plans of
//! the common questions, one row per statistics bucket (written part by part when a delivery
//! has many), positions kept in the rows, latest values and spans (updated in place), and a
//! public schema that holds only the views.

use sensor_etl::config::RawMeasurement;
use sensor_etl::config::RawSensorType;
use sensor_etl::delivery::{Delivery, Disposition};
use sensor_etl::pipeline::process;
use sensor_etl::store::ledger::FileStatus;

use crate::support::fixtures::assert_sensor_state_matches_the_readings;
use crate::support::fixtures::write_file;
use crate::support::Harness;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_round_trip_keeps_values_and_nulls() {
    let h = Harness::new().await;
    let path = h.workspace.path("in/station_dht22.csv");
    let report = h.load(&path, "sensor_id,timestamp,temperature,humidity\n7,2020-05-01T10:00:00+02:00,-3.25,\n7,2020-05-01 08:01:00.5,21.5,55\n").await;
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
    let report = h.load(&path, "sensor_id;sensor_type;timestamp;CO2_ppm\n9;SCD30;2024-01-01T00:00:00;415\n9;SCD30;2024-01-01T00:01:00;20000\n").await;
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
    h.load(&path, &text).await;
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
        h.load(
            &path,
            &format!(
                "sensor_id,timestamp,temperature,humidity\n\
                 7,2022-02-01T01:{minute:02}:00Z,1.5,50\n8,2022-02-01T01:{minute:02}:00Z,2.5,60\n"
            ),
        )
        .await;
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
    let report = h.load(&path, &text).await;
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
    write_file(&streamed, &text);
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
    write_file(&older, "sensor_id;location;lat;lon;timestamp;temperature;humidity\n1;10;50.0;8.0;2020-02-01T00:00:00;1;2\n");
    let newer = dir.join("c_dht22.csv");
    write_file(&newer, "sensor_id;location;lat;lon;timestamp;temperature;humidity\n2;21;52.5;9.5;2020-03-02T00:00:00;7;70\n3;30;53.0;10.0;2020-03-01T00:00:00;3;30\n");
    let tie = dir.join("d_dht22.csv");
    write_file(&tie, "sensor_id;location;lat;lon;timestamp;temperature;humidity\n2;21;52.5;9.5;2020-03-02T00:00:00;7;70\n3;30;53.0;10.0;2020-03-01T00:05:00;4;\n");
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
    write_file(&conflicting, "sensor_id;location;lat;lon;timestamp;temperature;humidity\n2;21;52.5;9.5;2020-03-02T00:00:00;8;80\n");
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

/// A delivery with more statistics cells than are kept pending writes them part by part; lines
/// that come late for a bucket already written are merged with it, and every view stays
/// exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statistics_written_during_a_delivery_take_late_lines_exactly() {
    let h = Harness::with_config(|raw| raw.chunk_rows = 5_000).await;
    let path = h.workspace.path("in").join("hours_dht22.csv");
    // 1,000 sensors, a reading an hour for 60 hours (63,000 cells with the days), then a
    // late reading of the first hour of each (written by then) and one of the first day.
    let mut text = String::from("sensor_id;location;lat;lon;timestamp;temperature;humidity\n");
    let line = |text: &mut String, sensor: u32, hour: u32, minute: u32| {
        let (day, hour) = (1 + hour / 24, hour % 24);
        text.push_str(&format!(
            "{sensor};{sensor};50.0;8.0;2020-03-{day:02}T{hour:02}:{minute:02}:00;{}.{};{}\n",
            (sensor + hour) % 30,
            minute % 10,
            40 + (sensor * 7 + hour) % 50
        ));
    };
    for hour in 0..60 {
        for sensor in 1..=1_000 {
            line(&mut text, sensor, hour, 0);
        }
    }
    for sensor in 1..=1_000 {
        line(&mut text, sensor, 0, 30);
        line(&mut text, sensor, 5, 45);
    }
    let report = h.load(&path, &text).await;
    assert_eq!((report.rows.loaded, report.rows.rejected), (62_000, 0));
    assert_eq!(
        h.count("SELECT count(*) FROM sensor_etl.hourly_stats")
            .await,
        60_000,
        "one row per sensor and hour"
    );
    assert_eq!(
        h.count("SELECT count(*) FROM sensor_etl.daily_stats").await,
        3_000
    );
    assert_sensor_state_matches_the_readings(&h.client).await;
}

/// The per-sensor state is updated by every delivery of its sensors: the new versions of its
/// rows go in the pages they are in (no index changes), so the tables do not grow with
/// updates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_sensor_state_is_updated_in_place() {
    let h = Harness::new().await;
    let dir = h.workspace.path("in");
    let pages = |table: &'static str| {
        let client = &h.client;
        async move {
            client
                .query_one(
                    &format!("SELECT pg_relation_size('sensor_etl.{table}') / 8192"),
                    &[],
                )
                .await
                .unwrap()
                .get::<_, i64>(0)
        }
    };
    let mut sizes = Vec::new();
    for minute in 0..3 {
        let mut text = String::from("sensor_id;location;lat;lon;timestamp;temperature;humidity\n");
        for sensor in 1..=400 {
            text.push_str(&format!(
                "{sensor};{sensor};50.0;8.0;2020-03-01T00:{minute:02}:00;{}.5;{}\n",
                minute + 10,
                40 + minute
            ));
        }
        let report = h
            .load(&dir.join(format!("round_{minute}_dht22.csv")), &text)
            .await;
        assert_eq!(report.rows.loaded, 400);
        sizes.push((pages("latest_values").await, pages("sensor_spans").await));
    }
    assert!(sizes[0].0 > 1 && sizes[0].1 > 1, "{sizes:?}");
    // Every row was updated twice; written anew each time, the tables would be three times
    // their size. A row version that does not fit its page may still take a new one.
    let within = |first: i64, last: i64| last <= first + first / 10 + 1;
    assert!(
        within(sizes[0].0, sizes[2].0) && within(sizes[0].1, sizes[2].1),
        "the tables grew with updates (pages of latest_values, sensor_spans): {sizes:?}"
    );
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
    h.load(
        &path,
        "sensor_id,timestamp,temperature,humidity\n7,2020-05-01T10:00:00,20.5,50\n\
         7,2020-05-01T10:01:00,abc,50\n",
    )
    .await;
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
