//! Turns compiled components into supervised instances: one linker per
//! world (WASI + our host interfaces), one `Store` per instance, built with
//! exactly the grants and limits its manifest entry gives.

use super::bindings::{driver, sink, transform};
use super::engine::{CodeSource, PluginEngine};
use super::state::{Grants, PluginState};
use super::supervisor::{Factory, Live, StartError, Supervised, describe};
use crate::manifest::ResolvedLimits;
use crate::status::StatusBoard;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Engine, Store};

pub use driver::Driver;
pub use driver::exports::omh::plugin::driver_api::{Group, Tag};
pub use sink::Sink;
pub use transform::Transform;

pub struct PluginRuntime {
    engine: PluginEngine,
    driver_linker: Linker<PluginState>,
    transform_linker: Linker<PluginState>,
    sink_linker: Linker<PluginState>,
}

/// Everything one instance is made from, besides its component.
#[derive(Clone)]
pub struct InstanceSpec {
    /// Manifest key of the instance (`devices.demo`), for logs and status.
    pub name: Arc<str>,
    pub limits: ResolvedLimits,
    pub grants: Grants,
    /// The manifest's `settings` table as JSON.
    pub settings: String,
}

impl PluginRuntime {
    pub fn new(cache_dir: PathBuf) -> anyhow::Result<Self> {
        let engine = PluginEngine::new(cache_dir)?;
        let linker = |add_world: fn(&mut Linker<PluginState>) -> wasmtime::Result<()>| {
            let mut linker = Linker::new(engine.engine());
            wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
            add_world(&mut linker)?;
            anyhow::Ok(linker)
        };
        Ok(Self {
            driver_linker: linker(|l| Driver::add_to_linker::<_, HasSelf<_>>(l, |s| s))?,
            transform_linker: linker(|l| Transform::add_to_linker::<_, HasSelf<_>>(l, |s| s))?,
            sink_linker: linker(|l| Sink::add_to_linker::<_, HasSelf<_>>(l, |s| s))?,
            engine,
        })
    }

    pub fn load(&self, path: &Path) -> anyhow::Result<(Component, CodeSource)> {
        self.engine.load(path)
    }

    pub fn driver(
        &self,
        component: &Component,
        spec: InstanceSpec,
        endpoint: String,
        groups: Vec<Group>,
        status: StatusBoard,
    ) -> anyhow::Result<Supervised<Driver>> {
        let pre = driver::DriverPre::new(self.driver_linker.instantiate_pre(component)?)?;
        let engine = self.engine.engine().clone();
        let factory_spec = spec.clone();
        let factory: Factory<Driver> = Box::new(move || {
            let (pre, engine, spec) = (pre.clone(), engine.clone(), factory_spec.clone());
            let (endpoint, groups) = (endpoint.clone(), groups.clone());
            Box::pin(async move {
                let mut store = new_store(&engine, &spec);
                let bindings = pre.instantiate_async(&mut store).await.map_err(crashed)?;
                let api = bindings.omh_plugin_driver_api();
                configured(api.call_configure(&mut store, &endpoint, &spec.settings, &groups).await)?;
                Ok(Live { store, bindings })
            })
        });
        Ok(supervised(spec, factory, status))
    }

    pub fn transform(
        &self,
        component: &Component,
        spec: InstanceSpec,
        status: StatusBoard,
    ) -> anyhow::Result<Supervised<Transform>> {
        let pre = transform::TransformPre::new(self.transform_linker.instantiate_pre(component)?)?;
        let engine = self.engine.engine().clone();
        let factory_spec = spec.clone();
        let factory: Factory<Transform> = Box::new(move || {
            let (pre, engine, spec) = (pre.clone(), engine.clone(), factory_spec.clone());
            Box::pin(async move {
                let mut store = new_store(&engine, &spec);
                let bindings = pre.instantiate_async(&mut store).await.map_err(crashed)?;
                let api = bindings.omh_plugin_transform_api();
                configured(api.call_configure(&mut store, &spec.settings).await)?;
                Ok(Live { store, bindings })
            })
        });
        Ok(supervised(spec, factory, status))
    }

    pub fn sink(
        &self,
        component: &Component,
        spec: InstanceSpec,
        status: StatusBoard,
    ) -> anyhow::Result<Supervised<Sink>> {
        let pre = sink::SinkPre::new(self.sink_linker.instantiate_pre(component)?)?;
        let engine = self.engine.engine().clone();
        let factory_spec = spec.clone();
        let factory: Factory<Sink> = Box::new(move || {
            let (pre, engine, spec) = (pre.clone(), engine.clone(), factory_spec.clone());
            Box::pin(async move {
                let mut store = new_store(&engine, &spec);
                let bindings = pre.instantiate_async(&mut store).await.map_err(crashed)?;
                let api = bindings.omh_plugin_sink_api();
                configured(api.call_configure(&mut store, &spec.settings).await)?;
                Ok(Live { store, bindings })
            })
        });
        Ok(supervised(spec, factory, status))
    }
}

fn supervised<B: Send>(spec: InstanceSpec, factory: Factory<B>, status: StatusBoard) -> Supervised<B> {
    Supervised::new(
        spec.name,
        factory,
        spec.limits.call_timeout,
        spec.limits.memory_limit,
        status,
    )
}

fn new_store(engine: &Engine, spec: &InstanceSpec) -> Store<PluginState> {
    let state = PluginState::new(spec.name.clone(), &spec.grants, spec.limits.memory_limit);
    let mut store = Store::new(engine, state);
    store.limiter(|state| &mut state.limits);
    // Yield to tokio at every epoch tick, so a busy plugin never holds a
    // worker thread and the supervisor's deadline can fire.
    store.set_epoch_deadline(1);
    store.epoch_deadline_async_yield_and_update(1);
    store
}

fn crashed(error: wasmtime::Error) -> StartError {
    StartError::Crashed(format!("{error:?}").lines().next().unwrap_or("trap").to_string())
}

fn configured(
    outcome: wasmtime::Result<Result<(), super::bindings::types::Error>>,
) -> Result<(), StartError> {
    outcome
        .map_err(crashed)?
        .map_err(|e| StartError::Configure(describe(&e)))
}
