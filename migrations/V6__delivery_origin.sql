-- sensor-etl schema, version 6: where each delivery came from (`inbox:<path>`,
-- `ingest:<path>`, `http:<client>`), beside its name. Deliveries recorded before have none.
ALTER TABLE file_deliveries ADD COLUMN origin text;
