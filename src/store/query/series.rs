//! Windowed statistics: buckets aligned to the UTC epoch, with trailing-window means.

use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use super::query;
use super::readings::WANTED;
use crate::store::StoreError;
/// One time bucket of a series, aligned to the UTC epoch.
#[derive(Debug, Clone)]
pub struct Bucket {
    /// Start of the bucket; it covers `[start, start + bucket)`.
    pub start: DateTime<Utc>,
    /// Readings in the bucket (within the asked range).
    pub n: i64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// Mean value.
    pub mean: f64,
    /// Sample standard deviation; null for a single reading.
    pub stddev: Option<f64>,
    /// Mean of every reading in the trailing window of length `rolling` that ends at the
    /// bucket's end; present only when `rolling` is asked for.
    pub rolling_mean: Option<f64>,
}

/// Which sensors a series covers.
#[derive(Debug, Clone, PartialEq)]
pub enum SeriesScope {
    /// Every sensor with the measurement.
    All,
    /// One sensor.
    Sensor(i64),
    /// Every sensor of one type.
    SensorType(String),
    /// Every sensor at one location.
    Location(i64),
}

/// A windowed-statistics question; the caller checked it (bucket ≥ 1 s, rolling a multiple
/// of bucket, a bounded number of buckets).
#[derive(Debug, Clone)]
pub struct SeriesQuery {
    /// Measurement name (e.g. `pm10`, `temperature`).
    pub measurement: String,
    /// Start of the range (inclusive).
    pub start: DateTime<Utc>,
    /// End of the range (exclusive).
    pub end: DateTime<Utc>,
    /// Bucket length in seconds.
    pub bucket_secs: i64,
    /// Trailing window in seconds, if asked for.
    pub rolling_secs: Option<i64>,
    /// `sensor_type` or `sensor`.
    pub scope: SeriesScope,
}

/// Per bucket as read: the statistics of readings in the asked range, and the count and sum
/// of all readings (for the trailing windows, which may reach before the range).
struct RawBucket {
    start_secs: i64,
    n: i64,
    min: Option<f64>,
    max: Option<f64>,
    mean: Option<f64>,
    stddev: Option<f64>,
    n_all: i64,
    sum_all: f64,
}

/// The first second of the bucket holding `ts`.
fn bucket_floor(ts: DateTime<Utc>, bucket_secs: i64) -> i64 {
    ts.timestamp().div_euclid(bucket_secs) * bucket_secs
}

/// The buckets a series of `[start, end)` spans (the last one may reach past `end`).
pub fn bucket_count(start: DateTime<Utc>, end: DateTime<Utc>, bucket_secs: i64) -> i64 {
    if end <= start {
        return 0;
    }
    let last = end - chrono::Duration::microseconds(1);
    (bucket_floor(last, bucket_secs) - bucket_floor(start, bucket_secs)) / bucket_secs + 1
}

/// Windowed statistics: buckets aligned to the UTC epoch holding at least one reading of the
/// range, each with its n/min/max/mean/stddev, and the trailing mean when asked for.
///
/// # Errors
/// The statement failed.
pub async fn series(
    client: &impl GenericClient,
    asked: &SeriesQuery,
) -> Result<Vec<Bucket>, StoreError> {
    let bucket = asked.bucket_secs;
    let first = bucket_floor(asked.start, bucket);
    let after_last = first + bucket_count(asked.start, asked.end, bucket) * bucket;
    // Without a trailing window only the range is read; with one, the buckets it reaches.
    let (read_from, read_to) = match asked.rolling_secs {
        None => (asked.start, asked.end),
        Some(rolling) => (epoch(first + bucket - rolling), epoch(after_last)),
    };
    let id;
    let (scope_clause, scope_value): (&str, Option<&(dyn ToSql + Sync)>) = match &asked.scope {
        SeriesScope::All | SeriesScope::SensorType(_) => ("", None),
        SeriesScope::Sensor(sensor_id) => {
            id = *sensor_id;
            (" AND r.sensor_id = $8", Some(&id))
        }
        SeriesScope::Location(location_id) => {
            id = *location_id;
            (
                " AND CASE WHEN r.position_id IS NULL THEN r.location_id ELSE p.location_id END = $8",
                Some(&id),
            )
        }
    };
    let sensor_type = match &asked.scope {
        SeriesScope::SensorType(name) => Some(name.as_str()),
        _ => None,
    };
    let positions = match asked.scope {
        SeriesScope::Location(_) => " LEFT JOIN positions p ON p.position_id = r.position_id",
        _ => "",
    };
    // `v_readings` narrowed to one measurement before the rows are read (see `WANTED`).
    let sql = format!(
        "{WANTED} \
         SELECT extract(epoch FROM b)::int8, \
                count(*) FILTER (WHERE inside), \
                min(value) FILTER (WHERE inside), max(value) FILTER (WHERE inside), \
                avg(value) FILTER (WHERE inside), stddev_samp(value) FILTER (WHERE inside), \
                count(*), coalesce(sum(value), 0) \
         FROM ( \
             SELECT date_bin(make_interval(secs => $3), r.ts, timestamptz 'epoch') AS b, \
                    r.\"values\"[w.i] AS value, r.ts >= $5 AND r.ts < $6 AS inside \
             FROM readings r JOIN wanted w ON w.set_id = r.set_id{positions} \
             WHERE r.ts >= $4 AND r.ts < $7{scope_clause} \
         ) x \
         GROUP BY b ORDER BY b"
    );
    let bucket_f = bucket as f64;
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![
        &asked.measurement,
        &sensor_type,
        &bucket_f,
        &read_from,
        &asked.start,
        &asked.end,
        &read_to,
    ];
    params.extend(scope_value);
    let raw: Vec<RawBucket> = query(client, &sql, &params)
        .await?
        .iter()
        .map(raw_bucket)
        .collect();
    Ok(with_rolling_means(&raw, bucket, asked.rolling_secs))
}

