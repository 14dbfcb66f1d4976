//! The validator on any bytes: every row read is accepted or rejected with its line, never a
//! panic, and the counts add up.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sensor_etl::config::Settings;
use sensor_etl::delivery::ByteSource;
use sensor_etl::validate::dry_run_source;

fuzz_target!(|data: &[u8]| {
    let settings = Settings::builtin();
    let source = ByteSource::Memory(bytes::Bytes::copy_from_slice(data));
    let run = dry_run_source(&source, "2020-01-01_sds011_sensor_1.csv", &settings)
        .expect("bytes in memory always read");
    if run.file_rejection.is_none() {
        assert_eq!(run.rows_read, run.rows_accepted + run.rejects.len() as u64);
    }
    for reject in &run.rejects {
        assert!(reject.position.line >= 2, "a data row is after the header");
        assert!(!reject.violations.is_empty());
    }
});
