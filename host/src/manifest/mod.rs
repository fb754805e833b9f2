//! The site manifest: one TOML file describes the whole site.
//!
//! Loading is two steps, both at configure time: serde turns the text into
//! these structs (type errors carry the key path), then [`validate`] checks
//! what types cannot (addresses, references between sections, templates).
//! Every problem is reported as `file: key.path: message` so a user can find
//! it without reading our code.

mod broker;
mod env;
mod units;
mod uns;
mod validate;

use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use broker::{BrokerSection, BrokerUser};
use uns::Place;
pub use uns::{GroupTopics, UnsTemplate};
pub use validate::TopicTemplate;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    #[serde(default)]
    pub site: SiteSection,
    #[serde(default)]
    pub plugins: PluginsSection,
    #[serde(default)]
    pub broker: BrokerSection,
    /// HTTP API, live page and metrics; off unless the manifest has it.
    pub http: Option<HttpSection>,
    /// Built-in Modbus TCP simulators, so a site runs with no device.
    #[serde(default)]
    pub simulators: BTreeMap<String, SimulatorSection>,
    #[serde(default)]
    pub devices: BTreeMap<String, DeviceSection>,
    #[serde(default)]
    pub transforms: BTreeMap<String, TransformSection>,
    #[serde(default)]
    pub sinks: BTreeMap<String, SinkSection>,
    /// Forwarding of bus topics to an external broker; off unless present.
    pub uplink: Option<UplinkSection>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSection {
    /// Where the HTTP server listens. It has no authentication: keep it on
    /// loopback or behind a reverse proxy that has.
    pub listen: SocketAddr,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteSection {
    #[serde(default = "default_site_name")]
    pub name: String,
    /// Compiled-plugin cache and embedded databases live here. Relative
    /// paths are relative to the manifest's directory.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// First level of the unified namespace (`[broker.uns]`).
    #[serde(default)]
    pub enterprise: Option<String>,
}

impl Default for SiteSection {
    fn default() -> Self {
        Self {
            name: default_site_name(),
            data_dir: default_data_dir(),
            enterprise: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginsSection {
    /// Every `.wasm` component here is a plugin, named by its file stem.
    #[serde(default = "default_plugins_dir")]
    pub dir: PathBuf,
    /// Defaults for every plugin instance; devices, transforms and sinks may
    /// override them in their own `limits` table.
    #[serde(default)]
    pub limits: Limits,
}

impl Default for PluginsSection {
    fn default() -> Self {
        Self {
            dir: default_plugins_dir(),
            limits: Limits::default(),
        }
    }
}

/// Sandbox limits of one plugin instance.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Linear memory cap; growing past it traps and the instance restarts.
    #[serde(default, deserialize_with = "units::optional_byte_size")]
    pub memory_limit: Option<u64>,
    /// Longest a single call into the plugin may run before it is stopped.
    #[serde(default, deserialize_with = "units::optional_duration")]
    pub call_timeout: Option<Duration>,
    /// Wait before restarting a crashed instance; doubles with each crash
    /// in a row, up to `restart_backoff_max`.
    #[serde(default, deserialize_with = "units::optional_duration")]
    pub restart_backoff: Option<Duration>,
    #[serde(default, deserialize_with = "units::optional_duration")]
    pub restart_backoff_max: Option<Duration>,
}

impl Limits {
    pub const DEFAULT_MEMORY_LIMIT: u64 = 64 << 20;
    pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(5);
    pub const DEFAULT_RESTART_BACKOFF: Duration = Duration::from_millis(500);
    pub const DEFAULT_RESTART_BACKOFF_MAX: Duration = Duration::from_secs(30);

    /// This instance's limits, falling back to the site defaults.
    pub fn resolve(&self, defaults: &Limits) -> ResolvedLimits {
        ResolvedLimits {
            memory_limit: self
                .memory_limit
                .or(defaults.memory_limit)
                .unwrap_or(Self::DEFAULT_MEMORY_LIMIT),
            call_timeout: self
                .call_timeout
                .or(defaults.call_timeout)
                .unwrap_or(Self::DEFAULT_CALL_TIMEOUT),
            restart_backoff: self
                .restart_backoff
                .or(defaults.restart_backoff)
                .unwrap_or(Self::DEFAULT_RESTART_BACKOFF),
            restart_backoff_max: self
                .restart_backoff_max
                .or(defaults.restart_backoff_max)
                .unwrap_or(Self::DEFAULT_RESTART_BACKOFF_MAX),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ResolvedLimits {
    pub memory_limit: u64,
    pub call_timeout: Duration,
    pub restart_backoff: Duration,
    pub restart_backoff_max: Duration,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimulatorSection {
    pub listen: SocketAddr,
    /// How often every register gets a new random value.
    #[serde(default = "one_second", deserialize_with = "units::duration")]
    pub update_interval: Duration,
    pub registers: Vec<SimulatedRegister>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimulatedRegister {
    /// Neuron syntax, `1!40001`: slave 1, holding register 1 (offset 0).
    pub address: String,
    pub min: u16,
    pub max: u16,
}

/// The driver setting that carries the resolved `backup_endpoint`; the
/// manifest's own `settings` may not set it.
pub const BACKUP_ENDPOINT_SETTING: &str = "backup_endpoint";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceSection {
    /// Driver plugin name (file stem of its `.wasm`).
    pub driver: String,
    /// `host:port` of the device: the only address the driver may connect
    /// to, besides `backup_endpoint`.
    pub endpoint: String,
    /// `host:port` to fail over to (a redundant device or gateway). Admitted
    /// to the driver's sandbox and handed to it, resolved, as the setting
    /// [`BACKUP_ENDPOINT_SETTING`].
    #[serde(default)]
    pub backup_endpoint: Option<String>,
    /// Area and production line of the device in the unified namespace.
    #[serde(default)]
    pub area: Option<String>,
    #[serde(default)]
    pub line: Option<String>,
    /// Handed to the driver as JSON at configure time.
    #[serde(default)]
    pub settings: toml::Table,
    #[serde(default)]
    pub limits: Limits,
    pub groups: BTreeMap<String, GroupSection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupSection {
    /// Poll interval: one `read-group` call and one bus message per tick.
    #[serde(deserialize_with = "units::duration")]
    pub interval: Duration,
    /// Transform names applied in order before the group is published.
    #[serde(default)]
    pub transforms: Vec<String>,
    pub tags: Vec<TagSection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TagSection {
    pub name: String,
    pub address: String,
    #[serde(default, rename = "type")]
    pub data_type: String,
    #[serde(default)]
    pub writable: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransformSection {
    pub plugin: String,
    #[serde(default)]
    pub settings: toml::Table,
    #[serde(default)]
    pub limits: Limits,
}

#[derive(Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkSection {
    pub plugin: String,
    /// `postgres://...` or `sqlite:path` (relative to the site data dir).
    pub url: String,
    /// MQTT topic filters the sink consumes from the bus.
    pub topics: Vec<String>,
    #[serde(default)]
    pub settings: toml::Table,
    /// Most messages handed to the plugin in one `write` call.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Longest a message waits for its batch to fill.
    #[serde(default = "one_second", deserialize_with = "units::duration")]
    pub flush_interval: Duration,
    /// Disk the sink's store-and-forward buffer may use while the database
    /// is behind or down; when full, the oldest undelivered messages go.
    #[serde(
        default = "default_buffer_max_bytes",
        deserialize_with = "units::byte_size"
    )]
    pub buffer_max_bytes: u64,
    /// Longest a database write may take (a locked table, a stalled
    /// server) before it is cancelled, the connection dropped and the
    /// batch, still buffered, retried. PostgreSQL only.
    #[serde(
        default = "default_write_timeout",
        deserialize_with = "units::duration"
    )]
    pub write_timeout: Duration,
    #[serde(default)]
    pub limits: Limits,
}

/// The uplink: chosen bus topics forwarded to an external MQTT broker,
/// through a disk buffer while that broker is unreachable.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UplinkSection {
    /// `mqtt://host[:port]` (1883) or `mqtts://host[:port]` (8883).
    pub url: String,
    /// Defaults to `omh-<site name>`.
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// Topic filters of the local bus to forward.
    pub topics: Vec<String>,
    /// Prepended to every forwarded topic upstream (`acme/plant1/`).
    #[serde(default)]
    pub prefix: String,
    /// 1 (at least once, the default) or 0 (at most once).
    #[serde(default = "default_uplink_qos")]
    pub qos: u8,
    #[serde(default = "default_keep_alive", deserialize_with = "units::duration")]
    pub keep_alive: Duration,
    /// PEM CA certificates for `mqtts`; the system's roots otherwise.
    /// Relative to the manifest's directory.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Disk the uplink's buffer may use while the broker is unreachable;
    /// when full, the oldest undelivered messages go.
    #[serde(
        default = "default_buffer_max_bytes",
        deserialize_with = "units::byte_size"
    )]
    pub buffer_max_bytes: u64,
}

fn default_uplink_qos() -> u8 {
    1
}
fn default_keep_alive() -> Duration {
    Duration::from_secs(30)
}
fn default_site_name() -> String {
    "site".into()
}
fn default_data_dir() -> PathBuf {
    "omh-data".into()
}
fn default_plugins_dir() -> PathBuf {
    "plugins".into()
}
fn default_batch_size() -> usize {
    500
}
fn default_buffer_max_bytes() -> u64 {
    1 << 30
}
fn default_write_timeout() -> Duration {
    Duration::from_secs(30)
}

fn one_second() -> Duration {
    Duration::from_secs(1)
}

/// A manifest that was read, parsed and validated, with the paths in it
/// resolved against the manifest's directory.
#[derive(Debug)]
pub struct LoadedManifest {
    pub path: PathBuf,
    pub manifest: Manifest,
    pub plugins_dir: PathBuf,
    pub data_dir: PathBuf,
    pub topic: TopicTemplate,
    /// Per-tag topics, when `[broker.uns]` is on.
    pub uns: Option<UnsTemplate>,
}

#[derive(Debug)]
pub struct ManifestError {
    pub file: PathBuf,
    pub problems: Vec<Problem>,
}

#[derive(Debug)]
pub struct Problem {
    /// Dotted key path (`devices.demo.groups.g.interval`), empty for the file.
    pub path: String,
    pub message: String,
    pub line: Option<usize>,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}", self.file.display())?;
            if !problem.path.is_empty() {
                write!(f, ": {}", problem.path)?;
            }
            write!(f, ": {}", problem.message)?;
            if let Some(line) = problem.line {
                write!(f, " (line {line})")?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for ManifestError {}

impl ManifestError {
    fn single(file: &Path, path: String, message: String, line: Option<usize>) -> Self {
        Self {
            file: file.to_path_buf(),
            problems: vec![Problem {
                path,
                message,
                line,
            }],
        }
    }
}

impl LoadedManifest {
    /// The unified-namespace topics of one group's tags, when
    /// `[broker.uns]` is on and the device and group exist.
    pub fn uns_topics(&self, device: &str, group: &str) -> Option<GroupTopics> {
        let section = self.manifest.devices.get(device)?;
        let site = &self.manifest.site;
        Some(self.uns.as_ref()?.group(&Place {
            enterprise: site.enterprise.as_deref(),
            site: &site.name,
            area: section.area.as_deref(),
            line: section.line.as_deref(),
            device,
            group,
        }))
    }
}

pub fn load(path: &Path) -> Result<LoadedManifest, ManifestError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ManifestError::single(path, String::new(), format!("cannot read: {e}"), None)
    })?;
    parse(path, &text)
}

/// Parses manifest `text` as if read from `path` (used for error messages
/// and to resolve relative paths).
pub fn parse(path: &Path, text: &str) -> Result<LoadedManifest, ManifestError> {
    let text = env::interpolate(text, |name| std::env::var(name).ok())
        .map_err(|message| ManifestError::single(path, String::new(), message, None))?;
    let manifest = deserialize(path, &text)?;
    let (topic, uns) = validate::validate(&manifest).map_err(|problems| ManifestError {
        file: path.to_path_buf(),
        problems,
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    Ok(LoadedManifest {
        path: path.to_path_buf(),
        plugins_dir: base.join(&manifest.plugins.dir),
        data_dir: base.join(&manifest.site.data_dir),
        manifest,
        topic,
        uns,
    })
}

fn deserialize(path: &Path, text: &str) -> Result<Manifest, ManifestError> {
    let line_of = |error: &toml::de::Error| {
        error
            .span()
            .map(|span| text[..span.start.min(text.len())].lines().count().max(1))
    };
    let deserializer = toml::Deserializer::parse(text).map_err(|e| {
        ManifestError::single(path, String::new(), e.message().to_string(), line_of(&e))
    })?;
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let key_path = e.path().to_string();
        let inner = e.inner();
        ManifestError::single(
            path,
            if key_path == "." {
                String::new()
            } else {
                key_path
            },
            inner.message().trim().to_string(),
            line_of(inner),
        )
    })
}

#[cfg(test)]
mod fuzz {
    //! Bad input never panics the manifest loader: arbitrary text, and the
    //! shipped examples with bytes replaced, removed or repeated (so the
    //! input stays close enough to TOML to reach every section's checks).

    use super::parse;
    use proptest::prelude::*;
    use std::path::Path;

    fn examples() -> Vec<String> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        ["quickstart.toml", "seed-demo.toml"]
            .iter()
            .map(|name| std::fs::read_to_string(dir.join(name)).expect("example manifest"))
            .collect()
    }

    proptest! {
        #[test]
        fn arbitrary_text_is_an_error_not_a_panic(text in "\\PC{0,400}") {
            let _ = parse(Path::new("fuzz.toml"), &text);
        }

        #[test]
        fn mangled_examples_are_an_error_or_a_manifest_not_a_panic(
            example in 0usize..2,
            edits in proptest::collection::vec((any::<prop::sample::Index>(), 0u8..3, "\\PC{0,3}"), 1..6),
        ) {
            let mut text = examples()[example].clone().into_bytes();
            for (at, kind, insert) in edits {
                let at = at.index(text.len());
                match kind {
                    0 => { text.splice(at..at, insert.bytes()); }
                    1 => { text.remove(at); }
                    _ => { let end = (at + 8).min(text.len()); let copy = text[at..end].to_vec(); text.splice(at..at, copy); }
                }
            }
            let _ = parse(Path::new("fuzz.toml"), &String::from_utf8_lossy(&text));
        }
    }
}
