//! A running site: the manifest turned into simulators, a broker, supervised
//! plugin instances and the tasks that move data between them.

mod device;
mod sink;
mod writes;

pub use sink::{MIN_BUFFER_BYTES, SinkMetrics};

use crate::bus::{BusBuilder, Subscription};
use crate::http::{Counters, WritePath};
use crate::manifest::{BACKUP_ENDPOINT_SETTING, LoadedManifest, Manifest};
use crate::plugin::catalog::{Catalog, PluginFile, World};
use crate::plugin::engine::{CodeSource, sha256_hex};
use crate::plugin::runtime::{Group, InstanceSpec, PluginRuntime, Tag};
use crate::plugin::state::Grants;
use crate::plugin::versions::{PluginVersions, Version};
use crate::status::{STATUS_TOPIC_PREFIX, StatusBoard};
use crate::storage::{Storage, StorageUrl};
use anyhow::{Context, bail};
use device::{DeviceTask, GroupSchedule};
use sink::SinkTask;
use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use writes::Responder;

/// Write requests waiting for one device; beyond it requests are refused as busy.
const WRITE_QUEUE: usize = 64;
/// How long a stopping site waits for its sinks to write what they hold.
const SINK_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Every plugin the manifest uses, resolved against the catalog. Problems
/// are collected so `check` reports them all at once.
pub fn resolve_plugins<'c>(
    manifest: &Manifest,
    catalog: &'c Catalog,
) -> Result<HashMap<String, &'c PluginFile>, Vec<String>> {
    let uses = manifest
        .devices
        .iter()
        .map(|(n, d)| (format!("devices.{n}.driver"), &d.driver, World::Driver))
        .chain(manifest.transforms.iter().map(|(n, t)| {
            (
                format!("transforms.{n}.plugin"),
                &t.plugin,
                World::Transform,
            )
        }))
        .chain(
            manifest
                .sinks
                .iter()
                .map(|(n, s)| (format!("sinks.{n}.plugin"), &s.plugin, World::Sink)),
        );
    let mut found = HashMap::new();
    let mut problems = Vec::new();
    for (key, name, world) in uses {
        match catalog.find(name, world) {
            Ok(plugin) => {
                found.insert(name.clone(), plugin);
            }
            Err(message) => problems.push(format!("{key}: {message}")),
        }
    }
    if problems.is_empty() {
        Ok(found)
    } else {
        Err(problems)
    }
}

