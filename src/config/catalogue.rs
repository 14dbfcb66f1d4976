//! The sensor catalogue: sensor types, their measurements, units, ranges and unit
//! conversions, as written in TOML (`Raw*`) and as validated for the stages (`SensorType`,
//! `MeasurementSpec`). The built-in catalogue (`sensor_types.toml`) is merged with the user's
//! entries by name.

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// The built-in catalogue, carried in the binary.
pub(super) const BUILTIN_SENSOR_TYPES: &str = include_str!("sensor_types.toml");

/// One sensor type as written in TOML; every field but `name` may be omitted when it
/// changes a built-in type.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct RawSensorType {
    /// Type name as found in the `sensor_type` column, e.g. `SDS011`.
    pub name: String,
    /// Lower-case tokens that identify the type in a file name; default: the name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_name_tokens: Option<Vec<String>>,
    /// Columns that are known but never loaded (always empty or derived).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignored_columns: Option<Vec<String>>,
    /// Measurements, merged by `name` into the built-in ones.
    #[serde(default)]
    pub measurements: Vec<RawMeasurement>,
}

/// One measurement of a sensor type.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct RawMeasurement {
    /// Canonical measurement name stored in the database.
    pub name: String,
    /// CSV column names carrying it (case-insensitive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub columns: Option<Vec<String>>,
    /// Canonical unit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// Unit found in the files, when it differs from `unit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_unit: Option<String>,
    /// Smallest valid value, in the canonical unit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// Largest valid value, in the canonical unit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
}

/// A linear unit conversion: `to = from * scale + offset`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UnitConversion {
    /// Unit converted from.
    pub from: String,
    /// Unit converted to.
    pub to: String,
    /// Factor.
    #[serde(default = "default_scale")]
    pub scale: f64,
    /// Added after scaling.
    #[serde(default)]
    pub offset: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct BuiltinCatalogue {
    pub(super) sensor_types: Vec<RawSensorType>,
    pub(super) unit_conversions: Vec<UnitConversion>,
}

const fn default_scale() -> f64 {
    1.0
}

/// A measurement of one sensor type, validated and ready for the stages.
#[derive(Debug, Clone, PartialEq)]
pub struct MeasurementSpec {
    /// Index of this spec in `Settings::catalogue` (the key carried by readings).
    pub key: u32,
    /// Sensor type name.
    pub sensor_type: String,
    /// Canonical measurement name.
    pub name: String,
    /// Lower-cased column names that carry it.
    pub columns: Vec<String>,
    /// Canonical unit.
    pub unit: String,
    /// `canonical = source * scale + offset`.
    pub scale: f64,
    /// See `scale`.
    pub offset: f64,
    /// Valid range in the canonical unit, inclusive.
    pub min: f64,
    /// See `min`.
    pub max: f64,
}

impl MeasurementSpec {
    /// Converts a value from the file's unit to the canonical unit.
    pub fn to_canonical(&self, source_value: f64) -> f64 {
        source_value * self.scale + self.offset
    }
}

/// A sensor type, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct SensorType {
    /// Name as written in the data (`SDS011`).
    pub name: String,
    /// Lower-case tokens that identify the type in a file name.
    pub file_name_tokens: Vec<String>,
    /// Lower-cased columns that are known and never loaded.
    pub ignored_columns: Vec<String>,
    /// Keys into `Settings::catalogue`.
    pub measurement_keys: Vec<u32>,
}

impl SensorType {
    /// Every column the type knows, lower-cased: its measurements' and its ignored ones.
    pub fn columns<'a>(
        &'a self,
        catalogue: &'a [MeasurementSpec],
    ) -> impl Iterator<Item = &'a String> {
        self.measurement_keys
            .iter()
            .flat_map(|key| &catalogue[*key as usize].columns)
            .chain(&self.ignored_columns)
    }
}

pub(super) fn merge_sensor_types(
    builtin: Vec<RawSensorType>,
    user: Vec<RawSensorType>,
) -> Vec<RawSensorType> {
    let mut types = builtin;
    for added in user {
        match types
            .iter_mut()
            .find(|t| t.name.eq_ignore_ascii_case(&added.name))
        {
            Some(existing) => {
                if added.file_name_tokens.is_some() {
                    existing.file_name_tokens = added.file_name_tokens;
                }
                if added.ignored_columns.is_some() {
                    existing.ignored_columns = added.ignored_columns;
                }
                for measurement in added.measurements {
                    merge_measurement(&mut existing.measurements, measurement);
                }
            }
            None => types.push(added),
        }
    }
    types
}

