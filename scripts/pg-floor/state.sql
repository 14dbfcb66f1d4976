-- What the contract keeps per delivery besides its readings, for :d deliveries of 10 sensors
-- with three measurements each, in one transaction (one set-based statement a table, as a
-- group commit writes them): ledger rows, per-delivery aggregates at both scopes, and the
-- latest values, sensor spans, hourly and daily statistics kept current. Nothing is read,
-- locked, checked or merged: a floor, not a model of the pipeline. The deliveries' readings
-- (100 a delivery): r = 0 leaves them out, r = 1 inserts them from generate_series, r = 2 copies
-- them in binary from floor_readings.bin in the data directory (as the pipeline's COPY sends
-- them, without the network).
\set g random(0, 100 - :d)
BEGIN;
WITH f AS (
  INSERT INTO sensor_etl.files (content_sha256, file_name, size_bytes, status, rows_read, rows_loaded,
    rows_rejected, reading_count, received_at, finished_at, rows_duplicate)
  SELECT md5(random()::text || clock_timestamp()::text || d), 'push', 7000, 'loaded', 100, 100, 0, 300,
    now(), now(), 0
  FROM generate_series(1, (:d)::int) d RETURNING file_id)
SELECT min(file_id) AS f, extract(epoch from clock_timestamp())::bigint AS t FROM f \gset
INSERT INTO sensor_etl.file_deliveries (file_id, file_name, outcome, delivered_at, origin)
SELECT (:f)::bigint, 'push', 'new', now(), 'http' FROM generate_series(1, (:d)::int);
\if :r = 1
INSERT INTO sensor_etl.readings (ts, file_id, sensor_id, line, set_id, position_id, "values", location_id, lat, lon)
SELECT to_timestamp((:t)::bigint - r / (10 * (:d)::int)), (:f)::bigint, 1000 + (:g)::int * 10 + r % (10 * (:d)::int),
  r + 2, 1, 1, ARRAY[950.0 + r, 10.5 + r % 20, 40.0 + r % 50], 51000 + (:g)::int * 10 + r % (10 * (:d)::int), 48.5, 9.1
FROM generate_series(0, 100 * (:d)::int - 1) r;
\elif :r = 2
COPY sensor_etl.readings (ts, file_id, sensor_id, line, set_id, position_id, "values", location_id, lat, lon)
FROM 'floor_readings.bin' WITH (FORMAT binary);
\endif
INSERT INTO sensor_etl.aggregates (file_id, scope, measurement_id, sensor_id, location_id, n, min, max,
  mean, stddev, first_ts, last_ts, processed_at)
SELECT (:f)::bigint, CASE WHEN s < 0 THEN 'sensor_type' ELSE 'sensor' END, m,
  CASE WHEN s >= 0 THEN 1000 + (:g)::int * 10 + s END, CASE WHEN s >= 0 THEN 51000 + (:g)::int * 10 + s END,
  10, 1, 2, 1.5, 0.5, now(), now(), now()
FROM generate_series(-1 * (:d)::int, 10 * (:d)::int - 1) s, generate_series(1, 3) m;
INSERT INTO sensor_etl.latest_values (sensor_id, measurement_id, ts, value, location_id, lat, lon, file_id)
SELECT 1000 + (:g)::int * 10 + s, m, to_timestamp((:t)::bigint + 9), 1.5, 51000 + (:g)::int * 10 + s,
  48.5, 9.1, (:f)::bigint
FROM generate_series(0, 10 * (:d)::int - 1) s, generate_series(1, 3) m
ON CONFLICT (sensor_id, measurement_id) DO UPDATE SET ts = excluded.ts, value = excluded.value,
  location_id = excluded.location_id, lat = excluded.lat, lon = excluded.lon, file_id = excluded.file_id
WHERE excluded.ts > latest_values.ts;
INSERT INTO sensor_etl.sensor_spans (sensor_id, first_ts, last_ts, readings)
SELECT 1000 + (:g)::int * 10 + s, to_timestamp((:t)::bigint), to_timestamp((:t)::bigint + 9), 10
FROM generate_series(0, 10 * (:d)::int - 1) s
ON CONFLICT (sensor_id) DO UPDATE SET first_ts = least(sensor_spans.first_ts, excluded.first_ts),
  last_ts = greatest(sensor_spans.last_ts, excluded.last_ts),
  readings = sensor_spans.readings + excluded.readings;
INSERT INTO sensor_etl.daily_stats (sensor_id, day, measurement_ids, stats)
SELECT 1000 + (:g)::int * 10 + s, date_trunc('day', to_timestamp((:t)::bigint)), '{1,2,3}',
  '{10,1.5,0.5,1,2,10,1.5,0.5,1,2,10,1.5,0.5,1,2}'
FROM generate_series(0, 10 * (:d)::int - 1) s
ON CONFLICT (sensor_id, day) DO UPDATE SET stats = excluded.stats;
INSERT INTO sensor_etl.hourly_stats (sensor_id, hour, measurement_ids, stats)
SELECT 1000 + (:g)::int * 10 + s, date_trunc('hour', to_timestamp((:t)::bigint)), '{1,2,3}',
  '{10,1.5,0.5,1,2,10,1.5,0.5,1,2,10,1.5,0.5,1,2}'
FROM generate_series(0, 10 * (:d)::int - 1) s
ON CONFLICT (sensor_id, hour) DO UPDATE SET stats = excluded.stats;
COMMIT;
