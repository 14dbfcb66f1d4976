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

/// Runs `check` on every kept input of the fuzz target `target`.
fn replay(target: &str, check: impl Fn(&[u8])) {
    let files = inputs(target);
    assert!(
        files.len() >= 10,
        "the corpus of {target} is in the repository"
    );
    for path in files {
        check(&std::fs::read(&path).unwrap());
    }
}

#[test]
fn every_kept_sniffer_input_passes() {
    let settings = Settings::builtin();
    replay("sniff_format", |data| checks::sniff_format(data, &settings));
}

#[test]
fn every_kept_validator_input_passes() {
    let settings = Settings::builtin();
    replay("validate_rows", |data| {
        checks::validate_rows(data, &settings)
    });
}

#[test]
fn every_kept_body_input_renders_alike_in_memory_and_from_a_spool_file() {
    replay("render_body", checks::render_body);
}

#[test]
fn every_kept_device_body_input_is_refused_or_read_whole() {
    let settings = Settings::builtin();
    replay("device_body", |data| checks::device_body(data, &settings));
}
