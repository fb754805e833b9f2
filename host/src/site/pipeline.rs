//! The part of a site a manifest reload replaces: the devices (drivers,
//! group schedules, transform chains) and the sinks. Everything else (the
//! plugins, the broker and its listener, the HTTP server) is [`Site`] and
//! outlives reloads.

use super::chain::TransformChain;
use super::device::{DeviceTask, GroupSchedule};
use super::sink::{self, SinkMetrics, SinkTask};
use super::writes::{Responder, WriteQueues};
use super::{SINK_DRAIN_TIMEOUT, WRITE_QUEUE, resolve_endpoint, to_json};
use crate::bus::uns::GroupUns;
use crate::bus::{LinkPool, Publisher};
use crate::manifest::{BACKUP_ENDPOINT_SETTING, LoadedManifest, ResolvedLimits, SinkSection};
use crate::plugin::runtime::{Group, InstanceSpec, PluginRuntime, Tag};
use crate::plugin::state::Grants;
use crate::plugin::tag_tables::TagTables;
use crate::plugin::versions::PluginVersions;
use crate::status::StatusBoard;
use crate::storage::{Storage, StorageUrl};
use anyhow::Context;
use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// What a manifest reload keeps.
pub struct Site {
    pub runtime: Arc<PluginRuntime>,
    pub plugins: Arc<Mutex<PluginVersions>>,
    pub publisher: Publisher,
    pub status: StatusBoard,
    pub responder: Responder,
    pub sink_links: LinkPool,
    /// Read by the write router, which outlives the devices.
    pub write_queues: watch::Sender<WriteQueues>,
}

/// Devices built from a manifest, not yet started.
pub struct Devices {
    tasks: Vec<DeviceTask>,
    queues: WriteQueues,
}

/// Each sink's metrics, by sink name, for `/metrics`.
pub type SinkMetricsList = Vec<(String, Arc<SinkMetrics>)>;

/// Finishes a sink once its previous incarnation has stopped: opens its
/// buffer and takes a bus link from the pool.
type FinishSink = Box<dyn FnOnce(&LinkPool) -> anyhow::Result<(SinkTask, Arc<SinkMetrics>)> + Send>;

/// A sink built from a manifest up to what may run beside its previous
/// incarnation (storage and plugin instance).
pub struct SinkParts {
    name: String,
    finish: FinishSink,
}

/// The devices and sinks running now, and the manifest they came from.
pub struct Pipeline {
    pub loaded: LoadedManifest,
    devices: Vec<JoinHandle<()>>,
    sinks: BTreeMap<String, RunningSink>,
}

