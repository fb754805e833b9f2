//! Which version of each plugin is current. Every loaded plugin has a
//! `watch` channel of its current [`Version`]; every instance built from it
//! follows that channel and switches to a new version between two calls
//! (see `Supervised::call`), so a call in progress finishes on the version
//! it started on.

use super::catalog::World;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use wasmtime::component::Component;

/// One compiled version of a plugin file.
#[derive(Clone)]
pub struct Version {
    pub component: Component,
    /// SHA-256 of the file in hex: tells versions apart.
    pub sha256: Arc<str>,
    /// Where instances report switching to this version; `None` for a
    /// version they are built with, which needs no report.
    pub swaps: Option<mpsc::UnboundedSender<Swap>>,
}

impl Version {
    /// The start of the hash, enough to tell versions apart in a log.
    pub fn short_sha(&self) -> &str {
        &self.sha256[..12.min(self.sha256.len())]
    }
}

/// One instance's answer to a new version.
pub struct Swap {
    pub instance: Arc<str>,
    /// `Err` says why the instance kept its running version.
    pub outcome: Result<(), String>,
}

/// The current version of every loaded plugin, by name.
#[derive(Default)]
pub struct PluginVersions {
    plugins: HashMap<String, Loaded>,
}

struct Loaded {
    world: World,
    current: watch::Sender<Version>,
}

impl PluginVersions {
    /// Adds a plugin loaded for the first time.
    pub fn insert(&mut self, name: &str, world: World, version: Version) {
        self.plugins.insert(
            name.to_string(),
            Loaded {
                world,
                current: watch::Sender::new(version),
            },
        );
    }

    /// The world of plugin `name` and the channel of its current version,
    /// when it is loaded.
    pub fn get(&self, name: &str) -> Option<(World, &watch::Sender<Version>)> {
        self.plugins
            .get(name)
            .map(|loaded| (loaded.world, &loaded.current))
    }

    /// Follows the current version of plugin `name`, which must be loaded.
    pub fn follow(&self, name: &str) -> watch::Receiver<Version> {
        self.plugins[name].current.subscribe()
    }
}
