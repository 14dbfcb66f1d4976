-- Claims on inbox files, so that several `sensor-etl run` workers sharing one inbox and one
-- database process each file exactly once. A claim is a lease: its worker extends it while it
-- works (heartbeat); when the worker dies the lease expires and another worker takes the file.
CREATE TABLE inbox_claims (
    file_name         text PRIMARY KEY,
    worker            text,
    claimed_at        timestamptz,
    lease_expires_at  timestamptz,
    attempts          integer NOT NULL DEFAULT 0
);
