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
            max_line_bytes: settings.max_line_bytes,
        };
        let mut writer = QuarantineWriter::new(target, true).unwrap();
        writer.record(&run.rejects).unwrap();
        let published = writer.commit().unwrap();
        let rows = std::fs::read(published.rows.unwrap()).unwrap();
        let errors = std::fs::read_to_string(published.errors.unwrap()).unwrap();

        // rejected.csv is the source's header line, then each rejected row's physical line,
        // byte for byte with its own line end (found by line number, independently of the
        // byte offsets the writer used).
        let source = std::fs::read(path).unwrap();
        let lines: Vec<&[u8]> = source.split_inclusive(|b| *b == b'\n').collect();
        let mut expected = lines[0].to_vec();
        for reject in &run.rejects {
            let line = lines[reject.position.line as usize - 1];
            expected.extend_from_slice(line);
            if !line.ends_with(b"\n") {
                let header_end: &[u8] = if lines[0].ends_with(b"\r\n") {
                    b"\r\n"
                } else {
                    b"\n"
                };
                expected.extend_from_slice(header_end);
            }
        }
        assert_eq!(
            rows.escape_ascii().to_string(),
            expected.escape_ascii().to_string(),
            "{}",
            path.display()
        );
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
