//! Exactly once per reading: a reading whose sensor and time are already stored is not stored
//! again, whichever delivery brings it. The same values are counted as duplicates
//! (`v_files.rows_duplicate`); other values are a conflict, settled by `on_conflict`: the first
//! stored stays and the line is rejected (`conflicting_reading`), or the new value replaces it
//! and the old one is kept in `v_replaced`. Also across the files of one group and for two
//! deliveries loaded at once.

use std::path::{Path, PathBuf};

use sensor_etl::config::RawConfig;
use sensor_etl::delivery::{Delivery, Disposition};
use sensor_etl::pipeline::{process, process_group, process_with_retry};

use crate::support::fixtures::assert_sensor_state_matches_the_readings;
use crate::support::fixtures::write_file;
use crate::support::Harness;

const HEADER: &str = "sensor_id;sensor_type;location;lat;lon;timestamp;P1;P2\n";

fn line(sensor: i64, minute: u32, p1: f64, p2: f64) -> String {
    format!(
        "{sensor};SDS011;{};48.1;11.5;2021-05-01T{:02}:{:02}:00;{p1};{p2}\n",
        100 + sensor,
        minute / 60,
        minute % 60
    )
}

fn delivery(path: &Path) -> Delivery {
    Delivery::input_file(path, Disposition::LeaveInPlace)
}

/// Keys stored more than once, rows read against rows accounted for, and the per-sensor
/// state against the readings: what must hold after any sequence of deliveries.
async fn assert_once_and_conserved(h: &Harness) {
    assert_eq!(
        h.count(
            "SELECT count(*) FROM (SELECT 1 FROM v_readings \
             GROUP BY sensor_id, measurement, ts HAVING count(*) > 1) d"
        )
        .await,
        0,
        "no (sensor, measurement, time) twice"
    );
    assert_eq!(
        h.count(
            "SELECT count(*) FROM v_files \
             WHERE rows_read <> rows_loaded + rows_rejected + rows_duplicate"
        )
        .await,
        0,
        "rows read = loaded + rejected + duplicate, per delivery"
    );
    assert_eq!(
        h.count("SELECT coalesce(sum(rows_loaded), 0)::int8 FROM v_files")
            .await,
        h.count("SELECT count(DISTINCT (file_id, line))::int8 FROM v_readings")
            .await
            + h.count("SELECT count(*) FROM sensor_etl.replaced_readings")
                .await,
        "every loaded line is stored, or kept as replaced"
    );
    assert_sensor_state_matches_the_readings(&h.client).await;
}

async fn file_counts(h: &Harness, name: &str) -> (i64, i64, i64, i64) {
    let row = h
        .client
        .query_one(
            "SELECT rows_read, rows_loaded, rows_rejected, rows_duplicate \
             FROM v_files WHERE file_name = $1",
            &[&name],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1), row.get(2), row.get(3))
}

