//! The test PostgreSQL harness and the seed migration, on a plain cluster and
//! on one with TimescaleDB preloaded.

mod support;

use anyhow::Result;
use support::postgres::{PgOptions, TestPostgres};

/// The EMQX article's rule template, with its placeholders as parameters.
const EMQX_INSERT: &str =
    "INSERT INTO conditions(time,temperature,humidity) VALUES (now(), $1, $2)";

#[tokio::test]
async fn plain_cluster_gets_plain_table_idempotently() -> Result<()> {
    let pg = TestPostgres::start(PgOptions::default())?;
    pg.apply_migrations().await?;
    pg.apply_migrations().await?;

    let client = pg.client().await?;
    let kind: i8 = client
        .query_one(
            "SELECT relkind FROM pg_class WHERE oid = 'conditions'::regclass",
            &[],
        )
        .await?
        .get(0);
    assert_eq!(kind as u8, b'r', "conditions should be an ordinary table");
    let brin: bool = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_indexes WHERE indexname = 'conditions_time_brin')",
            &[],
        )
        .await?
        .get(0);
    assert!(brin, "plain path should index time with BRIN");
    let timescale: bool = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')",
            &[],
        )
        .await?
        .get(0);
    assert!(
        !timescale,
        "timescaledb cannot be created without preloading"
    );

    client.execute(EMQX_INSERT, &[&21.5f64, &40.0f64]).await?;
    let rows: i64 = client
        .query_one("SELECT count(*) FROM conditions", &[])
        .await?
        .get(0);
    assert_eq!(rows, 1);
    Ok(())
}

#[tokio::test]
async fn timescale_cluster_gets_hypertable_with_time_bucket() -> Result<()> {
    let pg = TestPostgres::start(PgOptions { timescaledb: true })?;
    pg.apply_migrations().await?;
    pg.apply_migrations().await?;

    let client = pg.client().await?;
    let interval: String = client
        .query_one(
            "SELECT d.time_interval::text
               FROM timescaledb_information.hypertables h
               JOIN timescaledb_information.dimensions d USING (hypertable_schema, hypertable_name)
              WHERE h.hypertable_name = 'conditions'",
            &[],
        )
        .await?
        .get(0);
    assert_eq!(interval, "1 day");

    client.execute(EMQX_INSERT, &[&21.5f64, &40.0f64]).await?;
    client
        .batch_execute(
            "INSERT INTO conditions VALUES
                ('2024-01-01 00:10+00', 20, 50),
                ('2024-01-01 00:20+00', 22, 52),
                ('2024-01-01 01:05+00', 30, 60)",
        )
        .await?;
    let buckets: Vec<(i64, f64)> = client
        .query(
            "SELECT count(*), avg(temperature)
               FROM conditions
              WHERE time < '2024-01-02'
              GROUP BY time_bucket('1 hour', time)
              ORDER BY time_bucket('1 hour', time)",
            &[],
        )
        .await?
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    assert_eq!(buckets, [(2, 21.0), (1, 30.0)]);
    Ok(())
}

#[tokio::test]
async fn existing_plain_table_is_converted_keeping_rows() -> Result<()> {
    let pg = TestPostgres::start(PgOptions { timescaledb: true })?;
    let client = pg.client().await?;
    // What the migration leaves on a server without TimescaleDB.
    client
        .batch_execute(
            "CREATE TABLE conditions (time TIMESTAMPTZ NOT NULL,
                                      temperature DOUBLE PRECISION,
                                      humidity DOUBLE PRECISION);
             CREATE INDEX conditions_time_brin ON conditions USING brin (time);
             INSERT INTO conditions VALUES (now(), 19.0, 45.0);",
        )
        .await?;

    pg.apply_migrations().await?;

    let hypertable: bool = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM timescaledb_information.hypertables
                             WHERE hypertable_name = 'conditions')",
            &[],
        )
        .await?
        .get(0);
    assert!(hypertable);
    let rows: i64 = client
        .query_one("SELECT count(*) FROM conditions", &[])
        .await?
        .get(0);
    assert_eq!(rows, 1, "migrate_data should keep existing rows");
    Ok(())
}

#[tokio::test]
async fn stopped_server_comes_back_with_its_data() -> Result<()> {
    let mut pg = TestPostgres::start(PgOptions::default())?;
    pg.apply_migrations().await?;
    pg.client()
        .await?
        .execute(EMQX_INSERT, &[&21.5f64, &40.0f64])
        .await?;

    pg.stop()?;
    assert!(pg.client().await.is_err(), "server should be down");

    pg.start_again()?;
    let rows: i64 = pg
        .client()
        .await?
        .query_one("SELECT count(*) FROM conditions", &[])
        .await?
        .get(0);
    assert_eq!(rows, 1);
    Ok(())
}
