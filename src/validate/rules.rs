//! Row rules: pure functions from one CSV record to either a valid row or every violation.
//!
//! No I/O and no clock. Each rule reports with a stable `RejectReason`; a row with any
//! violation is rejected whole and all its violations are listed, not just the first. The
//! duplicate-key rule needs the file's history, so the per-file driver applies it after these.

use chrono::{FixedOffset, NaiveDate};

use crate::config::Settings;
use crate::validate::format::FileFormat;
use crate::validate::reject::{RejectReason, Violation};

/// The fields of a row that passed every rule; measurement values stay in the file's units
/// (the transform stage converts them) and are written into a caller-owned buffer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RowIdentity {
    /// Sensor id.
    pub sensor_id: i64,
    /// Index into `Settings::sensor_types`.
    pub sensor_type: usize,
    /// Location id, when present.
    pub location_id: Option<i64>,
    /// Latitude, when present.
    pub lat: Option<f64>,
    /// Longitude, when present.
    pub lon: Option<f64>,
    /// Microseconds since the Unix epoch, UTC.
    pub ts_micros: i64,
}

/// A rejected row's violations, and its (sensor id, timestamp) key when both parsed, so that
/// the duplicate rule can still be applied to it.
pub type RowViolations = (Vec<Violation>, Option<(i64, i64)>);

