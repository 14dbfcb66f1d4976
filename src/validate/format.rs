//! Format detection: from a file's header line and name to a `FileFormat` that maps columns to
//! roles.
//!
//! The delimiter is sniffed from the header; columns are matched by name with aliases, never by
//! position; pandas index columns (an empty name, `Unnamed: N`) are ignored. The sensor type
//! comes from the `sensor_type` column (per row), else from the file name, else from the set of
//! measurement columns. A header that fits none of this is a `FileRejection`: the whole file is
//! quarantined with that reason (`rejection`). Pure: no I/O. A thread keeps its last few
//! detections by header line, name and catalogue: a server reads the same header from every
//! push of one kind, twice (the answer's check and the load).

use std::cell::RefCell;
use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use super::rejection::{FileRejection, RejectionCode};
use crate::config::{MeasurementSpec, SensorType, Settings};

/// Column names accepted for each identity column (lower case).
const SENSOR_ID_ALIASES: &[&str] = &["sensor_id", "sensorid", "sensor"];
const SENSOR_TYPE_ALIASES: &[&str] = &["sensor_type", "sensortype", "type"];
const LOCATION_ALIASES: &[&str] = &["location", "location_id", "locationid"];
const LAT_ALIASES: &[&str] = &["lat", "latitude"];
const LON_ALIASES: &[&str] = &["lon", "lng", "long", "longitude"];
const TIMESTAMP_ALIASES: &[&str] = &["timestamp", "time", "datetime", "date_time", "ts"];

/// Which measurement column of the file feeds which catalogue entry, for one sensor type.
#[derive(Debug, Clone, PartialEq)]
pub struct TypePlan {
    /// Index into `Settings::sensor_types`.
    pub sensor_type: usize,
    /// `(column index, catalogue key)` pairs, in column order.
    pub measurements: Vec<(usize, u32)>,
}

/// How to read one file.
#[derive(Debug, Clone, PartialEq)]
pub struct FileFormat {
    /// Field delimiter.
    pub delimiter: u8,
    /// Header names as found (BOM and surrounding blanks removed).
    pub columns: Vec<String>,
    /// Column of the sensor id.
    pub sensor_id: usize,
    /// Column of the timestamp.
    pub timestamp: usize,
    /// Column of the sensor type, when the file has one.
    pub sensor_type: Option<usize>,
    /// Column of the location id.
    pub location: Option<usize>,
    /// Column of the latitude.
    pub lat: Option<usize>,
    /// Column of the longitude.
    pub lon: Option<usize>,
    /// One plan per sensor type that this header can carry (index = sensor type index).
    pub plans: Vec<Option<TypePlan>>,
    /// The type of every row when the file has no `sensor_type` column.
    pub fixed_type: Option<usize>,
    /// Columns matched to nothing (reported, not loaded).
    pub unknown_columns: Vec<String>,
}

/// Detections a thread keeps.
const KEPT_DETECTIONS: usize = 16;

/// Longest header line whose detection is kept.
const KEPT_HEADER_BYTES: usize = 4096;

/// A detection kept, with what it was detected from. The catalogue is held by its `Arc`: its
/// address names it, and is not reused while the detection is kept.
struct Detection {
    header_line: Vec<u8>,
    /// The file name, when the format depends on it (a header without a `sensor_type`
    /// column).
    file_name: Option<String>,
    catalogue: Arc<Vec<MeasurementSpec>>,
    sensor_types: Arc<Vec<SensorType>>,
    format: Result<FileFormat, FileRejection>,
}

impl Detection {
    fn is_of(&self, header_line: &[u8], file_name: &str, settings: &Settings) -> bool {
        Arc::ptr_eq(&self.catalogue, &settings.catalogue)
            && Arc::ptr_eq(&self.sensor_types, &settings.sensor_types)
            && self.header_line == header_line
            && self
                .file_name
                .as_deref()
                .is_none_or(|name| name == file_name)
    }
}

