//! sensor.community devices pushing straight in, with bodies exactly as the airRohr firmware
//! and the push API send them, against `sensor-etl serve` with a token: an SDS011 + BME280
//! device with Basic authentication and `X-Sensor`, the same body a second later, push-API
//! bodies for pins 1 and 7, an unknown value type, and wrong or missing credentials.

use std::time::Duration;

use base64::prelude::{Engine, BASE64_STANDARD};
use sha2::Digest;

use crate::support::http::{post, serve};
use crate::support::{connect, fresh_database, terminate_child, Workspace};

const TOKEN: &str = "airrohr-token-5e1d";

/// The firmware's own-API body, as its source builds it.
const FIRMWARE_BODY: &str = r#"{"esp8266id": "3654427", "software_version": "NRZ-2020-133", "sensordatavalues":[{"value_type":"SDS_P1","value":"5.10"},{"value_type":"SDS_P2","value":"2.30"},{"value_type":"BME280_temperature","value":"7.42"},{"value_type":"BME280_pressure","value":"100659.00"},{"value_type":"BME280_humidity","value":"81.30"},{"value_type":"samples","value":"755761"},{"value_type":"min_micro","value":"188"},{"value_type":"max_micro","value":"26531"},{"value_type":"signal","value":"-72"}]}"#;