fn raw_bucket(row: &Row) -> RawBucket {
    RawBucket {
        start_secs: row.get(0),
        n: row.get(1),
        min: row.get(2),
        max: row.get(3),
        mean: row.get(4),
        stddev: row.get(5),
        n_all: row.get(6),
        sum_all: row.get(7),
    }
}

/// The buckets with readings in the range, each with the mean over the trailing window of
/// `rolling` seconds ending at its end (a whole number of buckets).
fn with_rolling_means(raw: &[RawBucket], bucket: i64, rolling: Option<i64>) -> Vec<Bucket> {
    let mut out = Vec::new();
    // The window slides over the sorted buckets: `lo` is its first; the sums cover `lo` to `b`.
    let (mut lo, mut count, mut sum) = (0usize, 0i64, 0f64);
    for b in raw {
        count += b.n_all;
        sum += b.sum_all;
        if let Some(rolling) = rolling {
            let window_start = b.start_secs + bucket - rolling;
            while raw[lo].start_secs < window_start {
                count -= raw[lo].n_all;
                sum -= raw[lo].sum_all;
                lo += 1;
            }
        }
        let (Some(min), Some(max), Some(mean)) = (b.min, b.max, b.mean) else {
            continue;
        };
        if b.n == 0 {
            continue;
        }
        out.push(Bucket {
            start: epoch(b.start_secs),
            n: b.n,
            min,
            max,
            mean,
            stddev: b.stddev,
            rolling_mean: rolling.map(|_| sum / count as f64),
        });
    }
    out
}

fn epoch(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(secs, 0).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(start_secs: i64, n: i64, values: &[f64]) -> RawBucket {
        let sum: f64 = values.iter().sum();
        RawBucket {
            start_secs,
            n,
            min: (n > 0).then(|| values.iter().copied().fold(f64::INFINITY, f64::min)),
            max: (n > 0).then(|| values.iter().copied().fold(f64::NEG_INFINITY, f64::max)),
            mean: (n > 0).then(|| sum / values.len() as f64),
            stddev: None,
            n_all: values.len() as i64,
            sum_all: sum,
        }
    }

    #[test]
    fn a_trailing_window_covers_whole_buckets_and_skips_gaps() {
        // Hourly buckets at 0h, 1h, 3h; a 2-hour window.
        let buckets = [
            raw(0, 0, &[10.0]), // before the range: only in windows
            raw(3600, 2, &[1.0, 3.0]),
            raw(3 * 3600, 1, &[8.0]),
        ];
        let out = with_rolling_means(&buckets, 3600, Some(7200));
        assert_eq!(out.len(), 2, "the bucket before the range is not shown");
        assert_eq!(out[0].rolling_mean, Some((10.0 + 1.0 + 3.0) / 3.0));
        // The window of the 3h bucket is [2h, 4h): only its own reading.
        assert_eq!(out[1].rolling_mean, Some(8.0));
    }

    #[test]
    fn buckets_are_counted_from_the_epoch() {
        let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        assert_eq!(
            bucket_count(at("2024-01-01T00:30:00Z"), at("2024-01-01T02:00:00Z"), 3600),
            2
        );
        assert_eq!(
            bucket_count(at("2024-01-01T00:30:00Z"), at("2024-01-01T02:00:01Z"), 3600),
            3
        );
        assert_eq!(
            bucket_count(at("2024-01-01T00:00:00Z"), at("2024-01-01T00:00:00Z"), 60),
            0
        );
    }
}
