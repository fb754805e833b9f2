//! Migrations on PostgreSQL, with the server's NOTICEs collected so that
//! `migrate` can say what each file did (hypertable or plain table).

use super::{Applied, Migration, Outcome, POSTGRES, Step, TimescaleSettings, plan};
use crate::storage::redact;
use anyhow::Context;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Client, NoTls};

const CREATE_MIGRATIONS_TABLE: &str = "CREATE TABLE IF NOT EXISTS omh_migrations (
    version    INTEGER     PRIMARY KEY,
    name       TEXT        NOT NULL,
    checksum   TEXT        NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
)";

/// Held for the whole run, so two hosts migrating one database at once take
/// turns instead of racing on the same files.
const LOCK: &str = "SELECT pg_advisory_lock(hashtext('omh_migrations'))";

/// Applies the missing PostgreSQL migrations at `url`, reporting each one as
/// it goes. Returns what the database turned out to be, for the summary.
pub async fn apply_postgres(
    url: &str,
    settings: &TimescaleSettings,
    report: &mut dyn FnMut(&Outcome),
) -> anyhow::Result<String> {
    let (mut client, mut connection) = tokio_postgres::connect(url, NoTls)
        .await
        .with_context(|| format!("cannot connect to {}", redact(url)))?;
    let (notice_sender, mut notices) = mpsc::unbounded_channel();
    let connection = tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(message)) = messages.next().await {
            if let AsyncMessage::Notice(notice) = message {
                let _ = notice_sender.send(format!("{}: {}", notice.severity(), notice.message()));
            }
        }
    });

    client.batch_execute(LOCK).await.map_err(server_error)?;
    client
        .batch_execute(CREATE_MIGRATIONS_TABLE)
        .await
        .map_err(server_error)?;
    let applied: Vec<Applied> = client
        .query(
            "SELECT version, name, checksum FROM omh_migrations ORDER BY version",
            &[],
        )
        .await
        .map_err(server_error)?
        .iter()
        .map(|row| Applied {
            version: row.get(0),
            name: row.get(1),
            checksum: row.get(2),
        })
        .collect();

    for step in plan(POSTGRES, &applied)? {
        let outcome = match step {
            Step::Skip(migration) => Outcome::Skipped {
                file: migration.file,
            },
            Step::Apply(migration) => {
                // Only what this file makes the server say.
                while notices.try_recv().is_ok() {}
                apply(&mut client, migration, settings)
                    .await
                    .map_err(|error| {
                        anyhow::anyhow!("{}: {}", migration.file, server_error(error))
                    })?;
                Outcome::Applied {
                    file: migration.file,
                    messages: std::iter::from_fn(|| notices.try_recv().ok()).collect(),
                }
            }
        };
        report(&outcome);
    }

    let timescale: Option<String> = client
        .query_opt(
            "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'",
            &[],
        )
        .await
        .map_err(server_error)?
        .map(|row| row.get(0));
    drop(client);
    connection.await?;
    Ok(match timescale {
        Some(version) => format!("TimescaleDB {version}: hypertables"),
        None => "plain PostgreSQL (TimescaleDB not available): ordinary tables with BRIN indexes on time".into(),
    })
}

/// One migration and its record, in one transaction, with the settings as
/// transaction-local session settings.
async fn apply(
    client: &mut Client,
    migration: &Migration,
    settings: &TimescaleSettings,
) -> Result<(), tokio_postgres::Error> {
    let transaction = client.transaction().await?;
    for (name, value) in settings.session_settings() {
        transaction
            .execute("SELECT set_config($1, $2, true)", &[&name, &value])
            .await?;
    }
    transaction.batch_execute(migration.sql).await?;
    transaction
        .execute(
            "INSERT INTO omh_migrations (version, name, checksum) VALUES ($1, $2, $3)",
            &[&migration.version(), &migration.file, &migration.checksum()],
        )
        .await?;
    transaction.commit().await
}

/// The server's own words (severity, message, detail, hint and where in a
/// DO block it happened) rather than tokio-postgres' "db error".
fn server_error(error: tokio_postgres::Error) -> anyhow::Error {
    let Some(db) = error.as_db_error() else {
        return error.into();
    };
    let mut text = format!("{}: {}", db.severity(), db.message());
    for (label, part) in [
        ("DETAIL", db.detail()),
        ("HINT", db.hint()),
        ("CONTEXT", db.where_()),
    ] {
        if let Some(part) = part {
            text += &format!("\n  {label}: {part}");
        }
    }
    anyhow::anyhow!(text)
}
