-- Readings narrower and cheaper to load. Each row still holds one source line, but the ids of
-- its measurements become one `set_id` into `measurement_sets` (the same few sets recur on
-- every line of a file), and its location id and coordinates one `position_id` into
-- `positions` (the same few places recur too; a chunk with many distinct positions keeps
-- them in the row instead). The (sensor_id, ts) btree and the two single-column BRIN indexes
-- become one BRIN index over (sensor_id, ts, file_id): the writer stores each chunk ordered
-- by file, sensor and time, so small block ranges keep every one of those columns narrow, and
-- a BRIN index costs the load a fraction of what a btree does.
-- The columns carry no NOT NULL and `set_id` and `position_id` no foreign keys: each is a
-- per-row check on every load, of what the writer guarantees (time, file, sensor, line, set
-- and values on every row; a dictionary entry registered before any row uses it, entries
-- never deleted). The tests assert it on every real file.

CREATE TABLE measurement_sets (
    set_id          integer    GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    measurement_ids smallint[] NOT NULL UNIQUE
);

CREATE TABLE positions (
    position_id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    location_id bigint,
    lat         double precision,
    lon         double precision
);
-- Unique with nulls comparable: no location id is the smallest bigint, no coordinate NaN.
CREATE UNIQUE INDEX positions_identity ON positions
    ((coalesce(location_id, -9223372036854775808)), (coalesce(lat, 'NaN')), (coalesce(lon, 'NaN')));

INSERT INTO measurement_sets (measurement_ids)
SELECT DISTINCT measurement_ids FROM reading_rows;

INSERT INTO positions (location_id, lat, lon)
SELECT DISTINCT location_id, lat, lon FROM reading_rows;

DROP VIEW v_hourly;
DROP VIEW v_readings;

CREATE TABLE readings (
    ts          timestamptz,
    file_id     bigint,
    sensor_id   bigint,
    line        integer,
    set_id      integer,
    position_id integer,
    "values"    double precision[],
    -- The position itself, for lines of a chunk with too many distinct positions to be worth
    -- a dictionary entry each (moving sensors, jittered coordinates); `position_id` is then
    -- null. Null columns at the end of a row cost nothing but their bit.
    location_id bigint,
    lat         double precision,
    lon         double precision
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

INSERT INTO readings (ts, file_id, sensor_id, line, set_id, position_id, "values")
SELECT r.ts, r.file_id, r.sensor_id, r.line, s.set_id, p.position_id, r."values"
FROM reading_rows r
JOIN measurement_sets s USING (measurement_ids)
JOIN positions p
  ON coalesce(p.location_id, -9223372036854775808) = coalesce(r.location_id, -9223372036854775808)
 AND coalesce(p.lat, 'NaN') = coalesce(r.lat, 'NaN')
 AND coalesce(p.lon, 'NaN') = coalesce(r.lon, 'NaN')
ORDER BY r.file_id, r.sensor_id, r.ts;

DROP TABLE reading_rows;

-- One sensor over a time range, everything in a time range, and provenance by file.
CREATE INDEX readings_brin ON readings USING brin (sensor_id, ts, file_id)
    WITH (pages_per_range = 16, autosummarize = on);

CREATE VIEW v_readings AS
SELECT r.file_id, r.line, r.sensor_id, m.sensor_type,
       CASE WHEN r.position_id IS NULL THEN r.location_id ELSE p.location_id END AS location_id,
       CASE WHEN r.position_id IS NULL THEN r.lat ELSE p.lat END AS lat,
       CASE WHEN r.position_id IS NULL THEN r.lon ELSE p.lon END AS lon,
       r.ts, m.name AS measurement, u.value, m.unit
FROM readings r
JOIN measurement_sets s ON s.set_id = r.set_id
LEFT JOIN positions p ON p.position_id = r.position_id
CROSS JOIN LATERAL unnest(s.measurement_ids, r."values") AS u(measurement_id, value)
JOIN measurements m ON m.measurement_id = u.measurement_id;

CREATE VIEW v_hourly AS
SELECT sensor_id, sensor_type, measurement, unit, date_trunc('hour', ts) AS hour, count(*) AS n,
       avg(value) AS mean, min(value) AS min, max(value) AS max
FROM v_readings
GROUP BY 1, 2, 3, 4, 5;

-- The bulk-written tables drop their foreign keys for the same reason: each is checked row by
-- row, by a query per row, and a file with thousands of sensors or rejects paid for thousands
-- of them. Every row is written in the transaction that inserts its file's ledger row, and
-- sensors, locations and measurements are never deleted; the tests assert the references.
ALTER TABLE aggregates DROP CONSTRAINT aggregates_file_id_fkey;
ALTER TABLE aggregates DROP CONSTRAINT aggregates_measurement_id_fkey;
ALTER TABLE rejects DROP CONSTRAINT rejects_file_id_fkey;
ALTER TABLE sensors DROP CONSTRAINT sensors_first_file_id_fkey;
ALTER TABLE locations DROP CONSTRAINT locations_first_file_id_fkey;