struct RunningSink {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Site {
    pub fn build_devices(&self, loaded: &LoadedManifest) -> anyhow::Result<Devices> {
        let manifest = &loaded.manifest;
        let defaults = &manifest.plugins.limits;
        let plugins = self.plugins.lock().expect("plugin versions lock");
        let mut queues = WriteQueues::new();
        let mut tasks = Vec::new();
        for (name, section) in &manifest.devices {
            let endpoint = resolve_endpoint(&section.endpoint)
                .with_context(|| format!("devices.{name}.endpoint"))?;
            let backup_endpoint = section
                .backup_endpoint
                .as_deref()
                .map(resolve_endpoint)
                .transpose()
                .with_context(|| format!("devices.{name}.backup_endpoint"))?;
            let mut settings = section.settings.clone();
            if let Some(backup) = backup_endpoint {
                settings.insert(BACKUP_ENDPOINT_SETTING.into(), backup.to_string().into());
            }
            let spec = InstanceSpec {
                name: format!("devices.{name}").into(),
                limits: section.limits.resolve(defaults),
                grants: Grants {
                    connect: std::iter::once(endpoint).chain(backup_endpoint).collect(),
                    ..Grants::default()
                },
                settings: to_json(&settings),
            };
            let groups: Vec<Group> = section
                .groups
                .iter()
                .map(|(group, g)| Group {
                    name: group.clone(),
                    tags: g
                        .tags
                        .iter()
                        .map(|t| Tag {
                            name: t.name.clone(),
                            address: t.address.clone(),
                            data_type: t.data_type.clone(),
                            writable: t.writable,
                        })
                        .collect(),
                })
                .collect();
            let driver = self.runtime.driver(
                plugins.follow(&section.driver),
                spec,
                endpoint.to_string(),
                groups,
                self.status.clone(),
            )?;
            let mut schedules = Vec::new();
            for (group_name, group) in &section.groups {
                let chain = if group.transforms.is_empty() {
                    None
                } else {
                    let tags = group.tags.iter().map(|t| t.name.clone()).collect();
                    let tables = Arc::new(TagTables::new(tags, group.transforms.len()));
                    let mut steps = Vec::new();
                    for (step, transform_name) in group.transforms.iter().enumerate() {
                        let t = &manifest.transforms[transform_name];
                        let spec = InstanceSpec {
                            name: format!(
                                "devices.{name}.groups.{group_name}.transforms.{transform_name}"
                            )
                            .into(),
                            limits: t.limits.resolve(defaults),
                            grants: Grants::default(),
                            settings: to_json(&t.settings),
                        };
                        let instance = self.runtime.transform(
                            plugins.follow(&t.plugin),
                            spec,
                            tables.clone(),
                            step,
                            self.status.clone(),
                        )?;
                        steps.push((transform_name.clone(), instance));
                    }
                    Some(TransformChain::new(steps, tables))
                };
                let retain = manifest.broker.uns.as_ref().is_none_or(|uns| uns.retain);
                let uns = loaded.uns_topics(name, group_name).map(|topics| {
                    GroupUns::new(topics, retain, self.status.retained().clone(), name)
                });
                schedules.push(GroupSchedule::new(
                    name,
                    group_name,
                    group.interval,
                    group
                        .tags
                        .iter()
                        .map(|t| (t.name.clone(), t.writable))
                        .collect(),
                    &loaded.topic,
                    uns,
                    chain,
                ));
            }
            let (write_queue, writes) = mpsc::channel(WRITE_QUEUE);
            queues.insert(name.clone(), write_queue);
            tasks.push(DeviceTask {
                name: name.as_str().into(),
                driver,
                groups: schedules,
                publisher: self.publisher.clone(),
                status: self.status.clone(),
                writes,
                responder: self.responder.clone(),
            });
        }
        Ok(Devices { tasks, queues })
    }

    /// Opens sink `name`'s storage and builds its plugin instance.
    pub fn build_sink(&self, loaded: &LoadedManifest, name: &str) -> anyhow::Result<SinkParts> {
        let manifest = &loaded.manifest;
        let section = &manifest.sinks[name];
        let url = StorageUrl::parse(&section.url)
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("sinks.{name}.url"))?;
        let storage = Storage::open(&url, &loaded.data_dir, section.write_timeout)
            .with_context(|| format!("sinks.{name}.url"))?;
        let spec = InstanceSpec {
            name: format!("sinks.{name}").into(),
            limits: section.limits.resolve(&manifest.plugins.limits),
            grants: Grants {
                storage: Some(storage.clone()),
                ..Grants::default()
            },
            settings: to_json(&section.settings),
        };
        let plugin = self.runtime.sink(
            self.plugins
                .lock()
                .expect("plugin versions lock")
                .follow(&section.plugin),
            spec.clone(),
            self.status.clone(),
        )?;
        let (data_dir, sink_name) = (loaded.data_dir.clone(), name.to_string());
        let progress_key = format!("{}/{name}", manifest.site.name);
        let (topics, buffer_max_bytes) = (section.topics.clone(), section.buffer_max_bytes);
        let (batch_size, flush_interval) = (section.batch_size, section.flush_interval);
        let task = move |links: &LinkPool| {
            // The same directory for the same sink name: what a previous
            // incarnation left undelivered is delivered by this one.
            let buffer = sink::open_buffer(&data_dir, &sink_name, buffer_max_bytes)
                .with_context(|| format!("sinks.{sink_name}: buffer"))?;
            let metrics = Arc::new(SinkMetrics {
                messages: AtomicU64::default(),
                rows: AtomicU64::default(),
                failed_attempts: AtomicU64::default(),
                buffer: buffer.1.handle(),
            });
            let task = SinkTask {
                name: spec.name,
                metrics: metrics.clone(),
                progress_key,
                plugin,
                storage,
                subscription: links
                    .subscription(&topics)
                    .with_context(|| format!("sinks.{sink_name}.topics"))?,
                buffer,
                batch_size,
                flush_interval,
            };
            Ok((task, metrics))
        };
        Ok(SinkParts {
            name: name.to_string(),
            finish: Box::new(task),
        })
    }
}