pub async fn run(loaded: LoadedManifest) -> anyhow::Result<()> {
    let started = Instant::now();
    let manifest = &loaded.manifest;
    let catalog = Catalog::scan(&loaded.plugins_dir)?;
    for (path, reason) in &catalog.rejected {
        tracing::warn!(file = %path.display(), "plugin rejected: {reason}");
    }
    let plugins = resolve_plugins(manifest, &catalog).map_err(|problems| {
        anyhow::anyhow!("{}: {}", loaded.path.display(), problems.join("\n"))
    })?;

    let runtime = Arc::new(PluginRuntime::new(
        loaded.data_dir.join("cache").join("compiled"),
    )?);
    let mut versions = PluginVersions::default();
    for (name, plugin) in &plugins {
        versions.insert(name, plugin.world, load_plugin(&runtime, plugin)?);
    }

    for (name, simulator) in &manifest.simulators {
        crate::simulator::start(name, simulator).await?;
    }

    let bus = BusBuilder::new(&manifest.broker);
    let publisher = bus.publisher()?;
    let status = StatusBoard::new(publisher.clone());
    let defaults = &manifest.plugins.limits;

    let mut sinks = Vec::new();
    let mut sink_metrics = Vec::new();
    for (name, section) in &manifest.sinks {
        let url = StorageUrl::parse(&section.url).map_err(anyhow::Error::msg)?;
        let storage =
            Storage::open(&url, &loaded.data_dir).with_context(|| format!("sinks.{name}.url"))?;
        let spec = InstanceSpec {
            name: format!("sinks.{name}").into(),
            limits: section.limits.resolve(defaults),
            grants: Grants {
                storage: Some(storage.clone()),
                ..Grants::default()
            },
            settings: to_json(&section.settings),
        };
        let plugin = runtime.sink(
            versions.follow(&section.plugin),
            spec.clone(),
            status.clone(),
        )?;
        let buffer = sink::open_buffer(&loaded.data_dir, name, section.buffer_max_bytes)
            .with_context(|| format!("sinks.{name}: buffer"))?;
        let metrics = Arc::new(SinkMetrics {
            messages: AtomicU64::default(),
            rows: AtomicU64::default(),
            failed_attempts: AtomicU64::default(),
            buffer: buffer.1.stats_handle(),
        });
        sink_metrics.push((name.clone(), metrics.clone()));
        sinks.push(SinkTask {
            name: spec.name,
            metrics,
            progress_key: format!("{}/{name}", manifest.site.name),
            plugin,
            storage,
            subscription: bus.subscription(&format!("omh-sink-{name}"), &section.topics)?,
            buffer,
            batch_size: section.batch_size,
            flush_interval: section.flush_interval,
        });
    }

    let responder = Responder::new(
        publisher.clone(),
        manifest.broker.write_response_topic.clone(),
    );
    let mut write_queues = HashMap::new();
    let mut devices = Vec::new();
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
        let driver = runtime.driver(
            versions.follow(&section.driver),
            spec.clone(),
            endpoint.to_string(),
            groups,
            status.clone(),
        )?;
        let mut schedules = Vec::new();
        for (group_name, group) in &section.groups {
            let mut chain = Vec::new();
            for transform_name in &group.transforms {
                let t = &manifest.transforms[transform_name];
                let spec = InstanceSpec {
                    name: format!("devices.{name}.groups.{group_name}.transforms.{transform_name}")
                        .into(),
                    limits: t.limits.resolve(defaults),
                    grants: Grants::default(),
                    settings: to_json(&t.settings),
                };
                let instance =
                    runtime.transform(versions.follow(&t.plugin), spec, status.clone())?;
                chain.push((transform_name.clone(), instance));
            }
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
                chain,
            ));
        }
        let (write_queue, writes) = mpsc::channel(WRITE_QUEUE);
        write_queues.insert(name.clone(), write_queue);
        devices.push(DeviceTask {
            name: name.as_str().into(),
            driver,
            groups: schedules,
            publisher: publisher.clone(),
            writes,
            responder: responder.clone(),
        });
    }
    let write_requests = bus.subscription(
        "omh-writes",
        std::slice::from_ref(&manifest.broker.write_topic),
    )?;

    let live_view = match &manifest.http {
        Some(section) => Some((section.listen, live_feed(&bus, &loaded)?)),
        None => None,
    };
    let bus_skips = bus.report_skips()?;
    bus.start()?;
    if let Some((listen, feed)) = live_view {
        let live = crate::http::Live::new(manifest.broker.write_response_topic.clone());
        tokio::spawn(live.clone().follow(feed));
        let counters = Counters {
            sinks: sink_metrics,
            bus_publish_dropped: publisher.dropped(),
            bus_subscriber_skips: bus_skips,
        };
        let writes = WritePath {
            publisher: publisher.clone(),
            topic: manifest.broker.write_topic.clone(),
        };
        crate::http::serve(listen, &manifest.site.name, live, counters, writes).await?;
    }
    crate::plugin::reload::watch_plugins(
        &loaded.plugins_dir,
        runtime,
        Arc::new(Mutex::new(versions)),
    )?;
    print_where_to_look(&loaded, started);
    let (stop_sinks, stopping) = watch::channel(false);
    let sink_tasks: Vec<_> = sinks
        .into_iter()
        .map(|task| tokio::spawn(task.run(stopping.clone())))
        .collect();
    let device_tasks: Vec<_> = devices
        .into_iter()
        .map(|task| tokio::spawn(task.run()))
        .collect();
    tokio::spawn(writes::route(write_requests, write_queues, responder));

    shutdown_signal().await;
    eprintln!("omh-host: stopping: devices first, then sinks write what is on the bus");
    for task in &device_tasks {
        task.abort();
    }
    stop_sinks.send_replace(true);
    let drained =
        tokio::time::timeout(SINK_DRAIN_TIMEOUT, futures::future::join_all(sink_tasks)).await;
    if drained.is_err() {
        eprintln!(
            "omh-host: sinks did not finish within {}s (database down?); \
             what they hold stays in their buffers and is written at the next start",
            SINK_DRAIN_TIMEOUT.as_secs()
        );
    }
    Ok(())
}

