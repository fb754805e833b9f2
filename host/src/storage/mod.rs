//! The host side of the `sql` capability: connections, transactions and
//! dialect differences live here, never in a plugin.

mod postgres;
mod sqlite;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A value bound to a `$n` parameter.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
    TimestampMs(i64),
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The database cannot be reached now: worth retrying.
    #[error("database unreachable: {0}")]
    Unreachable(String),
    /// The statement or its values were refused: retrying will not help.
    #[error("statement failed: {0}")]
    Rejected(String),
}

/// A sink's `url` from the manifest.
#[derive(Debug, Clone, PartialEq)]
pub enum StorageUrl {
    Postgres(String),
    /// Path as written; relative paths are resolved against the data dir.
    Sqlite(PathBuf),
}

impl StorageUrl {
    pub fn parse(url: &str) -> Result<Self, String> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            url.parse::<tokio_postgres::Config>()
                .map_err(|e| format!("\"{}\" is not a PostgreSQL URL: {e}", redact(url)))?;
            return Ok(Self::Postgres(url.to_string()));
        }
        if let Some(path) = url.strip_prefix("sqlite:") {
            let path = path.strip_prefix("//").unwrap_or(path);
            if path.is_empty() {
                return Err(format!("\"{url}\" names no database file"));
            }
            return Ok(Self::Sqlite(PathBuf::from(path)));
        }
        Err(format!(
            "\"{}\" is not a storage URL (expected postgres://user@host:port/db or sqlite:path/to/file.db)",
            redact(url)
        ))
    }
}

/// The URL without its password, for messages and logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let credentials = &url[scheme_end + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

fn system_time(ms: i64) -> SystemTime {
    if ms >= 0 {
        UNIX_EPOCH + Duration::from_millis(ms as u64)
    } else {
        UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
    }
}

/// One write a plugin asks for through the `sql` interface.
#[derive(Debug)]
pub enum WriteOp {
    /// `statement` once per row, `$n` bound to the row's values.
    Execute {
        statement: String,
        rows: Vec<Vec<SqlValue>>,
    },
    /// Rows appended to `table`'s `columns` in the fastest way the database
    /// has: binary `COPY` on PostgreSQL.
    Copy {
        table: String,
        columns: Vec<String>,
        rows: Vec<Vec<SqlValue>>,
    },
}

/// How far a sink's buffer has been committed to this database, written in
/// the same transaction as the rows: replaying after a crash or an outage
/// skips exactly what is already in, so no row is written twice.
#[derive(Debug, Clone)]
pub struct Progress<'a> {
    pub sink: &'a str,
    /// Identity of the sink's disk buffer (its sequence numbers' namespace).
    pub buffer_id: &'a str,
    pub position: u64,
}

/// The host's bookkeeping table, created on first use in every database a
/// sink writes to.
const PROGRESS_TABLE: &str = "CREATE TABLE IF NOT EXISTS omh_sink_progress (
    sink       TEXT PRIMARY KEY,
    buffer_id  TEXT NOT NULL,
    position   BIGINT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
)";
const SELECT_PROGRESS: &str = "SELECT buffer_id, position FROM omh_sink_progress WHERE sink = $1";
const UPSERT_PROGRESS: &str = "INSERT INTO omh_sink_progress (sink, buffer_id, position, updated_at)
    VALUES ($1, $2, $3, now())
    ON CONFLICT (sink) DO UPDATE
    SET buffer_id = excluded.buffer_id, position = excluded.position, updated_at = excluded.updated_at";

/// A position recorded for another buffer (the data dir was replaced)
/// says nothing about this one.
fn position_for(recorded: Option<(String, i64)>, buffer_id: &str) -> u64 {
    match recorded {
        Some((id, position)) if id == buffer_id => u64::try_from(position).unwrap_or(0),
        _ => 0,
    }
}

