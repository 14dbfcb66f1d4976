-- Per-sensor state kept in each delivery's transaction, so the questions asked first need no
-- scan of the readings: the span and count of a sensor's readings, and the latest value of
-- each of its measurements with its position. Filled once here from the readings loaded so
-- far; from now on each delivery adds to them.

CREATE TABLE sensor_spans (
    sensor_id  bigint      PRIMARY KEY,
    first_ts   timestamptz NOT NULL,
    last_ts    timestamptz NOT NULL,
    readings   bigint      NOT NULL
);

CREATE TABLE latest_values (
    sensor_id       bigint           NOT NULL,
    measurement_id  smallint         NOT NULL,
    ts              timestamptz      NOT NULL,
    value           double precision NOT NULL,
    location_id     bigint,
    lat             double precision,
    lon             double precision,
    file_id         bigint           NOT NULL,
    PRIMARY KEY (sensor_id, measurement_id)
);

INSERT INTO sensor_spans (sensor_id, first_ts, last_ts, readings)
SELECT r.sensor_id, min(r.ts), max(r.ts), sum(cardinality(r."values"))
FROM readings r
GROUP BY r.sensor_id;

-- The later time wins; on a tie the value stored first.
INSERT INTO latest_values
SELECT DISTINCT ON (r.sensor_id, u.measurement_id)
       r.sensor_id, u.measurement_id, r.ts, u.value,
       CASE WHEN r.position_id IS NULL THEN r.location_id ELSE p.location_id END,
       CASE WHEN r.position_id IS NULL THEN r.lat ELSE p.lat END,
       CASE WHEN r.position_id IS NULL THEN r.lon ELSE p.lon END,
       r.file_id
FROM readings r
JOIN measurement_sets s ON s.set_id = r.set_id
LEFT JOIN positions p ON p.position_id = r.position_id
CROSS JOIN LATERAL unnest(s.measurement_ids, r."values") AS u(measurement_id, value)
ORDER BY r.sensor_id, u.measurement_id, r.ts DESC, r.file_id, r.line;

-- Every sensor: its type, where it was last measured, the span and count of its readings, and
-- the device that pushes it (null for sensors known from files).
DROP VIEW v_sensors;
CREATE VIEW v_sensors AS
SELECT s.sensor_id, s.sensor_type, pos.location_id, pos.lat, pos.lon,
       sp.first_ts, sp.last_ts, coalesce(sp.readings, 0) AS readings,
       d.device, s.first_file_id, s.first_seen_at
FROM sensors s
LEFT JOIN sensor_spans sp ON sp.sensor_id = s.sensor_id
LEFT JOIN device_sensors d ON d.sensor_id = s.sensor_id
LEFT JOIN LATERAL (
    SELECT l.location_id, l.lat, l.lon
    FROM latest_values l
    WHERE l.sensor_id = s.sensor_id
    ORDER BY l.ts DESC, l.measurement_id
    LIMIT 1
) pos ON true;

-- The latest value of every measurement of every sensor, where it was measured, and the
-- delivery that brought it.
CREATE VIEW v_latest AS
SELECT l.sensor_id, m.sensor_type, m.name AS measurement, m.unit, l.ts, l.value,
       l.location_id, l.lat, l.lon, l.file_id
FROM latest_values l
JOIN measurements m ON m.measurement_id = l.measurement_id;
