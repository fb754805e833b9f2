//! Turns compiled components into supervised instances: one linker per
//! world (WASI + our host interfaces), one `Store` per instance, built with
//! exactly the grants and limits its manifest entry gives.

use super::bindings::types::Error as PluginError;
use super::bindings::{driver, sink, transform};
use super::catalog::World;
use super::engine::{CodeSource, PluginEngine};
use super::state::{Grants, PluginState};
use super::supervisor::{Blueprint, Factory, Live, StartError, Supervised, describe};
use super::tag_tables::TagTables;
use super::versions::Version;
use crate::manifest::ResolvedLimits;
use crate::status::StatusBoard;
use futures::future::BoxFuture;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::watch;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Engine, Store};

pub use driver::Driver;
pub use driver::exports::omh::plugin::driver_api::{Group, Tag};
pub use sink::Sink;
pub use transform::Transform;
pub use transform::exports::omh::plugin::transform_api::TaggedReading;

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

    pub fn load(&self, bytes: &[u8]) -> anyhow::Result<(Component, CodeSource)> {
        self.engine.load(bytes)
    }

    /// Checks that `component` links as a plugin of `world`: imports only
    /// what the host provides, exports what the world requires.
    pub fn check_links(&self, world: World, component: &Component) -> anyhow::Result<()> {
        match world {
            World::Driver => {
                driver::DriverPre::new(self.driver_linker.instantiate_pre(component)?)?;
            }
            World::Transform => {
                transform::TransformPre::new(self.transform_linker.instantiate_pre(component)?)?;
            }
            World::Sink => {
                sink::SinkPre::new(self.sink_linker.instantiate_pre(component)?)?;
            }
        }
        Ok(())
    }

    pub fn driver(
        &self,
        versions: watch::Receiver<Version>,
        spec: InstanceSpec,
        endpoint: String,
        groups: Vec<Group>,
        status: StatusBoard,
    ) -> anyhow::Result<Supervised<Driver>> {
        let linker = self.driver_linker.clone();
        let link = move |component: &Component| {
            let pre = driver::DriverPre::new(linker.instantiate_pre(component)?)?;
            let (endpoint, groups) = (endpoint.clone(), groups.clone());
            anyhow::Ok(move |mut store: Store<PluginState>, settings: Arc<str>| {
                let (pre, endpoint, groups) = (pre.clone(), endpoint.clone(), groups.clone());
                let started: BoxFuture<'static, _> = Box::pin(async move {
                    let bindings = pre.instantiate_async(&mut store).await.map_err(crashed)?;
                    let api = bindings.omh_plugin_driver_api();
                    called(
                        "configure",
                        api.call_configure(&mut store, &endpoint, &settings, &groups)
                            .await,
                    )?;
                    Ok(Live { store, bindings })
                });
                started
            })
        };
        self.supervised(spec, versions, link, status)
    }

    /// Step `step` of a transform chain whose tag tables are `tables`: each
    /// instance is bound (after `configure`) to the step's input table, and
    /// must return the output table the chain was built with.
    pub fn transform(
        &self,
        versions: watch::Receiver<Version>,
        spec: InstanceSpec,
        tables: Arc<TagTables>,
        step: usize,
        status: StatusBoard,
    ) -> anyhow::Result<Supervised<Transform>> {
        let linker = self.transform_linker.clone();
        let link = move |component: &Component| {
            let pre = transform::TransformPre::new(linker.instantiate_pre(component)?)?;
            let tables = tables.clone();
            anyhow::Ok(move |mut store: Store<PluginState>, settings: Arc<str>| {
                let (pre, tables) = (pre.clone(), tables.clone());
                let started: BoxFuture<'static, _> = Box::pin(async move {
                    let bindings = pre.instantiate_async(&mut store).await.map_err(crashed)?;
                    let api = bindings.omh_plugin_transform_api();
                    called("configure", api.call_configure(&mut store, &settings).await)?;
                    // The chain runs its steps in order, so the previous
                    // one has bound (and fixed this input) before this one
                    // is first called.
                    let input = tables.get(step).ok_or_else(|| {
                        StartError::Crashed(format!(
                            "step {step} of the chain started before the step before it bound"
                        ))
                    })?;
                    let output = called("bind", api.call_bind(&mut store, input).await)?;
                    tables.settle_output(step, output)?;
                    Ok(Live { store, bindings })
                });
                started
            })
        };
        self.supervised(spec, versions, link, status)
    }

    pub fn sink(
        &self,
        versions: watch::Receiver<Version>,
        spec: InstanceSpec,
        status: StatusBoard,
    ) -> anyhow::Result<Supervised<Sink>> {
        let linker = self.sink_linker.clone();
        let link = move |component: &Component| {
            let pre = sink::SinkPre::new(linker.instantiate_pre(component)?)?;
            anyhow::Ok(move |mut store: Store<PluginState>, settings: Arc<str>| {
                let pre = pre.clone();
                let started: BoxFuture<'static, _> = Box::pin(async move {
                    let bindings = pre.instantiate_async(&mut store).await.map_err(crashed)?;
                    let api = bindings.omh_plugin_sink_api();
                    called("configure", api.call_configure(&mut store, &settings).await)?;
                    Ok(Live { store, bindings })
                });
                started
            })
        };
        self.supervised(spec, versions, link, status)
    }

    /// Wraps a world-specific `link` (which turns a component into `start`:
    /// instantiate + configure, and bind for a transform, in a fresh store)
    /// into a supervised instance: the store is built here, from the spec
    /// alone, so every world gets the same sandbox.
    fn supervised<B: Send + 'static, Start>(
        &self,
        spec: InstanceSpec,
        versions: watch::Receiver<Version>,
        link: impl Fn(&Component) -> anyhow::Result<Start> + Send + Sync + 'static,
        status: StatusBoard,
    ) -> anyhow::Result<Supervised<B>>
    where
        Start: Fn(Store<PluginState>, Arc<str>) -> BoxFuture<'static, Result<Live<B>, StartError>>
            + Send
            + Sync
            + 'static,
    {
        let engine = self.engine.engine().clone();
        let (name, limits, grants) = (spec.name.clone(), spec.limits, spec.grants.clone());
        let settings: Arc<str> = spec.settings.into();
        let blueprint: Blueprint<B> = Box::new(move |component| {
            let start = link(component)?;
            let (engine, name, grants, settings) = (
                engine.clone(),
                name.clone(),
                grants.clone(),
                settings.clone(),
            );
            let factory: Factory<B> = Box::new(move || {
                start(new_store(&engine, &name, &grants, limits), settings.clone())
            });
            Ok(factory)
        });
        Supervised::new(spec.name, versions, blueprint, limits, status)
    }
}

