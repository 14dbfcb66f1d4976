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
