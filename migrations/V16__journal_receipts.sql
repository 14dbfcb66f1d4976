-- sensor-etl schema, version 16: what became of each body drained from the push journal.
-- A row is written in the same transaction as the body's readings, so the journal knows which
-- of its records the database already holds: a crash after a commit repeats nothing. A body
-- that could not be loaded (a permanent error) has no file_id and says why in `error`.
CREATE TABLE sensor_etl.journal_receipts (
    receipt_id  text        PRIMARY KEY,
    file_id     bigint,
    duplicate   boolean     NOT NULL DEFAULT false,
    error       text,
    loaded_at   timestamptz NOT NULL DEFAULT now()
);
