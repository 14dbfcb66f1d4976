-- One delivery's 100 readings (10 sensors of 10 lines, three values a line) in a transaction
-- of its own, with nothing else: the least any durable push of 100 readings costs.
\set g random(0, 99)
INSERT INTO sensor_etl.readings (ts, file_id, sensor_id, line, set_id, position_id, "values", location_id, lat, lon)
SELECT clock_timestamp() - make_interval(secs => r / 10), 1,
       1000 + (:g)::int * 10 + r % 10, r + 2, 1, 1, ARRAY[950.0 + r, 10.5 + r % 20, 40.0 + r % 50],
       51000 + (:g)::int * 10 + r % 10, 48.5, 9.1
FROM generate_series(0, 99) r;
