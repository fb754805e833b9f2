//! PostgreSQL/TimescaleDB through tokio-postgres. One connection per sink,
//! opened lazily and re-opened after it breaks, with the sink's statements
//! prepared once per connection. Rows of a statement are pipelined, so a
//! batch costs about one round trip, not one per row; bulk rows go through
//! binary `COPY`.

use super::{
    PROGRESS_TABLE, Progress, SELECT_PROGRESS, SqlValue, StorageError, UPSERT_PROGRESS, WriteOp,
    position_for, quote_identifier, redact, system_time,
};
use bytes::BytesMut;
use futures::future::try_join_all;
use std::collections::HashMap;
use std::error::Error;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::{Mutex, MutexGuard};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use tokio_postgres::{Client, NoTls, Statement};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct PostgresStorage {
    config: Arc<tokio_postgres::Config>,
    display_url: String,
    connection: Arc<Mutex<Option<Connection>>>,
    /// Set when the connection of an open batch was lost: the batch's
    /// earlier writes are gone with its transaction, so later writes of the
    /// batch must fail too (not commit on their own) until it is rolled
    /// back or begun again.
    batch_lost: Arc<AtomicBool>,
    write_timeout: Duration,
}

struct Connection {
    client: Client,
    statements: HashMap<String, Statement>,
    /// Column types of `COPY` targets, keyed by the COPY statement.
    copy_types: HashMap<String, Vec<Type>>,
    /// `Some` between `begin_batch` and its commit or rollback; holds the
    /// first error of the batch.
    batch: Option<Option<String>>,
}

type Slot<'a> = MutexGuard<'a, Option<Connection>>;

impl PostgresStorage {
    /// `write_timeout` bounds each write (see `bounded`).
    pub fn new(url: &str, write_timeout: Duration) -> anyhow::Result<Self> {
        let mut config: tokio_postgres::Config = url.parse()?;
        config.connect_timeout(CONNECT_TIMEOUT);
        config.application_name("omh-host");
        // CREATE TABLE IF NOT EXISTS on every connect would log a NOTICE.
        config.options("-c client_min_messages=warning");
        Ok(Self {
            config: Arc::new(config),
            display_url: redact(url),
            connection: Arc::default(),
            batch_lost: Arc::default(),
            write_timeout,
        })
    }

    pub async fn write(&self, op: WriteOp) -> Result<u64, StorageError> {
        let mut slot = self.connection.lock().await;
        if self.batch_lost.load(Ordering::Relaxed) {
            return Err(StorageError::Unreachable(
                "the connection was lost during this batch; the batch will be retried".into(),
            ));
        }
        let written = tokio::time::timeout(self.write_timeout, self.write_in(&mut slot, op)).await;
        self.bounded(&mut slot, written)
    }

    async fn write_in(&self, slot: &mut Slot<'_>, op: WriteOp) -> Result<u64, StorageError> {
        let in_batch = slot.as_ref().is_some_and(|c| c.batch.is_some());
        if !in_batch {
            self.ensure_connected(slot).await?;
            let result = slot_connection(slot)?.begin().await;
            self.forget_if_broken(slot, result)?;
        }
        let connection = slot_connection(slot)?;
        let result = connection.write(&op).await;
        if let (Err(error), Some(batch_error)) = (&result, &mut connection.batch) {
            batch_error.get_or_insert(error.to_string());
        }
        let result = match result {
            // The write's own error says more than the rollback's.
            Ok(rows) if !in_batch => connection.finish(None).await.map(|()| rows),
            Err(error) if !in_batch => {
                let _ = connection.finish(None).await;
                Err(error)
            }
            result => result,
        };
        self.forget_if_broken(slot, result)
    }

    pub async fn committed_position(
        &self,
        sink: &str,
        buffer_id: &str,
    ) -> Result<u64, StorageError> {
        let mut slot = self.connection.lock().await;
        self.ensure_connected(&mut slot).await?;
        let client = &slot_connection(&mut slot)?.client;
        let result = client
            .query_opt(SELECT_PROGRESS, &[&sink])
            .await
            .map(|row| position_for(row.map(|r| (r.get(0), r.get(1))), buffer_id))
            .map_err(classify);
        self.forget_if_broken(&mut slot, result)
    }