/// Checks one record against every rule.
///
/// On success returns the row's identity and fills `values` with `(catalogue key, value in the
/// file's unit)` for each non-empty measurement. On failure returns all violations.
pub fn check_row(
    fields: &csv::ByteRecord,
    format: &FileFormat,
    settings: &Settings,
    values: &mut Vec<(u32, f64)>,
) -> Result<RowIdentity, RowViolations> {
    values.clear();
    let mut violations = Vec::new();
    let expected = format.field_count();
    let trailing_empty =
        fields.len() == expected + 1 && fields[expected].iter().all(u8::is_ascii_whitespace);
    if fields.len() != expected && !trailing_empty {
        violations.push(Violation::row(
            RejectReason::FieldCount,
            format!(
                "the row has {} fields but the header has {expected}; the line may be truncated \
                 or use another delimiter",
                fields.len()
            ),
        ));
        return Err((violations, None));
    }

    let mut text = |index: usize| -> Option<&str> {
        match std::str::from_utf8(&fields[index]) {
            Ok(s) => Some(trim(s)),
            Err(_) => {
                let column = &format.columns[index];
                violations.push(Violation::at(
                    RejectReason::InvalidUtf8,
                    column,
                    &String::from_utf8_lossy(&fields[index]),
                    format!("column `{column}` is not valid UTF-8 text"),
                ));
                None
            }
        }
    };
    let sensor_id_text = text(format.sensor_id);
    let timestamp_text = text(format.timestamp);
    let type_text = format.sensor_type.map(&mut text);
    let location_text = format.location.map(&mut text);
    let lat_text = format.lat.map(&mut text);
    let lon_text = format.lon.map(&mut text);

    let sensor_id = sensor_id_text.and_then(|s| {
        required_integer(
            s,
            &format.columns[format.sensor_id],
            "sensor id",
            &mut violations,
        )
    });
    let ts_micros = timestamp_text.and_then(|s| {
        let column = &format.columns[format.timestamp];
        if s.is_empty() {
            violations.push(Violation::at(RejectReason::MissingField, column, s, "the timestamp is empty".to_owned()));
            return None;
        }
        let parsed = parse_timestamp(s, settings.default_utc_offset);
        if parsed.is_none() {
            violations.push(Violation::at(
                RejectReason::BadTimestamp,
                column,
                s,
                format!("`{s}` is not an ISO 8601 timestamp such as 2019-01-17T05:10:48 or 2019-01-17 05:10:48+01:00"),
            ));
        }
        parsed
    });

    let sensor_type = match (format.fixed_type, format.sensor_type) {
        (Some(fixed), _) => Some(fixed),
        (None, Some(column_index)) => type_text.flatten().and_then(|s| {
            let column = &format.columns[column_index];
            if s.is_empty() {
                violations.push(Violation::at(RejectReason::MissingField, column, s, "the sensor type is empty".to_owned()));
                return None;
            }
            match settings.sensor_type_index(s) {
                Some(index) if format.plans[index].is_some() => Some(index),
                Some(_) => {
                    violations.push(Violation::at(
                        RejectReason::UnknownSensorType,
                        column,
                        s,
                        format!("sensor type `{s}` has none of its measurement columns in this file's header"),
                    ));
                    None
                }
                None => {
                    violations.push(Violation::at(
                        RejectReason::UnknownSensorType,
                        column,
                        s,
                        format!("sensor type `{s}` is not configured; add it to sensor-etl.toml"),
                    ));
                    None
                }
            }
        }),
        (None, None) => None,
    };

    let location_id = match (format.location, location_text.flatten()) {
        (Some(index), Some(s)) => {
            let column = &format.columns[index];
            optional_number(s, column, &mut violations)
                .and_then(|v| integral(v, s, column, &mut violations))
        }
        _ => None,
    };
    let lat = coordinate(
        lat_text.flatten(),
        format.lat,
        format,
        90.0,
        &mut violations,
    );
    let lon = coordinate(
        lon_text.flatten(),
        format.lon,
        format,
        180.0,
        &mut violations,
    );

    if let Some(type_index) = sensor_type {
        let plan = format.plans[type_index]
            .as_ref()
            .expect("type index has a plan");
        let mut empty = 0;
        for (column_index, key) in &plan.measurements {
            let column = &format.columns[*column_index];
            let Ok(raw) = std::str::from_utf8(&fields[*column_index]) else {
                violations.push(Violation::at(
                    RejectReason::InvalidUtf8,
                    column,
                    &String::from_utf8_lossy(&fields[*column_index]),
                    format!("column `{column}` is not valid UTF-8 text"),
                ));
                continue;
            };
            let raw = trim(raw);
            if raw.is_empty() {
                empty += 1;
                continue;
            }
            let Some(value) = parse_number(raw) else {
                violations.push(Violation::at(
                    RejectReason::NotANumber,
                    column,
                    raw,
                    format!("`{raw}` in column `{column}` is not a number"),
                ));
                continue;
            };
            let spec = &settings.catalogue[*key as usize];
            let canonical = spec.to_canonical(value);
            if canonical < spec.min || canonical > spec.max {
                violations.push(Violation::at(
                    RejectReason::OutOfRange,
                    column,
                    raw,
                    format!(
                        "{} {canonical} {} is outside the valid range {}..{} {} for {}",
                        spec.name, spec.unit, spec.min, spec.max, spec.unit, spec.sensor_type
                    ),
                ));
                continue;
            }
            values.push((*key, value));
        }
        if empty == plan.measurements.len() {
            violations.push(Violation::row(
                RejectReason::AllMeasurementsEmpty,
                "every measurement of the row is empty".to_owned(),
            ));
        }
    }

    match (sensor_id, ts_micros, sensor_type) {
        (Some(sensor_id), Some(ts_micros), Some(sensor_type)) if violations.is_empty() => {
            Ok(RowIdentity {
                sensor_id,
                sensor_type,
                location_id,
                lat,
                lon,
                ts_micros,
            })
        }
        _ => {
            values.clear();
            Err((violations, sensor_id.zip(ts_micros)))
        }
    }
}

fn required_integer(
    s: &str,
    column: &str,
    what: &str,
    violations: &mut Vec<Violation>,
) -> Option<i64> {
    if s.is_empty() {
        violations.push(Violation::at(
            RejectReason::MissingField,
            column,
            s,
            format!("the {what} is empty"),
        ));
        return None;
    }
    optional_number(s, column, violations).and_then(|v| integral(v, s, column, violations))
}

fn optional_number(s: &str, column: &str, violations: &mut Vec<Violation>) -> Option<f64> {
    if s.is_empty() {
        return None;
    }
    let parsed = parse_number(s);
    if parsed.is_none() {
        violations.push(Violation::at(
            RejectReason::NotANumber,
            column,
            s,
            format!("`{s}` in column `{column}` is not a number"),
        ));
    }
    parsed
}

