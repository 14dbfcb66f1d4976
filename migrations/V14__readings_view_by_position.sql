-- `v_readings` picks each value out of its line's array by position instead of unnesting every
-- line's arrays: the measurements of a set and their positions come from the few rows of
-- `measurement_sets`, joined by hash, so a question about one measurement reads one value per
-- line (avg by sensor over one measurement of 9M readings: 3.55 s -> 0.60 s, a plain long
-- table 0.54 s). Same columns, same rows.
CREATE OR REPLACE VIEW public.v_readings AS
SELECT r.file_id, r.line, r.sensor_id, m.sensor_type,
       CASE WHEN r.position_id IS NULL THEN r.location_id ELSE p.location_id END AS location_id,
       CASE WHEN r.position_id IS NULL THEN r.lat ELSE p.lat END AS lat,
       CASE WHEN r.position_id IS NULL THEN r.lon ELSE p.lon END AS lon,
       r.ts, m.name AS measurement, r."values"[sm.position] AS value, m.unit
FROM sensor_etl.readings r
JOIN (
    SELECT s.set_id, u.measurement_id, u.position::int AS position
    FROM sensor_etl.measurement_sets s
    CROSS JOIN LATERAL unnest(s.measurement_ids) WITH ORDINALITY AS u(measurement_id, position)
) sm ON sm.set_id = r.set_id
JOIN sensor_etl.measurements m ON m.measurement_id = sm.measurement_id
LEFT JOIN sensor_etl.positions p ON p.position_id = r.position_id;
