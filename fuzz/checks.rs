//! What every fuzz input must satisfy, shared by the fuzz targets (nightly, `cargo fuzz`) and by
//! the replay of the kept corpus and crash inputs in the ordinary test suite (stable). Each
//! user takes the checks it needs.
#![allow(dead_code)]

use sensor_etl::config::Settings;
use sensor_etl::delivery::ByteSource;
use sensor_etl::validate::dry_run_source;
use sensor_etl::validate::format::{sniff_delimiter, FileFormat};

/// The sniffer on a file name and a header line (`name/header`): a format or a reason.
pub fn sniff_format(data: &[u8], settings: &Settings) {
    let (name, header) = match data.iter().position(|&b| b == b'/') {
        Some(split) => (
            String::from_utf8_lossy(&data[..split]).into_owned(),
            &data[split + 1..],
        ),
        None => (String::new(), data),
    };
    let _ = FileFormat::detect(header, &name, settings);
    let _ = sniff_delimiter(&String::from_utf8_lossy(header));
}

/// The validator on any bytes: every row accepted or rejected with its line, counts adding up.
pub fn validate_rows(data: &[u8], settings: &Settings) {
    let source = ByteSource::Memory(bytes::Bytes::copy_from_slice(data));
    let run = dry_run_source(&source, "2020-01-01_sds011_sensor_1.csv", settings)
        .expect("bytes in memory always read");
    if run.file_rejection.is_none() {
        assert_eq!(run.rows_read, run.rows_accepted + run.rejects.len() as u64);
    }
    for reject in &run.rejects {
        assert!(
            reject.position.line >= 2,
            "a data row comes after the header"
        );
        assert!(!reject.violations.is_empty());
    }
}

/// A JSON (first byte even) or NDJSON (odd) body rendered in memory and from a spool file, as
/// the ingest endpoint does for a small and a large body: the same CSV or the same refusal.
pub fn render_body(data: &[u8]) {
    use sensor_etl::http::body::{render_file, to_source, BodyFormat};
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let format = if selector % 2 == 0 {
        BodyFormat::Json
    } else {
        BodyFormat::Ndjson
    };
    let refusal = |e: sensor_etl::http::error::ApiError| {
        format!("{} {} {}", e.status(), e.code(), e.message())
    };
    let in_memory = match to_source(format, bytes::Bytes::copy_from_slice(body)) {
        Ok(ByteSource::Rendered { bytes, .. }) => Ok(bytes.to_vec()),
        Ok(other) => panic!("a JSON body renders as CSV, not {other}"),
        Err(e) => Err(refusal(e)),
    };
    let dir = tempfile::tempdir().expect("a temporary directory");
    let spooled = dir.path().join("body");
    std::fs::write(&spooled, body).expect("the body is written");
    let from_file = match render_file(format, &spooled, dir.path()) {
        Ok((path, _)) => Ok(std::fs::read(&path).expect("the rendering is read")),
        Err(e) => Err(refusal(e)),
    };
    assert_eq!(in_memory, from_file, "in memory and from a spool file");
}

/// A sensor.community device's body, as the firmware's own API (first byte even) or the push
/// API (odd; the first byte's second bit picks the pin of an SDS011 or a BME280): refused with
/// a reason, or rendered as a delivery the validator reads whole, the counts adding up.
pub fn device_body(data: &[u8], settings: &Settings) {
    use axum::http::{HeaderMap, HeaderValue};
    use chrono::TimeZone;
    use sensor_etl::http::device::{own_api, push_api};
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let mut headers = HeaderMap::new();
    headers.insert("x-sensor", HeaderValue::from_static("esp8266-3654427"));
    let pin = if selector & 2 == 0 { "1" } else { "11" };
    headers.insert("x-pin", HeaderValue::from_static(pin));
    let received = chrono::Utc
        .with_ymd_and_hms(2024, 5, 1, 12, 0, 0)
        .single()
        .expect("a valid time");
    let pushed = if selector % 2 == 0 {
        own_api(body, &headers, received, settings)
    } else {
        push_api(body, &headers, received, settings)
    };
    let Ok(push) = pushed else {
        return;
    };
    let name = format!("{}.json", push.device);
    let run = dry_run_source(&push.source, &name, settings).expect("a rendering is in memory");
    if run.file_rejection.is_none() {
        assert_eq!(run.rows_read, run.rows_accepted + run.rejects.len() as u64);
    }
    for reject in &run.rejects {
        // Lines are the body's own: the one object of a device body is line 1.
        assert!(reject.position.line >= 1, "{reject:?}");
        assert!(!reject.violations.is_empty(), "{reject:?}");
    }
}
