//! Normalization: readings in the file's units to a DataFrame in canonical units.
//!
//! Unit conversions come from the configuration (`canonical = value * scale + offset`, e.g.
//! Pa → hPa); canonical names and units are the catalogue entry the `key` column points to.
//! Timestamps are already UTC microseconds. Pure: no I/O.

use std::collections::BTreeSet;

use polars::prelude::*;

use crate::config::Settings;
use crate::validate::ReadingColumns;

/// Builds the chunk's DataFrame and converts each value to its canonical unit.
///
/// # Errors
/// A polars failure.
pub fn normalize(readings: ReadingColumns, settings: &Settings) -> PolarsResult<DataFrame> {
    let height = readings.len();
    let keys: BTreeSet<u32> = readings.key.iter().copied().collect();
    let frame = DataFrame::new(
        height,
        vec![
            Column::new("line".into(), readings.line),
            Column::new("sensor_id".into(), readings.sensor_id),
            Column::new("location_id".into(), readings.location_id),
            Column::new("lat".into(), readings.lat),
            Column::new("lon".into(), readings.lon),
            Column::new("ts".into(), readings.ts_micros),
            Column::new("key".into(), readings.key),
            Column::new("value".into(), readings.value),
            Column::new("part".into(), readings.part),
        ],
    )?;

    let mut converted = col("value");
    for key in keys {
        let spec = &settings.catalogue[key as usize];
        if spec.scale != 1.0 || spec.offset != 0.0 {
            converted = when(col("key").eq(lit(key)))
                .then(col("value") * lit(spec.scale) + lit(spec.offset))
                .otherwise(converted);
        }
    }
    // Ordered by (file, sensor, time): the (sensor_id, ts) index then grows in runs instead of
    // at random places, which is most of the cost of loading it. A line's measurements share
    // file, sensor and time (duplicates are rejected), so they stay next to each other.
    frame
        .lazy()
        .with_column(converted.alias("value"))
        .sort(
            ["part", "sensor_id", "ts"],
            SortMultipleOptions::default().with_maintain_order(true),
        )
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pressure_is_converted_to_hpa_and_other_values_kept() {
        let settings = Settings::builtin();
        let bme = &settings.sensor_types[settings.sensor_type_index("BME280").unwrap()];
        let [pressure, temperature, _] = bme.measurement_keys[..] else {
            panic!()
        };
        let readings = ReadingColumns {
            line: vec![2, 2],
            sensor_id: vec![7, 7],
            location_id: vec![Some(1), Some(1)],
            lat: vec![None, None],
            lon: vec![Some(1.0), Some(1.0)],
            ts_micros: vec![10, 10],
            key: vec![pressure, temperature],
            value: vec![99_830.59, 6.79],
            part: vec![0, 0],
        };
        let frame = normalize(readings, &settings).unwrap();
        let values: Vec<f64> = frame
            .column("value")
            .unwrap()
            .f64()
            .unwrap()
            .into_no_null_iter()
            .collect();
        assert!((values[0] - 998.3059).abs() < 1e-9, "{values:?}");
        assert_eq!(values[1], 6.79);
        assert_eq!(frame.height(), 2);
    }
}
