//! Embedded storage for sites with no database server (the quickstart).
//! rusqlite is blocking, so every call runs on the blocking pool.

use super::{
    PROGRESS_TABLE, Progress, SELECT_PROGRESS, SqlValue, StorageError, UPSERT_PROGRESS, WriteOp,
    position_for, quote_identifier, system_time,
};
use anyhow::Context;
use rusqlite::functions::FunctionFlags;
use rusqlite::{Connection, OptionalExtension, ToSql, types::ToSqlOutput};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

#[derive(Clone)]
pub struct SqliteStorage {
    session: Arc<Mutex<Session>>,
}

struct Session {
    connection: Connection,
    /// `Some` while a batch is open; holds the first error of the batch.
    batch: Option<Option<String>>,
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
        // The embedded database migrates itself: there is no server to run
        // `omh-host migrate` against beforehand.
        crate::migrate::apply_sqlite(&connection, &mut |outcome| tracing::debug!("{outcome}"))
            .with_context(|| format!("cannot migrate {}", path.display()))?;
        connection
            .execute_batch(PROGRESS_TABLE)
            .with_context(|| format!("cannot create the schema in {}", path.display()))?;
        Ok(Self {
            session: Arc::new(Mutex::new(Session {
                connection,
                batch: None,
            })),
        })
    }

    /// Runs `work` on the blocking pool with the session locked.
    async fn with_session<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Session) -> Result<T, StorageError> + Send + 'static,
    ) -> Result<T, StorageError> {
        let session = self.session.clone();
        tokio::task::spawn_blocking(move || work(&mut session.lock().expect("sqlite session lock")))
            .await
            .map_err(|e| StorageError::Unreachable(format!("sqlite worker failed: {e}")))?
    }

    pub async fn write(&self, op: WriteOp) -> Result<u64, StorageError> {
        self.with_session(move |session| {
            let in_batch = session.batch.is_some();
            if !in_batch {
                session.begin()?;
            }
            let result = write(&session.connection, &op).map_err(rejected);
            if let (Err(error), Some(batch_error)) = (&result, &mut session.batch) {
                batch_error.get_or_insert(error.to_string());
            }
            match result {
                Ok(rows) if !in_batch => session.finish(None).map(|()| rows),
                Err(error) if !in_batch => {
                    let _ = session.finish(None);
                    Err(error)
                }
                result => result,
            }
        })
        .await
    }

    pub async fn committed_position(
        &self,
        sink: &str,
        buffer_id: &str,
    ) -> Result<u64, StorageError> {
        let (sink, buffer_id) = (sink.to_string(), buffer_id.to_string());
        self.with_session(move |session| {
            let recorded = session
                .connection
                .query_row(SELECT_PROGRESS, [&sink], |row| {
                    Ok((row.get(0)?, row.get(1)?))
                })
                .optional()
                .map_err(rejected)?;
            Ok(position_for(recorded, &buffer_id))
        })
        .await
    }

    pub async fn begin_batch(&self) -> Result<(), StorageError> {
        self.with_session(Session::begin).await
    }

    pub async fn commit_batch(&self, progress: Progress<'_>) -> Result<(), StorageError> {
        let (sink, buffer_id, position) = (
            progress.sink.to_string(),
            progress.buffer_id.to_string(),
            progress.position,
        );
        self.with_session(move |session| {
            session.finish(Some(Progress {
                sink: &sink,
                buffer_id: &buffer_id,
                position,
            }))
        })
        .await
    }

    pub async fn rollback_batch(&self) {
        let _ = self
            .with_session(|session| {
                session.batch = None;
                session
                    .connection
                    .execute_batch("ROLLBACK")
                    .map_err(rejected)
            })
            .await;
    }
}

impl Session {
    fn begin(&mut self) -> Result<(), StorageError> {
        if self.batch.is_some() {
            // A batch left open by a crashed call: start clean.
            let _ = self.connection.execute_batch("ROLLBACK");
        }
        self.connection.execute_batch("BEGIN").map_err(rejected)?;
        self.batch = Some(None);
        Ok(())
    }

    fn finish(&mut self, progress: Option<Progress<'_>>) -> Result<(), StorageError> {
        let Some(first_error) = self.batch.take() else {
            return Err(StorageError::Rejected("no batch is open".into()));
        };
        let commit = match first_error {
            Some(error) => Err(StorageError::Rejected(format!(
                "batch rolled back after an error: {error}"
            ))),
            None => progress
                .map_or(Ok(()), |p| {
                    let position = i64::try_from(p.position).unwrap_or(i64::MAX);
                    self.connection
                        .execute(
                            UPSERT_PROGRESS,
                            rusqlite::params![p.sink, p.buffer_id, position],
                        )
                        .map(drop)
                })
                .and_then(|()| self.connection.execute_batch("COMMIT"))
                .map_err(rejected),
        };
        if commit.is_err() {
            let _ = self.connection.execute_batch("ROLLBACK");
        }
        commit
    }
}

