//! Data the tests share: the read API's fixture (two SDS011 sensors over three days) and a
//! server loaded with it, CSV bodies of a given size, and the check that the kept sensor
//! state (`v_latest`, `v_sensors`) agrees with the readings.

use std::net::SocketAddr;
use std::process::Child;

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::Value;

use super::http::{post, serve};
use super::{fresh_database, Workspace};

/// The time of reading `i` of the fixture: every 10 minutes from 2024-03-01T00:00Z.
pub fn fixture_ts(i: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 3, 1, 0, 0, 0).unwrap() + Duration::minutes(10 * i)
}

/// Three days of two SDS011 sensors (101 at location 11, 102 at 12), a reading every 10
/// minutes, with 2 rows out of range and 1 bad time; returns the CSV.
pub fn fixture_csv() -> String {
    let mut csv = String::from(
        "sensor_id;sensor_type;location;lat;lon;timestamp;P1;durP1;ratioP1;P2;durP2;ratioP2\n",
    );
    for i in 0..432 {
        for (sensor, location) in [(101, 11), (102, 12)] {
            let ts = fixture_ts(i).format("%Y-%m-%dT%H:%M:%S");
            let p1 = ((i * 7 + sensor) % 53) as f64 + 0.25;
            let p2 = ((i * 3 + sensor) % 29) as f64 / 2.0;
            let p1 = if i % 150 == 149 && sensor == 101 {
                -5.0
            } else {
                p1
            };
            let ts = if i == 200 && sensor == 102 {
                "2024-13-45T99:00:00".to_owned()
            } else {
                ts.to_string()
            };
            csv.push_str(&format!(
                "{sensor};SDS011;{location};50.{location};8.{location};{ts};{p1};;;{p2};;\n"
            ));
        }
    }
    csv
}

/// A server with the fixture loaded, and a second delivery for sensor 101: its first reading
/// again (a duplicate, not stored twice) and one between two of the fixture's.
pub async fn loaded_server(
    workspace: &Workspace,
    env: &[(&str, &str)],
) -> (String, Child, SocketAddr) {
    let url = fresh_database().await;
    let (server, addr) = serve(workspace, &url, env).await;
    let auth: Vec<String> = env
        .iter()
        .filter(|(key, _)| *key == "WRITER_TOKEN")
        .map(|(_, token)| format!("Authorization: Bearer {token}"))
        .collect();
    let mut headers = vec!["Content-Type: text/csv"];
    headers.extend(auth.iter().map(String::as_str));
    let (status, _, receipt) = post(
        addr,
        "/v1/ingest?name=sds011_fixture.csv",
        &headers,
        fixture_csv().as_bytes(),
    );
    assert_eq!(status, 200, "{receipt}");
    assert_eq!(receipt["rows_rejected"], 3, "{receipt}");
    let repeat =
        "sensor_id;sensor_type;location;lat;lon;timestamp;P1;durP1;ratioP1;P2;durP2;ratioP2\n\
                  101;SDS011;11;50.11;8.11;2024-03-01T00:00:00;48.25;;;7.0;;\n\
                  101;SDS011;11;50.11;8.11;2024-03-01T00:05:00;98.5;;;9.0;;\n";
    let (status, _, receipt) = post(
        addr,
        "/v1/ingest?name=sds011_repeat.csv",
        &headers,
        repeat.as_bytes(),
    );
    assert_eq!(status, 200, "{receipt}");
    assert_eq!(
        (&receipt["rows_loaded"], &receipt["rows_duplicate"]),
        (&Value::from(1), &Value::from(1)),
        "{receipt}"
    );
    (url, server, addr)
}

/// A CSV body of about `bytes` bytes for sensor `sensor`.
#[cfg(feature = "failpoints")]
pub fn body_of(sensor: u32, bytes: usize) -> Vec<u8> {
    let mut text = String::from("sensor_id;sensor_type;timestamp;temperature;humidity\n");
    let mut row = 0u32;
    while text.len() < bytes {
        text.push_str(&format!(
            "{sensor};DHT22;2021-01-{:02}T{:02}:{:02}:{:02};20.5;50\n",
            1 + row / 86_400,
            (row / 3600) % 24,
            (row / 60) % 60,
            row % 60
        ));
        row += 1;
    }
    text.into_bytes()
}

