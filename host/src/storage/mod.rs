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

/// One sink's database. Cheap to clone; each clone shares the connection.
#[derive(Clone)]
pub enum Storage {
    Postgres(postgres::PostgresStorage),
    Sqlite(sqlite::SqliteStorage),
}

impl Storage {
    /// Opens lazily for PostgreSQL (the server may come up later) and at once
    /// for SQLite (a bad path should fail start-up).
    pub fn open(url: &StorageUrl, data_dir: &Path) -> anyhow::Result<Self> {
        Ok(match url {
            StorageUrl::Postgres(url) => Self::Postgres(postgres::PostgresStorage::new(url)?),
            StorageUrl::Sqlite(path) => {
                Self::Sqlite(sqlite::SqliteStorage::open(&data_dir.join(path))?)
            }
        })
    }

    /// Runs `statement` once per row, all in one transaction.
    pub async fn execute(
        &self,
        statement: &str,
        rows: Vec<Vec<SqlValue>>,
    ) -> Result<u64, StorageError> {
        match self {
            Self::Postgres(pg) => pg.execute(statement, &rows).await,
            Self::Sqlite(db) => db.execute(statement.to_string(), rows).await,
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
    fn redacts_passwords() {
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
    }
}
