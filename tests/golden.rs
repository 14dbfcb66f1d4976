//! Golden tests of quarantine output: each `fixtures/quarantine/<case>.csv` is validated and
//! its rejected rows (escaped bytes) and reasons (JSON lines) are compared with the committed
//! snapshot. Review changes with `cargo insta review`.

use sensor_etl::config::Settings;
use sensor_etl::validate::dry_run;
use sensor_etl::validate::quarantine::{QuarantineTarget, QuarantineWriter};

#[test]
fn quarantine_output_matches_snapshots() {
    let settings = Settings::builtin();
    insta::glob!("fixtures/quarantine/*.csv", |path| {
        let out = tempfile::tempdir().unwrap();
        let run = dry_run(path, &settings).unwrap();
        let target = QuarantineTarget {
            dir: out.path().to_path_buf(),
            source: sensor_etl::delivery::ByteSource::File(path.to_path_buf()),
            file_name: path.file_name().unwrap().to_string_lossy().into_owned(),
            fingerprint: "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
                .to_owned(),
        };
        let mut writer = QuarantineWriter::new(target, true).unwrap();
        writer.record(&run.rejects).unwrap();
        let published = writer.commit().unwrap();
        let rows = std::fs::read(published.rows.unwrap()).unwrap();
        let errors = std::fs::read_to_string(published.errors.unwrap()).unwrap();

        // Every rejected row is present byte for byte in the source.
        let source = std::fs::read(path).unwrap();
        for reject in &run.rejects {
            let start = reject.position.byte as usize;
            assert!(rows.windows(3).any(|w| w == &source[start..start + 3]));
        }
        let mut snapshot = format!(
            "rows read {}, accepted {}, rejected {}\n== rejected.csv ==\n",
            run.rows_read,
            run.rows_accepted,
            run.rejects.len()
        );
        for line in rows.split_inclusive(|b| *b == b'\n') {
            snapshot.push_str(&format!("{}\n", line.escape_ascii()));
        }
        snapshot.push_str("== errors.jsonl ==\n");
        snapshot.push_str(&errors);
        insta::assert_snapshot!(snapshot);
    });
}
