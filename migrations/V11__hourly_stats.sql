-- The statistics of each measurement of each sensor in each hour of data time (UTC), kept in
-- each delivery's transaction (count, mean, M2 = sum of squared deviations, min, max; a
-- delivery's statistics are merged with the stored ones exactly, by Chan et al.'s formula).
-- `v_hourly` reads them as they are and `v_daily` merges the hours of a day, so neither scans
-- the readings. Filled once here from the readings loaded so far.

CREATE TABLE hourly_stats (
    sensor_id       bigint           NOT NULL,
    measurement_id  smallint         NOT NULL,
    hour            timestamptz      NOT NULL,
    n               bigint           NOT NULL,
    mean            double precision NOT NULL,
    m2              double precision NOT NULL,
    min             double precision NOT NULL,
    max             double precision NOT NULL,
    PRIMARY KEY (sensor_id, measurement_id, hour)
);

INSERT INTO hourly_stats (sensor_id, measurement_id, hour, n, mean, m2, min, max)
SELECT r.sensor_id, u.measurement_id,
       to_timestamp(floor(extract(epoch FROM r.ts) / 3600) * 3600),
       count(*), avg(u.value), coalesce(var_samp(u.value) * (count(*) - 1), 0),
       min(u.value), max(u.value)
FROM readings r
JOIN measurement_sets s ON s.set_id = r.set_id
CROSS JOIN LATERAL unnest(s.measurement_ids, r."values") AS u(measurement_id, value)
GROUP BY 1, 2, 3;

DROP VIEW v_hourly;

-- Per sensor, measurement and hour of data time (UTC); the sample standard deviation is null
-- below two readings.
CREATE VIEW v_hourly AS
SELECT h.sensor_id, m.sensor_type, m.name AS measurement, m.unit, h.hour, h.n, h.min, h.max,
       h.mean, CASE WHEN h.n >= 2 THEN sqrt(greatest(h.m2, 0) / (h.n - 1)) END AS stddev
FROM hourly_stats h
JOIN measurements m ON m.measurement_id = h.measurement_id;

-- Per sensor, measurement and day of data time (UTC): the day's hours merged exactly.
CREATE VIEW v_daily AS
SELECT d.sensor_id, m.sensor_type, m.name AS measurement, m.unit, d.day, d.n, d.min, d.max,
       d.mean, CASE WHEN d.n >= 2 THEN sqrt(greatest(d.m2, 0) / (d.n - 1)) END AS stddev
FROM (
    SELECT g.sensor_id, g.measurement_id, g.day, g.n, g.min, g.max, g.mean,
           g.m2_within + g.between AS m2
    FROM (
        SELECT h.sensor_id, h.measurement_id,
               date_trunc('day', h.hour, 'UTC') AS day,
               sum(h.n)::bigint AS n, min(h.min) AS min, max(h.max) AS max,
               sum(h.n * h.mean) / sum(h.n) AS mean,
               sum(h.m2) AS m2_within,
               -- sum of n_i (mean_i - mean)^2 over the hours, without a second pass
               sum(h.n * h.mean * h.mean) - sum(h.n * h.mean) ^ 2 / sum(h.n) AS between
        FROM hourly_stats h
        GROUP BY 1, 2, 3
    ) g
) d
JOIN measurements m ON m.measurement_id = d.measurement_id;
