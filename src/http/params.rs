//! Query parameters of the read API, parsed by hand so that every mistake is a 400 naming the
//! parameter and saying how to write it: times (RFC 3339), durations (`90s`, `5m`, `1h`,
//! `1d`), ids and limits. A `+` in a time offset that arrived as a space (an unencoded
//! query string) is read as `+`.

use chrono::{DateTime, Utc};

use crate::http::error::ApiError;

/// A required parameter.
pub fn required<'a>(name: &'static str, value: Option<&'a str>) -> Result<&'a str, ApiError> {
    match value.map(str::trim) {
        Some(text) if !text.is_empty() => Ok(text),
        _ => Err(ApiError::bad_parameter(
            name,
            format!("`{name}` is required"),
        )),
    }
}

/// An optional parameter; an empty value counts as absent.
pub fn optional(value: Option<&str>) -> Option<&str> {
    value.map(str::trim).filter(|text| !text.is_empty())
}

/// An RFC 3339 time, e.g. `2024-05-01T00:00:00Z`.
pub fn time(name: &'static str, text: &str) -> Result<DateTime<Utc>, ApiError> {
    let parse = |t: &str| DateTime::parse_from_rfc3339(t).map(|ts| ts.with_timezone(&Utc));
    parse(text)
        .or_else(|e| match text.contains(' ') {
            true => parse(&text.replace(' ', "+")),
            false => Err(e),
        })
        .map_err(|_| {
            ApiError::bad_parameter(
                name,
                format!(
                    "`{name}` must be an RFC 3339 time such as 2024-05-01T00:00:00Z, not `{}`",
                    shorten(text)
                ),
            )
        })
}

/// A half-open range `[start, end)` from the required `start` and `end`.
pub fn range(
    start: Option<&str>,
    end: Option<&str>,
) -> Result<(DateTime<Utc>, DateTime<Utc>), ApiError> {
    let start = time("start", required("start", start)?)?;
    let end = time("end", required("end", end)?)?;
    if end <= start {
        return Err(ApiError::bad_parameter(
            "end",
            "`end` must be later than `start` (the range is [start, end))",
        ));
    }
    Ok((start, end))
}

/// A whole number.
pub fn integer(name: &'static str, text: &str) -> Result<i64, ApiError> {
    text.parse().map_err(|_| {
        ApiError::bad_parameter(
            name,
            format!("`{name}` must be a whole number, not `{}`", shorten(text)),
        )
    })
}

/// A page size between 1 and `max`, `default` when absent.
pub fn limit(text: Option<&str>, default: i64, max: i64) -> Result<i64, ApiError> {
    let Some(text) = optional(text) else {
        return Ok(default);
    };
    match integer("limit", text)? {
        n if (1..=max).contains(&n) => Ok(n),
        _ => Err(ApiError::bad_parameter(
            "limit",
            format!("`limit` must be between 1 and {max}"),
        )),
    }
}

/// A duration in seconds: a positive whole number followed by `s`, `m`, `h` or `d`.
pub fn duration_secs(name: &'static str, text: &str) -> Result<i64, ApiError> {
    let wrong = || {
        ApiError::bad_parameter(
            name,
            format!(
                "`{name}` must be a duration such as 1m, 5m, 15m, 1h, 6h or 1d, not `{}`",
                shorten(text)
            ),
        )
    };
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(wrong)?;
    let (number, unit) = text.split_at(split);
    let number: i64 = number.parse().map_err(|_| wrong())?;
    let unit_secs = match unit {
        "s" => 1,
        "m" | "min" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(wrong()),
    };
    match number.checked_mul(unit_secs) {
        Some(secs) if secs > 0 && secs <= 366 * 86_400 => Ok(secs),
        _ => Err(wrong()),
    }
}

/// At most 60 characters of what was sent, for a message.
fn shorten(text: &str) -> String {
    let mut short: String = text.chars().take(60).collect();
    if short.len() < text.len() {
        short.push('…');
    }
    short
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_take_offsets_and_a_plus_sent_as_space() {
        let utc = time("start", "2024-05-01T02:00:00+02:00").unwrap();
        assert_eq!(utc.to_rfc3339(), "2024-05-01T00:00:00+00:00");
        assert_eq!(time("start", "2024-05-01T02:00:00 02:00").unwrap(), utc);
        assert!(time("start", "yesterday").is_err());
    }

    #[test]
    fn durations_have_a_unit_and_a_bound() {
        assert_eq!(duration_secs("bucket", "15m").unwrap(), 900);
        assert_eq!(duration_secs("bucket", "1d").unwrap(), 86_400);
        for bad in ["", "h", "0h", "1w", "-1h", "1.5h", "99999999999999999999d"] {
            assert!(duration_secs("bucket", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn limits_are_bounded() {
        assert_eq!(limit(None, 10, 100).unwrap(), 10);
        assert_eq!(limit(Some("100"), 10, 100).unwrap(), 100);
        assert!(limit(Some("101"), 10, 100).is_err());
        assert!(limit(Some("0"), 10, 100).is_err());
    }
}
