//! PostgreSQL/TimescaleDB through tokio-postgres. One connection per sink,
//! opened lazily and re-opened after it breaks, with the sink's statements
//! prepared once per connection. Rows of a batch are pipelined inside one
//! transaction, so a batch costs about one round trip, not one per row.

use super::{SqlValue, StorageError, redact, system_time};
use bytes::BytesMut;
use futures::future::try_join_all;
use std::collections::HashMap;
use std::error::Error;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use tokio_postgres::{Client, NoTls, Statement};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct PostgresStorage {
    config: Arc<tokio_postgres::Config>,
    display_url: String,
    connection: Arc<Mutex<Option<Connection>>>,
}

struct Connection {
    client: Client,
    statements: HashMap<String, Statement>,
}

impl PostgresStorage {
    pub fn new(url: &str) -> anyhow::Result<Self> {
        let mut config: tokio_postgres::Config = url.parse()?;
        config.connect_timeout(CONNECT_TIMEOUT);
        config.application_name("omh-host");
        Ok(Self {
            config: Arc::new(config),
            display_url: redact(url),
            connection: Arc::default(),
        })
    }

    pub async fn execute(
        &self,
        statement: &str,
        rows: &[Vec<SqlValue>],
    ) -> Result<u64, StorageError> {
        let mut slot = self.connection.lock().await;
        if slot.as_ref().is_none_or(|c| c.client.is_closed()) {
            *slot = Some(self.connect().await?);
        }
        let connection = slot.as_mut().expect("connection was just opened");
        let result = connection.execute(statement, rows).await;
        if let Err(StorageError::Unreachable(_)) = &result {
            // Next call reconnects; a half-dead connection must not be reused.
            *slot = None;
        }
        result
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
        tracing::info!(database = %self.display_url, "connected to PostgreSQL");
        Ok(Connection {
            client,
            statements: HashMap::new(),
        })
    }
}

impl Connection {
    async fn execute(
        &mut self,
        statement: &str,
        rows: &[Vec<SqlValue>],
    ) -> Result<u64, StorageError> {
        let prepared = match self.statements.get(statement) {
            Some(prepared) => prepared.clone(),
            None => {
                let prepared = self.client.prepare(statement).await.map_err(classify)?;
                self.statements
                    .insert(statement.to_string(), prepared.clone());
                prepared
            }
        };
        let transaction = self.client.transaction().await.map_err(classify)?;
        let params: Vec<Vec<Param>> = rows
            .iter()
            .map(|row| row.iter().map(Param).collect())
            .collect();
        let executions = params.iter().map(|row| {
            let refs: Vec<&(dyn ToSql + Sync)> =
                row.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
            let transaction = &transaction;
            let prepared = &prepared;
            async move { transaction.execute(prepared, &refs).await }
        });
        let affected: u64 = try_join_all(executions)
            .await
            .map_err(classify)?
            .iter()
            .sum();
        transaction.commit().await.map_err(classify)?;
        Ok(affected)
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

/// Binds a plugin's value to whatever type the server declared for the
/// parameter, so `${temperature}` (an int from Modbus) fits a
/// `DOUBLE PRECISION` column without casts in every template.
#[derive(Debug)]
struct Param<'a>(&'a SqlValue);

type BoxError = Box<dyn Error + Sync + Send>;

impl ToSql for Param<'_> {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        let mismatch = || -> BoxError {
            format!("cannot bind {:?} to a parameter of type {ty}", self.0).into()
        };
        match self.0 {
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
