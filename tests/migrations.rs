//! `omh-host migrate` as a user runs it: on plain PostgreSQL, on TimescaleDB
//! (with its settings) and on SQLite, twice each, and its refusals.

mod support;

use anyhow::Result;
use support::postgres::{PgOptions, TestPostgres, migrate};
use tokio_postgres::Client;

/// `readings` as the sink's binary COPY expects it: name, type, nullable,
/// in column order.
const READINGS_COLUMNS: [(&str, &str, &str); 7] = [
    ("time", "timestamp with time zone", "NO"),
    ("site", "text", "NO"),
    ("device", "text", "NO"),
    ("tag", "text", "NO"),
    ("value_double", "double precision", "YES"),
    ("value_text", "text", "YES"),
    ("quality", "text", "NO"),
];

const MIGRATIONS: usize = 3;

/// Migrates twice: the first run applies everything and prints each of
/// `expected_lines`, the second applies nothing. Returns a client on the
/// migrated database after checking `readings`.
async fn migrate_twice(
    pg: &TestPostgres,
    args: &[&str],
    expected_lines: &[&str],
) -> Result<Client> {
    let first = pg.migrate(args).await?;
    let second = pg.migrate(args).await?;
    assert_eq!(first.matches("\napplied ").count(), MIGRATIONS, "{first}");
    assert!(
        first.contains(&format!("done: {MIGRATIONS} applied, 0 already applied")),
        "{first}"
    );
    assert_eq!(second.matches("\nskipped ").count(), MIGRATIONS, "{second}");
    assert!(
        second.contains(&format!("done: 0 applied, {MIGRATIONS} already applied")),
        "{second}"
    );
    for line in expected_lines {
        assert!(first.contains(line), "missing {line:?} in:\n{first}");
    }
    let client = pg.client().await?;
    assert_readings_shape(&client).await?;
    Ok(client)
}

async fn strings(client: &Client, sql: &str) -> Result<Vec<String>> {
    Ok(client
        .query(sql, &[])
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect())
}

async fn assert_readings_shape(client: &Client) -> Result<()> {
    let columns: Vec<(String, String, String)> = client
        .query(
            "SELECT column_name::text, data_type::text, is_nullable::text
               FROM information_schema.columns
              WHERE table_name = 'readings' ORDER BY ordinal_position",
            &[],
        )
        .await?
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect();
    let expected: Vec<(String, String, String)> = READINGS_COLUMNS
        .iter()
        .map(|(name, kind, null)| (name.to_string(), kind.to_string(), null.to_string()))
        .collect();
    assert_eq!(columns, expected);
    let unique = strings(
        client,
        "SELECT indexname::text FROM pg_indexes
          WHERE tablename = 'readings' AND indexdef LIKE 'CREATE UNIQUE%'",
    )
    .await?;
    assert!(
        unique.is_empty(),
        "no unique index slows the COPY: {unique:?}"
    );
    let recorded: Vec<String> =
        strings(client, "SELECT name FROM omh_migrations ORDER BY version").await?;
    assert_eq!(recorded.len(), MIGRATIONS, "{recorded:?}");
    Ok(())
}

#[tokio::test]
async fn plain_postgres_gets_ordinary_tables_with_brin_and_says_so() -> Result<()> {
    let pg = TestPostgres::start(PgOptions::default())?;
    let client = migrate_twice(
        &pg,
        &[],
        &[
            "NOTICE: conditions: plain table with BRIN index on time",
            "NOTICE: readings: plain table with BRIN index on time",
            "NOTICE: conditions, readings: no compression or retention policy",
            "already applied; plain PostgreSQL",
        ],
    )
    .await?;
    let indexes = strings(
        &client,
        "SELECT indexname::text FROM pg_indexes WHERE tablename = 'readings' ORDER BY 1",
    )
    .await?;
    assert_eq!(
        indexes,
        ["readings_site_device_tag_time_idx", "readings_time_brin"]
    );
    Ok(())
}

/// What one TimescaleDB run should leave: chunk interval of `readings`, and
/// the policies' settings as TimescaleDB reports them.
struct TimescaleCase {
    args: &'static [&'static str],
    chunk_interval: &'static str,
    compress_after: &'static str,
    /// `None`: no retention job at all.
    drop_after: Option<&'static str>,
}

const TIMESCALE_CASES: [TimescaleCase; 2] = [
    TimescaleCase {
        args: &[],
        chunk_interval: "1 day",
        compress_after: "7 days",
        drop_after: Some("90 days"),
    },
    TimescaleCase {
        args: &[
            "--chunk-interval",
            "6h",
            "--compress-after",
            "2d",
            "--retain-for",
            "none",
        ],
        chunk_interval: "06:00:00",
        compress_after: "2 days",
        drop_after: None,
    },
];

