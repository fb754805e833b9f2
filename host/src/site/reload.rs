//! `SIGHUP` reloads the manifest with the same rule as a plugin file: the
//! new manifest is read and validated as at start-up, its plugins resolved
//! and its devices and sinks built, all while the running ones carry on;
//! anything wrong and it is rejected with the same `file: key.path:
//! message` lines and the running configuration stays.
//!
//! What applies: devices, groups, transforms, sinks and plugin limits.
//! What needs a restart (logged, and the running value kept): `[site]`,
//! `plugins.dir`, `[broker]` (its listener and limits live in rumqttd),
//! `[http]`, `[simulators]` and `[uplink]`.

use super::pipeline::{Pipeline, Site, sink_unchanged};
use super::{load_plugin, plugin_uses};
use crate::manifest::{self, LoadedManifest};
use crate::plugin::catalog::Catalog;

pub async fn reload(site: &Site, pipeline: &mut Pipeline) {
    let path = pipeline.loaded.path.clone();
    tracing::info!("manifest reload: reading {}", path.display());
    let rejected = |problems: &str| {
        tracing::error!("manifest reload rejected; the running configuration stays:\n{problems}");
    };
    let mut loaded = match manifest::load(&path) {
        Ok(loaded) => loaded,
        Err(error) => return rejected(&error.to_string()),
    };
    keep_what_needs_a_restart(&pipeline.loaded, &mut loaded);
    if let Err(problems) = load_new_plugins(site, &loaded).await {
        let lines: Vec<String> = problems
            .iter()
            .map(|problem| format!("{}: {problem}", path.display()))
            .collect();
        return rejected(&lines.join("\n"));
    }
    let devices = match site.build_devices(&loaded) {
        Ok(devices) => devices,
        Err(error) => return rejected(&format!("{}: {error:#}", path.display())),
    };
    let changed_sinks: Vec<&String> = loaded
        .manifest
        .sinks
        .keys()
        .filter(|name| !sink_unchanged(&pipeline.loaded, &loaded, name))
        .collect();
    let sinks = match changed_sinks
        .iter()
        .map(|name| site.build_sink(&loaded, name))
        .collect::<anyhow::Result<Vec<_>>>()
    {
        Ok(sinks) => sinks,
        Err(error) => return rejected(&format!("{}: {error:#}", path.display())),
    };
    let summary = format!(
        "{} devices, {} groups, {} sinks ({} new or changed)",
        loaded.manifest.devices.len(),
        loaded
            .manifest
            .devices
            .values()
            .map(|d| d.groups.len())
            .sum::<usize>(),
        loaded.manifest.sinks.len(),
        sinks.len()
    );
    let gone = removed(&pipeline.loaded, &loaded);
    pipeline.replace(site, loaded, sinks, devices).await;
    for owner in gone {
        site.status.forget(&owner);
    }
    tracing::info!("manifest reload: applied: {summary}");
}

/// The devices and sinks of `running` that `new` no longer has, as owners
/// of retained topics (`devices.NAME`, `sinks.NAME`).
fn removed(running: &LoadedManifest, new: &LoadedManifest) -> Vec<String> {
    let (old, new) = (&running.manifest, &new.manifest);
    let devices = old
        .devices
        .keys()
        .filter(|name| !new.devices.contains_key(*name))
        .map(|name| format!("devices.{name}"));
    let sinks = old
        .sinks
        .keys()
        .filter(|name| !new.sinks.contains_key(*name))
        .map(|name| format!("sinks.{name}"));
    devices.chain(sinks).collect()
}

/// Keeps the running value of every section that needs a restart, saying
/// so for each one that changed.
fn keep_what_needs_a_restart(running: &LoadedManifest, new: &mut LoadedManifest) {
    let (old, new_manifest) = (&running.manifest, &mut new.manifest);
    let mut changed = Vec::new();
    if old.site != new_manifest.site {
        changed.push("[site]");
        new_manifest.site = old.site.clone();
    }
    if old.plugins.dir != new_manifest.plugins.dir {
        changed.push("plugins.dir");
        new_manifest.plugins.dir = old.plugins.dir.clone();
    }
    if old.broker != new_manifest.broker {
        changed.push("[broker]");
        new_manifest.broker = old.broker.clone();
    }
    if old.http != new_manifest.http {
        changed.push("[http]");
        new_manifest.http = old.http.clone();
    }
    if old.simulators != new_manifest.simulators {
        changed.push("[simulators]");
        new_manifest.simulators = old.simulators.clone();
    }
    if old.uplink != new_manifest.uplink {
        changed.push("[uplink]");
        new_manifest.uplink = old.uplink.clone();
    }
    for section in changed {
        tracing::warn!(
            "manifest reload: {section} changed: that needs a restart of omh-host; the running value stays"
        );
    }
    // What start-up derived from those sections.
    new.plugins_dir = running.plugins_dir.clone();
    new.data_dir = running.data_dir.clone();
    new.topic = running.topic.clone();
    new.uns = running.uns.clone();
}

/// Resolves every plugin the manifest names: a loaded one is used as it
/// runs (the plugin watcher keeps it current); one not loaded yet is found
/// in the plugins directory and compiled off the async workers.
async fn load_new_plugins(site: &Site, loaded: &LoadedManifest) -> Result<(), Vec<String>> {
    let catalog = Catalog::scan(&loaded.plugins_dir).map_err(|e| vec![e.to_string()])?;
    let mut problems = Vec::new();
    let mut new_files = Vec::new();
    for (key, name, world) in plugin_uses(&loaded.manifest) {
        let running = site
            .plugins
            .lock()
            .expect("plugin versions lock")
            .get(name)
            .map(|(running_world, _)| running_world);
        match running {
            Some(running_world) if running_world == world => {}
            Some(running_world) => problems.push(format!(
                "{key}: plugin \"{name}\" is a {running_world} plugin, not a {world}"
            )),
            None => match catalog.find(name, world) {
                Ok(file) => new_files.push(file.clone()),
                Err(message) => problems.push(format!("{key}: {message}")),
            },
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    new_files.sort_by(|a, b| a.name.cmp(&b.name));
    new_files.dedup_by(|a, b| a.name == b.name);
    for file in new_files {
        let runtime = site.runtime.clone();
        let loading = file.clone();
        let version = tokio::task::spawn_blocking(move || load_plugin(&runtime, &loading))
            .await
            .map_err(|e| vec![e.to_string()])?
            .map_err(|e| vec![format!("{e:#}")])?;
        site.plugins
            .lock()
            .expect("plugin versions lock")
            .insert(&file.name, file.world, version);
    }
    Ok(())
}