/// `schema.table` or `column` as a quoted SQL identifier, so a name from a
/// plugin's settings cannot inject SQL.
fn quote_identifier(name: &str) -> String {
    name.split('.')
        .map(|part| format!("\"{}\"", part.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(".")
}

/// One sink's database. Cheap to clone; each clone shares the connection.
///
/// Writes made between [`Storage::begin_batch`] and
/// [`Storage::commit_batch`] form one transaction with the sink's progress;
/// a write outside a batch is a transaction of its own.
#[derive(Clone)]
pub enum Storage {
    Postgres(postgres::PostgresStorage),
    Sqlite(sqlite::SqliteStorage),
}

impl Storage {
    /// Opens lazily for PostgreSQL (the server may come up later) and at once
    /// for SQLite (a bad path should fail start-up).
    /// `write_timeout` bounds a PostgreSQL write, not its batch's COMMIT
    /// (see `PostgresStorage::commit_batch`); SQLite is local and waits on
    /// its own busy timeout.
    pub fn open(
        url: &StorageUrl,
        data_dir: &Path,
        write_timeout: Duration,
    ) -> anyhow::Result<Self> {
        Ok(match url {
            StorageUrl::Postgres(url) => {
                Self::Postgres(postgres::PostgresStorage::new(url, write_timeout)?)
            }
            StorageUrl::Sqlite(path) => {
                Self::Sqlite(sqlite::SqliteStorage::open(&data_dir.join(path))?)
            }
        })
    }

    pub async fn write(&self, op: WriteOp) -> Result<u64, StorageError> {
        match self {
            Self::Postgres(pg) => pg.write(op).await,
            Self::Sqlite(db) => db.write(op).await,
        }
    }

    /// Where this sink's last committed batch ended (0: nothing yet).
    pub async fn committed_position(
        &self,
        sink: &str,
        buffer_id: &str,
    ) -> Result<u64, StorageError> {
        match self {
            Self::Postgres(pg) => pg.committed_position(sink, buffer_id).await,
            Self::Sqlite(db) => db.committed_position(sink, buffer_id).await,
        }
    }

    pub async fn begin_batch(&self) -> Result<(), StorageError> {
        match self {
            Self::Postgres(pg) => pg.begin_batch().await,
            Self::Sqlite(db) => db.begin_batch().await,
        }
    }

    /// Records `progress` and commits. Fails with `Rejected` if any write of
    /// the batch failed, even if the plugin carried on.
    pub async fn commit_batch(&self, progress: Progress<'_>) -> Result<(), StorageError> {
        match self {
            Self::Postgres(pg) => pg.commit_batch(progress).await,
            Self::Sqlite(db) => db.commit_batch(progress).await,
        }
    }

    pub async fn rollback_batch(&self) {
        match self {
            Self::Postgres(pg) => pg.rollback_batch().await,
            Self::Sqlite(db) => db.rollback_batch().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        assert!(matches!(
            StorageUrl::parse("postgres://postgres@127.0.0.1:5432/demo"),
            Ok(StorageUrl::Postgres(_))
        ));
        assert_eq!(
            StorageUrl::parse("sqlite:quickstart.db"),
            Ok(StorageUrl::Sqlite("quickstart.db".into()))
        );
        assert_eq!(
            StorageUrl::parse("sqlite:///tmp/x.db"),
            Ok(StorageUrl::Sqlite("/tmp/x.db".into()))
        );
        assert!(StorageUrl::parse("mysql://x").is_err());
        assert!(StorageUrl::parse("sqlite:").is_err());
    }

    #[test]
    fn quotes_identifiers() {
        assert_eq!(quote_identifier("readings"), "\"readings\"");
        assert_eq!(quote_identifier("omh.readings"), "\"omh\".\"readings\"");
        assert_eq!(quote_identifier("x\"; DROP"), "\"x\"\"; DROP\"");
    }

    #[test]
    fn a_position_of_another_buffer_counts_as_none() {
        assert_eq!(position_for(Some(("a".into(), 42)), "a"), 42);
        assert_eq!(position_for(Some(("old".into(), 42)), "a"), 0);
        assert_eq!(position_for(None, "a"), 0);
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
    }
}
