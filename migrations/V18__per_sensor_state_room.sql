-- sensor-etl schema, version 18: room in each page of the per-sensor state for its next
-- version. Every delivery updates the rows of the sensors it carries (their span and their
-- latest values); with half of each page free, the new version of a row goes in the same page
-- and no index changes (a heap-only update), so the tables do not grow with updates. New
-- pages only: pages written before keep their layout until the table is rewritten.
ALTER TABLE sensor_etl.sensor_spans SET (fillfactor = 50);
ALTER TABLE sensor_etl.latest_values SET (fillfactor = 50);
