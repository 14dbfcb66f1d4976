-- Readings narrower and cheaper to load. Each row still holds one source line, but the ids of
-- its measurements become one `set_id` into `measurement_sets` (the same few sets recur on
-- every line of a file), and the columns are ordered so that none needs padding. The
-- (sensor_id, ts) btree and the two single-column BRIN indexes become one BRIN index over
-- (sensor_id, ts, file_id): the writer stores each chunk ordered by file, sensor and time, so
-- small block ranges keep every one of those columns narrow, and a BRIN index costs the load
-- a fraction of what a btree does. `set_id` has no foreign key (a per-row check on every
-- load); the writer registers a set before any row uses it, and sets are never deleted.

CREATE TABLE measurement_sets (
    set_id          integer    GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    measurement_ids smallint[] NOT NULL UNIQUE
);

INSERT INTO measurement_sets (measurement_ids)
SELECT DISTINCT measurement_ids FROM reading_rows;

DROP VIEW v_hourly;
DROP VIEW v_readings;

CREATE TABLE readings (
    ts          timestamptz        NOT NULL,
    file_id     bigint             NOT NULL,
    sensor_id   bigint             NOT NULL,
    location_id bigint,
    lat         double precision,
    lon         double precision,
    line        integer            NOT NULL,
    set_id      integer            NOT NULL,
    "values"    double precision[] NOT NULL
) PARTITION BY RANGE (ts);

DO $$
BEGIN
    FOR year IN 2000..2049 LOOP
        EXECUTE format(
            'CREATE TABLE readings_y%s PARTITION OF readings FOR VALUES FROM (%L) TO (%L)',
            year, make_timestamptz(year, 1, 1, 0, 0, 0, 'UTC'), make_timestamptz(year + 1, 1, 1, 0, 0, 0, 'UTC'));
    END LOOP;
END
$$;
CREATE TABLE readings_other PARTITION OF readings DEFAULT;

INSERT INTO readings (ts, file_id, sensor_id, location_id, lat, lon, line, set_id, "values")
SELECT r.ts, r.file_id, r.sensor_id, r.location_id, r.lat, r.lon, r.line, s.set_id, r."values"
FROM reading_rows r
JOIN measurement_sets s USING (measurement_ids)
ORDER BY r.file_id, r.sensor_id, r.ts;

DROP TABLE reading_rows;

-- One sensor over a time range, everything in a time range, and provenance by file.
CREATE INDEX readings_brin ON readings USING brin (sensor_id, ts, file_id)
    WITH (pages_per_range = 16, autosummarize = on);

CREATE VIEW v_readings AS
SELECT r.file_id, r.line, r.sensor_id, m.sensor_type, r.location_id, r.lat, r.lon, r.ts,
       m.name AS measurement, u.value, m.unit
FROM readings r
JOIN measurement_sets s ON s.set_id = r.set_id
CROSS JOIN LATERAL unnest(s.measurement_ids, r."values") AS u(measurement_id, value)
JOIN measurements m ON m.measurement_id = u.measurement_id;

CREATE VIEW v_hourly AS
SELECT sensor_id, sensor_type, measurement, unit, date_trunc('hour', ts) AS hour, count(*) AS n,
       avg(value) AS mean, min(value) AS min, max(value) AS max
FROM v_readings
GROUP BY 1, 2, 3, 4, 5;
