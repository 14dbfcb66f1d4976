//! Unit tests of the parent module.

use super::*;
use crate::validate::format::FileFormat;

fn utc() -> FixedOffset {
    FixedOffset::east_opt(0).unwrap()
}

type Checked = (RowIdentity, Vec<(u32, f64)>);

const SDS_HEADER: &str =
    "sensor_id;sensor_type;location;lat;lon;timestamp;P1;durP1;ratioP1;P2;durP2;ratioP2";

fn check(header: &str, name: &str, row: &str) -> Result<Checked, Vec<Violation>> {
    let settings = Settings::builtin();
    let format = FileFormat::detect(header.as_bytes(), name, &settings).unwrap();
    let fields: Vec<&[u8]> = row
        .split(format.delimiter as char)
        .map(str::as_bytes)
        .collect();
    let mut values = Vec::new();
    check_row(
        &csv::ByteRecord::from(fields),
        &format,
        &settings,
        &mut values,
    )
    .map(|id| (id, values))
    .map_err(|(v, _)| v)
}

fn codes(violations: &[Violation]) -> Vec<&'static str> {
    violations.iter().map(|v| v.reason.code()).collect()
}

#[test]
fn timestamps() {
    let t = |s| parse_timestamp(s, utc());
    assert_eq!(t("1970-01-01T00:00:01"), Some(1_000_000));
    assert_eq!(t("1970-01-01 00:00:01"), Some(1_000_000));
    assert_eq!(t("1970-01-01T00:00:01.5Z"), Some(1_500_000));
    assert_eq!(t("1970-01-01T01:00:01+01:00"), Some(1_000_000));
    assert_eq!(t("1970-01-01T01:00:01+0100"), Some(1_000_000));
    assert_eq!(t("1970-01-01T00:00"), Some(0));
    assert_eq!(t("1969-12-31T23:00:00-01:00"), Some(0));
    assert_eq!(
        parse_timestamp("1970-01-01T02:00:00", FixedOffset::east_opt(7200).unwrap()),
        Some(0)
    );
    for bad in [
        "2018/01/03 00:01:19",
        "2019-02-30T00:00:00",
        "2019-01-17T25:00:00",
        "yesterday",
        "2019-01-17T05:10:48+99:00",
        "2019-01-17T05:10:48.",
    ] {
        assert_eq!(t(bad), None, "{bad}");
    }
}

#[test]
fn numbers() {
    assert_eq!(parse_number("86"), Some(86.0));
    assert_eq!(parse_number("-2.130"), Some(-2.13));
    for bad in [
        "Mai 31",
        "5.148.554.199",
        "NaN",
        "inf",
        "",
        "27. Feb",
        "1,5",
    ] {
        assert_eq!(parse_number(bad), None, "{bad}");
    }
}

#[test]
fn valid_archive_row_with_always_empty_columns() {
    let (id, values) = check(
        SDS_HEADER,
        "a.csv",
        "5331;SDS011;2688;57.128;-2.130;2017-08-30T11:27:23;6.57;;;2.63;;",
    )
    .unwrap();
    assert_eq!(id.sensor_id, 5331);
    assert_eq!(id.location_id, Some(2688));
    assert_eq!(values.len(), 2);
    assert_eq!(values[0].1, 6.57);
}

#[test]
fn every_violation_is_reported() {
    let violations = check(
        SDS_HEADER,
        "a.csv",
        "x;SDS011;2688;99.5;-2.130;2017-13-30T11:27:23;abc;;;1200;;",
    )
    .unwrap_err();
    assert_eq!(
        codes(&violations),
        vec![
            "not_a_number",
            "bad_timestamp",
            "out_of_range",
            "not_a_number",
            "out_of_range"
        ]
    );
    assert_eq!(violations[0].column.as_deref(), Some("sensor_id"));
    assert_eq!(violations[4].value.as_deref(), Some("1200"));
}

#[test]
fn truncated_row_is_a_field_count_violation() {
    let violations = check(SDS_HEADER, "a.csv", "5331;SDS011;3121;").unwrap_err();
    assert_eq!(codes(&violations), vec!["field_count"]);
}

#[test]
fn empty_row_and_missing_fields() {
    let violations = check(
        SDS_HEADER,
        "a.csv",
        "5331;SDS011;2688;57.128;-2.130;2017-08-30T11:27:23;;;;;;",
    )
    .unwrap_err();
    assert_eq!(codes(&violations), vec!["all_measurements_empty"]);
    let violations = check(SDS_HEADER, "a.csv", ";SDS011;2688;57.128;-2.130;;1;;;2;;").unwrap_err();
    assert_eq!(codes(&violations), vec!["missing_field", "missing_field"]);
}

#[test]
fn unknown_sensor_type_value() {
    let violations = check(
        SDS_HEADER,
        "a.csv",
        "1;XYZ99;2;1;1;2017-08-30T11:27:23;1;;;2;;",
    )
    .unwrap_err();
    assert_eq!(codes(&violations), vec!["unknown_sensor_type"]);
}

#[test]
fn temperature_range_is_checked_in_canonical_units() {
    let header = ",Unnamed: 0,sensor_id,location,lat,lon,timestamp,pressure,temperature,humidity";
    let violations = check(
        header,
        "k.csv",
        "0,1,3738,1,42.6,23.3,2017-07-01T00:00:07,94573.15,60.47,30.1",
    )
    .unwrap_err();
    assert_eq!(codes(&violations), vec!["out_of_range"]);
    assert_eq!(violations[0].column.as_deref(), Some("temperature"));
    let (_, values) = check(
        header,
        "k.csv",
        "0,1,3738,1,42.6,23.3,2017-07-01T00:00:07,94573.15,20.0,0.0",
    )
    .unwrap();
    assert_eq!(values.len(), 3);
    let violations = check(
        header,
        "k.csv",
        "0,1,3738,1,42.6,23.3,2017-07-01T00:00:07,945.73,20.0,10",
    )
    .unwrap_err();
    assert_eq!(
        codes(&violations),
        vec!["out_of_range"],
        "pressure in hPa where Pa is declared"
    );
}

#[test]
fn spreadsheet_mangled_values_are_not_numbers() {
    let header =
        "sensor_id;sensor_type;location;lat;lon;timestamp;P1;P4;P2;P0;N10;N4;N25;N1;N05;TS";
    let violations = check(header, "s.csv", "61354;SPS30;47226;5.148.554.199;543.575.943;2021-04-26T00:01:48;Mai 31;Mai 31;Mai 31;Apr 92;27. Feb;41.1;41.2;41.0;36.0;0.5").unwrap_err();
    assert_eq!(codes(&violations), vec!["not_a_number"; 7]);
}

#[test]
fn invalid_utf8_is_reported_per_column() {
    let settings = Settings::builtin();
    let format = FileFormat::detect(SDS_HEADER.as_bytes(), "a.csv", &settings).unwrap();
    let row: Vec<&[u8]> = vec![
        b"1",
        b"SDS011",
        b"2",
        b"1",
        b"1",
        b"2017-08-30T11:27:23",
        b"\xff",
        b"",
        b"",
        b"2",
        b"",
        b"",
    ];
    let (violations, key) = check_row(
        &csv::ByteRecord::from(row),
        &format,
        &settings,
        &mut Vec::new(),
    )
    .unwrap_err();
    assert_eq!(key, Some((1, 1_504_092_443_000_000)));
    assert_eq!(codes(&violations), vec!["invalid_utf8"]);
    assert_eq!(violations[0].column.as_deref(), Some("P1"));
}