/// Reads and compiles (or takes from the cache) one plugin file, with
/// progress output: compiling can take seconds.
fn load_plugin(runtime: &PluginRuntime, plugin: &PluginFile) -> anyhow::Result<Version> {
    let started = Instant::now();
    eprintln!(
        "  loading plugin {} ({}, {} KiB)...",
        plugin.name,
        plugin.world,
        plugin.size >> 10
    );
    let bytes = std::fs::read(&plugin.path)
        .with_context(|| format!("cannot read {}", plugin.path.display()))?;
    let (component, source) = runtime
        .load(&bytes)
        .with_context(|| format!("cannot compile {}", plugin.path.display()))?;
    let how = match source {
        CodeSource::Cache => "from compiled-code cache",
        CodeSource::Compiled => "compiled",
    };
    eprintln!(
        "  plugin {}: {how} in {} ms",
        plugin.name,
        started.elapsed().as_millis()
    );
    Ok(Version {
        component,
        sha256: sha256_hex(&bytes).into(),
        swaps: None,
    })
}

/// The live view's link: every group topic and the plugin status topics.
/// The live view's link: every group topic, the plugin status topics and
/// the write answers (for writes made over HTTP).
fn live_feed(bus: &BusBuilder, loaded: &LoadedManifest) -> anyhow::Result<Subscription> {
    let mut filters = vec![
        format!("{STATUS_TOPIC_PREFIX}#"),
        loaded.manifest.broker.write_response_topic.clone(),
    ];
    for (device, section) in &loaded.manifest.devices {
        for group in section.groups.keys() {
            filters.push(loaded.topic.render(device, group));
        }
    }
    bus.subscription("omh-http", &filters)
}

fn to_json(table: &toml::Table) -> String {
    serde_json::to_string(table).expect("a TOML table is valid JSON")
}

/// Drivers get an IP literal: they have no DNS, and the sandbox admits
/// exactly this address.
fn resolve_endpoint(endpoint: &str) -> anyhow::Result<SocketAddr> {
    let mut addrs = endpoint
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve \"{endpoint}\""))?;
    match addrs.next() {
        Some(addr) => Ok(addr),
        None => bail!("\"{endpoint}\" resolves to no address"),
    }
}

fn print_where_to_look(loaded: &LoadedManifest, started: Instant) {
    let manifest = &loaded.manifest;
    eprintln!(
        "\nomh-host: site \"{}\" running ({} ms to start). Ctrl-C stops it.",
        manifest.site.name,
        started.elapsed().as_millis()
    );
    eprintln!("  MQTT broker      mqtt://{}", manifest.broker.listen);
    if let Some(http) = &manifest.http {
        eprintln!("  live view        http://{}/", http.listen);
        eprintln!("  metrics          http://{}/metrics", http.listen);
    }
    for (device, section) in &manifest.devices {
        for group in section.groups.keys() {
            eprintln!("  group topic      {}", loaded.topic.render(device, group));
        }
    }
    eprintln!("  plugin status    {STATUS_TOPIC_PREFIX}#");
    eprintln!(
        "  tag writes       {} (answers on {})",
        manifest.broker.write_topic, manifest.broker.write_response_topic
    );
    for (name, sink) in &manifest.sinks {
        let target = match StorageUrl::parse(&sink.url) {
            Ok(StorageUrl::Sqlite(path)) => loaded.data_dir.join(path).display().to_string(),
            _ => crate::storage::redact(&sink.url),
        };
        eprintln!("  sink {name:<11} {target}");
    }
    eprintln!();
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