    pub async fn begin_batch(&self) -> Result<(), StorageError> {
        let mut slot = self.connection.lock().await;
        self.batch_lost.store(false, Ordering::Relaxed);
        self.ensure_connected(&mut slot).await?;
        let result = slot_connection(&mut slot)?.begin().await;
        self.forget_if_broken(&mut slot, result)
    }

    /// Not under `write_timeout`: a COMMIT given up on may still happen on
    /// the server after the sink has read its old position again, and the
    /// batch would then be stored twice.
    pub async fn commit_batch(&self, progress: Progress<'_>) -> Result<(), StorageError> {
        let mut slot = self.connection.lock().await;
        let result = slot_connection(&mut slot)?.finish(Some(progress)).await;
        self.forget_if_broken(&mut slot, result)
    }

    /// The outcome of a write given at most `write_timeout`. One that took
    /// longer (the table locked, the server stalled) is cancelled on the
    /// server, which rolls its transaction back (a dropped connection alone
    /// would leave the server's process waiting on the lock), the
    /// connection is dropped, and the write fails as retryable.
    fn bounded<T>(
        &self,
        slot: &mut Slot<'_>,
        outcome: Result<Result<T, StorageError>, tokio::time::error::Elapsed>,
    ) -> Result<T, StorageError> {
        outcome.unwrap_or_else(|_| {
            if let Some(connection) = slot.as_ref() {
                let cancel = connection.client.cancel_token();
                tokio::spawn(async move {
                    if let Err(error) = cancel.cancel_query(NoTls).await {
                        tracing::debug!(%error, "cannot cancel a timed-out write");
                    }
                });
            }
            self.forget(slot);
            Err(StorageError::Unreachable(format!(
                "{} did not finish a write within {} (write_timeout); cancelled, reconnecting",
                self.display_url,
                humantime::format_duration(self.write_timeout)
            )))
        })
    }

    /// A half-dead connection must not be reused: the next call reconnects.
    fn forget_if_broken<T>(
        &self,
        slot: &mut Slot<'_>,
        result: Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        if let Err(StorageError::Unreachable(_)) = &result {
            self.forget(slot);
        }
        result
    }

    fn forget(&self, slot: &mut Slot<'_>) {
        if slot
            .take()
            .is_some_and(|connection| connection.batch.is_some())
        {
            self.batch_lost.store(true, Ordering::Relaxed);
        }
    }

    pub async fn rollback_batch(&self) {
        let mut slot = self.connection.lock().await;
        self.batch_lost.store(false, Ordering::Relaxed);
        if let Some(connection) = slot.as_mut() {
            connection.batch = None;
            if connection.client.batch_execute("ROLLBACK").await.is_err() {
                *slot = None;
            }
        }
    }

    async fn ensure_connected(&self, slot: &mut Slot<'_>) -> Result<(), StorageError> {
        if slot.as_ref().is_none_or(|c| c.client.is_closed()) {
            **slot = None;
            **slot = Some(self.connect().await?);
        }
        Ok(())
    }

    async fn connect(&self) -> Result<Connection, StorageError> {
        let (client, connection) = self
            .config
            .connect(NoTls)
            .await
            .map_err(|e| StorageError::Unreachable(format!("{}: {e}", self.display_url)))?;
        let url = self.display_url.clone();
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::warn!(database = %url, %error, "PostgreSQL connection closed");
            }
        });
        client
            .batch_execute(PROGRESS_TABLE)
            .await
            .map_err(classify)?;
        tracing::info!(database = %self.display_url, "connected to PostgreSQL");
        Ok(Connection {
            client,
            statements: HashMap::new(),
            copy_types: HashMap::new(),
            batch: None,
        })
    }
}

