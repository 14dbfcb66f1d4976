-- The arrays of a reading row are built together by the writer (one id and one value pushed
-- per reading), and the tests assert that their lengths agree. Checking it again for every
-- row cost 5-8 % of a bulk load (docs/performance.md), so the database no longer does.
ALTER TABLE reading_rows DROP CONSTRAINT reading_rows_check;
