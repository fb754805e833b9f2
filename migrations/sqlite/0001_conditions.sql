-- The seed table for the embedded (SQLite) storage; the PostgreSQL/TimescaleDB
-- twin is migrations/0001_conditions.sql. Time is ISO-8601 UTC text.
CREATE TABLE IF NOT EXISTS conditions (
    time        TEXT NOT NULL,
    temperature DOUBLE PRECISION,
    humidity    DOUBLE PRECISION
);
CREATE INDEX IF NOT EXISTS conditions_time_idx ON conditions (time);
