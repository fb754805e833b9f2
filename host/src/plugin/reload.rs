//! Hot reload of plugin files. A changed `.wasm` in the plugins directory
//! is checked (a component of the same world as the running version, of a
//! WIT version this host links), compiled on the blocking pool (the
//! compiled-code cache applies) and linked; only then is it published as
//! the plugin's current version, and each instance switches to it between
//! two calls. A file that fails any step is rejected with one log line and
//! the running version stays.

use super::catalog::{PluginFile, World, inspect_bytes, plugin_name};
use super::engine::sha256_hex;
use super::runtime::PluginRuntime;
use super::versions::{PluginVersions, Swap, Version};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use wasmtime::component::Component;

/// How long the report of a new version waits for the instances to switch.
/// An instance switches at its next call, so an idle one may do so later.
const SWAP_REPORT_WAIT: Duration = Duration::from_secs(10);

/// Watches `dir` for the life of the process and reloads what changes.
pub fn watch_plugins(
    dir: &Path,
    runtime: Arc<PluginRuntime>,
    plugins: Arc<Mutex<PluginVersions>>,
) -> anyhow::Result<()> {
    let mut changes = super::watch::settled_changes(dir)
        .map_err(|e| anyhow::anyhow!("cannot watch plugins directory {}: {e}", dir.display()))?;
    tokio::spawn(async move {
        while let Some(path) = changes.recv().await {
            reload(&path, &runtime, &plugins).await;
        }
    });
    Ok(())
}

async fn reload(path: &Path, runtime: &Arc<PluginRuntime>, plugins: &Mutex<PluginVersions>) {
    let name = plugin_name(path);
    let bytes = match tokio::fs::read(path).await {
        Ok(bytes) => bytes,
        Err(error) => {
            tracing::warn!(
                "plugin {name}: cannot read new file {}: {error}",
                path.display()
            );
            return;
        }
    };
    let sha256 = sha256_hex(&bytes);
    let running = plugins
        .lock()
        .expect("plugin versions lock")
        .get(&name)
        .map(|(world, current)| (world, current.clone()));
    let checked = inspect_bytes(path, &bytes);
    let Some((world, current)) = running else {
        match checked {
            Ok(file) => tracing::info!(
                "plugin {name}: new {} plugin available (name it in the manifest and send SIGHUP to use it)",
                file.world
            ),
            Err(reason) => tracing::warn!("plugin {name}: rejected new file: {reason}"),
        }
        return;
    };
    if *current.borrow().sha256 == sha256 {
        tracing::debug!("plugin {name}: file unchanged");
        return;
    }
    match compile(world, checked, bytes, runtime.clone()).await {
        Ok(component) => offer(name, current, component, sha256),
        Err(reason) => tracing::warn!(
            "plugin {name}: rejected new file: {reason}; keeping the running version"
        ),
    }
}

/// Everything that can be checked without an instance: world, WIT
/// version, compilation, linking.
async fn compile(
    world: World,
    checked: Result<PluginFile, String>,
    bytes: Vec<u8>,
    runtime: Arc<PluginRuntime>,
) -> Result<Component, String> {
    let file = checked?;
    if file.world != world {
        return Err(format!(
            "it is a {} plugin, the running version is a {world} plugin",
            file.world
        ));
    }
    tokio::task::spawn_blocking(move || {
        let (component, _) = runtime
            .load(&bytes)
            .map_err(|e| format!("cannot compile: {e:#}"))?;
        runtime
            .check_links(world, &component)
            .map_err(|e| format!("cannot link: {e:#}"))?;
        Ok(component)
    })
    .await
    .map_err(|e| format!("compilation did not finish: {e}"))?
}

/// Publishes the new version to the instances and reports, in the
/// background, how many switched.
fn offer(name: String, current: watch::Sender<Version>, component: Component, sha256: String) {
    let (swaps, reports) = mpsc::unbounded_channel();
    let offered = Version {
        component,
        sha256: sha256.into(),
        swaps: Some(swaps),
    };
    let instances = current.receiver_count();
    let previous = current.send_replace(offered.clone());
    tokio::spawn(report(name, current, previous, offered, instances, reports));
}

async fn report(
    name: String,
    current: watch::Sender<Version>,
    previous: Version,
    offered: Version,
    instances: usize,
    mut reports: mpsc::UnboundedReceiver<Swap>,
) {
    let (mut swapped, mut refused) = (0usize, Vec::new());
    let deadline = tokio::time::sleep(SWAP_REPORT_WAIT);
    tokio::pin!(deadline);
    while swapped + refused.len() < instances {
        tokio::select! {
            Some(swap) = reports.recv() => match swap.outcome {
                Ok(()) => swapped += 1,
                Err(reason) => refused.push(format!("{}: {reason}", swap.instance)),
            },
            _ = &mut deadline => break,
        }
    }
    if swapped == 0 && !refused.is_empty() {
        // Nothing runs the new version: make the running one current
        // again, so instances built later (a manifest reload) get it too.
        current.send_if_modified(|version| {
            let still_offered = version.sha256 == offered.sha256;
            if still_offered {
                *version = previous;
            }
            still_offered
        });
        tracing::warn!(
            "plugin {name}: rejected new file: {}; keeping the running version",
            refused.join("; ")
        );
        return;
    }
    tracing::info!(
        "plugin {name}: new version loaded (sha256 {}), {swapped} instances swapped",
        offered.short_sha()
    );
    for refusal in &refused {
        tracing::warn!("plugin {name}: {refusal}; that instance keeps the running version");
    }
    let waiting = instances - swapped - refused.len();
    if waiting > 0 {
        tracing::info!("plugin {name}: {waiting} more instances switch at their next call");
    }
}