thread_local! {
    static DETECTIONS: RefCell<VecDeque<Detection>> = const { RefCell::new(VecDeque::new()) };
}

impl FileFormat {
    /// Detects the format from the header line (without its terminator) and the file name.
    ///
    /// # Errors
    /// A `FileRejection` when the header is not text, lacks a required column, or matches no
    /// sensor type.
    pub fn detect(
        header_line: &[u8],
        file_name: &str,
        settings: &Settings,
    ) -> Result<Self, FileRejection> {
        if header_line.len() > KEPT_HEADER_BYTES {
            return Self::detect_anew(header_line, file_name, settings);
        }
        let kept = DETECTIONS.with(|kept| {
            kept.borrow()
                .iter()
                .find(|d| d.is_of(header_line, file_name, settings))
                .map(|d| d.format.clone())
        });
        if let Some(format) = kept {
            return format;
        }
        let format = Self::detect_anew(header_line, file_name, settings);
        DETECTIONS.with(|kept| {
            let mut kept = kept.borrow_mut();
            if kept.len() == KEPT_DETECTIONS {
                kept.pop_back();
            }
            kept.push_front(Detection {
                header_line: header_line.to_vec(),
                file_name: (!matches!(&format, Ok(f) if f.sensor_type.is_some()))
                    .then(|| file_name.to_owned()),
                catalogue: Arc::clone(&settings.catalogue),
                sensor_types: Arc::clone(&settings.sensor_types),
                format: format.clone(),
            });
        });
        format
    }