fn rejected(error: rusqlite::Error) -> StorageError {
    StorageError::Rejected(error.to_string())
}

fn write(connection: &Connection, op: &WriteOp) -> rusqlite::Result<u64> {
    match op {
        WriteOp::Execute { statement, rows } => insert_rows(connection, statement, rows),
        WriteOp::Copy {
            table,
            columns,
            rows,
        } => {
            let placeholders: Vec<String> = (1..=columns.len()).map(|i| format!("?{i}")).collect();
            let columns: Vec<String> = columns.iter().map(|c| quote_identifier(c)).collect();
            let statement = format!(
                "INSERT INTO {} ({}) VALUES ({})",
                quote_identifier(table),
                columns.join(", "),
                placeholders.join(", ")
            );
            insert_rows(connection, &statement, rows)
        }
    }
}

fn insert_rows(
    connection: &Connection,
    statement: &str,
    rows: &[Vec<SqlValue>],
) -> rusqlite::Result<u64> {
    let mut prepared = connection.prepare_cached(statement)?;
    let mut affected = 0u64;
    for row in rows {
        let params: Vec<&dyn ToSql> = row.iter().map(|v| v as &dyn ToSql).collect();
        affected += prepared.execute(params.as_slice())? as u64;
    }
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
            .write(WriteOp::Execute {
                statement: "INSERT INTO conditions(time, temperature, humidity) VALUES ($1, $2, $3)"
                    .into(),
                rows,
            })
            .await
            .unwrap();
        assert_eq!(n, 2);
        db.write(WriteOp::Execute {
            statement: "INSERT INTO conditions(time, temperature, humidity) VALUES (now(), $1, $2)"
                .into(),
            rows: vec![vec![SqlValue::Int(1), SqlValue::Int(2)]],
        })
        .await
        .unwrap();
        let session = db.session.lock().unwrap();
        let connection = &session.connection;
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
            .write(WriteOp::Execute {
                statement: "INSERT INTO nowhere VALUES ($1)".into(),
                rows: vec![vec![SqlValue::Int(1)]],
            })
            .await;
        assert!(matches!(err, Err(StorageError::Rejected(_))), "{err:?}");
    }

    #[tokio::test]
    async fn a_batch_commits_its_rows_with_the_progress_or_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let db = SqliteStorage::open(&dir.path().join("t.db")).unwrap();
        let copy = |humidity: i64| WriteOp::Copy {
            table: "conditions".into(),
            columns: vec!["time".into(), "humidity".into()],
            rows: vec![vec![SqlValue::TimestampMs(0), SqlValue::Int(humidity)]],
        };
        let progress = |position| Progress {
            sink: "site:sinks.db",
            buffer_id: "b1",
            position,
        };

        db.begin_batch().await.unwrap();
        db.write(copy(1)).await.unwrap();
        db.commit_batch(progress(7)).await.unwrap();
        assert_eq!(
            db.committed_position("site:sinks.db", "b1").await.unwrap(),
            7
        );
        assert_eq!(
            db.committed_position("site:sinks.db", "b2").await.unwrap(),
            0
        );

        // A failed write poisons the batch even if the plugin ignores it.
        db.begin_batch().await.unwrap();
        db.write(copy(2)).await.unwrap();
        assert!(db.write(copy(3)).await.is_ok());
        let bad = db
            .write(WriteOp::Execute {
                statement: "INSERT INTO nowhere VALUES (1)".into(),
                rows: vec![vec![]],
            })
            .await;
        assert!(bad.is_err());
        let commit = db.commit_batch(progress(9)).await;
        assert!(
            matches!(commit, Err(StorageError::Rejected(_))),
            "{commit:?}"
        );
        assert_eq!(
            db.committed_position("site:sinks.db", "b1").await.unwrap(),
            7
        );

        db.begin_batch().await.unwrap();
        db.write(copy(4)).await.unwrap();
        db.rollback_batch().await;

        let session = db.session.lock().unwrap();
        let humidities: Vec<f64> = session
            .connection
            .prepare("SELECT humidity FROM conditions ORDER BY rowid")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(humidities, [1.0]);
    }
}
