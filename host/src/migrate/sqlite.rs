//! Migrations on SQLite, the embedded storage of sites without a database
//! server.

use super::{Applied, Migration, Outcome, SQLITE, Step, plan};
use rusqlite::{Connection, TransactionBehavior};

const CREATE_MIGRATIONS_TABLE: &str = "CREATE TABLE IF NOT EXISTS omh_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT    NOT NULL,
    checksum   TEXT    NOT NULL,
    applied_at TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
)";

/// Applies the missing SQLite migrations to `connection`, reporting each one.
/// Storage that opens a SQLite file calls this to get the current schema.
pub fn apply_sqlite(
    connection: &Connection,
    report: &mut dyn FnMut(&Outcome),
) -> anyhow::Result<()> {
    connection.execute_batch(CREATE_MIGRATIONS_TABLE)?;
    let applied = connection
        .prepare("SELECT version, name, checksum FROM omh_migrations ORDER BY version")?
        .query_map([], |row| {
            Ok(Applied {
                version: row.get(0)?,
                name: row.get(1)?,
                checksum: row.get(2)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    for step in plan(SQLITE, &applied)? {
        report(&match step {
            Step::Skip(migration) => Outcome::Skipped {
                file: migration.file,
            },
            Step::Apply(migration) => {
                apply(connection, migration)
                    .map_err(|error| anyhow::anyhow!("{}: {error}", migration.file))?;
                Outcome::Applied {
                    file: migration.file,
                    messages: Vec::new(),
                }
            }
        });
    }
    Ok(())
}

/// One migration and its record, in one transaction that takes the write
/// lock at once, so a concurrent migrator waits rather than interleaves.
fn apply(connection: &Connection, migration: &Migration) -> rusqlite::Result<()> {
    let transaction =
        rusqlite::Transaction::new_unchecked(connection, TransactionBehavior::Immediate)?;
    transaction.execute_batch(migration.sql)?;
    transaction.execute(
        "INSERT INTO omh_migrations (version, name, checksum) VALUES (?1, ?2, ?3)",
        (migration.version(), migration.file, migration.checksum()),
    )?;
    transaction.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The function the SQLite storage calls at open: a new file gets every
    /// table, a second call changes nothing.
    #[test]
    fn applies_once_then_skips() {
        let connection = Connection::open_in_memory().unwrap();
        for expected in ["applied", "skipped"] {
            let mut outcomes = Vec::new();
            apply_sqlite(&connection, &mut |outcome| {
                outcomes.push(outcome.to_string())
            })
            .unwrap();
            assert_eq!(outcomes.len(), SQLITE.len());
            assert!(
                outcomes.iter().all(|o| o.starts_with(expected)),
                "{outcomes:?}"
            );
        }
        for table in ["conditions", "readings"] {
            let count: i64 = connection
                .query_row(&format!("SELECT count(*) FROM {table}"), [], |row| {
                    row.get(0)
                })
                .unwrap();
            assert_eq!(count, 0, "{table}");
        }
    }
}
