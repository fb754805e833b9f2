//! Embedded storage for sites with no database server (the quickstart).
//! rusqlite is blocking, so every call runs on the blocking pool.

use super::{SqlValue, StorageError, system_time};
use anyhow::Context;
use rusqlite::functions::FunctionFlags;
use rusqlite::{Connection, ToSql, types::ToSqlOutput};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// Schema for the embedded database, the SQLite twin of `migrations/`.
const SCHEMA: &str = include_str!("../../../migrations/sqlite/0001_conditions.sql");

#[derive(Clone)]
pub struct SqliteStorage {
    connection: Arc<Mutex<Connection>>,
}

impl SqliteStorage {
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let connection = Connection::open(path)
            .with_context(|| format!("cannot open SQLite database {}", path.display()))?;
        // WAL lets a reader (the user's sqlite3 shell) look while we write.
        connection.pragma_update(None, "journal_mode", "WAL")?;
        connection.pragma_update(None, "synchronous", "NORMAL")?;
        // Templates written for PostgreSQL use now(); give SQLite one too.
        connection.create_scalar_function("now", 0, FunctionFlags::SQLITE_UTF8, |_| {
            Ok(iso8601(SystemTime::now()))
        })?;
        connection
            .execute_batch(SCHEMA)
            .with_context(|| format!("cannot create the schema in {}", path.display()))?;
        Ok(Self {
            connection: Arc::new(Mutex::new(connection)),
        })
    }

    pub async fn execute(
        &self,
        statement: String,
        rows: Vec<Vec<SqlValue>>,
    ) -> Result<u64, StorageError> {
        let connection = self.connection.clone();
        tokio::task::spawn_blocking(move || {
            let mut connection = connection.lock().expect("sqlite connection lock");
            insert_rows(&mut connection, &statement, &rows)
                .map_err(|e| StorageError::Rejected(e.to_string()))
        })
        .await
        .map_err(|e| StorageError::Unreachable(format!("sqlite worker failed: {e}")))?
    }
}

fn insert_rows(
    connection: &mut Connection,
    statement: &str,
    rows: &[Vec<SqlValue>],
) -> rusqlite::Result<u64> {
    let transaction = connection.transaction()?;
    let mut affected = 0u64;
    {
        let mut prepared = transaction.prepare_cached(statement)?;
        for row in rows {
            let params: Vec<&dyn ToSql> = row.iter().map(|v| v as &dyn ToSql).collect();
            affected += prepared.execute(params.as_slice())? as u64;
        }
    }
    transaction.commit()?;
    Ok(affected)
}

impl ToSql for SqlValue {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            SqlValue::Null => ToSqlOutput::from(rusqlite::types::Null),
            SqlValue::Bool(b) => ToSqlOutput::from(*b),
            SqlValue::Int(i) => ToSqlOutput::from(*i),
            SqlValue::Float(f) => ToSqlOutput::from(*f),
            SqlValue::Text(t) => ToSqlOutput::from(t.as_str()),
            SqlValue::TimestampMs(ms) => ToSqlOutput::from(iso8601(system_time(*ms))),
        })
    }
}

/// `2026-11-25T06:00:00.123Z`: sorts as text and SQLite's date functions read it.
fn iso8601(time: SystemTime) -> String {
    humantime::format_rfc3339_millis(time).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn inserts_rows_with_now_and_timestamps() {
        let dir = tempfile::tempdir().unwrap();
        let db = SqliteStorage::open(&dir.path().join("t.db")).unwrap();
        let rows = vec![
            vec![
                SqlValue::TimestampMs(1_700_000_000_000),
                SqlValue::Int(290),
                SqlValue::Float(71.5),
            ],
            vec![
                SqlValue::TimestampMs(1_700_000_001_000),
                SqlValue::Int(291),
                SqlValue::Null,
            ],
        ];
        let n = db
            .execute(
                "INSERT INTO conditions(time, temperature, humidity) VALUES ($1, $2, $3)".into(),
                rows,
            )
            .await
            .unwrap();
        assert_eq!(n, 2);
        db.execute(
            "INSERT INTO conditions(time, temperature, humidity) VALUES (now(), $1, $2)".into(),
            vec![vec![SqlValue::Int(1), SqlValue::Int(2)]],
        )
        .await
        .unwrap();
        let connection = db.connection.lock().unwrap();
        let first: String = connection
            .query_row(
                "SELECT time FROM conditions ORDER BY time LIMIT 1",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(first, "2023-11-14T22:13:20.000Z");
        let count: i64 = connection
            .query_row("SELECT count(*) FROM conditions", [], |r| r.get(0))
            .unwrap();
        assert_eq!(count, 3);
    }

    #[tokio::test]
    async fn bad_sql_is_rejected_not_unreachable() {
        let dir = tempfile::tempdir().unwrap();
        let db = SqliteStorage::open(&dir.path().join("t.db")).unwrap();
        let err = db
            .execute(
                "INSERT INTO nowhere VALUES ($1)".into(),
                vec![vec![SqlValue::Int(1)]],
            )
            .await;
        assert!(matches!(err, Err(StorageError::Rejected(_))), "{err:?}");
    }
}
