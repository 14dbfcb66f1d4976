//! Replays every kept fuzz input (the corpus and any crash inputs under `fuzz/`) through the
//! same checks as the fuzz targets, on the stable toolchain: a fixed crash stays fixed.

use std::path::Path;

use sensor_etl::config::Settings;

#[path = "../fuzz/checks.rs"]
mod checks;

fn inputs(target: &str) -> Vec<std::path::PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut files: Vec<_> = ["corpus", "artifacts"]
        .iter()
        .flat_map(|kind| {
            std::fs::read_dir(root.join(kind).join(target))
                .into_iter()
                .flatten()
        })
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn every_kept_sniffer_input_passes() {
    let settings = Settings::builtin();
    let files = inputs("sniff_format");
    assert!(files.len() >= 10, "the corpus is in the repository");
    for path in files {
        checks::sniff_format(&std::fs::read(&path).unwrap(), &settings);
    }
}

#[test]
fn every_kept_validator_input_passes() {
    let settings = Settings::builtin();
    let files = inputs("validate_rows");
    assert!(files.len() >= 10, "the corpus is in the repository");
    for path in files {
        checks::validate_rows(&std::fs::read(&path).unwrap(), &settings);
    }
}

#[test]
fn every_kept_body_input_renders_alike_in_memory_and_from_a_spool_file() {
    let files = inputs("render_body");
    assert!(files.len() >= 10, "the corpus is in the repository");
    for path in files {
        checks::render_body(&std::fs::read(&path).unwrap());
    }
}