    fn detect_anew(
        header_line: &[u8],
        file_name: &str,
        settings: &Settings,
    ) -> Result<Self, FileRejection> {
        let header_line = header_line
            .strip_prefix(b"\xEF\xBB\xBF")
            .unwrap_or(header_line);
        let header_line = trim_line_end(header_line);
        if header_line.contains(&0) {
            return Err(FileRejection::new(
                RejectionCode::NotText,
                "the file contains NUL bytes: it is binary, not CSV text",
            ));
        }
        let header = std::str::from_utf8(header_line).map_err(|e| {
            FileRejection::new(
                RejectionCode::NotText,
                format!(
                    "the header line is not UTF-8 (invalid byte at offset {}); \
                     save the file as UTF-8",
                    e.valid_up_to()
                ),
            )
        })?;
        if header.trim().is_empty() {
            return Err(FileRejection::new(
                RejectionCode::EmptyFile,
                "the file has no header line",
            ));
        }
        let delimiter = sniff_delimiter(header);
        let columns: Vec<String> = split_header(header, delimiter);
        let lower: Vec<String> = columns.iter().map(|c| c.to_lowercase()).collect();

        if is_madavi_export(&lower) {
            return Err(FileRejection::new(
                RejectionCode::UnsupportedLayout,
                "this is a madavi.de per-device export (columns Time;durP1;…;Signal, no \
                 sensor_id column, data rows with more fields than the header); it is not \
                 supported: download the sensor.community archive files instead",
            ));
        }

        // A column named twice would leave one of its values unread: refuse the header.
        let mut named = std::collections::HashSet::new();
        if let Some(twice) = lower
            .iter()
            .filter(|c| !c.trim().is_empty() && !c.starts_with("unnamed:"))
            .find(|c| !named.insert(c.trim()))
        {
            return Err(FileRejection::new(
                RejectionCode::DuplicateColumn,
                format!(
                    "the header names column `{}` more than once; header was `{}`",
                    twice.trim(),
                    crate::validate::reject::cut(header)
                ),
            ));
        }

        // Two names of one column (`timestamp` and `time`, `lat` and `latitude`) would leave
        // one of the two values unread just the same.
        for (what, aliases) in [
            ("sensor id", SENSOR_ID_ALIASES),
            ("timestamp", TIMESTAMP_ALIASES),
            ("sensor type", SENSOR_TYPE_ALIASES),
            ("location", LOCATION_ALIASES),
            ("latitude", LAT_ALIASES),
            ("longitude", LON_ALIASES),
        ] {
            // The first is the column; a later one that is also a measurement's name (SPS30's
            // `TS`, typical particle size) is that measurement.
            let is_measurement = |c: &str| {
                settings
                    .catalogue
                    .iter()
                    .any(|m| m.columns.iter().any(|n| n == c))
            };
            let named: Vec<&str> = lower
                .iter()
                .map(|c| c.trim())
                .filter(|c| aliases.contains(c))
                .enumerate()
                .filter(|(i, c)| *i == 0 || !is_measurement(c))
                .map(|(_, c)| c)
                .collect();
            if named.len() > 1 {
                return Err(FileRejection::new(
                    RejectionCode::DuplicateColumn,
                    format!(
                        "the header names the {what} column more than once (`{}`); header was \
                         `{}`",
                        named.join("`, `"),
                        crate::validate::reject::cut(header)
                    ),
                ));
            }
        }

        let find = |aliases: &[&str]| lower.iter().position(|c| aliases.contains(&c.as_str()));
        let missing = |what: &str, aliases: &[&str]| {
            FileRejection::new(
                RejectionCode::MissingColumn,
                format!(
                    "the header has no {what} column (looked for {}); header was `{header}`",
                    aliases.join(", ")
                ),
            )
        };
        let sensor_id =
            find(SENSOR_ID_ALIASES).ok_or_else(|| missing("sensor id", SENSOR_ID_ALIASES))?;
        let timestamp =
            find(TIMESTAMP_ALIASES).ok_or_else(|| missing("timestamp", TIMESTAMP_ALIASES))?;
        let sensor_type = find(SENSOR_TYPE_ALIASES);
        let location = find(LOCATION_ALIASES);
        let lat = find(LAT_ALIASES);
        let lon = find(LON_ALIASES);

        let identity: HashSet<usize> = [
            Some(sensor_id),
            Some(timestamp),
            sensor_type,
            location,
            lat,
            lon,
        ]
        .into_iter()
        .flatten()
        .collect();
        let is_index = |c: &str| c.is_empty() || c.starts_with("unnamed:");

        // The catalogue entries each other column is a name of, found once for all types.
        let column_keys: Vec<(usize, Vec<u32>)> = lower
            .iter()
            .enumerate()
            .filter(|(i, _)| !identity.contains(i))
            .map(|(i, name)| {
                let keys = (0..settings.catalogue.len() as u32)
                    .filter(|k| settings.catalogue[*k as usize].columns.contains(name))
                    .collect();
                (i, keys)
            })
            .filter(|(_, keys): &(usize, Vec<u32>)| !keys.is_empty())
            .collect();
        let plans: Vec<Option<TypePlan>> = settings
            .sensor_types
            .iter()
            .enumerate()
            .map(|(type_index, sensor_type)| {
                let measurements: Vec<(usize, u32)> = column_keys
                    .iter()
                    .filter_map(|(i, keys)| {
                        sensor_type
                            .measurement_keys
                            .iter()
                            .find(|k| keys.contains(k))
                            .map(|k| (*i, *k))
                    })
                    .collect();
                (!measurements.is_empty()).then_some(TypePlan {
                    sensor_type: type_index,
                    measurements,
                })
            })
            .collect();

        let fixed_type = match sensor_type {
            Some(_) => None,
            None => Some(
                type_from_file_name(file_name, settings, &plans)
                    .or_else(|| type_from_columns(&lower, &identity, settings, &plans))
                    .ok_or_else(|| {
                        FileRejection::new(
                            RejectionCode::UnknownSensorType,
                            format!(
                                "the file has no sensor_type column and neither its name nor \
                                 its measurement columns match a configured sensor type; \
                                 header was `{header}`"
                            ),
                        )
                    })?,
            ),
        };
        if plans.iter().all(Option::is_none) {
            return Err(FileRejection::new(
                RejectionCode::UnknownSensorType,
                format!("no measurement column of any configured sensor type in header `{header}`"),
            ));
        }

        let known = |i: usize, name: &str| {
            identity.contains(&i)
                || is_index(name)
                || plans
                    .iter()
                    .flatten()
                    .any(|p| p.measurements.iter().any(|(c, _)| *c == i))
                || settings
                    .sensor_types
                    .iter()
                    .any(|t| t.ignored_columns.iter().any(|c| c == name))
        };
        let unknown_columns = lower
            .iter()
            .enumerate()
            .filter(|(i, name)| !known(*i, name))
            .map(|(i, _)| columns[i].clone())
            .collect();

        Ok(Self {
            delimiter,
            columns,
            sensor_id,
            timestamp,
            sensor_type,
            location,
            lat,
            lon,
            plans,
            fixed_type,
            unknown_columns,
        })
    }

