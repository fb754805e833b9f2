//! Supervision of one plugin instance: it owns the instance's `Store`, puts
//! a hard deadline on every call (on the plugin's own time, see
//! `deadline`), and after a trap, an overrun deadline or an exhausted memory
//! limit drops the store (a trapped store is poisoned) and instantiates a
//! fresh one after an exponential backoff. Nothing here knows which world
//! the plugin implements: the caller passes the call.
//!
//! It also follows its plugin's current version: when a new one is
//! published, the next call first starts and configures an instance of it
//! and, if that works, drops the old one; otherwise the old one stays.

use super::bindings::types::Error as PluginError;
use super::deadline;
use super::state::PluginState;
use super::versions::{Swap, Version};
use crate::manifest::ResolvedLimits;
use crate::status::{PluginState as Phase, StatusBoard};
use futures::FutureExt;
use futures::future::BoxFuture;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use wasmtime::Store;
use wasmtime::component::Component;

/// An instance that lived this long before crashing starts backoff afresh.
const HEALTHY_AFTER: Duration = Duration::from_secs(60);

/// A live instance: its store and the bindings to call into it.
pub struct Live<B> {
    pub store: Store<PluginState>,
    pub bindings: B,
}

/// Creates and configures a fresh instance (instantiate + `configure`, and
/// `bind` for a transform).
pub type Factory<B> =
    Box<dyn Fn() -> BoxFuture<'static, Result<Live<B>, StartError>> + Send + Sync>;

/// Makes an instance's factory from a version of its plugin (linking it
/// to the host's interfaces for its world).
pub type Blueprint<B> = Box<dyn Fn(&Component) -> anyhow::Result<Factory<B>> + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Instantiation trapped or failed (a bug in the plugin, or limits).
    #[error("{0}")]
    Crashed(String),
    /// `configure` (or a transform's `bind`) failed for a reason that may
    /// pass (device unreachable).
    #[error("{call} failed: {reason}")]
    Configure { call: &'static str, reason: String },
    /// A transform's `bind` returned another output table than the one its
    /// chain was built with (see `TagTables`).
    #[error("{0}")]
    TagTableChanged(String),
    /// `configure` (or `bind`) said the settings or tags are invalid: only
    /// a manifest change helps, so the instance is not restarted.
    #[error("{0}")]
    InvalidConfig(String),
}

#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The plugin returned an error value; the instance is fine.
    #[error("{}", describe(.0))]
    Plugin(PluginError),
    /// The instance trapped, overran its deadline or exhausted memory; it
    /// has been dropped and will be restarted.
    #[error("plugin crashed: {0}")]
    Crashed(String),
    /// No instance right now: waiting out the backoff after a crash.
    #[error("plugin restarting in {}ms after: {last_error}", .retry_in.as_millis())]
    Restarting {
        retry_in: Duration,
        last_error: String,
    },
    /// The plugin rejected its configuration; it stays down until the
    /// manifest changes.
    #[error("plugin not running: {0}")]
    Failed(String),
}

pub fn describe(error: &PluginError) -> String {
    match error {
        PluginError::InvalidConfig(m) => format!("invalid configuration: {m}"),
        PluginError::Unreachable(m) => format!("unreachable: {m}"),
        PluginError::Timeout(m) => format!("timeout: {m}"),
        PluginError::Protocol(m) => format!("protocol error: {m}"),
        PluginError::Unsupported(m) => format!("unsupported: {m}"),
        PluginError::Other(m) => m.clone(),
    }
}

pub struct Supervised<B> {
    name: Arc<str>,
    blueprint: Blueprint<B>,
    versions: watch::Receiver<Version>,
    /// The version `factory` makes instances of.
    running: Arc<str>,
    factory: Factory<B>,
    limits: ResolvedLimits,
    live: Option<(Live<B>, Instant)>,
    failed: Option<String>,
    backoff: Duration,
    retry_at: Option<(Instant, String)>,
    restarts: u64,
    /// Calls stopped at their deadline (epoch interrupt or call_timeout).
    interrupts: u64,
    status: StatusBoard,
}

