//! A running site: the manifest turned into simulators, a broker, supervised
//! plugin instances and the tasks that move data between them.

mod admission;
mod chain;
mod device;
mod pipeline;
mod reload;
mod sink;
mod writes;

pub use sink::{MIN_BUFFER_BYTES, SinkMetrics, consume, open_buffer_in};

use crate::bus::{BusBuilder, Subscription};
use crate::http::{Counters, WritePath};
use crate::manifest::{LoadedManifest, Manifest};
use crate::plugin::catalog::{Catalog, PluginFile, World};
use crate::plugin::engine::{CodeSource, sha256_hex};
use crate::plugin::runtime::PluginRuntime;
use crate::plugin::versions::{PluginVersions, Version};
use crate::status::{
    DEVICE_STATUS_TOPIC_PREFIX, HOST_STATUS_TOPIC, HostState, STATUS_TOPIC_PREFIX, StatusBoard,
};
use crate::storage::StorageUrl;
use crate::uplink::Uplink;
use anyhow::{Context, bail};
use pipeline::{Pipeline, Site};
use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use writes::{Responder, WriteQueues};

/// Write requests waiting for one device; beyond it requests are refused as busy.
const WRITE_QUEUE: usize = 64;
/// Bus links for sinks beyond those of the start-up manifest: what manifest
/// reloads may add at most (links can only be made before the broker starts).
const SPARE_SINK_LINKS: usize = 8;
/// How long a stopping site waits for its sinks to write what they hold.
const SINK_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Every use of a plugin in the manifest: (key path, plugin name, world).
fn plugin_uses(manifest: &Manifest) -> impl Iterator<Item = (String, &String, World)> {
    manifest
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
        )
}

/// Every plugin the manifest uses, resolved against the catalog. Problems
/// are collected so `check` reports them all at once.
pub fn resolve_plugins<'c>(
    manifest: &Manifest,
    catalog: &'c Catalog,
) -> Result<HashMap<String, &'c PluginFile>, Vec<String>> {
    let mut found = HashMap::new();
    let mut problems = Vec::new();
    for (key, name, world) in plugin_uses(manifest) {
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

    let bus = BusBuilder::new(&manifest.broker)?;
    let publisher = bus.publisher()?;
    let responder = Responder::new(
        publisher.clone(),
        manifest.broker.write_response_topic.clone(),
    );
    let (write_queues, routed_queues) = watch::channel(WriteQueues::new());
    let site = Site {
        runtime,
        plugins: Arc::new(Mutex::new(versions)),
        publisher: publisher.clone(),
        status: StatusBoard::new(publisher.clone()),
        responder: responder.clone(),
        sink_links: bus.link_pool(manifest.sinks.len() + SPARE_SINK_LINKS)?,
        write_queues,
    };
    let sinks = manifest
        .sinks
        .keys()
        .map(|name| site.build_sink(&loaded, name))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let devices = site.build_devices(&loaded)?;
    let write_requests = bus.subscription(
        "omh-writes",
        std::slice::from_ref(&manifest.broker.write_topic),
    )?;

    let uplink = manifest
        .uplink
        .as_ref()
        .map(|section| Uplink::build(&loaded, section, &bus))
        .transpose()?;

    let live_view = match &manifest.http {
        Some(section) => Some((section.listen, live_feed(&bus, &loaded)?)),
        None => None,
    };
    let bus_skips = bus.report_skips()?;
    let manifest_dir = loaded.path.parent().unwrap_or(std::path::Path::new("."));
    let gateway = bus
        .start(manifest_dir)
        .await
        .with_context(|| loaded.path.display().to_string())?;
    let uplink = uplink.map(Uplink::start);
    site.status.host(&manifest.site.name, HostState::Online);
    let (mut pipeline, sink_metrics) = Pipeline::start(&site, loaded, sinks, devices)?;
    tokio::spawn(writes::route(write_requests, routed_queues, responder));
    let loaded = &pipeline.loaded;
    if let Some((listen, feed)) = live_view {
        let manifest = &loaded.manifest;
        let live = crate::http::Live::new(manifest.broker.write_response_topic.clone());
        tokio::spawn(live.clone().follow(feed));
        let counters = Counters {
            sinks: sink_metrics,
            bus_publish_queued: publisher.queued(),
            bus_publish_dropped: publisher.dropped(),
            bus_subscriber_skips: bus_skips,
            gateway,
            uplink: uplink.as_ref().map(|u| u.metrics.clone()),
        };
        let writes = WritePath {
            publisher: publisher.clone(),
            topic: manifest.broker.write_topic.clone(),
        };
        crate::http::serve(listen, &manifest.site.name, live, counters, writes).await?;
    }
    crate::plugin::reload::watch_plugins(
        &loaded.plugins_dir,
        site.runtime.clone(),
        site.plugins.clone(),
    )?;
    print_where_to_look(loaded, started);

    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    #[cfg(unix)]
    let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    loop {
        #[cfg(unix)]
        let hangup = hangups.recv();
        #[cfg(not(unix))]
        let hangup = std::future::pending::<Option<()>>();
        tokio::select! {
            _ = &mut shutdown => break,
            _ = hangup => reload::reload(&site, &mut pipeline).await,
        }
    }
    eprintln!(
        "omh-host: stopping: devices first, then sinks and the uplink deliver what is on the bus"
    );
    let site_name = pipeline.loaded.manifest.site.name.clone();
    pipeline.stop().await;
    site.status.host(&site_name, HostState::Stopped);
    site.publisher.flush(Duration::from_secs(1)).await;
    if let Some(uplink) = uplink {
        uplink.stop().await;
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

/// The live view's link: every group topic, the plugin status topics and
/// the write answers (for writes made over HTTP).
fn live_feed(bus: &BusBuilder, loaded: &LoadedManifest) -> anyhow::Result<Subscription> {
    let mut filters = vec![
        format!("{STATUS_TOPIC_PREFIX}#"),
        loaded.manifest.broker.write_response_topic.clone(),
    ];
    // A wildcard filter also covers devices and groups a reload adds; it
    // works when {device} and {group} are whole topic levels.
    let wildcard = loaded.topic.render("+", "+");
    if wildcard
        .split('/')
        .all(|level| level == "+" || !level.contains('+'))
    {
        filters.push(wildcard);
    } else {
        for (device, section) in &loaded.manifest.devices {
            for group in section.groups.keys() {
                filters.push(loaded.topic.render(device, group));
            }
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
    // One example of the tag topics: the first tag of the first group.
    let first_tag = manifest.devices.iter().find_map(|(device, section)| {
        let (group, g) = section.groups.iter().next()?;
        Some(
            loaded
                .uns_topics(device, group)?
                .topic(&g.tags.first()?.name),
        )
    });
    if let Some(topic) = first_tag {
        eprintln!("  tag topics       {topic}, ...");
    }
    eprintln!("  host status      {HOST_STATUS_TOPIC}");
    eprintln!("  device status    {DEVICE_STATUS_TOPIC_PREFIX}#");
    eprintln!("  plugin status    {STATUS_TOPIC_PREFIX}#");
    if let Some(uplink) = &manifest.uplink {
        eprintln!(
            "  uplink           {} ({})",
            uplink.url,
            uplink.topics.join(", ")
        );
    }
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
