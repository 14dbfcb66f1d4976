-- sensor-etl schema, version 17: how far each file read in tail mode has been loaded. A file
-- is known by a hash of its first lines (its fingerprint), so a logger's file renamed at
-- midnight keeps its place and a new file under the old name starts from its beginning. The
-- offset reached is written in the same transaction as the rows of the block that reached it,
-- with a check of the bytes before it.
CREATE TABLE sensor_etl.tail_positions (
    fingerprint  text        PRIMARY KEY,
    path         text        NOT NULL,
    byte_offset  bigint      NOT NULL,
    line_offset  bigint      NOT NULL,
    -- The last bytes before byte_offset (up to 256) as `<length>:<sha-256>`: a file cut back
    -- and written again to the same size or more is seen by them.
    tail_check   text        NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now()
);