#[tokio::test]
async fn timescaledb_gets_hypertables_with_compression_and_retention() -> Result<()> {
    for case in &TIMESCALE_CASES {
        let pg = TestPostgres::start(PgOptions { timescaledb: true })?;
        let client = migrate_twice(
            &pg,
            case.args,
            &[
                "NOTICE: conditions: TimescaleDB hypertable",
                "NOTICE: readings: TimescaleDB hypertable",
                "NOTICE: readings: compressed after",
                "already applied; TimescaleDB 2.",
            ],
        )
        .await?;
        let chunk_interval: String = client
            .query_one(
                "SELECT time_interval::text FROM timescaledb_information.dimensions
                  WHERE hypertable_name = 'readings'",
                &[],
            )
            .await?
            .get(0);
        assert_eq!(chunk_interval, case.chunk_interval, "{:?}", case.args);
        let segment_by = strings(
            &client,
            "SELECT attname::text FROM timescaledb_information.compression_settings
              WHERE hypertable_name = 'readings' AND segmentby_column_index IS NOT NULL
              ORDER BY segmentby_column_index",
        )
        .await?;
        assert_eq!(segment_by, ["site", "device", "tag"]);

        for hypertable in ["conditions", "readings"] {
            let jobs: Vec<(String, String)> = client
                .query(
                    "SELECT proc_name::text,
                            coalesce(config->>'compress_after', config->>'drop_after')
                       FROM timescaledb_information.jobs
                      WHERE hypertable_name = $1 ORDER BY proc_name",
                    &[&hypertable],
                )
                .await?
                .iter()
                .map(|row| (row.get(0), row.get(1)))
                .collect();
            let mut expected = vec![(
                "policy_compression".to_string(),
                case.compress_after.to_string(),
            )];
            if let Some(drop_after) = case.drop_after {
                expected.push(("policy_retention".into(), drop_after.into()));
            }
            assert_eq!(jobs, expected, "{hypertable} {:?}", case.args);
        }
    }
    Ok(())
}

#[tokio::test]
async fn sqlite_gets_both_tables_once() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let url = format!("sqlite:{}", dir.path().join("site.db").display());
    let first = migrate(&url, &[]).await?;
    let second = migrate(&url, &[]).await?;
    assert!(
        first.contains("done: 2 applied, 0 already applied"),
        "{first}"
    );
    assert!(
        second.contains("done: 0 applied, 2 already applied"),
        "{second}"
    );

    let db = rusqlite::Connection::open(dir.path().join("site.db"))?;
    let columns: Vec<(String, bool)> = db
        .prepare("SELECT name, \"notnull\" FROM pragma_table_info('readings') ORDER BY cid")?
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let expected: Vec<(String, bool)> = READINGS_COLUMNS
        .iter()
        .map(|(name, _, null)| (name.to_string(), *null == "NO"))
        .collect();
    assert_eq!(columns, expected);
    Ok(())
}

#[tokio::test]
async fn a_changed_applied_migration_is_refused_by_name() -> Result<()> {
    let pg = TestPostgres::start(PgOptions::default())?;
    pg.apply_migrations().await?;
    pg.client()
        .await?
        .execute(
            "UPDATE omh_migrations SET checksum = 'tampered' WHERE version = 2",
            &[],
        )
        .await?;
    let error = pg.apply_migrations().await.unwrap_err().to_string();
    assert!(
        error.contains("0002_readings.sql: changed since it was applied"),
        "{error}"
    );
    Ok(())
}

#[tokio::test]
async fn a_failing_migration_names_its_file_and_leaves_no_trace() -> Result<()> {
    let pg = TestPostgres::start(PgOptions::default())?;
    let client = pg.client().await?;
    // Something in the way of 0002: a view where the table should be.
    client
        .batch_execute("CREATE VIEW readings AS SELECT now() AS time")
        .await?;
    let error = pg.apply_migrations().await.unwrap_err().to_string();
    assert!(
        error.contains("error: 0002_readings.sql: ERROR: "),
        "{error}"
    );
    assert!(
        error.contains("\"readings\""),
        "the server's message: {error}"
    );

    let recorded = strings(&client, "SELECT name FROM omh_migrations ORDER BY version").await?;
    assert_eq!(recorded, ["0001_conditions.sql"], "0002 rolled back whole");
    Ok(())
}
