//! Operator-visible state, published as retained JSON on the bus so any MQTT
//! client sees it at once:
//! - `omh/status/host`: online while the host runs, offline after a clean
//!   stop (upstream, through the uplink, also as its last will);
//! - `omh/status/devices/<device>`: connected or disconnected, with the
//!   last error, on each change;
//! - `omh/status/plugins/<instance>`: state, restart count and last error
//!   of each plugin instance.

use crate::bus::Publisher;
use crate::bus::retained::{RetainedTopics, owner_of};
use crate::plugin::state::unix_millis;
use std::time::SystemTime;

pub const STATUS_TOPIC_PREFIX: &str = "omh/status/plugins/";
pub const DEVICE_STATUS_TOPIC_PREFIX: &str = "omh/status/devices/";
pub const HOST_STATUS_TOPIC: &str = "omh/status/host";

#[derive(Debug, Clone, Copy)]
pub enum PluginState {
    Running,
    /// Dropped after a trap, deadline or memory limit; restarting.
    Crashed,
    /// Rejected its configuration; stays down until the manifest changes.
    Failed,
}

#[derive(Clone)]
pub struct StatusBoard {
    publisher: Publisher,
    retained: RetainedTopics,
}

impl StatusBoard {
    pub fn new(publisher: Publisher) -> Self {
        Self {
            publisher,
            retained: RetainedTopics::default(),
        }
    }

    /// Where device and plugin statuses, and a device's unified-namespace
    /// topics, are recorded by owner.
    pub fn retained(&self) -> &RetainedTopics {
        &self.retained
    }

    /// Clears the retained topics of a device or sink (`devices.NAME`,
    /// `sinks.NAME`) that is gone: its statuses, its plugins' and its
    /// unified-namespace tags.
    pub fn forget(&self, owner: &str) {
        let cleared = self.retained.clear(owner, &self.publisher);
        tracing::info!(
            owner,
            cleared,
            "retained topics of a removed device or sink cleared"
        );
    }

    pub fn host(&self, site: &str, state: HostState) {
        self.publisher
            .publish(HOST_STATUS_TOPIC.into(), host_status(site, state), true);
    }

    /// A device became readable (`last_error` is `None`) or stopped being.
    pub fn device(&self, device: &str, last_error: Option<&str>) {
        let payload = serde_json::json!({
            "device": device,
            "state": if last_error.is_none() { "connected" } else { "disconnected" },
            "last_error": last_error,
            "timestamp": unix_millis(SystemTime::now()),
        });
        let topic = format!("{DEVICE_STATUS_TOPIC_PREFIX}{device}");
        self.retained.record(&format!("devices.{device}"), &topic);
        self.publisher
            .publish(topic, payload.to_string().into_bytes(), true);
    }

    pub fn plugin(
        &self,
        instance: &str,
        state: PluginState,
        restarts: u64,
        deadline_interrupts: u64,
        last_error: Option<&str>,
    ) {
        let payload = serde_json::json!({
            "instance": instance,
            "state": match state {
                PluginState::Running => "running",
                PluginState::Crashed => "crashed",
                PluginState::Failed => "failed",
            },
            "restarts": restarts,
            "deadline_interrupts": deadline_interrupts,
            "last_error": last_error,
            "timestamp": unix_millis(SystemTime::now()),
        });
        let topic = format!("{STATUS_TOPIC_PREFIX}{instance}");
        self.retained.record(owner_of(instance), &topic);
        self.publisher
            .publish(topic, payload.to_string().into_bytes(), true);
    }
}

/// The host's state as its status message says it.
#[derive(Debug, Clone, Copy)]
pub enum HostState {
    Online,
    /// A clean stop.
    Stopped,
    /// The last will: the broker publishes it when the connection dies.
    Lost,
}

/// `{"state":"online"|"offline","site":..,"timestamp":..}`, offline with a
/// `reason`. The last will has no timestamp: it is written at connect time
/// and published by the broker whenever the connection dies.
pub fn host_status(site: &str, state: HostState) -> Vec<u8> {
    let now = unix_millis(SystemTime::now());
    let status = match state {
        HostState::Online => {
            serde_json::json!({ "state": "online", "site": site, "timestamp": now })
        }
        HostState::Stopped => {
            serde_json::json!({ "state": "offline", "site": site, "reason": "stopped", "timestamp": now })
        }
        HostState::Lost => {
            serde_json::json!({ "state": "offline", "site": site, "reason": "connection lost" })
        }
    };
    status.to_string().into_bytes()
}
