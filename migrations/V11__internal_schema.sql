-- The tables move out of the analyst's way: the public views (v_*) stay in `public`, the
-- default search path, and the tables, partitions and sequences behind them go to a schema of
-- their own, `sensor_etl`. `\dv` lists the views; `\dt` no longer lists 51 partitions.
-- sensor-etl's own connections search `sensor_etl` first (see `store::build_pool`), so from
-- here on a migration qualifies every view it creates: `CREATE VIEW public.v_…`. The migration
-- history moves too (found first on that path, it is not created again).
CREATE SCHEMA IF NOT EXISTS sensor_etl;

DO $$
DECLARE
    moved record;
BEGIN
    FOR moved IN
        SELECT c.relname
        FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public'
          AND c.relkind IN ('r', 'p')
          AND (c.relname IN ('files', 'file_deliveries', 'measurements', 'sensors', 'locations',
                             'readings', 'aggregates', 'rejects', 'inbox_claims',
                             'measurement_sets', 'positions', 'idempotency_keys',
                             'device_sensors', 'sensor_spans', 'latest_values',
                             'refinery_schema_history')
               OR (c.relispartition AND c.relname LIKE 'readings\_%'))
    LOOP
        EXECUTE format('ALTER TABLE public.%I SET SCHEMA sensor_etl', moved.relname);
    END LOOP;
END
$$;

-- Every delivery, duplicates included (the ledger's `file_deliveries`), for `sensor-etl status`
-- and anyone asking what arrived when and from where.
CREATE VIEW public.v_deliveries AS
SELECT delivery_id, file_id, file_name, origin, outcome, delivered_at
FROM sensor_etl.file_deliveries;
