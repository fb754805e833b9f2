//! The wasmtime engine shared by every plugin: epoch interruption for
//! deadlines, and an on-disk cache of compiled code so a restart does not
//! recompile (compiling a plugin takes seconds; loading it, milliseconds).

use sha2::{Digest, Sha256};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::Duration;
use wasmtime::component::Component;
use wasmtime::{Config, Engine};

/// Epoch tick: the granularity of call deadlines and of yielding to tokio.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

pub struct PluginEngine {
    engine: Engine,
    cache_dir: PathBuf,
}

/// Where a component's compiled code came from, for start-up output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeSource {
    Cache,
    Compiled,
}

impl PluginEngine {
    pub fn new(cache_dir: PathBuf) -> anyhow::Result<Self> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        let engine = Engine::new(&config)?;
        let weak = engine.weak();
        std::thread::Builder::new()
            .name("omh-epoch".into())
            .spawn(move || {
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })?;
        Ok(Self { engine, cache_dir })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Loads a plugin file's content from the compiled-code cache when it
    /// holds this exact file compiled by a compatible engine, compiling (and
    /// caching) otherwise. Takes the bytes, not the path: a file is read
    /// once, so the bytes checked are the bytes compiled.
    pub fn load(&self, bytes: &[u8]) -> anyhow::Result<(Component, CodeSource)> {
        let cached = self
            .cache_dir
            .join(format!("{}.cwasm", self.cache_key(bytes)));
        if cached.exists() {
            // SAFETY: the cache directory is written only by this host (below),
            // entries are keyed by the source hash and the engine's
            // compatibility hash, and are replaced by rename, never modified
            // in place, so the mapped file is code this engine produced.
            match unsafe { Component::deserialize_file(&self.engine, &cached) } {
                Ok(component) => return Ok((component, CodeSource::Cache)),
                Err(error) => tracing::warn!(
                    file = %cached.display(), %error,
                    "ignoring unusable compiled-code cache entry"
                ),
            }
        }
        let component =
            Component::new(&self.engine, bytes).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        if let Err(error) = self.store(&cached, &component) {
            tracing::warn!(dir = %self.cache_dir.display(), %error, "cannot write compiled-code cache");
        }
        Ok((component, CodeSource::Compiled))
    }

    fn cache_key(&self, bytes: &[u8]) -> String {
        let mut engine_hash = DefaultHasher::new();
        self.engine
            .precompile_compatibility_hash()
            .hash(&mut engine_hash);
        format!("{}-{:016x}", &sha256_hex(bytes)[..32], engine_hash.finish())
    }

    fn store(&self, path: &Path, component: &Component) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.cache_dir)?;
        let serialized = component
            .serialize()
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let partial = path.with_extension(format!("partial-{}", std::process::id()));
        std::fs::write(&partial, serialized)?;
        std::fs::rename(&partial, path)?;
        Ok(())
    }
}

/// The file's SHA-256 in hex: names a version of a plugin in logs.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
