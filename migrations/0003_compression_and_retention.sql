-- Compression and retention policies for the hypertables, run by
-- TimescaleDB's background jobs. Compressed chunks are columnar and
-- segmented by the columns dashboards filter on, so a query for one tag
-- decompresses only that tag's rows.
-- Reads omh.compress_after and omh.retain_for (set by omh-host migrate
-- --compress-after and --retain-for; an empty retain_for keeps data forever).
DO $$
DECLARE
    compress_age interval := NULLIF(current_setting('omh.compress_after', true), '')::interval;
    retention interval := NULLIF(current_setting('omh.retain_for', true), '')::interval;
    target record;
BEGIN
    IF compress_age IS NULL THEN
        RAISE EXCEPTION 'omh.compress_after is not set'
            USING HINT = 'apply migrations with omh-host migrate, or SET omh.compress_after = ''7 days'' first';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        RAISE NOTICE 'conditions, readings: no compression or retention policy (TimescaleDB not available)';
        RETURN;
    END IF;
    FOR target IN
        SELECT * FROM (VALUES ('conditions', ''), ('readings', 'site, device, tag'))
                   AS hypertables (name, segment_by)
    LOOP
        -- The Apache-licensed build of TimescaleDB has no compression.
        IF current_setting('timescaledb.license', true) = 'apache' THEN
            RAISE NOTICE '%: not compressed (TimescaleDB Apache-only build)', target.name;
        ELSE
            EXECUTE format('ALTER TABLE %I SET (timescaledb.compress,
                                                timescaledb.compress_segmentby = %L,
                                                timescaledb.compress_orderby = ''time DESC'')',
                           target.name, target.segment_by);
            PERFORM add_compression_policy(target.name::regclass, compress_age, if_not_exists => TRUE);
            RAISE NOTICE '%: compressed after %', target.name, compress_age;
        END IF;
        IF retention IS NULL THEN
            RAISE NOTICE '%: kept forever (no retention policy)', target.name;
        ELSE
            PERFORM add_retention_policy(target.name::regclass, retention, if_not_exists => TRUE);
            RAISE NOTICE '%: chunks dropped after %', target.name, retention;
        END IF;
    END LOOP;
END
$$;
