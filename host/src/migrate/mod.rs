//! `omh-host migrate`: creates and upgrades the database schema.
//!
//! The numbered SQL files of `migrations/` (PostgreSQL, with TimescaleDB when
//! the server has it) and `migrations/sqlite/` are compiled into the binary,
//! so an installed host needs no checkout. Each file is applied once, in its
//! own transaction, and recorded with its checksum in `omh_migrations`; an
//! applied file that has changed since stops the run, because the database
//! no longer matches what the files say.

mod postgres;
mod settings;
mod sqlite;

pub use postgres::apply_postgres;
pub use settings::TimescaleSettings;
pub use sqlite::apply_sqlite;

use crate::storage::{StorageUrl, redact};
use anyhow::{Context, bail};
use sha2::{Digest, Sha256};
use std::fmt;

/// One numbered SQL file, as compiled into the binary.
#[derive(Debug, PartialEq)]
pub struct Migration {
    /// File name, `NNNN_what.sql`; the number is the version.
    pub file: &'static str,
    pub sql: &'static str,
}

macro_rules! embed {
    ($dir:literal: $($file:literal),+ $(,)?) => {
        &[$(Migration {
            file: $file,
            sql: include_str!(concat!("../../../migrations/", $dir, $file)),
        }),+]
    };
}

/// `migrations/`, in the order they apply. A unit test checks that this
/// lists every file there.
pub const POSTGRES: &[Migration] =
    embed!("": "0001_conditions.sql", "0002_readings.sql", "0003_compression_and_retention.sql");

/// `migrations/sqlite/`, in the order they apply.
pub const SQLITE: &[Migration] = embed!("sqlite/": "0001_conditions.sql", "0002_readings.sql");

impl Migration {
    /// The number the file name starts with (unit-tested for every file).
    pub fn version(&self) -> i32 {
        self.file
            .split_once('_')
            .and_then(|(number, _)| number.parse().ok())
            .expect("migration files are named NNNN_what.sql")
    }

    /// SHA-256 of the SQL, hex: recorded when applied, compared afterwards.
    pub fn checksum(&self) -> String {
        Sha256::digest(self.sql.as_bytes())
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect()
    }
}

/// A migration the database records as applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    pub version: i32,
    pub name: String,
    pub checksum: String,
}

/// What happened to one migration, as `migrate` prints it.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    /// Applied now; `messages` are what the server said meanwhile (its
    /// NOTICEs, e.g. whether a table became a hypertable).
    Applied {
        file: &'static str,
        messages: Vec<String>,
    },
    Skipped {
        file: &'static str,
    },
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Applied { file, messages } => {
                write!(f, "applied {file}")?;
                messages
                    .iter()
                    .try_for_each(|message| write!(f, "\n  {message}"))
            }
            Outcome::Skipped { file } => write!(f, "skipped {file} (already applied)"),
        }
    }
}

/// What to do with each migration, or why nothing may be done: an applied
/// migration whose file changed, or one this binary does not know.
fn plan<'a>(migrations: &'a [Migration], applied: &[Applied]) -> anyhow::Result<Vec<Step<'a>>> {
    for record in applied {
        let Some(migration) = migrations.iter().find(|m| m.version() == record.version) else {
            bail!(
                "the database records migration {} ({}), which this omh-host does not have: \
                 it was migrated by a newer omh-host",
                record.version,
                record.name
            );
        };
        if migration.file != record.name || migration.checksum() != record.checksum {
            bail!(
                "{}: changed since it was applied (recorded as {} with checksum {}, \
                 now checksum {}); applied migrations must stay as they are: \
                 put the change in a new migration",
                migration.file,
                record.name,
                record.checksum,
                migration.checksum()
            );
        }
    }
    Ok(migrations
        .iter()
        .map(|migration| {
            if applied.iter().any(|r| r.version == migration.version()) {
                Step::Skip(migration)
            } else {
                Step::Apply(migration)
            }
        })
        .collect())
}

#[derive(Debug, PartialEq)]
enum Step<'a> {
    Apply(&'a Migration),
    Skip(&'a Migration),
}

/// `omh-host migrate`: applies what is missing in the database at `database`
/// and prints one line per migration and a summary.
pub fn run(database: &str, settings: &TimescaleSettings) -> anyhow::Result<()> {
    let url = StorageUrl::parse(database).map_err(anyhow::Error::msg)?;
    let (mut applied, mut skipped) = (0, 0);
    let mut report = |outcome: &Outcome| {
        match outcome {
            Outcome::Applied { .. } => applied += 1,
            Outcome::Skipped { .. } => skipped += 1,
        }
        println!("{outcome}");
    };
    let kind = match url {
        StorageUrl::Postgres(url) => {
            println!("migrating {}", redact(&url));
            tokio::runtime::Runtime::new()?.block_on(apply_postgres(&url, settings, &mut report))?
        }
        StorageUrl::Sqlite(path) => {
            println!("migrating sqlite:{}", path.display());
            let connection = rusqlite::Connection::open(&path)
                .with_context(|| format!("cannot open SQLite database {}", path.display()))?;
            apply_sqlite(&connection, &mut report)?;
            "SQLite".to_string()
        }
    };
    println!("done: {applied} applied, {skipped} already applied; {kind}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// Every `.sql` file on disk is compiled in, in name order, and its
    /// name carries a version.
    #[test]
    fn every_migration_file_is_embedded() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations");
        for (dir, embedded) in [(root.clone(), POSTGRES), (root.join("sqlite"), SQLITE)] {
            let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
                .unwrap()
                .map(|entry| entry.unwrap().path())
                .filter(|path| path.extension().is_some_and(|ext| ext == "sql"))
                .map(|path| path.file_name().unwrap().to_string_lossy().into_owned())
                .collect();
            on_disk.sort();
            let names: Vec<&str> = embedded.iter().map(|m| m.file).collect();
            assert_eq!(names, on_disk, "{}", dir.display());
            for (migration, expected) in embedded.iter().zip(1..) {
                assert_eq!(migration.version(), expected, "{}", migration.file);
                let text = std::fs::read_to_string(dir.join(migration.file)).unwrap();
                assert_eq!(migration.sql, text, "{}", migration.file);
            }
        }
    }

    fn record(migration: &Migration) -> Applied {
        Applied {
            version: migration.version(),
            name: migration.file.to_string(),
            checksum: migration.checksum(),
        }
    }

    #[test]
    fn plans_only_what_is_missing() {
        let applied = [record(&POSTGRES[0])];
        let expected: Vec<Step> = std::iter::once(Step::Skip(&POSTGRES[0]))
            .chain(POSTGRES[1..].iter().map(Step::Apply))
            .collect();
        assert_eq!(plan(POSTGRES, &applied).unwrap(), expected);
    }

    #[test]
    fn refuses_a_database_that_does_not_match_the_files() {
        let tampered = Applied {
            checksum: "0".repeat(64),
            ..record(&POSTGRES[0])
        };
        let renamed = Applied {
            name: "0001_other.sql".into(),
            ..record(&POSTGRES[0])
        };
        let newer = Applied {
            version: 9999,
            ..record(&POSTGRES[0])
        };
        for (applied, expected) in [
            (
                tampered,
                "0001_conditions.sql: changed since it was applied",
            ),
            (renamed, "0001_conditions.sql: changed since it was applied"),
            (newer, "migrated by a newer omh-host"),
        ] {
            let error = plan(POSTGRES, &[applied]).unwrap_err().to_string();
            assert!(error.contains(expected), "{error}");
        }
    }
}
