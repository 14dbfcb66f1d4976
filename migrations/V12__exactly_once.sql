-- Exactly once per reading: a reading whose sensor and time are already stored is not stored
-- again. A delivery counts the lines it brought again with the same values
-- (`rows_duplicate`; rows read = loaded + rejected + duplicate); a line with other values is a
-- conflict, rejected (`conflicting_reading`) or, with `on_conflict = "replace"`, stored in
-- place of the old line, which moves to `replaced_readings` with the delivery that replaced it.
ALTER TABLE sensor_etl.files ADD COLUMN rows_duplicate bigint NOT NULL DEFAULT 0;
ALTER TABLE sensor_etl.files DROP CONSTRAINT files_check;
ALTER TABLE sensor_etl.files ADD CONSTRAINT files_rows_conserved
    CHECK (rows_read = rows_loaded + rows_rejected + rows_duplicate);

CREATE TABLE sensor_etl.replaced_readings (
    ts              timestamptz      NOT NULL,
    file_id         bigint           NOT NULL,
    sensor_id       bigint           NOT NULL,
    line            integer          NOT NULL,
    measurement_ids smallint[]       NOT NULL,
    "values"        double precision[] NOT NULL,
    location_id     bigint,
    lat             double precision,
    lon             double precision,
    replaced_by     bigint           NOT NULL,
    replaced_at     timestamptz      NOT NULL DEFAULT now()
);
CREATE INDEX replaced_readings_sensor_ts ON sensor_etl.replaced_readings (sensor_id, ts);

CREATE OR REPLACE VIEW public.v_files AS
SELECT file_id, file_name, content_sha256, status, rows_read, rows_loaded, rows_rejected,
       received_at, finished_at, error, size_bytes, reading_count, rows_duplicate
FROM sensor_etl.files;

-- Readings replaced by a later delivery (`on_conflict = "replace"`), one row per measurement,
-- with the delivery that held them and the one that replaced them.
CREATE VIEW public.v_replaced AS
SELECT r.file_id, r.line, r.sensor_id, m.sensor_type, r.location_id, r.lat, r.lon, r.ts,
       m.name AS measurement, u.value, m.unit, r.replaced_by, r.replaced_at
FROM sensor_etl.replaced_readings r
CROSS JOIN LATERAL unnest(r.measurement_ids, r."values") AS u(measurement_id, value)
JOIN sensor_etl.measurements m ON m.measurement_id = u.measurement_id;
