//! Normalization: readings in the file's units to a DataFrame in canonical units.
//!
//! The frame has one row per accepted line and one value column per catalogue key present
//! (`value_column`), null where a line has no value for that key. Unit conversions come from
//! the configuration (`canonical = value * scale + offset`, e.g. Pa → hPa), applied to whole
//! columns; canonical names and units are the catalogue entry a column's key points to.
//! Timestamps are already UTC microseconds. Pure: no I/O.

use polars::prelude::*;

use crate::config::Settings;
use crate::validate::ReadingColumns;

/// A normalized frame and the catalogue keys of its value columns, in ascending order.
#[derive(Debug, Clone)]
pub struct NormalizedFrame {
    /// Columns `line, sensor_id, location_id, lat, lon, ts, part` and one per key.
    pub frame: DataFrame,
    /// Catalogue keys with a value column.
    pub keys: Vec<u32>,
}

/// Name of the value column of a catalogue key.
pub fn value_column(key: u32) -> String {
    format!("value_{key}")
}

/// Builds the chunk's DataFrame, converts each value column to its canonical unit and orders
/// the lines by (file, sensor, time), which keeps each sensor's rows together on disk.
///
/// # Errors
/// A polars failure.
pub fn normalize(readings: ReadingColumns, settings: &Settings) -> PolarsResult<NormalizedFrame> {
    let height = readings.line_count();
    let keys: Vec<u32> = readings.values.iter().map(|(key, _)| *key).collect();
    let mut columns = vec![
        Column::new("line".into(), readings.line),
        Column::new("sensor_id".into(), readings.sensor_id),
        Column::new("location_id".into(), readings.location_id),
        Column::new("lat".into(), readings.lat),
        Column::new("lon".into(), readings.lon),
        Column::new("ts".into(), readings.ts_micros),
        Column::new("part".into(), readings.part),
    ];
    for (key, values) in readings.values {
        columns.push(Column::new(value_column(key).into(), values));
    }
    let frame = DataFrame::new(height, columns)?;

    let conversions: Vec<Expr> = keys
        .iter()
        .filter_map(|key| {
            let spec = &settings.catalogue[*key as usize];
            let name = value_column(*key);
            (spec.scale != 1.0 || spec.offset != 0.0).then(|| {
                (col(name.as_str()) * lit(spec.scale) + lit(spec.offset)).alias(name.as_str())
            })
        })
        .collect();
    let frame = frame
        .lazy()
        .with_columns(conversions)
        .sort(
            ["part", "sensor_id", "ts"],
            SortMultipleOptions::default().with_maintain_order(true),
        )
        .collect()?;
    Ok(NormalizedFrame { frame, keys })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::LineFields;

    #[test]
    fn pressure_is_converted_to_hpa_and_other_values_kept() {
        let settings = Settings::builtin();
        let bme = &settings.sensor_types[settings.sensor_type_index("BME280").unwrap()];
        let [pressure, temperature, _] = bme.measurement_keys[..] else {
            panic!()
        };
        let mut readings = ReadingColumns::default();
        let fields = LineFields {
            line: 2,
            sensor_id: 7,
            location_id: Some(1),
            lat: None,
            lon: Some(1.0),
            ts_micros: 10,
        };
        readings.push(fields, &[(pressure, 99_830.59), (temperature, 6.79)]);
        readings.push(
            LineFields {
                line: 3,
                ts_micros: 5,
                ..fields
            },
            &[(temperature, 7.5)],
        );
        let normalized = normalize(readings, &settings).unwrap();
        let column = |key: u32| -> Vec<Option<f64>> {
            let name = value_column(key);
            normalized
                .frame
                .column(name.as_str())
                .unwrap()
                .f64()
                .unwrap()
                .iter()
                .collect()
        };
        assert_eq!(normalized.keys, {
            let mut keys = vec![pressure, temperature];
            keys.sort();
            keys
        });
        // Sorted by time: line 3 (ts 5) comes first, and has no pressure.
        let pressures = column(pressure);
        assert_eq!(pressures[0], None);
        assert!(
            (pressures[1].unwrap() - 998.3059).abs() < 1e-9,
            "{pressures:?}"
        );
        assert_eq!(column(temperature), vec![Some(7.5), Some(6.79)]);
        assert_eq!(normalized.frame.height(), 2);
    }
}