/// `v_latest` and `v_sensors` against the same questions asked of `v_readings`.
pub async fn assert_sensor_state_matches_the_readings(client: &tokio_postgres::Client) {
    let count = |sql: &'static str| async move {
        client.query_one(sql, &[]).await.unwrap().get::<_, i64>(0)
    };
    assert!(count("SELECT count(*) FROM v_latest").await > 0);
    let latest_mismatches = count(
        "SELECT count(*) FROM ( \
           SELECT DISTINCT ON (sensor_id, measurement) sensor_id, measurement, ts, value, \
                  location_id, lat, lon \
           FROM v_readings ORDER BY sensor_id, measurement, ts DESC, file_id, line) e \
         FULL JOIN v_latest l USING (sensor_id, measurement) \
         WHERE l.ts IS DISTINCT FROM e.ts OR l.value IS DISTINCT FROM e.value \
            OR l.location_id IS DISTINCT FROM e.location_id \
            OR l.lat IS DISTINCT FROM e.lat OR l.lon IS DISTINCT FROM e.lon",
    )
    .await;
    assert_eq!(
        latest_mismatches, 0,
        "v_latest is the last reading of each measurement"
    );
    let span_mismatches = count(
        "SELECT count(*) FROM ( \
           SELECT sensor_id, min(ts) AS first_ts, max(ts) AS last_ts, count(*) AS readings \
           FROM v_readings GROUP BY sensor_id) e \
         FULL JOIN v_sensors s USING (sensor_id) \
         WHERE s.first_ts IS DISTINCT FROM e.first_ts OR s.last_ts IS DISTINCT FROM e.last_ts \
            OR s.readings IS DISTINCT FROM e.readings",
    )
    .await;
    assert_eq!(
        span_mismatches, 0,
        "v_sensors spans and counts its readings"
    );
    let position_mismatches = count(
        "SELECT count(*) FROM v_sensors s JOIN LATERAL ( \
           SELECT location_id, lat, lon FROM v_readings r WHERE r.sensor_id = s.sensor_id \
           ORDER BY ts DESC, file_id, line LIMIT 1) e ON true \
         WHERE s.location_id IS DISTINCT FROM e.location_id \
            OR s.lat IS DISTINCT FROM e.lat OR s.lon IS DISTINCT FROM e.lon",
    )
    .await;
    assert_eq!(position_mismatches, 0, "v_sensors has the latest position");
    for (view, unit) in [("v_hourly", "hour"), ("v_daily", "day")] {
        let mismatches: i64 = client
            .query_one(
                &format!(
                    "SELECT count(*) FROM ( \
                       SELECT sensor_id, sensor_type, measurement, unit, \
                              date_trunc('{unit}', ts, 'UTC') AS {unit}, count(*) AS n, \
                              min(value) AS lo, max(value) AS hi, avg(value) AS mean, \
                              stddev_samp(value) AS sd \
                       FROM v_readings GROUP BY 1, 2, 3, 4, 5) e \
                     FULL JOIN {view} v USING (sensor_id, sensor_type, measurement, unit, {unit}) \
                     WHERE v.n IS DISTINCT FROM e.n OR v.min IS DISTINCT FROM e.lo \
                        OR v.max IS DISTINCT FROM e.hi \
                        OR NOT coalesce(abs(v.mean - e.mean) <= 1e-9 * greatest(1, abs(e.mean)), false) \
                        OR (v.stddev IS NULL) <> (e.sd IS NULL) \
                        OR abs(v.stddev - e.sd) > 1e-6 * greatest(1, e.sd)"
                ),
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(
            mismatches, 0,
            "{view} equals the same question asked of v_readings"
        );
    }
}

/// Writes `text` to `path`, making its folder; returns the path.
pub fn write_file(path: &std::path::Path, text: &str) -> std::path::PathBuf {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
    path.to_path_buf()
}
