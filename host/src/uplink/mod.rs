//! The uplink: chosen topics of the site's bus forwarded to an external
//! MQTT broker (EMQX, HiveMQ, Mosquitto...) with QoS 1.
//!
//! Like a sink, it is two tasks joined by a disk buffer
//! (`site.data_dir/uplink/`): the consumer appends every matching bus
//! message (topic and payload, see [`frame`]) the moment it arrives, so an
//! unreachable broker never holds up the bus and loses nothing; the
//! forwarder ([`connection`]) publishes from the buffer in order and acks
//! the buffer only as far as the broker has acknowledged. Upstream, the
//! host's liveness is retained on `<prefix>omh/status/host`: online on
//! connect, offline at a clean stop, and offline as the connection's last
//! will when the host dies or its link does.

mod config;
mod connection;
mod frame;
mod window;

pub use config::UplinkUrl;

use crate::buffer::{BufferHandle, BufferReader, BufferWriter};
use crate::bus::{BusBuilder, Subscription};
use crate::manifest::{LoadedManifest, UplinkSection};
use anyhow::Context;
use config::Upstream;
use connection::{Forwarder, INFLIGHT};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How long a stopping site waits for the uplink to deliver what it holds
/// and say goodbye upstream.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// The uplink's numbers, read by the metrics endpoint.
pub struct UplinkMetrics {
    pub connected: AtomicBool,
    /// Messages the upstream broker acknowledged (QoS 0: sent).
    pub messages: AtomicU64,
    /// Connections made after the first.
    pub reconnects: AtomicU64,
    pub buffer: BufferHandle,
}

/// An uplink built before the bus starts (its subscription must be made
/// then), not yet running.
pub struct Uplink {
    upstream: Upstream,
    subscription: Subscription,
    buffer: (BufferWriter, BufferReader),
    metrics: Arc<UplinkMetrics>,
}

/// A running uplink.
pub struct RunningUplink {
    pub metrics: Arc<UplinkMetrics>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Uplink {
    pub fn build(
        loaded: &LoadedManifest,
        section: &UplinkSection,
        bus: &BusBuilder,
    ) -> anyhow::Result<Self> {
        let manifest = &loaded.manifest;
        let base = loaded.path.parent().unwrap_or(Path::new("."));
        let upstream = Upstream::new(
            section,
            &manifest.site.name,
            base,
            manifest.broker.max_payload_size,
            INFLIGHT,
        )
        .context("uplink")?;
        let buffer =
            crate::site::open_buffer_in(&loaded.data_dir.join("uplink"), section.buffer_max_bytes)
                .context("uplink: buffer")?;
        let subscription = bus
            .subscription("omh-uplink", &section.topics)
            .context("uplink.topics")?;
        let metrics = Arc::new(UplinkMetrics {
            connected: AtomicBool::new(false),
            messages: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            buffer: buffer.1.handle(),
        });
        Ok(Self {
            upstream,
            subscription,
            buffer,
            metrics,
        })
    }

    /// Starts consuming the bus and forwarding.
    pub fn start(self) -> RunningUplink {
        let (stop, stopping) = watch::channel(false);
        let (writer, reader) = self.buffer;
        let consumer = tokio::spawn(crate::site::consume(
            "uplink".into(),
            self.subscription,
            writer,
            stopping.clone(),
            frame::encode,
        ));
        let forwarder = Forwarder::new(
            self.upstream,
            reader,
            self.metrics.clone(),
            consumer,
            stopping,
        );
        RunningUplink {
            metrics: self.metrics,
            stop,
            task: tokio::spawn(forwarder.run()),
        }
    }
}

impl RunningUplink {
    /// Delivers what the bus and the buffer hold (for a few seconds),
    /// publishes the offline status and disconnects.
    pub async fn stop(self) {
        self.stop.send_replace(true);
        if tokio::time::timeout(STOP_TIMEOUT, self.task).await.is_err() {
            eprintln!(
                "omh-host: the uplink did not stop within {}s; what it holds is sent at the next start",
                STOP_TIMEOUT.as_secs()
            );
        }
    }
}
