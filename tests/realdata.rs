//! End to end over every file of `../shared/realdata` (skipped when the folder is absent):
//! conservation per file, specific known outcomes, values against the CSV, aggregates against
//! the readings they summarize, quarantine bytes, and re-delivery under new names.

use std::collections::HashMap;
use std::path::PathBuf;

use sensor_etl::delivery::Disposition;
use sensor_etl::sources::files::{collect_inputs, ingest_files};
use tokio_util::sync::CancellationToken;

use crate::support::{data_rows, deliver, realdata_dir, Harness};

fn file_named<'a>(files: &'a [PathBuf], name: &str) -> &'a PathBuf {
    files
        .iter()
        .find(|p| p.file_name().unwrap() == name)
        .unwrap_or_else(|| panic!("{name} not in realdata"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_real_file_is_accounted_for() {
    let Some(dir) = realdata_dir() else {
        // In CI the real files must be there: a missing folder fails instead of passing.
        assert!(
            std::env::var("CI").is_err(),
            "../shared/realdata is missing under CI=true"
        );
        eprintln!("../shared/realdata not present; skipping");
        return;
    };
    let h = Harness::new().await;
    let (files, _) = collect_inputs(&[dir], false);
    assert!(
        files.len() >= 80,
        "expected the real files, found {}",
        files.len()
    );
    let cancel = CancellationToken::new();
    let summary = ingest_files(
        &h.ctx,
        &files,
        Disposition::LeaveInPlace,
        &cancel,
        |_, _| {},
    )
    .await;
    assert_eq!(summary.failed, 0);
    assert_eq!(summary.duplicate, 0);

    // Conservation, per file, against an independent count of data lines and against the views.
    let rows = h
        .client
        .query(
            "SELECT f.file_name, f.rows_read, f.rows_loaded, f.rows_rejected, f.status, \
             (SELECT count(DISTINCT line) FROM v_readings r WHERE r.file_id = f.file_id), \
             (SELECT count(DISTINCT line) FROM v_rejects j WHERE j.file_id = f.file_id) \
             FROM v_files f",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), files.len());
    let mut by_name = HashMap::new();
    for row in &rows {
        let name: String = row.get(0);
        let (read, loaded, rejected): (i64, i64, i64) = (row.get(1), row.get(2), row.get(3));
        let (reading_lines, reject_lines): (i64, i64) = (row.get(5), row.get(6));
        let path = file_named(&files, &name);
        assert_eq!(read as u64, data_rows(path), "{name}: rows read");
        assert_eq!(read, loaded + rejected, "{name}: conservation");
        assert_eq!(reading_lines, loaded, "{name}: loaded rows in v_readings");
        assert_eq!(reject_lines, rejected, "{name}: rejected rows in v_rejects");
        by_name.insert(name, (row.get::<_, String>(4), loaded, rejected));
    }

    // The truncated SDS011 file: 124 rows load, line 126 is rejected, bytes kept in quarantine.
    assert_eq!(
        by_name["2019-01-17_sds011_sensor_5331.csv"],
        ("partially_loaded".to_owned(), 124, 1)
    );
    let codes = h
        .client
        .query(
            "SELECT j.line, j.code FROM v_rejects j JOIN v_files f USING (file_id) \
             WHERE f.file_name = '2019-01-17_sds011_sensor_5331.csv'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(codes.len(), 1);
    assert_eq!(
        (
            codes[0].get::<_, i64>(0),
            codes[0].get::<_, String>(1).as_str()
        ),
        (126, "field_count")
    );
    let quarantined = std::fs::read_dir(h.workspace.path("quarantine"))
        .unwrap()
        .flatten()
        .find(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.starts_with("2019-01-17_sds011_sensor_5331.") && n.ends_with(".rejected.csv")
        })
        .expect("rejected rows of the truncated file are in quarantine");
    let source = std::fs::read(file_named(&files, "2019-01-17_sds011_sensor_5331.csv")).unwrap();
    let bytes = std::fs::read(quarantined.path()).unwrap();
    let header_end = source.iter().position(|b| *b == b'\n').unwrap() + 1;
    assert_eq!(
        &bytes[..header_end],
        &source[..header_end],
        "original header line"
    );
    assert_eq!(
        &bytes[header_end..],
        b"5331;SDS011;3121;\n",
        "the truncated row, byte for byte"
    );

    // The spreadsheet-mangled SPS30 file loads nothing; the madavi export is rejected whole.
    let (status, loaded, rejected) = &by_name["2021-04-26_sps30_sensor_61354.csv"];
    assert_eq!((status.as_str(), *loaded, *rejected), ("rejected", 0, 570));
    let (status, loaded, _) = &by_name["data-esp8266-3654427-2018-01-03.csv"];
    assert_eq!((status.as_str(), *loaded), ("rejected", 0));
    let madavi_error: String = h
        .client
        .query_one(
            "SELECT error FROM v_files WHERE file_name LIKE 'data-esp8266%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        madavi_error.starts_with("unsupported_layout"),
        "{madavi_error}"
    );

    // Kaggle sample: 90 rows above 50 °C rejected; pressure converted from Pa to hPa.
    assert_eq!(
        by_name["air_quality_dataset_sample.csv"],
        ("partially_loaded".to_owned(), 19910, 90)
    );
    let out_of_range = h
        .count(
            "SELECT count(*) FROM v_rejects j JOIN v_files f USING (file_id) \
             WHERE f.file_name = 'air_quality_dataset_sample.csv' AND code = 'out_of_range' AND column_name = 'temperature'",
        )
        .await;
    assert_eq!(out_of_range, 90);
    check_values_against_csv(&h, file_named(&files, "air_quality_dataset_sample.csv")).await;
    check_values_against_csv(&h, file_named(&files, "2024-07-12_bme280_sensor_82313.csv")).await;

    // A sensor that moves within a file keeps the location of each reading.
    let locations = h
        .count(
            "SELECT count(DISTINCT location_id) FROM v_readings r JOIN v_files f USING (file_id) \
             WHERE f.file_name = '2024-07-12_bme280_sensor_82313.csv'",
        )
        .await;
    assert_eq!(locations, 2);

    // The empty-boot-row file: the duplicate timestamp with no measurements is rejected with
    // both reasons.
    let boot = h
        .client
        .query(
            "SELECT code FROM v_rejects j JOIN v_files f USING (file_id) \
             WHERE f.file_name = '2017-08-30_sds011_sensor_5331.csv' ORDER BY code",
            &[],
        )
        .await
        .unwrap();
    let boot: Vec<String> = boot.iter().map(|r| r.get(0)).collect();
    assert_eq!(boot, vec!["all_measurements_empty", "duplicate_key"]);

    // Every stored line has its required columns, its measurement set and position (as an id
    // or in the row, never both) are registered, and the set's ids and the values pair up
    // one to one.
    assert_eq!(
        h.count(
            "SELECT count(*) FROM readings r \
             LEFT JOIN measurement_sets s USING (set_id) LEFT JOIN positions p USING (position_id) \
             WHERE r.ts IS NULL OR r.file_id IS NULL OR r.sensor_id IS NULL OR r.line IS NULL \
                OR s.set_id IS NULL OR (r.position_id IS NOT NULL AND p.position_id IS NULL) \
                OR (r.position_id IS NOT NULL AND NOT (r.location_id, r.lat, r.lon) IS NULL) \
                OR cardinality(s.measurement_ids) <> cardinality(r.\"values\") \
                OR array_position(r.\"values\", NULL) IS NOT NULL"
        )
        .await,
        0
    );

    // Every reference the bulk-written tables hold resolves (they carry no foreign keys).
    assert_eq!(
        h.count(
            "SELECT (SELECT count(*) FROM aggregates a WHERE NOT EXISTS \
                       (SELECT 1 FROM files f WHERE f.file_id = a.file_id) \
                       OR NOT EXISTS (SELECT 1 FROM measurements m WHERE m.measurement_id = a.measurement_id)) \
                  + (SELECT count(*) FROM rejects r WHERE NOT EXISTS \
                       (SELECT 1 FROM files f WHERE f.file_id = r.file_id)) \
                  + (SELECT count(*) FROM readings r WHERE NOT EXISTS \
                       (SELECT 1 FROM files f WHERE f.file_id = r.file_id)) \
                  + (SELECT count(*) FROM sensors s WHERE NOT EXISTS \
                       (SELECT 1 FROM files f WHERE f.file_id = s.first_file_id)) \
                  + (SELECT count(*) FROM locations l WHERE NOT EXISTS \
                       (SELECT 1 FROM files f WHERE f.file_id = l.first_file_id))"
        )
        .await,
        0
    );
    assert!(h.count("SELECT count(*) FROM rejects").await > 0);

    // Aggregates agree with the readings they summarize, at both scopes.
    let mismatches = h
        .count(
            "WITH r AS (SELECT file_id, sensor_type, measurement, count(*) n, min(value) mn, max(value) mx, \
                    avg(value) mean, stddev_samp(value) sd, min(ts) f, max(ts) l \
                    FROM v_readings GROUP BY 1, 2, 3) \
             SELECT count(*) FROM v_aggregates a FULL JOIN r \
               ON a.file_id = r.file_id AND a.sensor_type = r.sensor_type AND a.measurement = r.measurement \
             WHERE a.scope IS DISTINCT FROM 'sensor' AND (a.n IS DISTINCT FROM r.n OR a.min IS DISTINCT FROM r.mn \
               OR a.max IS DISTINCT FROM r.mx OR abs(a.mean - r.mean) > 1e-9 * greatest(abs(r.mean), 1) \
               OR abs(coalesce(a.stddev, 0) - coalesce(r.sd, 0)) > 1e-9 * greatest(coalesce(r.sd, 0), 1) \
               OR (a.stddev IS NULL) <> (r.sd IS NULL) OR a.first_ts <> r.f OR a.last_ts <> r.l)",
        )
        .await;
    assert_eq!(
        mismatches, 0,
        "sensor-type aggregates differ from the readings"
    );
    let sensor_mismatches = h
        .count(
            "WITH r AS (SELECT file_id, sensor_id, location_id, measurement, count(*) n, min(value) mn, max(value) mx \
                    FROM v_readings GROUP BY 1, 2, 3, 4) \
             SELECT count(*) FROM (SELECT * FROM v_aggregates WHERE scope = 'sensor') a FULL JOIN r \
               ON a.file_id = r.file_id AND a.sensor_id = r.sensor_id \
               AND a.location_id IS NOT DISTINCT FROM r.location_id AND a.measurement = r.measurement \
             WHERE a.n IS DISTINCT FROM r.n OR a.min IS DISTINCT FROM r.mn OR a.max IS DISTINCT FROM r.mx",
        )
        .await;
    assert_eq!(
        sensor_mismatches, 0,
        "sensor aggregates differ from the readings"
    );

    // The same bytes under new names load nothing new.
    let readings_before = h.count("SELECT count(*) FROM v_readings").await;
    let inbox = h.workspace.path("again");
    let renamed: Vec<PathBuf> = files
        .iter()
        .take(10)
        .enumerate()
        .map(|(i, path)| deliver(path, &inbox, &format!("renamed_{i}.csv")))
        .collect();
    let again = ingest_files(
        &h.ctx,
        &renamed,
        Disposition::LeaveInPlace,
        &cancel,
        |_, _| {},
    )
    .await;
    assert_eq!(again.duplicate, 10);
    assert_eq!(
        h.count("SELECT count(*) FROM v_readings").await,
        readings_before
    );
    assert_eq!(
        h.count("SELECT count(*) FROM v_files").await,
        files.len() as i64
    );
    assert_eq!(
        h.count("SELECT count(*) FROM file_deliveries WHERE outcome = 'duplicate'")
            .await,
        10
    );
}

/// Every loaded value of a comma- or semicolon-separated file equals the CSV value in
/// canonical units, line by line.
async fn check_values_against_csv(h: &Harness, path: &PathBuf) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let header = lines.next().unwrap();
    let delimiter = if header.matches(';').count() > header.matches(',').count() {
        ';'
    } else {
        ','
    };
    let columns: Vec<&str> = header.split(delimiter).collect();
    let column = |name: &str| columns.iter().position(|c| *c == name).unwrap();
    let (pressure, temperature, humidity) = (
        column("pressure"),
        column("temperature"),
        column("humidity"),
    );
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    let rows = h
        .client
        .query(
            "SELECT r.line, r.measurement, r.value, r.unit FROM v_readings r JOIN v_files f USING (file_id) \
             WHERE f.file_name = $1",
            &[&name],
        )
        .await
        .unwrap();
    assert!(!rows.is_empty());
    let all_lines: Vec<&str> = text.lines().collect();
    for row in rows {
        let line: i32 = row.get(0);
        let measurement: String = row.get(1);
        let value: f64 = row.get(2);
        let unit: String = row.get(3);
        let fields: Vec<&str> = all_lines[line as usize - 1].split(delimiter).collect();
        let (index, factor, expected_unit) = match measurement.as_str() {
            "pressure" => (pressure, 0.01, "hPa"),
            "temperature" => (temperature, 1.0, "°C"),
            "humidity" => (humidity, 1.0, "%RH"),
            other => panic!("unexpected measurement {other}"),
        };
        let csv_value: f64 = fields[index].trim().parse().unwrap();
        assert!(
            (value - csv_value * factor).abs() < 1e-9,
            "{name} line {line} {measurement}: {value} vs {csv_value}"
        );
        assert_eq!(unit, expected_unit);
    }
}
