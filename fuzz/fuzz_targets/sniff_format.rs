//! The format sniffer on any header line and file name: a format or a reason, never a panic.
#![no_main]

#[path = "../checks.rs"]
mod checks;

use libfuzzer_sys::fuzz_target;
use sensor_etl::config::Settings;

fuzz_target!(|data: &[u8]| {
    checks::sniff_format(data, &Settings::builtin());
});