/// The connection of a batch that lost it is gone: say so, not panic.
fn slot_connection<'a>(slot: &'a mut Slot<'_>) -> Result<&'a mut Connection, StorageError> {
    slot.as_mut()
        .ok_or_else(|| StorageError::Unreachable("connection lost during the batch".into()))
}

impl Connection {
    async fn begin(&mut self) -> Result<(), StorageError> {
        self.client.batch_execute("BEGIN").await.map_err(classify)?;
        self.batch = Some(None);
        Ok(())
    }

    /// Commits the open batch, or rolls it back if one of its writes failed
    /// (PostgreSQL would turn that COMMIT into a silent ROLLBACK).
    async fn finish(&mut self, progress: Option<Progress<'_>>) -> Result<(), StorageError> {
        let Some(first_error) = self.batch.take() else {
            return Err(StorageError::Rejected("no batch is open".into()));
        };
        if let Some(error) = first_error {
            self.client
                .batch_execute("ROLLBACK")
                .await
                .map_err(classify)?;
            return Err(StorageError::Rejected(format!(
                "batch rolled back after an error: {error}"
            )));
        }
        if let Some(progress) = progress {
            let position = i64::try_from(progress.position).unwrap_or(i64::MAX);
            let recorded = self
                .client
                .execute(
                    UPSERT_PROGRESS,
                    &[&progress.sink, &progress.buffer_id, &position],
                )
                .await;
            if let Err(error) = recorded {
                let _ = self.client.batch_execute("ROLLBACK").await;
                return Err(classify(error));
            }
        }
        self.client.batch_execute("COMMIT").await.map_err(classify)
    }

    async fn write(&mut self, op: &WriteOp) -> Result<u64, StorageError> {
        match op {
            WriteOp::Execute { statement, rows } => self.execute(statement, rows).await,
            WriteOp::Copy {
                table,
                columns,
                rows,
            } => self.copy(table, columns, rows).await,
        }
    }

    async fn execute(
        &mut self,
        statement: &str,
        rows: &[Vec<SqlValue>],
    ) -> Result<u64, StorageError> {
        let prepared = self.prepare(statement).await?;
        let executions = rows.iter().map(|row| {
            let refs: Vec<&(dyn ToSql + Sync)> =
                row.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
            let client = &self.client;
            let prepared = &prepared;
            async move { client.execute(prepared, &refs).await }
        });
        Ok(try_join_all(executions)
            .await
            .map_err(classify)?
            .iter()
            .sum())
    }

    async fn prepare(&mut self, statement: &str) -> Result<Statement, StorageError> {
        if let Some(prepared) = self.statements.get(statement) {
            return Ok(prepared.clone());
        }
        let prepared = self.client.prepare(statement).await.map_err(classify)?;
        self.statements
            .insert(statement.to_string(), prepared.clone());
        Ok(prepared)
    }

    async fn copy(
        &mut self,
        table: &str,
        columns: &[String],
        rows: &[Vec<SqlValue>],
    ) -> Result<u64, StorageError> {
        let table = quote_identifier(table);
        let columns = columns
            .iter()
            .map(|c| quote_identifier(c))
            .collect::<Vec<_>>()
            .join(", ");
        let copy = format!("COPY {table} ({columns}) FROM STDIN (FORMAT binary)");
        let types = match self.copy_types.get(&copy) {
            Some(types) => types.clone(),
            None => {
                // The server knows the column types; binary COPY must send
                // exactly those.
                let probe = format!("SELECT {columns} FROM {table} LIMIT 0");
                let prepared = self.client.prepare(&probe).await.map_err(classify)?;
                let types: Vec<Type> = prepared
                    .columns()
                    .iter()
                    .map(|c| c.type_().clone())
                    .collect();
                self.copy_types.insert(copy.clone(), types.clone());
                types
            }
        };
        if let Some(row) = rows.iter().find(|row| row.len() != types.len()) {
            return Err(StorageError::Rejected(format!(
                "a row of {} values for {} columns of {table}",
                row.len(),
                types.len()
            )));
        }
        let sink = self.client.copy_in(&copy).await.map_err(classify)?;
        let writer = BinaryCopyInWriter::new(sink, &types);
        futures::pin_mut!(writer);
        for row in rows {
            // No per-row allocation: COPY is the hot path of the narrow sink.
            writer
                .as_mut()
                .write_raw(row.iter())
                .await
                .map_err(classify)?;
        }
        writer.finish().await.map_err(classify)
    }
}

