//! Unit tests of the parent module.

use super::*;
use crate::config::Settings;
use crate::transform::normalize::normalize;
use crate::validate::{LineFields, ReadingColumns};

/// One line per `(sensor, location, key, value, ts)`.
fn readings(values: &[(i64, Option<i64>, u32, f64, i64)]) -> ReadingColumns {
    let mut r = ReadingColumns::default();
    for (i, (sensor, location, key, value, ts)) in values.iter().enumerate() {
        let fields = LineFields {
            line: i as u32 + 2,
            sensor_id: *sensor,
            location_id: *location,
            lat: None,
            lon: None,
            ts_micros: *ts,
        };
        r.push(fields, &[(*key, *value)]);
    }
    r
}

fn aggregate_in_chunks(
    all: &[(i64, Option<i64>, u32, f64, i64)],
    chunk: usize,
) -> Vec<AggregateRow> {
    let settings = Settings::builtin();
    let mut file = FileAggregates::default();
    for part in all.chunks(chunk) {
        let frame = normalize(readings(part), &settings).unwrap();
        file.merge(partial_aggregates(&frame).unwrap());
    }
    file.rows()
}

#[test]
fn sample_stddev_and_scopes() {
    // Catalogue key 0 is SDS011 pm10, which needs no conversion.
    let rows = aggregate_in_chunks(
        &[
            (1, Some(9), 0, 2.0, 30),
            (1, Some(9), 0, 4.0, 10),
            (2, None, 0, 9.0, 20),
        ],
        10,
    );
    assert_eq!(rows.len(), 3);
    let by_type = &rows[0];
    assert_eq!(by_type.scope, "sensor_type");
    assert_eq!(by_type.stats.n, 3);
    assert_eq!((by_type.stats.min, by_type.stats.max), (2.0, 9.0));
    assert_eq!((by_type.stats.first_ts, by_type.stats.last_ts), (10, 30));
    assert!((by_type.stats.mean - 5.0).abs() < 1e-12);
    assert!((by_type.stats.stddev().unwrap() - 13f64.sqrt()).abs() < 1e-12);
    let single = rows.iter().find(|r| r.sensor_id == Some(2)).unwrap();
    assert_eq!(single.location_id, None);
    assert_eq!(
        single.stats.stddev(),
        None,
        "stddev is null below two readings"
    );
}

#[test]
fn merged_chunks_equal_one_pass() {
    let all: Vec<_> = (0..1000)
        .map(|i| {
            let sensor = i % 3;
            let value = ((i * 7919) % 1013) as f64 / 7.0 + 1000.0;
            (
                sensor,
                Some(sensor * 10),
                (i % 2) as u32,
                value,
                i * 1_000_000,
            )
        })
        .collect();
    let one_pass = aggregate_in_chunks(&all, all.len());
    for chunk in [1, 7, 100, 999] {
        let merged = aggregate_in_chunks(&all, chunk);
        assert_eq!(merged.len(), one_pass.len());
        for (a, b) in merged.iter().zip(&one_pass) {
            assert_eq!(
                (a.scope, a.key, a.sensor_id, a.location_id),
                (b.scope, b.key, b.sensor_id, b.location_id)
            );
            assert_eq!(a.stats.n, b.stats.n);
            assert_eq!(
                (a.stats.min, a.stats.max, a.stats.first_ts, a.stats.last_ts),
                (b.stats.min, b.stats.max, b.stats.first_ts, b.stats.last_ts)
            );
            assert!((a.stats.mean - b.stats.mean).abs() < 1e-9 * b.stats.mean.abs());
            let (sa, sb) = (a.stats.stddev().unwrap(), b.stats.stddev().unwrap());
            assert!((sa - sb).abs() < 1e-9 * sb, "chunk {chunk}: {sa} vs {sb}");
        }
    }
}
