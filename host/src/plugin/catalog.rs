//! Finds plugins: every `.wasm` component in the plugins directory, named by
//! its file stem. The world is recognised from the component's exports
//! (parsed, not compiled, so listing is instant), and a component built
//! against a WIT version this host cannot link is rejected up front.

use std::fmt;
use std::path::{Path, PathBuf};
use wasmparser::{Parser, Payload};

pub const WIT_PACKAGE: &str = "omh:plugin";
/// Must match `package omh:plugin@...` in `wit/omh-plugin.wit` (a test checks).
pub const WIT_VERSION: &str = "0.2.0";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum World {
    Driver,
    Transform,
    Sink,
}

impl World {
    fn from_interface(interface: &str) -> Option<Self> {
        match interface {
            "driver-api" => Some(Self::Driver),
            "transform-api" => Some(Self::Transform),
            "sink-api" => Some(Self::Sink),
            _ => None,
        }
    }
}

impl fmt::Display for World {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self {
            Self::Driver => "driver",
            Self::Transform => "transform",
            Self::Sink => "sink",
        })
    }
}

#[derive(Debug, Clone)]
pub struct PluginFile {
    pub name: String,
    pub path: PathBuf,
    pub world: World,
    pub wit_version: String,
    pub size: u64,
}

#[derive(Debug, Default)]
pub struct Catalog {
    pub plugins: Vec<PluginFile>,
    /// Files that look like plugins but cannot be used, with the reason.
    pub rejected: Vec<(PathBuf, String)>,
}

impl Catalog {
    pub fn scan(dir: &Path) -> anyhow::Result<Self> {
        let entries = std::fs::read_dir(dir)
            .map_err(|e| anyhow::anyhow!("cannot read plugins directory {}: {e}", dir.display()))?;
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| path.extension().is_some_and(|ext| ext == "wasm"))
            .collect();
        paths.sort();
        let mut catalog = Self::default();
        for path in paths {
            match inspect(&path) {
                Ok(plugin) => catalog.plugins.push(plugin),
                Err(reason) => catalog.rejected.push((path, reason)),
            }
        }
        Ok(catalog)
    }

    /// The plugin `name` of the given world, or a message saying what is wrong.
    pub fn find(&self, name: &str, world: World) -> Result<&PluginFile, String> {
        if let Some(plugin) = self.plugins.iter().find(|p| p.name == name) {
            return if plugin.world == world {
                Ok(plugin)
            } else {
                Err(format!(
                    "plugin \"{name}\" is a {} plugin, not a {world}",
                    plugin.world
                ))
            };
        }
        if let Some((path, reason)) = self.rejected.iter().find(|(p, _)| plugin_name(p) == name) {
            return Err(format!(
                "plugin \"{name}\" ({}) was rejected: {reason}",
                path.display()
            ));
        }
        let known: Vec<&str> = self
            .plugins
            .iter()
            .filter(|p| p.world == world)
            .map(|p| p.name.as_str())
            .collect();
        Err(format!(
            "no {world} plugin \"{name}\" in the plugins directory (found: {})",
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        ))
    }
}

/// A plugin's name: its file stem.
pub fn plugin_name(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Reads one file's world and WIT version from its top-level exports.
pub fn inspect(path: &Path) -> Result<PluginFile, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    inspect_bytes(path, &bytes)
}

/// [`inspect`] for the content of `path`, already read.
pub fn inspect_bytes(path: &Path, bytes: &[u8]) -> Result<PluginFile, String> {
    if !Parser::is_component(bytes) {
        return Err(
            "not a WebAssembly component (core modules are not plugins: build with --target wasm32-wasip2)"
                .into(),
        );
    }
    let mut depth = 0usize;
    let mut found = None;
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.map_err(|e| format!("malformed component: {e}"))? {
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentExportSection(exports) if depth == 0 => {
                for export in exports {
                    let export = export.map_err(|e| format!("malformed export: {e}"))?;
                    if let Some(world_and_version) = recognise(export.name.0) {
                        found = Some(world_and_version);
                    }
                }
            }
            _ => {}
        }
    }
    let (world, wit_version) = found.ok_or_else(|| {
        format!("exports none of {WIT_PACKAGE}/driver-api, transform-api or sink-api")
    })?;
    if !compatible(&wit_version, WIT_VERSION) {
        return Err(format!(
            "built for {WIT_PACKAGE}@{wit_version}, but this host supports {WIT_PACKAGE}@{WIT_VERSION}; rebuild the plugin against the host's wit/ (or use a host that supports {wit_version})"
        ));
    }
    Ok(PluginFile {
        name: plugin_name(path),
        path: path.to_path_buf(),
        world,
        wit_version,
        size: bytes.len() as u64,
    })
}

/// `omh:plugin/driver-api@0.1.0` -> (Driver, "0.1.0").
fn recognise(export: &str) -> Option<(World, String)> {
    let rest = export.strip_prefix(WIT_PACKAGE)?.strip_prefix('/')?;
    let (interface, version) = rest.split_once('@')?;
    Some((World::from_interface(interface)?, version.to_string()))
}

/// Semver compatibility as the component linker applies it: same major, and
/// for 0.x the same minor too.
fn compatible(plugin: &str, host: &str) -> bool {
    let parts = |v: &str| -> Option<(u64, u64)> {
        let mut it = v.split(['.', '-', '+']);
        Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
    };
    match (parts(plugin), parts(host)) {
        (Some((0, pm)), Some((0, hm))) => pm == hm,
        (Some((pmaj, _)), Some((hmaj, _))) => pmaj == hmaj,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_exports() {
        assert_eq!(
            recognise("omh:plugin/driver-api@0.1.0"),
            Some((World::Driver, "0.1.0".into()))
        );
        assert_eq!(recognise("omh:plugin/other@0.1.0"), None);
        assert_eq!(recognise("wasi:cli/run@0.2.0"), None);
    }

    #[test]
    fn semver_compatibility() {
        assert!(compatible("0.1.0", "0.1.3"));
        assert!(compatible("0.1.7", "0.1.0"));
        assert!(!compatible("0.9.0", "0.1.0"));
        // 0.2 changed the transform world: 0.1 plugins do not link.
        assert!(!compatible("0.1.0", "0.2.0"));
        assert!(compatible("1.2.0", "1.0.0"));
        assert!(!compatible("2.0.0", "1.0.0"));
        assert!(!compatible("banana", "0.1.0"));
    }

    #[test]
    fn wit_version_matches_the_wit_file() {
        let wit = include_str!("../../../wit/omh-plugin.wit");
        assert!(
            wit.contains(&format!("package {WIT_PACKAGE}@{WIT_VERSION};")),
            "WIT_VERSION is out of date with wit/omh-plugin.wit"
        );
    }
}