/// Connection-level failures are worth retrying; anything the server
/// refused for the statement itself is not.
fn classify(error: tokio_postgres::Error) -> StorageError {
    let message = match error.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => error.to_string(),
    };
    let transient = match error.code() {
        None => true,
        Some(code) => {
            let class = &code.code()[..2];
            // 08 connection exception, 53 insufficient resources,
            // 57 operator intervention (shutdown, cancel), 40 rollback (serialization).
            matches!(class, "08" | "53" | "57" | "40") || *code == SqlState::LOCK_NOT_AVAILABLE
        }
    };
    if transient {
        StorageError::Unreachable(message)
    } else {
        StorageError::Rejected(message)
    }
}

type BoxError = Box<dyn Error + Sync + Send>;

/// Binds a plugin's value to whatever type the server declared for the
/// parameter, so `${temperature}` (an int from Modbus) fits a
/// `DOUBLE PRECISION` column without casts in every template.
impl ToSql for SqlValue {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        let mismatch =
            || -> BoxError { format!("cannot bind {self:?} to a parameter of type {ty}").into() };
        match self {
            SqlValue::Null => Ok(IsNull::Yes),
            SqlValue::Bool(b) => match *ty {
                Type::BOOL => b.to_sql(ty, out),
                Type::INT2 | Type::INT4 | Type::INT8 => int_to_sql(i64::from(*b), ty, out),
                _ if is_text(ty) => b.to_string().to_sql(ty, out),
                _ => Err(mismatch()),
            },
            SqlValue::Int(i) => match *ty {
                Type::BOOL => (*i != 0).to_sql(ty, out),
                Type::FLOAT4 => (*i as f32).to_sql(ty, out),
                Type::FLOAT8 => (*i as f64).to_sql(ty, out),
                Type::INT2 | Type::INT4 | Type::INT8 => int_to_sql(*i, ty, out),
                _ if is_text(ty) => i.to_string().to_sql(ty, out),
                _ => Err(mismatch()),
            },
            SqlValue::Float(f) => match *ty {
                Type::FLOAT4 => (*f as f32).to_sql(ty, out),
                Type::FLOAT8 => f.to_sql(ty, out),
                Type::INT2 | Type::INT4 | Type::INT8 if f.fract() == 0.0 => {
                    int_to_sql(*f as i64, ty, out)
                }
                _ if is_text(ty) => f.to_string().to_sql(ty, out),
                _ => Err(mismatch()),
            },
            SqlValue::Text(t) if is_text(ty) => t.as_str().to_sql(ty, out),
            SqlValue::Text(_) => Err(mismatch()),
            SqlValue::TimestampMs(ms) => match *ty {
                Type::TIMESTAMPTZ | Type::TIMESTAMP => system_time(*ms).to_sql(ty, out),
                Type::INT8 => ms.to_sql(ty, out),
                _ if is_text(ty) => humantime::format_rfc3339_millis(system_time(*ms))
                    .to_string()
                    .to_sql(ty, out),
                _ => Err(mismatch()),
            },
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

fn is_text(ty: &Type) -> bool {
    matches!(
        *ty,
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN
    )
}

fn int_to_sql(i: i64, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
    let out_of_range =
        || -> BoxError { format!("{i} does not fit a parameter of type {ty}").into() };
    match *ty {
        Type::INT2 => i16::try_from(i)
            .map_err(|_| out_of_range())?
            .to_sql(ty, out),
        Type::INT4 => i32::try_from(i)
            .map_err(|_| out_of_range())?
            .to_sql(ty, out),
        _ => i.to_sql(ty, out),
    }
}
