//! The format sniffer on any header line and file name: a format or a reason, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sensor_etl::config::Settings;
use sensor_etl::validate::format::{sniff_delimiter, FileFormat};

fuzz_target!(|data: &[u8]| {
    let settings = Settings::builtin();
    let (name, header) = match data.iter().position(|&b| b == b'/') {
        Some(split) => (String::from_utf8_lossy(&data[..split]).into_owned(), &data[split + 1..]),
        None => (String::new(), data),
    };
    let _ = FileFormat::detect(header, &name, &settings);
    let _ = sniff_delimiter(&String::from_utf8_lossy(header));
});
