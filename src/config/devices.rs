//! How the values that sensor.community devices push map to the catalogue: each value type to
//! a sensor type and the column of it that carries the value (so units, conversions and ranges
//! are the catalogue's), the push API's pins to sensor types, value types declared ignored,
//! and sensor ids an owner gives a device's sensors. The built-in table
//! (`device_values.toml`) is merged with `[devices]` of `sensor-etl.toml`; every entry is
//! checked against the catalogue, so a typo is a configuration error, not lost readings.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::{ConfigError, MeasurementSpec, SensorType};

/// The built-in mapping, carried in the binary.
const BUILTIN_DEVICE_VALUES: &str = include_str!("device_values.toml");

/// A value type's target as written: a sensor type and its column.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawValueTarget {
    /// Sensor type of the catalogue, e.g. `BME280`.
    pub sensor_type: String,
    /// One of its columns, e.g. `pressure`.
    pub column: String,
}

/// `[devices]` as written.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct RawDevices {
    /// Value types of the own-API body, added to or replacing the built-in ones.
    #[serde(default)]
    pub value_types: BTreeMap<String, RawValueTarget>,
    /// Value types taken and not stored.
    #[serde(default)]
    pub ignored_value_types: Vec<String>,
    /// Push-API pins (`X-Pin`) to sensor types, added to or replacing the built-in ones.
    #[serde(default)]
    pub pins: BTreeMap<String, String>,
    /// A device's sensors under ids of the owner's choosing (e.g. their sensor.community ids):
    /// `[devices.sensor_ids."esp8266-3654427"] SDS011 = 12345`.
    #[serde(default)]
    pub sensor_ids: BTreeMap<String, BTreeMap<String, i64>>,
}

/// A value type's target, validated: an index into `Settings::sensor_types` and the column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueTarget {
    /// Index into `Settings::sensor_types`.
    pub sensor_type: usize,
    /// The column (as the catalogue spells it, lower-cased).
    pub column: String,
}

/// `[devices]`, validated.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DeviceSettings {
    /// Own-API value types.
    pub value_types: HashMap<String, ValueTarget>,
    /// Value types taken and not stored.
    pub ignored_value_types: HashSet<String>,
    /// Push-API pins to sensor type indices.
    pub pins: HashMap<u32, usize>,
    /// (device, sensor type index) to the sensor id its owner chose.
    pub sensor_ids: HashMap<(String, usize), i64>,
}

impl DeviceSettings {
    /// The built-in table merged with `raw`, checked against `sensor_types`.
    ///
    /// # Errors
    /// An unknown sensor type, a column the type does not have, a pin that is not a number.
    pub fn build(
        raw: RawDevices,
        sensor_types: &[SensorType],
        catalogue: &[MeasurementSpec],
    ) -> Result<Self, ConfigError> {
        let builtin: RawDevices =
            toml::from_str(BUILTIN_DEVICE_VALUES).map_err(ConfigError::Builtin)?;
        let type_index = |key: &'static str, name: &str| {
            sensor_types
                .iter()
                .position(|t| t.name.eq_ignore_ascii_case(name))
                .ok_or_else(|| ConfigError::Value {
                    key,
                    message: format!("`{name}` is not a sensor type of the catalogue"),
                })
        };
        let mut settings = Self::default();
        let targets = builtin.value_types.into_iter().chain(raw.value_types);
        for (value_type, target) in targets {
            let index = type_index("devices.value_types", &target.sensor_type)?;
            let column = target.column.to_ascii_lowercase();
            if !sensor_types[index].columns(catalogue).any(|c| *c == column) {
                return Err(ConfigError::Value {
                    key: "devices.value_types",
                    message: format!(
                        "`{value_type}`: sensor type {} has no column `{}`",
                        sensor_types[index].name, target.column
                    ),
                });
            }
            settings.value_types.insert(
                value_type,
                ValueTarget {
                    sensor_type: index,
                    column,
                },
            );
        }
        settings.ignored_value_types = builtin
            .ignored_value_types
            .into_iter()
            .chain(raw.ignored_value_types)
            .collect();
        for (pin, name) in builtin.pins.into_iter().chain(raw.pins) {
            let number = pin.trim().parse().map_err(|_| ConfigError::Value {
                key: "devices.pins",
                message: format!("`{pin}` is not a pin number"),
            })?;
            settings
                .pins
                .insert(number, type_index("devices.pins", &name)?);
        }
        for (device, ids) in raw.sensor_ids {
            for (name, id) in ids {
                let index = type_index("devices.sensor_ids", &name)?;
                settings.sensor_ids.insert((device.clone(), index), id);
            }
        }
        Ok(settings)
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{RawConfig, Settings};

    #[test]
    fn the_built_in_table_resolves_and_a_typo_is_a_configuration_error() {
        let settings = Settings::builtin();
        let pressure = &settings.devices.value_types["BME280_pressure"];
        assert_eq!(settings.sensor_types[pressure.sensor_type].name, "BME280");
        assert_eq!(pressure.column, "pressure");
        assert_eq!(
            settings.sensor_types[settings.devices.pins[&7]].name,
            "DHT22"
        );
        let raw: RawConfig = toml::from_str(
            r#"
            [devices.value_types]
            BME280_presure = { sensor_type = "BME280", column = "presure" }
            "#,
        )
        .unwrap();
        let error = Settings::from_raw(raw).unwrap_err().to_string();
        assert!(error.contains("presure"), "{error}");
        let raw: RawConfig = toml::from_str(
            r#"
            [devices.sensor_ids."esp8266-3654427"]
            SDS011 = 12345
            "#,
        )
        .unwrap();
        let settings = Settings::from_raw(raw).unwrap();
        let sds = settings.sensor_type_index("SDS011").unwrap();
        assert_eq!(
            settings.devices.sensor_ids[&("esp8266-3654427".to_owned(), sds)],
            12345
        );
    }
}
