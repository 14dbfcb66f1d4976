-- The statistics of each sensor's measurements per hour and per day of data time (UTC), kept
-- in each delivery's transaction, so `v_hourly` and `v_daily` never scan the readings. One row
-- per (sensor, hour) and (sensor, day): the measurement ids, and five numbers per measurement
-- in one array (count, mean, M2 = sum of squared deviations from the mean, min, max), merged
-- exactly (Chan et al.) with what a later delivery brings. One array, not five: each array
-- costs a header, and these rows are a tenth of the load's bytes. A BRIN index finds the rows
-- a delivery merges with (a btree cost a third more on the COPY); only the transaction that
-- has claimed a sensor writes its rows, so a bucket is never stored twice. Filled once here
-- from the readings loaded so far.

CREATE TABLE sensor_etl.hourly_stats (
    sensor_id       bigint             NOT NULL,
    hour            timestamptz        NOT NULL,
    measurement_ids smallint[]         NOT NULL,
    stats           double precision[] NOT NULL
);
CREATE INDEX hourly_stats_brin ON sensor_etl.hourly_stats USING brin (sensor_id, hour)
    WITH (pages_per_range = 8, autosummarize = on);

CREATE TABLE sensor_etl.daily_stats (
    sensor_id       bigint             NOT NULL,
    day             timestamptz        NOT NULL,
    measurement_ids smallint[]         NOT NULL,
    stats           double precision[] NOT NULL
);
CREATE INDEX daily_stats_brin ON sensor_etl.daily_stats USING brin (sensor_id, day)
    WITH (pages_per_range = 8, autosummarize = on);

INSERT INTO sensor_etl.hourly_stats
SELECT sensor_id, bucket, array_agg(measurement_id ORDER BY measurement_id) FILTER (WHERE pos = 1),
       array_agg(x ORDER BY measurement_id, pos)
FROM (
    SELECT r.sensor_id, date_trunc('hour', r.ts, 'UTC') AS bucket, u.measurement_id,
           count(*) AS n, avg(u.value) AS mean,
           coalesce(var_samp(u.value) * (count(*) - 1), 0) AS m2,
           min(u.value) AS lo, max(u.value) AS hi
    FROM sensor_etl.readings r
    JOIN sensor_etl.measurement_sets s ON s.set_id = r.set_id
    CROSS JOIN LATERAL unnest(s.measurement_ids, r."values") AS u(measurement_id, value)
    GROUP BY 1, 2, 3
) g
CROSS JOIN LATERAL unnest(ARRAY[n::float8, mean, m2, lo, hi]) WITH ORDINALITY AS st(x, pos)
GROUP BY sensor_id, bucket;

INSERT INTO sensor_etl.daily_stats
SELECT sensor_id, bucket, array_agg(measurement_id ORDER BY measurement_id) FILTER (WHERE pos = 1),
       array_agg(x ORDER BY measurement_id, pos)
FROM (
    SELECT r.sensor_id, date_trunc('day', r.ts, 'UTC') AS bucket, u.measurement_id,
           count(*) AS n, avg(u.value) AS mean,
           coalesce(var_samp(u.value) * (count(*) - 1), 0) AS m2,
           min(u.value) AS lo, max(u.value) AS hi
    FROM sensor_etl.readings r
    JOIN sensor_etl.measurement_sets s ON s.set_id = r.set_id
    CROSS JOIN LATERAL unnest(s.measurement_ids, r."values") AS u(measurement_id, value)
    GROUP BY 1, 2, 3
) g
CROSS JOIN LATERAL unnest(ARRAY[n::float8, mean, m2, lo, hi]) WITH ORDINALITY AS st(x, pos)
GROUP BY sensor_id, bucket;

DROP VIEW public.v_hourly;

-- Per sensor, measurement and hour of data time (UTC); the sample standard deviation is null
-- below two readings.
CREATE VIEW public.v_hourly AS
SELECT h.sensor_id, m.sensor_type, m.name AS measurement, m.unit, h.hour, u.n, u.min, u.max,
       u.mean, CASE WHEN u.n >= 2 THEN sqrt(greatest(u.m2, 0) / (u.n - 1)) END AS stddev
FROM sensor_etl.hourly_stats h
CROSS JOIN LATERAL (
    SELECT h.measurement_ids[i] AS measurement_id, h.stats[5 * i - 4]::int8 AS n,
           h.stats[5 * i - 3] AS mean, h.stats[5 * i - 2] AS m2, h.stats[5 * i - 1] AS min,
           h.stats[5 * i] AS max
    FROM generate_series(1, cardinality(h.measurement_ids)) AS i
) u
JOIN sensor_etl.measurements m ON m.measurement_id = u.measurement_id;

-- The same per day of data time (UTC).
CREATE VIEW public.v_daily AS
SELECT d.sensor_id, m.sensor_type, m.name AS measurement, m.unit, d.day, u.n, u.min, u.max,
       u.mean, CASE WHEN u.n >= 2 THEN sqrt(greatest(u.m2, 0) / (u.n - 1)) END AS stddev
FROM sensor_etl.daily_stats d
CROSS JOIN LATERAL (
    SELECT d.measurement_ids[i] AS measurement_id, d.stats[5 * i - 4]::int8 AS n,
           d.stats[5 * i - 3] AS mean, d.stats[5 * i - 2] AS m2, d.stats[5 * i - 1] AS min,
           d.stats[5 * i] AS max
    FROM generate_series(1, cardinality(d.measurement_ids)) AS i
) u
JOIN sensor_etl.measurements m ON m.measurement_id = u.measurement_id;
