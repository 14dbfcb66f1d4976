-- sensor-etl schema, version 8: the Idempotency-Key a client gave with a delivery, and the
-- content it named: the same key again with the same content is a duplicate; with other
-- content it is refused.
CREATE TABLE idempotency_keys (
    key             text        PRIMARY KEY,
    content_sha256  text        NOT NULL,
    file_id         bigint      NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);
