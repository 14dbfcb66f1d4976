//! Unit tests of the parent module.

use std::collections::HashMap;

use super::*;

/// Measurement names per sensor type.
fn measurement_names(settings: &Settings) -> HashMap<String, Vec<String>> {
    settings
        .sensor_types
        .iter()
        .map(|t| {
            let names = t
                .measurement_keys
                .iter()
                .map(|k| settings.catalogue[*k as usize].name.clone())
                .collect();
            (t.name.clone(), names)
        })
        .collect()
}

#[test]
fn builtin_catalogue_has_the_required_types() {
    let settings = Settings::builtin();
    for name in [
        "SDS011", "PMS1003", "PMS3003", "PMS5003", "PMS7003", "SPS30", "HPM", "PPD42NS", "DHT22",
        "HTU21D", "BME280", "BMP180", "BMP280", "DS18B20",
    ] {
        assert!(settings.sensor_type_index(name).is_some(), "{name} missing");
    }
    let bme = &settings.sensor_types[settings.sensor_type_index("bme280").unwrap()];
    let pressure = bme
        .measurement_keys
        .iter()
        .map(|k| &settings.catalogue[*k as usize])
        .find(|m| m.name == "pressure")
        .unwrap();
    assert_eq!(pressure.unit, "hPa");
    assert!((pressure.to_canonical(94573.0) - 945.73).abs() < 1e-9);
    let dht = &settings.sensor_types[settings.sensor_type_index("DHT22").unwrap()];
    let temperature = &settings.catalogue[dht.measurement_keys[0] as usize];
    assert_eq!((temperature.min, temperature.max), (-50.0, 50.0));
}

#[test]
fn group_commits_wait_two_milliseconds_unless_told_otherwise() {
    let settings = Settings::builtin();
    assert_eq!(
        settings.http.group_wait,
        std::time::Duration::from_millis(2)
    );
    let raw: RawConfig = toml::from_str("[http]\ngroup_wait_micros = 0\n").unwrap();
    let settings = Settings::from_raw(raw).unwrap();
    assert!(settings.http.group_wait.is_zero());
}

#[test]
fn user_types_merge_by_name_and_add_new_ones() {
    let raw: RawConfig = toml::from_str(
        r#"
        [[sensor_types]]
        name = "DHT22"
        measurements = [{ name = "temperature", max = 60.0 }]

        [[sensor_types]]
        name = "CCS811"
        measurements = [{ name = "eco2", columns = ["eco2"], unit = "ppm", min = 400.0, max = 8192.0 }]
        "#,
    )
    .unwrap();
    let settings = Settings::from_raw(raw).unwrap();
    let names = measurement_names(&settings);
    assert_eq!(names["CCS811"], vec!["eco2"]);
    let dht = &settings.sensor_types[settings.sensor_type_index("DHT22").unwrap()];
    let temperature = &settings.catalogue[dht.measurement_keys[0] as usize];
    assert_eq!((temperature.min, temperature.max), (-50.0, 60.0));
    assert_eq!(temperature.unit, "°C");
}

#[test]
fn unknown_keys_are_rejected_by_name() {
    let error = toml::from_str::<RawConfig>("data_dri = \"x\"").unwrap_err();
    assert!(error.to_string().contains("data_dri"), "{error}");
}

#[test]
fn missing_conversion_is_a_config_error() {
    let raw: RawConfig = toml::from_str(
        r#"
        [[sensor_types]]
        name = "X1"
        measurements = [{ name = "t", unit = "°C", source_unit = "furlongs" }]
        "#,
    )
    .unwrap();
    let error = Settings::from_raw(raw).unwrap_err();
    assert!(error.to_string().contains("furlongs"), "{error}");
}

#[test]
fn offsets_parse() {
    assert_eq!(parse_offset("+02:00").unwrap().local_minus_utc(), 7200);
    assert_eq!(parse_offset("-0530").unwrap().local_minus_utc(), -19800);
    assert_eq!(parse_offset("Z").unwrap().local_minus_utc(), 0);
    assert!(parse_offset("02:00").is_none());
    assert!(parse_offset("+25:00").is_none());
}
