-- sensor-etl schema, version 1.
--
-- Tables are the storage; the v_* views at the end are the stable public query surface.

-- One row per distinct file content (the ingest ledger).
CREATE TABLE files (
    file_id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    content_sha256  text        NOT NULL UNIQUE,
    file_name       text        NOT NULL,
    size_bytes      bigint      NOT NULL,
    status          text        NOT NULL
        CHECK (status IN ('loaded', 'partially_loaded', 'rejected', 'empty')),
    rows_read       bigint      NOT NULL,
    rows_loaded     bigint      NOT NULL,
    rows_rejected   bigint      NOT NULL,
    reading_count   bigint      NOT NULL,
    received_at     timestamptz NOT NULL,
    finished_at     timestamptz NOT NULL DEFAULT now(),
    error           text,
    CHECK (rows_read = rows_loaded + rows_rejected)
);

-- Every time a file was delivered, including re-deliveries of known content.
CREATE TABLE file_deliveries (
    delivery_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    file_id       bigint      NOT NULL REFERENCES files (file_id),
    file_name     text        NOT NULL,
    outcome       text        NOT NULL CHECK (outcome IN ('new', 'duplicate')),
    delivered_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX file_deliveries_file_id ON file_deliveries (file_id);

-- The measurement dictionary, filled from the sensor-type configuration at start-up: a new
-- sensor type or measurement is a new row here, never a schema change.
CREATE TABLE measurements (
    measurement_id  smallint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sensor_type     text NOT NULL,
    name            text NOT NULL,
    unit            text NOT NULL,
    UNIQUE (sensor_type, name, unit)
);

CREATE TABLE sensors (
    sensor_id      bigint PRIMARY KEY,
    sensor_type    text        NOT NULL,
    first_file_id  bigint      NOT NULL REFERENCES files (file_id),
    first_seen_at  timestamptz NOT NULL DEFAULT now()
);

-- A location as first reported; each reading keeps its own location and coordinates, since a
-- sensor can move, even within one file.
CREATE TABLE locations (
    location_id    bigint PRIMARY KEY,
    lat            double precision,
    lon            double precision,
    first_file_id  bigint NOT NULL REFERENCES files (file_id)
);

-- Raw readings in canonical units, one row per (source line, measurement), partitioned by
-- year of the reading time.
CREATE TABLE readings (
    file_id         bigint           NOT NULL,
    line            integer          NOT NULL,
    sensor_id       bigint           NOT NULL,
    location_id     bigint,
    lat             double precision,
    lon             double precision,
    ts              timestamptz      NOT NULL,
    measurement_id  smallint         NOT NULL,
    value           double precision NOT NULL
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

-- One sensor over a time range.
CREATE INDEX readings_sensor_ts ON readings (sensor_id, ts);
-- Everything in a time range, and provenance by file: both columns grow with load order, so
-- block-range indexes serve them at almost no cost to loading.
CREATE INDEX readings_ts_brin ON readings USING brin (ts);
CREATE INDEX readings_file_brin ON readings USING brin (file_id);

CREATE TABLE aggregates (
    file_id         bigint           NOT NULL REFERENCES files (file_id),
    scope           text             NOT NULL CHECK (scope IN ('sensor_type', 'sensor')),
    measurement_id  smallint         NOT NULL REFERENCES measurements (measurement_id),
    sensor_id       bigint,
    location_id     bigint,
    n               bigint           NOT NULL,
    min             double precision NOT NULL,
    max             double precision NOT NULL,
    mean            double precision NOT NULL,
    stddev          double precision,
    first_ts        timestamptz      NOT NULL,
    last_ts         timestamptz      NOT NULL,
    processed_at    timestamptz      NOT NULL DEFAULT now(),
    CHECK ((scope = 'sensor_type') = (sensor_id IS NULL))
);
CREATE INDEX aggregates_file_id ON aggregates (file_id);

-- One row per violation of a rejected row.
-- Rejects are copied while the file streams, before its ledger row exists: the reference is
-- checked at commit.
CREATE TABLE rejects (
    file_id      bigint NOT NULL REFERENCES files (file_id) DEFERRABLE INITIALLY DEFERRED,
    line         bigint NOT NULL,
    record       bigint NOT NULL,
    byte_offset  bigint NOT NULL,
    column_name  text,
    value        text,
    code         text   NOT NULL,
    message      text   NOT NULL
);
CREATE INDEX rejects_file_line ON rejects (file_id, line);

-- Public query surface: names and columns are a stable contract.
CREATE VIEW v_files AS
SELECT file_id, file_name, content_sha256, status, rows_read, rows_loaded, rows_rejected,
       received_at, finished_at, error, size_bytes, reading_count
FROM files;

CREATE VIEW v_readings AS
SELECT r.file_id, r.line, r.sensor_id, m.sensor_type, r.location_id, r.lat, r.lon, r.ts,
       m.name AS measurement, r.value, m.unit
FROM readings r
JOIN measurements m USING (measurement_id);

CREATE VIEW v_aggregates AS
SELECT a.file_id, f.file_name, a.scope, m.sensor_type, a.sensor_id, a.location_id,
       m.name AS measurement, m.unit, a.n, a.min, a.max, a.mean, a.stddev, a.first_ts,
       a.last_ts, a.processed_at, f.content_sha256
FROM aggregates a
JOIN files f USING (file_id)
JOIN measurements m USING (measurement_id);

CREATE VIEW v_rejects AS
SELECT file_id, line, column_name, value, code, message, record, byte_offset
FROM rejects;

-- Hourly means per sensor and measurement, for dashboards.
CREATE VIEW v_hourly AS
SELECT r.sensor_id, m.sensor_type, m.name AS measurement, m.unit,
       date_trunc('hour', r.ts) AS hour, count(*) AS n, avg(r.value) AS mean,
       min(r.value) AS min, max(r.value) AS max
FROM readings r
JOIN measurements m USING (measurement_id)
GROUP BY 1, 2, 3, 4, 5;
