-- The hourly and daily statistics are found by key. A delivery that adds to buckets already
-- stored (every push of a gateway adds to the current hour and day) takes those rows out and
-- writes them back merged; the rows written back go to the end of the table, so after a while
-- every page range of a block-range index spans all sensors and all days, and each small
-- delivery read the whole table (6.7 ms a statement at 11,000 rows, growing). A primary key
-- finds each row by itself and states what the code guarantees: one row per sensor and bucket.
DROP INDEX sensor_etl.hourly_stats_brin;
DROP INDEX sensor_etl.daily_stats_brin;
ALTER TABLE sensor_etl.hourly_stats ADD PRIMARY KEY (sensor_id, hour);
ALTER TABLE sensor_etl.daily_stats ADD PRIMARY KEY (sensor_id, day);