fn basic(user: &str, password: &str) -> String {
    format!(
        "Authorization: Basic {}",
        BASE64_STANDARD.encode(format!("{user}:{password}"))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn airrohr_bodies_load_under_the_devices_sensors() {
    let url = fresh_database().await;
    let workspace = Workspace::new();
    std::fs::write(
        workspace.path("sensor-etl.toml"),
        format!(
            "[[http.tokens]]\nname = \"devices\"\nsha256 = \"{}\"\nscopes = [\"write\"]\n",
            hex::encode(sha2::Sha256::digest(TOKEN.as_bytes()))
        ),
    )
    .unwrap();
    let (mut server, addr) = serve(&workspace, &url, &[]).await;
    let json = "Content-Type: application/json";
    let device = "X-Sensor: esp8266-3654427";
    let auth = basic("station-garden", TOKEN);

    // No credentials, a wrong password: refused, nothing stored.
    let (status, _, body) = post(
        addr,
        "/v1/ingest",
        &[json, device],
        FIRMWARE_BODY.as_bytes(),
    );
    assert_eq!(status, 401, "{body}");
    let wrong = basic("station-garden", "not-the-token");
    let (status, _, body) = post(
        addr,
        "/v1/ingest",
        &[json, device, &wrong],
        FIRMWARE_BODY.as_bytes(),
    );
    assert_eq!(status, 401, "{body}");

    // The firmware body with Basic authentication.
    let before = chrono::Utc::now();
    let (status, _, receipt) = post(
        addr,
        "/v1/ingest",
        &[json, device, &auth],
        FIRMWARE_BODY.as_bytes(),
    );
    let after = chrono::Utc::now();
    assert_eq!(status, 200, "{receipt}");
    assert_eq!(receipt["status"], "loaded", "{receipt}");
    assert_eq!(receipt["device"], "esp8266-3654427");
    assert_eq!(
        (
            receipt["rows_read"].as_i64(),
            receipt["rows_rejected"].as_i64()
        ),
        (Some(3), Some(0)),
        "one line each for SDS011, BME280 and the device's own values: {receipt}"
    );
    let client = connect(&url).await;
    let rows = client
        .query(
            "SELECT r.sensor_type, r.measurement, r.unit, r.value, r.ts, s.device \
             FROM v_readings r JOIN v_sensors s USING (sensor_id) ORDER BY 1, 2",
            &[],
        )
        .await
        .unwrap();
    let seen: Vec<(String, String, String, f64)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    let expected = [
        ("AIRROHR", "max_micro", "µs", 26531.0),
        ("AIRROHR", "min_micro", "µs", 188.0),
        ("AIRROHR", "samples", "count", 755761.0),
        ("AIRROHR", "signal", "dBm", -72.0),
        ("BME280", "humidity", "%RH", 81.3),
        ("BME280", "pressure", "hPa", 1006.59),
        ("BME280", "temperature", "°C", 7.42),
        ("SDS011", "pm10", "µg/m³", 5.1),
        ("SDS011", "pm2_5", "µg/m³", 2.3),
    ];
    assert_eq!(seen.len(), expected.len(), "{seen:?}");
    for ((sensor_type, measurement, unit, value), expected) in seen.iter().zip(expected) {
        assert_eq!(
            (sensor_type.as_str(), measurement.as_str(), unit.as_str()),
            (expected.0, expected.1, expected.2)
        );
        assert!((value - expected.3).abs() < 1e-9, "{measurement}: {value}");
    }
    for row in &rows {
        let ts: chrono::DateTime<chrono::Utc> = row.get(4);
        assert!(
            ts >= before - chrono::Duration::seconds(1) && ts <= after,
            "the time the body was received: {ts}"
        );
        assert_eq!(
            row.get::<_, Option<String>>(5).as_deref(),
            Some("esp8266-3654427")
        );
    }
    let origin: String = client
        .query_one("SELECT origin FROM file_deliveries", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        origin, "http:station-garden",
        "the Basic user is the client"
    );

    // The same body a second later: the device measured again, a new delivery.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, _, receipt) = post(
        addr,
        "/v1/ingest",
        &[json, device, &auth],
        FIRMWARE_BODY.as_bytes(),
    );
    assert_eq!(
        (status, receipt["status"].as_str()),
        (200, Some("loaded")),
        "{receipt}"
    );
    let count = |sql: &'static str| {
        let client = &client;
        async move { client.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) }
    };
    assert_eq!(count("SELECT count(*) FROM v_readings").await, 18);
    assert_eq!(
        count("SELECT count(DISTINCT ts) FROM v_readings WHERE sensor_type = 'SDS011'").await,
        2
    );

    // A retry (the same body again within the same second) is a duplicate, not a new reading.
    let into_next_second = 1_050 - i64::from(chrono::Utc::now().timestamp_subsec_millis());
    tokio::time::sleep(Duration::from_millis(into_next_second as u64)).await;
    let retry = FIRMWARE_BODY.replace("7.42", "7.55");
    let (status, _, first) = post(addr, "/v1/ingest", &[json, device, &auth], retry.as_bytes());
    assert_eq!(
        (status, first["status"].as_str()),
        (200, Some("loaded")),
        "{first}"
    );
    let (status, _, again) = post(addr, "/v1/ingest", &[json, device, &auth], retry.as_bytes());
    assert_eq!(
        (status, again["status"].as_str(), &again["file_id"]),
        (200, Some("duplicate"), &first["file_id"]),
        "{again}"
    );
    assert_eq!(count("SELECT count(*) FROM v_readings").await, 27);

    // The push API: pin 1 (particulate matter) and pin 7 (DHT22), one sensor a body.
    let push = |pin: &'static str, values: &'static str| {
        let auth = auth.clone();
        async move {
            let body =
                format!(r#"{{"software_version": "NRZ-2020-133", "sensordatavalues":[{values}]}}"#);
            post(
                addr,
                "/v1/push-sensor-data/",
                &[json, device, &format!("X-Pin: {pin}"), &auth],
                body.as_bytes(),
            )
        }
    };
    // A second later: within the same second, other values for the same sensor would conflict
    // with the cycle just stored (422).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, _, receipt) = push(
        "1",
        r#"{"value_type":"P1","value":"6.20"},{"value_type":"P2","value":"3.10"}"#,
    )
    .await;
    assert_eq!(status, 200, "{receipt}");
    let (status, _, receipt) = push(
        "7",
        r#"{"value_type":"temperature","value":"4.80"},{"value_type":"humidity","value":"90.20"}"#,
    )
    .await;
    assert_eq!(status, 200, "{receipt}");
    assert_eq!(
        count("SELECT count(DISTINCT sensor_id) FROM v_readings WHERE sensor_type = 'SDS011'")
            .await,
        1,
        "the push API's pin 1 and the firmware's SDS_ values are one sensor of the device"
    );
    assert_eq!(
        count(
            "SELECT count(*) FROM v_readings r JOIN v_sensors s USING (sensor_id) \
             WHERE s.device = 'esp8266-3654427' AND r.sensor_type = 'DHT22' \
             AND ((r.measurement = 'temperature' AND r.value = 4.8) \
               OR (r.measurement = 'humidity' AND r.value = 90.2))"
        )
        .await,
        2
    );
    let (status, _, receipt) = push("42", r#"{"value_type":"P1","value":"1"}"#).await;
    assert_eq!(
        (status, receipt["error"]["code"].as_str()),
        (400, Some("unknown_pin")),
        "{receipt}"
    );

    // An unknown value type is named, not dropped silently; the known ones load.
    let body = r#"{"esp8266id": "3654427", "sensordatavalues":[{"value_type":"SDS_P1","value":"7.00"},{"value_type":"FOO_bar","value":"1"}]}"#;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, _, receipt) = post(addr, "/v1/ingest", &[json, device, &auth], body.as_bytes());
    assert_eq!(status, 200, "{receipt}");
    assert_eq!(
        receipt["unknown_value_types"],
        serde_json::json!(["FOO_bar"])
    );
    assert_eq!(receipt["rows_loaded"], 1);
    assert_eq!(terminate_child(&mut server), Some(0));
    let logs = crate::support::log_text(&workspace.path("logs"));
    assert!(logs.contains("FOO_bar"), "the unknown value type is logged");
    assert!(!logs.contains(TOKEN), "the token is never logged");
}
