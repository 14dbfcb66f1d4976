-- sensor-etl schema, version 7: the last failure of a file in the inbox, so that a file made
-- poison after several attempts is quarantined with its real cause.
ALTER TABLE inbox_claims ADD COLUMN last_error text;
