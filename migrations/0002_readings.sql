-- The narrow table: one row per reading of any tag of any device, so a new
-- site or tag needs no schema work. The sink binary-COPYs into it in this
-- column order: the columns, their order and types are its contract.
-- quality is 'good', 'bad' or 'uncertain'.
-- No unique key: the sink delivers exactly once through its own
-- transactional progress marker, and a unique index would slow COPY.
-- Reads omh.chunk_interval (set by omh-host migrate --chunk-interval).
CREATE TABLE IF NOT EXISTS readings (
    time         TIMESTAMPTZ      NOT NULL,
    site         TEXT             NOT NULL,
    device       TEXT             NOT NULL,
    tag          TEXT             NOT NULL,
    value_double DOUBLE PRECISION,
    value_text   TEXT,
    quality      TEXT             NOT NULL
);

-- Dashboards ask for one tag over a time range, or its latest value.
CREATE INDEX IF NOT EXISTS readings_site_device_tag_time_idx
    ON readings (site, device, tag, time DESC);

DO $$
DECLARE
    chunk_interval interval := NULLIF(current_setting('omh.chunk_interval', true), '')::interval;
BEGIN
    IF chunk_interval IS NULL THEN
        RAISE EXCEPTION 'omh.chunk_interval is not set'
            USING HINT = 'apply migrations with omh-host migrate, or SET omh.chunk_interval = ''1 day'' first';
    END IF;
    -- 0001 created the extension wherever it can work.
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        PERFORM create_hypertable('readings', by_range('time', chunk_interval),
                                  if_not_exists => TRUE, migrate_data => TRUE);
        RAISE NOTICE 'readings: TimescaleDB hypertable (% chunks)', chunk_interval;
    ELSE
        -- Rows arrive in time order, so a BRIN index stays tiny and still
        -- serves time-range queries.
        CREATE INDEX IF NOT EXISTS readings_time_brin ON readings USING brin (time);
        RAISE NOTICE 'readings: plain table with BRIN index on time (TimescaleDB not available)';
    END IF;
END
$$;
