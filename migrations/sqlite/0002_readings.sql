-- The narrow table for the embedded (SQLite) storage: one row per reading of
-- any tag of any device. Twin of migrations/0002_readings.sql, same columns
-- in the same order; time is ISO-8601 UTC text like in conditions, and
-- quality is 'good', 'bad' or 'uncertain'.
CREATE TABLE IF NOT EXISTS readings (
    time         TEXT NOT NULL,
    site         TEXT NOT NULL,
    device       TEXT NOT NULL,
    tag          TEXT NOT NULL,
    value_double DOUBLE PRECISION,
    value_text   TEXT,
    quality      TEXT NOT NULL
);
-- The last readings of one tag, and one tag over a time range.
CREATE INDEX IF NOT EXISTS readings_site_device_tag_time_idx
    ON readings (site, device, tag, time DESC);
