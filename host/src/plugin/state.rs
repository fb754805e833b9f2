//! What one plugin instance's `Store` holds, and the host capabilities it
//! is given. Each instance's WASI context is built from its manifest entry
//! alone: no files, no environment, no network except a driver's endpoints.

use super::bindings::sink::omh::plugin::{clock, logging, sql};
use super::bindings::types::Error as PluginError;
use super::deadline::HostWait;
use super::guest_stderr::GuestStderr;
use super::log_budget::{self, LogBudget};
use crate::storage::{SqlValue, Storage, StorageError, WriteOp};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};
use wasmtime::component::ResourceTable;
use wasmtime::{StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::sockets::SocketAddrUse;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

/// What an instance may reach beyond its own memory.
#[derive(Clone, Default)]
pub struct Grants {
    /// TCP peers a driver may connect to (its manifest endpoint and backup
    /// endpoint, resolved).
    pub connect: Vec<SocketAddr>,
    /// The database a sink writes through the `sql` interface.
    pub storage: Option<Storage>,
}

pub struct PluginState {
    /// Instance name for logs: `device:demo`, `sink:timescale`.
    instance: Arc<str>,
    wasi: WasiCtx,
    table: ResourceTable,
    pub(super) limits: StoreLimits,
    storage: Option<Storage>,
    /// Time spent waiting on `storage`: not the plugin's time.
    pub(super) host_wait: Arc<HostWait>,
    /// Shared with the instance's stderr.
    log_budget: Arc<Mutex<LogBudget>>,
}

impl PluginState {
    pub fn new(instance: Arc<str>, grants: &Grants, memory_limit: u64) -> Self {
        let mut wasi = WasiCtxBuilder::new();
        // Guest panics print here; that message is the best clue to a trap.
        let log_budget = Arc::new(Mutex::new(LogBudget::default()));
        wasi.stderr(GuestStderr::new(instance.clone(), log_budget.clone()));
        if !grants.connect.is_empty() {
            let allowed = grants.connect.clone();
            wasi.allow_tcp(true);
            wasi.socket_addr_check(move |addr, purpose| {
                let permitted = match purpose {
                    SocketAddrUse::TcpConnect => allowed.contains(&addr),
                    // connect() binds implicitly to the wildcard address first.
                    SocketAddrUse::TcpBind => addr.ip().is_unspecified() && addr.port() == 0,
                    _ => false,
                };
                Box::pin(async move { permitted })
            });
        }
        Self {
            instance,
            wasi: wasi.build(),
            table: ResourceTable::new(),
            limits: StoreLimitsBuilder::new()
                .memory_size(usize::try_from(memory_limit).unwrap_or(usize::MAX))
                .trap_on_grow_failure(true)
                .build(),
            storage: grants.storage.clone(),
            host_wait: Arc::default(),
            log_budget,
        }
    }
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl logging::Host for PluginState {
    fn log(
        &mut self,
        level: logging::Level,
        message: String,
        fields: Vec<(String, String)>,
    ) -> wasmtime::Result<()> {
        // Lines the filter would discard must not use up the budget that
        // the plugin's warnings and errors need.
        let enabled = match level {
            logging::Level::Trace => tracing::enabled!(tracing::Level::TRACE),
            logging::Level::Debug => tracing::enabled!(tracing::Level::DEBUG),
            logging::Level::Info => tracing::enabled!(tracing::Level::INFO),
            logging::Level::Warn => tracing::enabled!(tracing::Level::WARN),
            logging::Level::Error => tracing::enabled!(tracing::Level::ERROR),
        };
        if !enabled {
            return Ok(());
        }
        let plugin = &*self.instance;
        if !self
            .log_budget
            .lock()
            .expect("log budget lock")
            .pass(plugin)
        {
            return Ok(());
        }
        // Plugin fields are dynamic, tracing's are static: append them to
        // the message as `key=value`, as logfmt readers expect.
        let mut line = message;
        for (key, value) in &fields {
            line.push_str(&format!(" {key}={value}"));
        }
        let line = log_budget::cut(line);
        match level {
            logging::Level::Trace => tracing::trace!(plugin, "{line}"),
            logging::Level::Debug => tracing::debug!(plugin, "{line}"),
            logging::Level::Info => tracing::info!(plugin, "{line}"),
            logging::Level::Warn => tracing::warn!(plugin, "{line}"),
            logging::Level::Error => tracing::error!(plugin, "{line}"),
        }
        Ok(())
    }
}

impl clock::Host for PluginState {
    fn now_ms(&mut self) -> wasmtime::Result<i64> {
        Ok(unix_millis(SystemTime::now()))
    }
}

impl super::bindings::types::Host for PluginState {}

impl sql::Host for PluginState {
    async fn execute(
        &mut self,
        statement: String,
        rows: Vec<Vec<sql::SqlValue>>,
    ) -> wasmtime::Result<Result<u64, PluginError>> {
        let _waiting = self.host_wait.enter();
        Ok(write_through(
            self.storage.clone(),
            WriteOp::Execute {
                statement,
                rows: to_host_rows(rows),
            },
        )
        .await)
    }

    async fn copy_rows(
        &mut self,
        table: String,
        columns: Vec<String>,
        rows: Vec<Vec<sql::SqlValue>>,
    ) -> wasmtime::Result<Result<u64, PluginError>> {
        let _waiting = self.host_wait.enter();
        Ok(write_through(
            self.storage.clone(),
            WriteOp::Copy {
                table,
                columns,
                rows: to_host_rows(rows),
            },
        )
        .await)
    }
}

async fn write_through(storage: Option<Storage>, op: WriteOp) -> Result<u64, PluginError> {
    let Some(storage) = storage else {
        return Err(PluginError::Unsupported(
            "this instance has no database".into(),
        ));
    };
    storage.write(op).await.map_err(|e| match e {
        StorageError::Unreachable(m) => PluginError::Unreachable(m),
        StorageError::Rejected(m) => PluginError::Other(m),
    })
}

fn to_host_rows(rows: Vec<Vec<sql::SqlValue>>) -> Vec<Vec<SqlValue>> {
    rows.into_iter()
        .map(|row| row.into_iter().map(SqlValue::from).collect())
        .collect()
}

impl From<sql::SqlValue> for SqlValue {
    fn from(value: sql::SqlValue) -> Self {
        match value {
            sql::SqlValue::Null => Self::Null,
            sql::SqlValue::Boolean(b) => Self::Bool(b),
            sql::SqlValue::Int(i) => Self::Int(i),
            sql::SqlValue::Float(f) => Self::Float(f),
            sql::SqlValue::Text(t) => Self::Text(t),
            sql::SqlValue::TimestampMs(ms) => Self::TimestampMs(ms),
        }
    }
}

pub fn unix_millis(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