/// The first file, then the same readings under other bytes: a corrected value, a new line,
/// the rest unchanged.
fn first_and_corrected(h: &Harness) -> (PathBuf, PathBuf) {
    let dir = h.workspace.path("in");
    let mut first = String::from(HEADER);
    let mut corrected = String::from(HEADER);
    for minute in 0..5 {
        first.push_str(&line(1, minute, 10.0 + f64::from(minute), 5.0));
        // Line 4 of the corrected file (minute 2) carries another P1.
        let p1 = if minute == 2 {
            99.5
        } else {
            10.0 + f64::from(minute)
        };
        corrected.push_str(&line(1, minute, p1, 5.0));
    }
    corrected.push_str(&line(1, 5, 15.0, 5.0));
    (
        write_file(&dir.join("first_sds011.csv"), &first),
        write_file(&dir.join("corrected_sds011.csv"), &corrected),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrected_file_keeps_the_first_value_and_counts_the_rest_as_duplicates() {
    let h = Harness::new().await;
    let (first, corrected) = first_and_corrected(&h);
    process(&h.ctx, &delivery(&first)).await.unwrap();
    let report = process(&h.ctx, &delivery(&corrected)).await.unwrap();
    assert_eq!(report.rows.duplicate, 4);
    assert_eq!(report.rows.rejected, 1);
    assert_eq!(report.rows.loaded, 1);
    assert_eq!(file_counts(&h, "corrected_sds011.csv").await, (6, 1, 1, 4));
    // 6 lines of two measurements, each once; the stored P1 at minute 2 is the first one.
    assert_eq!(h.count("SELECT count(*) FROM v_readings").await, 12);
    // `sensor-etl status` (and `/v1/summary`) count them too.
    let summary = sensor_etl::store::status::summary(&h.client, 5)
        .await
        .unwrap();
    let already: i64 = summary.by_status.iter().map(|s| s.rows_duplicate).sum();
    assert_eq!(already, 4);
    assert_eq!(
        h.count(
            "SELECT (value * 10)::int8 FROM v_readings \
             WHERE measurement = 'pm10' AND ts = '2021-05-01T00:02:00Z'"
        )
        .await,
        120
    );
    let reject = h
        .client
        .query_one(
            "SELECT line, code, message FROM sensor_etl.rejects r \
             JOIN v_files f USING (file_id) WHERE f.file_name = 'corrected_sds011.csv'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(reject.get::<_, i64>(0), 4);
    assert_eq!(reject.get::<_, String>(1), "conflicting_reading");
    let message: String = reject.get(2);
    let first_id = h
        .count("SELECT file_id FROM v_files WHERE file_name = 'first_sds011.csv'")
        .await;
    assert!(
        message.contains(&format!("delivery {first_id}"))
            && message.contains("first_sds011.csv")
            && message.contains("12")
            && message.contains("99.5"),
        "the message names the delivery holding the stored value and that value: {message}"
    );
    // The conflicting line is in quarantine verbatim, with its reason.
    let quarantined = std::fs::read_dir(h.workspace.path("quarantine"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".rejected.csv"))
        .expect("a rejected.csv");
    let text = std::fs::read_to_string(quarantined).unwrap();
    assert_eq!(text, format!("{HEADER}{}", line(1, 2, 99.5, 5.0)));
    assert_once_and_conserved(&h).await;

    // The same readings a third time, as a group of two files: all duplicates.
    let dir = h.workspace.path("again");
    let a = write_file(
        &dir.join("a_sds011.csv"),
        &format!("{HEADER}{}", line(1, 0, 10.0, 5.0)),
    );
    let b = write_file(
        &dir.join("b_sds011.csv"),
        &format!(
            "{HEADER}{}{}",
            line(1, 1, 11.0, 5.0),
            line(1, 1, 11.0, 5.0).replace("48.1", "48.10")
        ),
    );
    let outcomes = process_group(&h.ctx, &[delivery(&a), delivery(&b)])
        .await
        .unwrap();
    for (_, outcome) in &outcomes {
        outcome.as_ref().unwrap();
    }
    assert_eq!(file_counts(&h, "a_sds011.csv").await, (1, 0, 0, 1));
    // b: one duplicate of the stored reading, one line repeating it within the file.
    assert_eq!(file_counts(&h, "b_sds011.csv").await, (2, 0, 1, 1));
    assert_eq!(h.count("SELECT count(*) FROM v_readings").await, 12);
    assert_once_and_conserved(&h).await;
}

/// A re-load compares each stored line with its line by measurement, whatever the column
/// order: the same values under a header in another order are duplicates; a line whose stored
/// reading lacks one of its values, or has one it lacks, conflicts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_are_compared_by_measurement_not_by_column_or_count() {
    let h = Harness::new().await;
    let dir = h.workspace.path("in");
    let mut first = String::from(HEADER);
    for minute in 0..4 {
        first.push_str(&line(1, minute, 10.0 + f64::from(minute), 5.0));
    }
    // Minute 4 stored with P1 only.
    first.push_str(&line(1, 4, 14.0, 5.0).replace(";14;5\n", ";14;\n"));
    let first = write_file(&dir.join("first_sds011.csv"), &first);
    process(&h.ctx, &delivery(&first)).await.unwrap();
    assert_eq!(h.count("SELECT count(*) FROM v_readings").await, 9);

    // The same readings with P2 before P1; minute 3 without its P2; minute 4 with a P2.
    let mut again = String::from("sensor_id;sensor_type;location;lat;lon;timestamp;P2;P1\n");
    for minute in 0..5 {
        let p2 = match minute {
            3 => String::new(),
            _ => "5".to_owned(),
        };
        again.push_str(&format!(
            "1;SDS011;101;48.1;11.5;2021-05-01T00:{minute:02}:00;{p2};{}\n",
            10 + minute
        ));
    }
    let again = write_file(&dir.join("again_sds011.csv"), &again);
    let report = process(&h.ctx, &delivery(&again)).await.unwrap();
    assert_eq!(
        report.rows.duplicate, 3,
        "minutes 0 to 2 are the stored readings"
    );
    assert_eq!(
        report.rows.rejected, 2,
        "minutes 3 and 4 differ in what they measure"
    );
    assert_eq!(file_counts(&h, "again_sds011.csv").await, (5, 0, 2, 3));
    let codes: Vec<(i64, String)> = h
        .client
        .query(
            "SELECT r.line, r.code FROM sensor_etl.rejects r JOIN v_files f USING (file_id) \
             WHERE f.file_name = 'again_sds011.csv' ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    assert_eq!(
        codes,
        vec![
            (5, "conflicting_reading".to_owned()),
            (6, "conflicting_reading".to_owned())
        ]
    );
    assert_eq!(h.count("SELECT count(*) FROM v_readings").await, 9);
    assert_once_and_conserved(&h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_replace_the_new_value_wins_and_the_old_one_is_kept() {
    let h = Harness::with_config(|raw: &mut RawConfig| raw.on_conflict = "replace".into()).await;
    let (first, corrected) = first_and_corrected(&h);
    process(&h.ctx, &delivery(&first)).await.unwrap();
    let report = process(&h.ctx, &delivery(&corrected)).await.unwrap();
    assert_eq!(
        (
            report.rows.loaded,
            report.rows.rejected,
            report.rows.duplicate
        ),
        (2, 0, 4)
    );
    assert_eq!(h.count("SELECT count(*) FROM v_readings").await, 12);
    assert_eq!(
        h.count(
            "SELECT (value * 10)::int8 FROM v_readings \
             WHERE measurement = 'pm10' AND ts = '2021-05-01T00:02:00Z'"
        )
        .await,
        995
    );
    let corrected_id = h
        .count("SELECT file_id FROM v_files WHERE file_name = 'corrected_sds011.csv'")
        .await;
    let first_id = h
        .count("SELECT file_id FROM v_files WHERE file_name = 'first_sds011.csv'")
        .await;
    let replaced = h
        .client
        .query(
            "SELECT measurement, value, file_id, line::int8, replaced_by FROM v_replaced \
             ORDER BY measurement",
            &[],
        )
        .await
        .unwrap();
    let replaced: Vec<(String, f64, i64, i64, i64)> = replaced
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect();
    assert_eq!(
        replaced,
        vec![
            ("pm10".to_owned(), 12.0, first_id, 4, corrected_id),
            ("pm2_5".to_owned(), 5.0, first_id, 4, corrected_id),
        ]
    );
    assert_once_and_conserved(&h).await;

    // The latest reading replaced by a line without PM2.5: v_latest follows for PM10, and
    // PM2.5's latest is the reading before.
    let dir = h.workspace.path("later");
    let latest = write_file(
        &dir.join("latest_sds011.csv"),
        &format!("{HEADER}1;SDS011;101;48.1;11.5;2021-05-01T00:05:00;7.25;\n"),
    );
    process(&h.ctx, &delivery(&latest)).await.unwrap();
    assert_eq!(
        h.count("SELECT (value * 100)::int8 FROM v_latest WHERE measurement = 'pm10'")
            .await,
        725
    );
    assert_eq!(
        h.count("SELECT extract(minute FROM ts)::int8 FROM v_latest WHERE measurement = 'pm2_5'")
            .await,
        4
    );
    assert_once_and_conserved(&h).await;
}

/// Two files with the same 4,000 readings (a quarter of them with other values), loaded at
/// once in small chunks, many times over: each reading is stored once, and every line of
/// both files is accounted for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_deliveries_of_the_same_readings_at_once_store_each_reading_once() {
    for policy in ["keep_first", "replace"] {
        let h = Harness::with_config(|raw: &mut RawConfig| {
            raw.chunk_rows = 250;
            raw.on_conflict = policy.into();
        })
        .await;
        let dir = h.workspace.path("in");
        for round in 0..3u32 {
            let mut left = String::from(HEADER);
            let mut right = String::from(HEADER);
            for minute in round * 200..(round + 1) * 200 {
                for sensor in 1..=20 {
                    left.push_str(&line(sensor, minute, f64::from(minute), 1.0));
                }
                // The right file lists the sensors the other way round.
                for sensor in (1..=20).rev() {
                    let p1 = if (minute + sensor as u32).is_multiple_of(4) {
                        999.0
                    } else {
                        f64::from(minute)
                    };
                    right.push_str(&line(sensor, minute, p1, 1.0));
                }
            }
            let left = write_file(&dir.join(format!("left{round}_sds011.csv")), &left);
            let right = write_file(&dir.join(format!("right{round}_sds011.csv")), &right);
            let cancel = tokio_util::sync::CancellationToken::new();
            let (left, right) = (delivery(&left), delivery(&right));
            let (a, b) = tokio::join!(
                process_with_retry(&h.ctx, &left, &cancel),
                process_with_retry(&h.ctx, &right, &cancel),
            );
            let (a, b) = (a.unwrap(), b.unwrap());
            assert_eq!(a.rows.read + b.rows.read, 8_000);
            let rows = 8_000 * i64::from(round + 1);
            assert_eq!(h.count("SELECT count(*) FROM v_readings").await, rows);
            // Whichever went first, the other found 3,000 equal lines and 1,000 others.
            assert_eq!(a.rows.duplicate + b.rows.duplicate, 3_000, "{policy}");
            match policy {
                "keep_first" => assert_eq!(a.rows.rejected + b.rows.rejected, 1_000),
                _ => assert_eq!(
                    h.count("SELECT count(*) FROM sensor_etl.replaced_readings")
                        .await,
                    1_000 * i64::from(round + 1)
                ),
            }
            assert_once_and_conserved(&h).await;
        }
    }
}

/// A month repackaged from real archive days (one header, the days' lines, as the monthly
/// Kaggle files are made): after the days, it stores nothing, and every daily mean stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_month_repackaged_from_real_archive_days_stores_nothing_again() {
    let Some(dir) = crate::support::realdata_dir() else {
        assert!(
            std::env::var("CI").is_err(),
            "../shared/realdata is missing under CI=true"
        );
        return;
    };
    let month = dir.join("archive_style/month_2018-12_aberdeen");
    let mut days: Vec<PathBuf> = std::fs::read_dir(&month)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with("_sds011_sensor_5331.csv"))
        .collect();
    days.sort();
    assert!(days.len() >= 28, "{} days", days.len());
    let h = Harness::new().await;
    let mut monthly = String::new();
    for day in &days {
        process(&h.ctx, &delivery(day)).await.unwrap();
        let text = std::fs::read_to_string(day).unwrap();
        let (header, rows) = text.split_once('\n').unwrap();
        if monthly.is_empty() {
            monthly.push_str(header);
            monthly.push('\n');
        }
        monthly.push_str(rows);
    }
    let before = daily_means(&h.client).await;
    let readings = h.count("SELECT count(*) FROM v_readings").await;
    assert!(before.len() >= 56, "two measurements a day");

    let repackaged = write_file(&h.workspace.path("in/2018-12_sds011_5331.csv"), &monthly);
    let report = process(&h.ctx, &delivery(&repackaged)).await.unwrap();
    assert_eq!(report.rows.loaded, 0);
    assert_eq!(
        report.rows.duplicate + report.rows.rejected,
        report.rows.read
    );
    assert!(report.rows.duplicate > 10_000, "{}", report.rows.duplicate);
    assert_eq!(h.count("SELECT count(*) FROM v_readings").await, readings);
    assert_eq!(
        daily_means(&h.client).await,
        before,
        "every daily mean as it was"
    );
    assert_once_and_conserved(&h).await;
}

type DailyMean = (chrono::DateTime<chrono::Utc>, String, i64, f64);

async fn daily_means(client: &tokio_postgres::Client) -> Vec<DailyMean> {
    client
        .query(
            "SELECT day, measurement, n, mean FROM v_daily ORDER BY day, measurement",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect()
}
