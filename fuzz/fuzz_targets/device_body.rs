//! A sensor.community device's body (own API or push API): refused with a reason, or rendered
//! as a delivery the validator reads whole; never a panic.
#![no_main]

#[path = "../checks.rs"]
mod checks;

use libfuzzer_sys::fuzz_target;
use sensor_etl::config::Settings;

fuzz_target!(|data: &[u8]| {
    checks::device_body(data, &Settings::builtin());
});