fn merge_measurement(measurements: &mut Vec<RawMeasurement>, added: RawMeasurement) {
    match measurements.iter_mut().find(|m| m.name == added.name) {
        Some(existing) => {
            if added.columns.is_some() {
                existing.columns = added.columns;
            }
            if added.unit.is_some() {
                existing.unit = added.unit;
            }
            if added.source_unit.is_some() {
                existing.source_unit = added.source_unit;
            }
            if added.min.is_some() {
                existing.min = added.min;
            }
            if added.max.is_some() {
                existing.max = added.max;
            }
        }
        None => measurements.push(added),
    }
}

pub(super) fn build_catalogue(
    types: Vec<RawSensorType>,
    conversions: &[UnitConversion],
) -> Result<(Vec<SensorType>, Vec<MeasurementSpec>), ConfigError> {
    let mut sensor_types = Vec::with_capacity(types.len());
    let mut catalogue = Vec::new();
    for raw in types {
        if raw.name.trim().is_empty() {
            return Err(ConfigError::SensorType {
                sensor_type: raw.name,
                message: "a sensor type needs a name".to_owned(),
            });
        }
        if raw.measurements.is_empty() {
            return Err(ConfigError::SensorType {
                sensor_type: raw.name,
                message: "a sensor type needs at least one measurement".to_owned(),
            });
        }
        let mut measurement_keys = Vec::with_capacity(raw.measurements.len());
        for m in &raw.measurements {
            let spec = build_measurement(&raw.name, m, conversions, catalogue.len())?;
            measurement_keys.push(spec.key);
            catalogue.push(spec);
        }
        let lower = |v: &Vec<String>| v.iter().map(|s| s.trim().to_lowercase()).collect();
        sensor_types.push(SensorType {
            file_name_tokens: raw
                .file_name_tokens
                .as_ref()
                .map(lower)
                .unwrap_or_else(|| vec![raw.name.to_lowercase()]),
            ignored_columns: raw.ignored_columns.as_ref().map(lower).unwrap_or_default(),
            name: raw.name,
            measurement_keys,
        });
    }
    Ok((sensor_types, catalogue))
}

fn build_measurement(
    sensor_type: &str,
    raw: &RawMeasurement,
    conversions: &[UnitConversion],
    key: usize,
) -> Result<MeasurementSpec, ConfigError> {
    let fail = |message: String| ConfigError::SensorType {
        sensor_type: sensor_type.to_owned(),
        message,
    };
    let unit = raw
        .unit
        .clone()
        .ok_or_else(|| fail(format!("measurement `{}` needs a unit", raw.name)))?;
    let columns: Vec<String> = raw
        .columns
        .clone()
        .unwrap_or_else(|| vec![raw.name.clone()])
        .iter()
        .map(|c| c.trim().to_lowercase())
        .collect();
    let (scale, offset) = match raw.source_unit.as_deref() {
        None => (1.0, 0.0),
        Some(source) if source == unit => (1.0, 0.0),
        Some(source) => conversions
            .iter()
            .rev()
            .find(|c| c.from == source && c.to == unit)
            .map(|c| (c.scale, c.offset))
            .ok_or_else(|| {
                fail(format!(
                    "measurement `{}`: no unit conversion from `{source}` to `{unit}`",
                    raw.name
                ))
            })?,
    };
    let min = raw.min.unwrap_or(f64::NEG_INFINITY);
    let max = raw.max.unwrap_or(f64::INFINITY);
    if min > max {
        return Err(fail(format!(
            "measurement `{}`: min {min} is above max {max}",
            raw.name
        )));
    }
    Ok(MeasurementSpec {
        key: u32::try_from(key).expect("fewer than 2^32 measurements"),
        sensor_type: sensor_type.to_owned(),
        name: raw.name.clone(),
        columns,
        unit,
        scale,
        offset,
        min,
        max,
    })
}