fn new_store(
    engine: &Engine,
    name: &Arc<str>,
    grants: &Grants,
    limits: ResolvedLimits,
) -> Store<PluginState> {
    let state = PluginState::new(name.clone(), grants, limits.memory_limit);
    let mut store = Store::new(engine, state);
    store.limiter(|state| &mut state.limits);
    // Yield to tokio at every epoch tick, so a busy plugin never holds a
    // worker thread and the supervisor's deadline can fire.
    store.set_epoch_deadline(1);
    store.epoch_deadline_async_yield_and_update(1);
    store
}

fn crashed(error: wasmtime::Error) -> StartError {
    StartError::Crashed(
        format!("{error:?}")
            .lines()
            .next()
            .unwrap_or("trap")
            .to_string(),
    )
}

/// The outcome of `call`, one of the calls that start an instance.
fn called<T>(
    call: &'static str,
    outcome: wasmtime::Result<Result<T, PluginError>>,
) -> Result<T, StartError> {
    outcome.map_err(crashed)?.map_err(|error| match error {
        PluginError::InvalidConfig(_) => StartError::InvalidConfig(describe(&error)),
        _ => StartError::Configure {
            call,
            reason: describe(&error),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::super::supervisor::contain;
    use super::*;
    use crate::manifest::Limits;

    /// A host function that panics while a plugin's call is inside it (a
    /// bug reached by what the plugin passed, say) unwinds through the
    /// plugin's frames to the supervisor, which drops the instance.
    #[tokio::test]
    async fn a_host_function_panicking_inside_a_plugin_call_is_contained() {
        let wasm = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../target/test-plugins/misbehaving-driver.wasm"
        );
        let bytes = std::fs::read(wasm).expect("scripts/build-plugins builds the test plugins");
        let cache = tempfile::tempdir().unwrap();
        let runtime = PluginRuntime::new(cache.path().into()).unwrap();
        let (component, _) = runtime.load(&bytes).unwrap();
        // The driver's linker, with the clock it reads in every poll
        // replaced by one that panics.
        let mut linker = runtime.driver_linker.clone();
        linker.allow_shadowing(true);
        linker
            .instance("omh:plugin/clock@0.2.0")
            .unwrap()
            .func_wrap("now-ms", |_, ()| -> wasmtime::Result<(i64,)> {
                panic!("the clock broke")
            })
            .unwrap();
        let pre = driver::DriverPre::new(linker.instantiate_pre(&component).unwrap()).unwrap();
        let limits = Limits::default().resolve(&Limits::default());
        let mut store = new_store(
            runtime.engine.engine(),
            &"test".into(),
            &Grants::default(),
            limits,
        );
        let bindings = pre.instantiate_async(&mut store).await.unwrap();
        let api = bindings.omh_plugin_driver_api();
        let groups = [Group {
            name: "g".into(),
            tags: vec![Tag {
                name: "t".into(),
                address: "none".into(),
                data_type: String::new(),
                writable: false,
            }],
        }];
        api.call_configure(&mut store, "127.0.0.1:9", r#"{"mode":"ok"}"#, &groups)
            .await
            .unwrap()
            .unwrap();

        let outcome = contain(api.call_read_group(&mut store, "g")).await;
        let error = outcome.expect_err("the panic is caught");
        assert_eq!(
            error,
            "the host panicked serving the plugin: the clock broke"
        );
        drop(store);
        // The engine serves new instances as before.
        let mut store = new_store(
            runtime.engine.engine(),
            &"test".into(),
            &Grants::default(),
            limits,
        );
        runtime
            .driver_linker
            .instantiate_async(&mut store, &component)
            .await
            .unwrap();
    }
}