    /// Number of fields every row must have.
    pub fn field_count(&self) -> usize {
        self.columns.len()
    }
}

/// Removes a trailing `\n`, `\r\n` or `\r`.
pub fn trim_line_end(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// The most frequent of `;`, `,`, tab and `|` in the header (`;` on a tie, the archive format).
pub fn sniff_delimiter(header: &str) -> u8 {
    let candidates = [b';', b',', b'\t', b'|'];
    let mut best = (b';', 0usize);
    for candidate in candidates {
        let count = header.bytes().filter(|b| *b == candidate).count();
        if count > best.1 {
            best = (candidate, count);
        }
    }
    best.0
}

fn split_header(header: &str, delimiter: u8) -> Vec<String> {
    if !header.contains('"') {
        // No quoting: a plain split (building a CSV parser costs more than the header).
        return header
            .split(delimiter as char)
            .map(|f| f.trim().to_owned())
            .collect();
    }
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .delimiter(delimiter)
        .flexible(true)
        .from_reader(header.as_bytes());
    let mut record = csv::StringRecord::new();
    match reader.read_record(&mut record) {
        Ok(true) => record.iter().map(|f| f.trim().to_owned()).collect(),
        _ => header
            .split(delimiter as char)
            .map(|f| f.trim().to_owned())
            .collect(),
    }
}

fn is_madavi_export(lower: &[String]) -> bool {
    lower.first().is_some_and(|c| c == "time")
        && lower
            .iter()
            .any(|c| c == "sds_p1" || c == "samples" || c == "signal")
}

/// A type whose token appears in the file name as a word of its own (not inside a longer
/// alphanumeric run on its left, nor followed by a digit), among types the header can carry.
fn type_from_file_name(
    file_name: &str,
    settings: &Settings,
    plans: &[Option<TypePlan>],
) -> Option<usize> {
    let name = file_name.to_lowercase();
    let bytes = name.as_bytes();
    let mut best: Option<(usize, usize)> = None;
    for (index, sensor_type) in settings.sensor_types.iter().enumerate() {
        if plans[index].is_none() {
            continue;
        }
        for token in &sensor_type.file_name_tokens {
            let matched = name.match_indices(token.as_str()).any(|(at, _)| {
                let before_ok = at == 0 || !bytes[at - 1].is_ascii_alphanumeric();
                let after = at + token.len();
                let after_ok = after >= bytes.len() || !bytes[after].is_ascii_digit();
                before_ok && after_ok
            });
            if matched && best.is_none_or(|(_, len)| token.len() > len) {
                best = Some((index, token.len()));
            }
        }
    }
    best.map(|(index, _)| index)
}

/// The type that carries the most measurement columns of the header and, on a tie, the one
/// with the fewest measurements it would leave unfilled.
fn type_from_columns(
    lower: &[String],
    identity: &HashSet<usize>,
    settings: &Settings,
    plans: &[Option<TypePlan>],
) -> Option<usize> {
    let candidate_columns: Vec<usize> =
        (0..lower.len()).filter(|i| !identity.contains(i)).collect();
    plans
        .iter()
        .flatten()
        .filter(|plan| {
            // Every non-ignored, non-index column that is a measurement of some type must be one
            // of this type's.
            candidate_columns.iter().all(|i| {
                let name = &lower[*i];
                let of_some_type = plans
                    .iter()
                    .flatten()
                    .any(|p| p.measurements.iter().any(|(c, _)| c == i));
                !of_some_type || plan.measurements.iter().any(|(c, _)| c == i) || name.is_empty()
            })
        })
        .max_by_key(|plan| {
            // A header may name a measurement column twice: more columns than measurements.
            let unfilled = settings.sensor_types[plan.sensor_type]
                .measurement_keys
                .len()
                .saturating_sub(plan.measurements.len());
            (
                plan.measurements.len(),
                std::cmp::Reverse(unfilled),
                std::cmp::Reverse(plan.sensor_type),
            )
        })
        .map(|plan| plan.sensor_type)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_detection_kept_answers_only_for_its_header_name_and_catalogue() {
        let builtin = Settings::builtin();
        // No `sensor_type` column: the type comes from the file name.
        let header = b"sensor_id;timestamp;P1;P2\n";
        let sds = FileFormat::detect(header, "a_sds011_sensor_1.csv", &builtin).unwrap();
        let pms = FileFormat::detect(header, "a_pms5003_sensor_1.csv", &builtin).unwrap();
        assert_ne!(sds.fixed_type, pms.fixed_type);
        let again = FileFormat::detect(header, "a_sds011_sensor_1.csv", &builtin).unwrap();
        assert_eq!(again, sds);
        // Another catalogue: the kept detection of the same header is not its.
        let with_type = b"sensor_id;sensor_type;timestamp;P1;P2;extra\n";
        let first = FileFormat::detect(with_type, "a.csv", &builtin).unwrap();
        assert_eq!(first.unknown_columns, ["extra"]);
        let mut raw = crate::config::RawConfig::default();
        raw.sensor_types.push(crate::config::RawSensorType {
            name: "SDS011".to_owned(),
            file_name_tokens: None,
            ignored_columns: Some(vec!["extra".to_owned()]),
            measurements: Vec::new(),
        });
        let ignoring = Settings::from_raw(raw).unwrap();
        let second = FileFormat::detect(with_type, "a.csv", &ignoring).unwrap();
        assert!(
            second.unknown_columns.is_empty(),
            "{:?}",
            second.unknown_columns
        );
        // With a `sensor_type` column the name does not matter: any name finds it.
        let other_name = FileFormat::detect(with_type, "b.csv", &builtin).unwrap();
        assert_eq!(other_name, first);
    }

    fn detect(header: &str, name: &str) -> Result<FileFormat, FileRejection> {
        FileFormat::detect(header.as_bytes(), name, &Settings::builtin())
    }

    fn type_name(format: &FileFormat) -> String {
        Settings::builtin().sensor_types[format.fixed_type.unwrap()]
            .name
            .clone()
    }

    #[test]
    fn archive_header_with_sensor_type_column() {
        let f = detect(
            "sensor_id;sensor_type;location;lat;lon;timestamp;P1;durP1;ratioP1;P2;durP2;ratioP2\n",
            "2017-08-30_sds011_sensor_5331.csv",
        )
        .unwrap();
        assert_eq!(f.delimiter, b';');
        assert_eq!((f.sensor_id, f.sensor_type, f.timestamp), (0, Some(1), 5));
        assert!(f.unknown_columns.is_empty(), "{:?}", f.unknown_columns);
        let sds = Settings::builtin().sensor_type_index("SDS011").unwrap();
        assert_eq!(f.plans[sds].as_ref().unwrap().measurements.len(), 2);
    }

    #[test]
    fn kaggle_header_with_two_index_columns_and_type_from_columns() {
        let f = detect(
            ",Unnamed: 0,sensor_id,location,lat,lon,timestamp,pressure,temperature,humidity",
            "air_quality_dataset_sample.csv",
        )
        .unwrap();
        assert_eq!(f.delimiter, b',');
        assert_eq!(type_name(&f), "BME280");
        assert!(f.unknown_columns.is_empty());
    }

    #[test]
    fn type_from_file_name_wins_over_columns() {
        let f = detect(
            "sensor_id,location,lat,lon,timestamp,temperature,humidity",
            "2017-07_htu21dsof.csv",
        )
        .unwrap();
        assert_eq!(type_name(&f), "HTU21D");
        let f = detect(
            "sensor_id,location,lat,lon,timestamp,temperature,humidity",
            "x.csv",
        )
        .unwrap();
        assert_eq!(type_name(&f), "DHT22");
    }

    #[test]
    fn aliases_bom_and_crlf() {
        let f = detect(
            "\u{feff}sensor_id,location_id,latitude,longitude,timestamp,pressure,temperature,humidity,reason,validity\r\n",
            "invalid_air_quality_data_part_1.csv",
        )
        .unwrap();
        assert_eq!((f.location, f.lat, f.lon), (Some(1), Some(2), Some(3)));
        assert_eq!(f.unknown_columns, vec!["reason", "validity"]);
    }

    #[test]
    fn madavi_export_is_rejected_with_a_reason() {
        let error = detect(
            "Time;durP1;ratioP1;P1;durP2;ratioP2;P2;SDS_P1;SDS_P2;Temp;Humidity;BMP_temperature;BMP_pressure;BME280_temperature;BME280_humidity;BME280_pressure;Samples;Min_cycle;Max_cycle;Signal",
            "data-esp8266-3654427-2018-01-03.csv",
        )
        .unwrap_err();
        assert_eq!(error.code, RejectionCode::UnsupportedLayout);
    }

    #[test]
    fn two_names_of_one_column_are_refused() {
        let settings = Settings::builtin();
        for header in [
            "sensor_id;timestamp;time;P1\n",
            "sensor_id;timestamp;lat;latitude;P1\n",
        ] {
            let rejection =
                FileFormat::detect(header.as_bytes(), "x_sds011.csv", &settings).unwrap_err();
            assert_eq!(rejection.code, RejectionCode::DuplicateColumn, "{header}");
        }
    }

    #[test]
    fn a_column_named_twice_is_refused() {
        let settings = Settings::builtin();
        let rejection =
            FileFormat::detect(b"sensor_id;timestamp;P1;p1;P2\n", "x.csv", &settings).unwrap_err();
        assert_eq!(rejection.code, RejectionCode::DuplicateColumn);
        assert!(rejection.message.contains("`p1`"), "{}", rejection.message);
        // Two index columns without a name are fine.
        assert!(
            FileFormat::detect(b",,sensor_id,timestamp,P1\n", "x_sds011.csv", &settings).is_ok()
        );
    }

    #[test]
    fn binary_and_unknown_headers_are_rejected() {
        assert_eq!(
            FileFormat::detect(b"\x00\x01\x02", "a.csv", &Settings::builtin())
                .unwrap_err()
                .code,
            RejectionCode::NotText
        );
        assert_eq!(
            FileFormat::detect(
                b"sensor_id;timestamp;\xff\xfe",
                "a.csv",
                &Settings::builtin()
            )
            .unwrap_err()
            .code,
            RejectionCode::NotText
        );
        assert_eq!(
            detect("sensor_id;timestamp;foo;bar", "a.csv")
                .unwrap_err()
                .code,
            RejectionCode::UnknownSensorType
        );
        assert_eq!(
            detect("id;when;P1", "a.csv").unwrap_err().code,
            RejectionCode::MissingColumn
        );
    }
}
