//! The rendering of bodies: in memory and from a spool file alike, and its refusals.

use super::*;

fn rendered(format: BodyFormat, body: &str) -> (String, i64) {
    match to_source(format, Bytes::from(body.to_owned())).unwrap() {
        ByteSource::Rendered { bytes, line_shift } => {
            (String::from_utf8(bytes.to_vec()).unwrap(), line_shift)
        }
        other => panic!("{other}"),
    }
}

#[test]
fn json_objects_become_csv_rows_on_the_line_after_their_position() {
    let (csv, shift) = rendered(
        BodyFormat::Json,
        r#"[{"sensor_id": 5331, "P1": 8.3, "timestamp": "2018-12-01T00:00:07"},
            {"sensor_id": "5331", "P2": "4,9", "timestamp": "2018-12-01T00:00:09"}]"#,
    );
    assert_eq!(shift, 1);
    assert_eq!(
        csv,
        "P1,sensor_id,timestamp,P2\n8.3,5331,2018-12-01T00:00:07,\n,5331,2018-12-01T00:00:09,\"4,9\"\n"
    );
}

#[test]
fn a_key_named_twice_or_too_many_keys_are_refused() {
    let error = to_source(BodyFormat::Json, Bytes::from(r#"{"P1": 1, "P1": 999}"#)).unwrap_err();
    assert_eq!(error.status(), StatusCode::BAD_REQUEST);
    let many: String = (0..80_000).map(|i| format!(r#""k{i}": 1,"#)).collect();
    let body = format!("{{{many}\"last\": 1}}");
    let error = to_source(BodyFormat::Json, Bytes::from(body)).unwrap_err();
    assert_eq!(error.status(), StatusCode::BAD_REQUEST);
}

/// A body rendered in memory and from a spool file: the CSV, or the refusal's status, code
/// and message.
fn both_ways(format: BodyFormat, body: &[u8]) -> [Result<Vec<u8>, String>; 2] {
    let refusal = |e: ApiError| format!("{} {} {}", e.status(), e.code(), e.message());
    let in_memory = match to_source(format, Bytes::copy_from_slice(body)) {
        Ok(ByteSource::Rendered { bytes, .. }) => Ok(bytes.to_vec()),
        Ok(other) => panic!("{other}"),
        Err(e) => Err(refusal(e)),
    };
    let dir = tempfile::tempdir().unwrap();
    let spooled = dir.path().join("body");
    std::fs::write(&spooled, body).unwrap();
    let from_file = match render_file(format, &spooled, dir.path()) {
        Ok((path, _)) => Ok(std::fs::read(&path).unwrap()),
        Err(e) => Err(refusal(e)),
    };
    [in_memory, from_file]
}

#[test]
fn a_body_renders_the_same_in_memory_and_from_a_spool_file() {
    let bom = "\u{feff}";
    for (format, body) in [
        (
            BodyFormat::Json,
            format!(r#"{bom}[{{"a": 1}}, {{"b": "x,y"}}]"#),
        ),
        (
            BodyFormat::Ndjson,
            format!("{bom}{{\"a\": 1}}\r\n\n{{\"a\": 2}}"),
        ),
        (BodyFormat::Json, "[]".to_owned()),
        (BodyFormat::Json, "  [ ]  ".to_owned()),
        (BodyFormat::Ndjson, "\n \n".to_owned()),
        (BodyFormat::Ndjson, String::new()),
        (BodyFormat::Json, "5".to_owned()),
        (BodyFormat::Json, "\"text\"".to_owned()),
        (BodyFormat::Json, "null".to_owned()),
        (BodyFormat::Json, "[5, {\"a\": 1}]".to_owned()),
        (BodyFormat::Json, "[{\"a\": 1}] trailing".to_owned()),
        (
            BodyFormat::Json,
            "[{\"a\": 1}, {\"a\": 2, \"a\": 3}]".to_owned(),
        ),
        (BodyFormat::Json, "[{\"a\": {\"b\": 1}}]".to_owned()),
        (BodyFormat::Ndjson, "{\"a\": 1}\n[1]\n".to_owned()),
        (BodyFormat::Ndjson, format!("{bom}{bom}\n\n")),
        (BodyFormat::Json, " [ [\"\u{0} 00\"".to_owned()),
    ] {
        let [in_memory, from_file] = both_ways(format, body.as_bytes());
        assert_eq!(in_memory, from_file, "{format:?} {body:?}");
    }
    // Objects that each name other keys would render a header as long as the body and a
    // row as wide for every object: refused past the bound, however large the body.
    let scattered: Vec<String> = (0..=MAX_KEYS)
        .map(|i| format!(r#"{{"sensor_id": 1, "k{i}": 1}}"#))
        .collect();
    let body = format!("[{}]", scattered.join(","));
    let [in_memory, from_file] = both_ways(BodyFormat::Json, body.as_bytes());
    assert_eq!(in_memory, from_file);
    let refusal = in_memory.unwrap_err();
    assert!(refusal.starts_with("400"), "{refusal}");
    assert!(refusal.contains("element 1000"), "{refusal}");
    // One object naming 1,000 keys, then empty ones: each would render a row of 1,000
    // fields.
    let keys: Vec<String> = (0..MAX_KEYS).map(|i| format!(r#""k{i}": 1"#)).collect();
    let body = format!("[{{{}}}{}]", keys.join(","), ",{}".repeat(20_000));
    let [in_memory, from_file] = both_ways(BodyFormat::Json, body.as_bytes());
    assert_eq!(in_memory, from_file);
    let refusal = in_memory.unwrap_err();
    assert!(refusal.starts_with("400"), "{refusal}");
    assert!(
        refusal.contains("pass 4 times the body's size"),
        "{refusal}"
    );
    let [empty, _] = both_ways(BodyFormat::Json, b"[]");
    assert!(empty.unwrap_err().contains("no_objects"));
    let [scalar, _] = both_ways(BodyFormat::Json, b"5");
    assert!(scalar.unwrap_err().contains("element 1 is a number"));
}

#[test]
fn ndjson_keeps_line_numbers_across_blank_lines() {
    let (csv, _) = rendered(BodyFormat::Ndjson, "{\"a\": 1}\n\n{\"a\": 2}\n");
    assert_eq!(csv, "a\n1\n\n2\n");
}

#[test]
fn malformed_and_nested_bodies_are_refused() {
    for (format, body) in [
        (BodyFormat::Json, "{\"a\": "),
        (BodyFormat::Json, "[1, 2]"),
        (BodyFormat::Json, "{\"a\": {\"b\": 1}}"),
        (BodyFormat::Ndjson, "{\"a\": 1}\nnot json\n"),
    ] {
        let error = to_source(format, Bytes::from(body)).unwrap_err();
        assert_eq!(error.status(), StatusCode::BAD_REQUEST, "{body}");
    }
    assert_eq!(
        BodyFormat::of(Some("application/xml"))
            .unwrap_err()
            .status(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
    assert_eq!(
        BodyFormat::of(Some("text/csv; charset=utf-8")).unwrap(),
        BodyFormat::Csv
    );
}
