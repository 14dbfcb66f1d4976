//! The validator on any bytes: every row read is accepted or rejected with its line, never a
//! panic, and the counts add up.
#![no_main]

#[path = "../checks.rs"]
mod checks;

use libfuzzer_sys::fuzz_target;
use sensor_etl::config::Settings;

fuzz_target!(|data: &[u8]| {
    checks::validate_rows(data, &Settings::builtin());
});
