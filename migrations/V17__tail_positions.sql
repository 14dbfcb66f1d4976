-- sensor-etl schema, version 17: how far each file read in tail mode has been loaded. A file
-- is known by a hash of its first lines (its fingerprint), so a logger's file renamed at
-- midnight keeps its place and a new file under the old name starts from its beginning. The
-- offset reached is written in the same transaction as the rows of the block that reached it.
CREATE TABLE sensor_etl.tail_positions (
    fingerprint  text        PRIMARY KEY,
    path         text        NOT NULL,
    byte_offset  bigint      NOT NULL,
    line_offset  bigint      NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now()
);
