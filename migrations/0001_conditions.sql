-- Seed table of the first acceptance scenario (EMQX's TimescaleDB article),
-- filled by the template
--   INSERT INTO conditions(time,temperature,humidity)
--   VALUES (now(), ${temperature}, ${humidity})
-- Idempotent: safe to apply again, and a later run on a server that has
-- gained TimescaleDB turns the existing plain table into a hypertable.

CREATE TABLE IF NOT EXISTS conditions (
    time        TIMESTAMPTZ      NOT NULL,
    temperature DOUBLE PRECISION,
    humidity    DOUBLE PRECISION
);

DO $$
DECLARE
    -- Installed on disk is not enough: CREATE EXTENSION fails unless the
    -- library is in shared_preload_libraries. An extension already created
    -- in this database is taken as working.
    use_timescale boolean :=
        EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')
        OR (EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb')
            AND current_setting('shared_preload_libraries') ~ '\mtimescaledb\M');
BEGIN
    IF use_timescale THEN
        CREATE EXTENSION IF NOT EXISTS timescaledb;
        -- Left over from a plain-table run; the hypertable makes its own
        -- time index.
        DROP INDEX IF EXISTS conditions_time_brin;
        PERFORM create_hypertable('conditions', by_range('time', INTERVAL '1 day'),
                                  if_not_exists => TRUE, migrate_data => TRUE);
        RAISE NOTICE 'conditions: TimescaleDB hypertable (1 day chunks)';
    ELSE
        -- Rows arrive in time order, so a BRIN index stays tiny and still
        -- serves time-range queries.
        CREATE INDEX IF NOT EXISTS conditions_time_brin ON conditions USING brin (time);
        RAISE NOTICE 'conditions: plain table with BRIN index on time (TimescaleDB not available)';
    END IF;
END
$$;