/// Whether sink `name` runs the same in both manifests, so a reload can
/// leave it running.
pub fn sink_unchanged(old: &LoadedManifest, new: &LoadedManifest, name: &str) -> bool {
    let limits = |loaded: &LoadedManifest, section: &SinkSection| -> ResolvedLimits {
        section.limits.resolve(&loaded.manifest.plugins.limits)
    };
    match (old.manifest.sinks.get(name), new.manifest.sinks.get(name)) {
        (Some(a), Some(b)) => a == b && limits(old, a) == limits(new, b),
        _ => false,
    }
}

impl Pipeline {
    /// Starts sinks first, so the devices' first messages have consumers.
    /// Returns each sink's metrics.
    pub fn start(
        site: &Site,
        loaded: LoadedManifest,
        sinks: Vec<SinkParts>,
        devices: Devices,
    ) -> anyhow::Result<(Self, SinkMetricsList)> {
        let mut pipeline = Self {
            loaded,
            devices: Vec::new(),
            sinks: BTreeMap::new(),
        };
        let metrics = pipeline.start_sinks(site, sinks)?;
        pipeline.start_devices(site, devices);
        Ok((pipeline, metrics))
    }

    fn start_sinks(
        &mut self,
        site: &Site,
        sinks: Vec<SinkParts>,
    ) -> anyhow::Result<SinkMetricsList> {
        let mut all_metrics = Vec::new();
        for parts in sinks {
            let (task, metrics) = (parts.finish)(&site.sink_links)?;
            let (stop, stopping) = watch::channel(false);
            let task = tokio::spawn(task.run(stopping));
            self.sinks
                .insert(parts.name.clone(), RunningSink { stop, task });
            all_metrics.push((parts.name, metrics));
        }
        Ok(all_metrics)
    }

    fn start_devices(&mut self, site: &Site, devices: Devices) {
        site.write_queues.send_replace(devices.queues);
        self.devices = devices
            .tasks
            .into_iter()
            .map(|task| tokio::spawn(task.run()))
            .collect();
    }

    /// Replaces the devices, and the sinks that differ, with those of
    /// `loaded`, built beforehand. Devices stop first and sinks drain what
    /// is on the bus into their buffers, as at a clean stop, so no reading
    /// is lost; sinks whose section is unchanged keep running throughout.
    pub async fn replace(
        &mut self,
        site: &Site,
        loaded: LoadedManifest,
        changed_sinks: Vec<SinkParts>,
        devices: Devices,
    ) {
        self.stop_devices().await;
        let leaving = self
            .sinks
            .extract_if(.., |name, _| !sink_unchanged(&self.loaded, &loaded, name))
            .map(|(_, sink)| sink)
            .collect();
        drain(leaving).await;
        self.loaded = loaded;
        // A sink that cannot start now would lose what the devices publish
        // for it; that is worth a clear error, not a half-applied silence.
        for parts in changed_sinks {
            let name = parts.name.clone();
            if let Err(error) = self.start_sinks(site, vec![parts]) {
                tracing::error!(
                    "manifest reload: sinks.{name} cannot start: {error:#}; restart omh-host"
                );
            }
        }
        self.start_devices(site, devices);
    }

    /// Stops the device tasks and waits until they have, so none publishes
    /// after this returns.
    async fn stop_devices(&mut self) {
        let tasks: Vec<_> = self.devices.drain(..).collect();
        for task in &tasks {
            task.abort();
        }
        for task in tasks {
            let _ = task.await;
        }
    }

    /// The clean stop: devices first, then sinks write what is on the bus.
    pub async fn stop(mut self) {
        self.stop_devices().await;
        drain(std::mem::take(&mut self.sinks).into_values().collect()).await;
    }
}

/// Tells `sinks` to stop and waits for them to move what the bus holds
/// into their buffers and write what they can.
async fn drain(sinks: Vec<RunningSink>) {
    for sink in &sinks {
        sink.stop.send_replace(true);
    }
    let tasks: Vec<_> = sinks.into_iter().map(|sink| sink.task).collect();
    let aborts: Vec<_> = tasks.iter().map(|t| t.abort_handle()).collect();
    let drained = tokio::time::timeout(SINK_DRAIN_TIMEOUT, futures::future::join_all(tasks)).await;
    if drained.is_err() {
        for abort in aborts {
            abort.abort();
        }
        eprintln!(
            "omh-host: sinks did not finish within {}s (database down?); \
             what they hold stays in their buffers and is written at the next start",
            SINK_DRAIN_TIMEOUT.as_secs()
        );
    }
}