fn integral(value: f64, raw: &str, column: &str, violations: &mut Vec<Violation>) -> Option<i64> {
    if value.fract() == 0.0 && value.abs() < 9.0e15 {
        Some(value as i64)
    } else {
        violations.push(Violation::at(
            RejectReason::NotANumber,
            column,
            raw,
            format!("`{raw}` in column `{column}` is not a whole number"),
        ));
        None
    }
}

fn coordinate(
    text: Option<&str>,
    index: Option<usize>,
    format: &FileFormat,
    limit: f64,
    violations: &mut Vec<Violation>,
) -> Option<f64> {
    let (text, index) = (text?, index?);
    let column = &format.columns[index];
    let value = optional_number(text, column, violations)?;
    if value.abs() > limit {
        violations.push(Violation::at(
            RejectReason::OutOfRange,
            column,
            text,
            format!("{column} {value} is outside -{limit}..{limit}"),
        ));
        return None;
    }
    Some(value)
}

/// Parses a finite decimal number (`86`, `86.70`, `-2.130`, `1e3`); anything else is `None`.
pub fn parse_number(s: &str) -> Option<f64> {
    let first = *s.as_bytes().first()?;
    if !(first.is_ascii_digit() || matches!(first, b'-' | b'+' | b'.')) {
        return None;
    }
    s.parse::<f64>().ok().filter(|v| v.is_finite())
}

/// `str::trim`, with a fast path for the usual field that starts and ends with a visible
/// ASCII character and so has nothing to trim.
fn trim(s: &str) -> &str {
    match (s.as_bytes().first(), s.as_bytes().last()) {
        (Some(first), Some(last)) if first.is_ascii_graphic() && last.is_ascii_graphic() => s,
        _ => s.trim(),
    }
}

/// Parses ISO 8601 `YYYY-MM-DD[T| ]HH:MM[:SS[.fraction]][Z|±HH[:MM]]` to microseconds since
/// the Unix epoch, UTC; a timestamp with no offset is read in `default_offset`.
pub fn parse_timestamp(s: &str, default_offset: FixedOffset) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 16 {
        return None;
    }
    let digits = |range: std::ops::Range<usize>| -> Option<u32> {
        let part = b.get(range)?;
        if !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        part.iter()
            .try_fold(0u32, |acc, d| Some(acc * 10 + u32::from(d - b'0')))
    };
    if b[4] != b'-'
        || b[7] != b'-'
        || !(b[10] == b'T' || b[10] == b' ' || b[10] == b't')
        || b[13] != b':'
    {
        return None;
    }
    let date = NaiveDate::from_ymd_opt(
        i32::try_from(digits(0..4)?).ok()?,
        digits(5..7)?,
        digits(8..10)?,
    )?;
    let (hour, minute) = (digits(11..13)?, digits(14..16)?);
    let mut at = 16;
    let mut second = 0;
    let mut micros = 0u32;
    if b.get(at) == Some(&b':') {
        second = digits(at + 1..at + 3)?;
        at += 3;
        if b.get(at) == Some(&b'.') || b.get(at) == Some(&b',') {
            at += 1;
            let start = at;
            while at < b.len() && b[at].is_ascii_digit() {
                at += 1;
            }
            let fraction = &b[start..at];
            if fraction.is_empty() {
                return None;
            }
            for (i, d) in fraction.iter().take(6).enumerate() {
                micros += u32::from(d - b'0') * 10u32.pow(5 - i as u32);
            }
        }
    }
    let offset = match &s[at..] {
        "" => default_offset,
        rest => crate::config::parse_offset(rest)?,
    };
    let naive = date.and_hms_micro_opt(hour, minute, second, micros)?;
    let utc = naive.checked_sub_signed(chrono::Duration::seconds(i64::from(
        offset.local_minus_utc(),
    )))?;
    Some(utc.and_utc().timestamp_micros())
}

#[cfg(test)]
mod tests;