impl<B: Send> Supervised<B> {
    pub fn new(
        name: Arc<str>,
        mut versions: watch::Receiver<Version>,
        blueprint: Blueprint<B>,
        limits: ResolvedLimits,
        status: StatusBoard,
    ) -> anyhow::Result<Self> {
        let version = versions.borrow_and_update().clone();
        Ok(Self {
            factory: blueprint(&version.component)?,
            running: version.sha256,
            name,
            blueprint,
            versions,
            limits,
            live: None,
            failed: None,
            backoff: limits.restart_backoff,
            retry_at: None,
            restarts: 0,
            interrupts: 0,
            status,
        })
    }

    /// Runs `call` against the live instance (starting one if needed) under
    /// the call deadline. `call` returns the plugin's own result inside the
    /// wasmtime result, as the generated `call_*` methods do.
    pub async fn call<T>(
        &mut self,
        call: impl for<'a> FnOnce(
            &'a B,
            &'a mut Store<PluginState>,
        ) -> BoxFuture<'a, wasmtime::Result<Result<T, PluginError>>>,
    ) -> Result<T, CallError> {
        self.start().await?;
        let (live, _) = self.live.as_mut().expect("ensure_live leaves an instance");
        let host_wait = live.store.data().host_wait.clone();
        let outcome = deadline::within(
            self.limits.call_timeout,
            &host_wait,
            contain(call(&live.bindings, &mut live.store)),
        )
        .await;
        match outcome {
            Some(Ok(Ok(Ok(value)))) => Ok(value),
            Some(Ok(Ok(Err(error)))) => Err(CallError::Plugin(error)),
            Some(Err(panic)) => Err(self.crashed(panic)),
            Some(Ok(Err(trap))) => {
                if trap.downcast_ref::<wasmtime::Trap>() == Some(&wasmtime::Trap::Interrupt) {
                    self.interrupts += 1;
                }
                Err(self.crashed(self.explain_trap(&trap)))
            }
            None => {
                self.interrupts += 1;
                Err(self.crashed(format!(
                    "call did not return within {} (call_timeout)",
                    humantime::format_duration(self.limits.call_timeout)
                )))
            }
        }
    }

    /// Makes sure an instance of the current version is live, starting one
    /// if needed, as a call would.
    pub async fn start(&mut self) -> Result<(), CallError> {
        self.follow_new_version().await;
        self.ensure_live().await
    }

    /// Switches to a newly published version of the plugin, if any, and
    /// reports the outcome to whoever published it.
    async fn follow_new_version(&mut self) {
        if !self.versions.has_changed().unwrap_or(false) {
            return;
        }
        let version = self.versions.borrow_and_update().clone();
        if version.sha256 == self.running {
            return;
        }
        let outcome = self.swap_to(&version).await;
        if let Err(reason) = &outcome {
            tracing::warn!(plugin = %self.name, version = version.short_sha(), %reason, "instance keeps its running version");
        }
        if let Some(swaps) = &version.swaps {
            // The publisher may have stopped waiting; nothing to tell then.
            let _ = swaps.send(Swap {
                instance: self.name.clone(),
                outcome,
            });
        }
    }

    /// Starts and configures an instance of `version`; only once that has
    /// worked does it replace the running instance, which is idle here
    /// (between calls), so no call is cut short.
    async fn swap_to(&mut self, version: &Version) -> Result<(), String> {
        let factory = (self.blueprint)(&version.component).map_err(|e| format!("{e:#}"))?;
        let live = match tokio::time::timeout(self.limits.call_timeout, contain(factory())).await {
            Ok(Ok(Ok(live))) => live,
            Ok(Ok(Err(error))) => return Err(error.to_string()),
            Ok(Err(panic)) => return Err(panic),
            Err(_) => {
                return Err(format!(
                    "start did not finish within {} (call_timeout)",
                    humantime::format_duration(self.limits.call_timeout)
                ));
            }
        };
        self.factory = factory;
        self.running = version.sha256.clone();
        self.live = Some((live, Instant::now()));
        // A new version is a fresh start: a configuration the old one
        // rejected, or its crashes, say nothing about this one.
        self.failed = None;
        self.retry_at = None;
        self.backoff = self.limits.restart_backoff;
        self.status.plugin(
            &self.name,
            Phase::Running,
            self.restarts,
            self.interrupts,
            None,
        );
        Ok(())
    }

    async fn ensure_live(&mut self) -> Result<(), CallError> {
        if self.live.is_some() {
            return Ok(());
        }
        if let Some(reason) = &self.failed {
            return Err(CallError::Failed(reason.clone()));
        }
        if let Some((at, last_error)) = &self.retry_at {
            let now = Instant::now();
            if now < *at {
                return Err(CallError::Restarting {
                    retry_in: *at - now,
                    last_error: last_error.clone(),
                });
            }
        }
        let first_start = self.retry_at.is_none() && self.restarts == 0;
        // Instantiation and configure run under the same deadline as calls:
        // a plugin that hangs in configure is as broken as one that hangs later.
        let started = tokio::time::timeout(
            self.limits.call_timeout,
            contain((self.factory)())
                .map(|started| started.map_err(StartError::Crashed).and_then(|live| live)),
        )
        .await;
        match started {
            Ok(Ok(live)) => {
                if !first_start {
                    self.restarts += 1;
                    tracing::info!(plugin = %self.name, restarts = self.restarts, "plugin restarted");
                }
                self.live = Some((live, Instant::now()));
                self.retry_at = None;
                self.status.plugin(
                    &self.name,
                    Phase::Running,
                    self.restarts,
                    self.interrupts,
                    None,
                );
                Ok(())
            }
            Ok(Err(StartError::InvalidConfig(reason))) => {
                tracing::error!(plugin = %self.name, error = %reason, "plugin rejected its configuration; fix the manifest");
                self.status.plugin(
                    &self.name,
                    Phase::Failed,
                    self.restarts,
                    self.interrupts,
                    Some(&reason),
                );
                self.failed = Some(reason.clone());
                Err(CallError::Failed(reason))
            }
            Ok(Err(error)) => Err(self.crashed(error.to_string())),
            Err(_) => Err(self.crashed(format!(
                "start did not finish within {} (call_timeout)",
                humantime::format_duration(self.limits.call_timeout)
            ))),
        }
    }

    /// Drops the instance and schedules the next start.
    fn crashed(&mut self, reason: String) -> CallError {
        if let Some((_, since)) = self.live.take()
            && since.elapsed() >= HEALTHY_AFTER
        {
            self.backoff = self.limits.restart_backoff;
        }
        let delay = self.backoff;
        self.backoff = self
            .backoff
            .saturating_mul(2)
            .min(self.limits.restart_backoff_max)
            .max(self.limits.restart_backoff);
        self.retry_at = Some((Instant::now() + delay, reason.clone()));
        tracing::error!(
            plugin = %self.name,
            error = %reason,
            retry_in_ms = delay.as_millis() as u64,
            "plugin crashed; restarting after backoff"
        );
        self.status.plugin(
            &self.name,
            Phase::Crashed,
            self.restarts,
            self.interrupts,
            Some(&reason),
        );
        CallError::Crashed(reason)
    }

    fn explain_trap(&self, trap: &wasmtime::Error) -> String {
        let text = format!("{trap:?}");
        // With trap_on_grow_failure, exceeding the limit surfaces as a failed grow.
        if text.contains("forcing trap when growing memory") || text.contains("memory limit") {
            return format!(
                "exceeded its memory limit of {} MiB",
                self.limits.memory_limit >> 20
            );
        }
        let first_line = text.lines().next().unwrap_or("trap").to_string();
        match trap.downcast_ref::<wasmtime::Trap>() {
            Some(code) => format!("trapped: {code} ({first_line})"),
            None => format!("trapped: {first_line}"),
        }
    }
}

/// Runs `future`, turning a panic into an error. A panic while serving a
/// plugin (in a host function it called, or while lifting what it
/// returned) must cost that instance, which is dropped like a trapped one,
/// not the task that drives its device or sink.
pub(super) async fn contain<T>(future: impl Future<Output = T>) -> Result<T, String> {
    AssertUnwindSafe(future)
        .catch_unwind()
        .await
        .map_err(|panic| {
            let message = panic
                .downcast_ref::<&str>()
                .map(|text| text.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".into());
            format!("the host panicked serving the plugin: {message}")
        })
}
