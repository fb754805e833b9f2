//! Operator-visible state, published as retained JSON on the bus so any MQTT
//! client sees it at once: `omh/status/plugins/<instance>` with the state,
//! restart count and last error of each plugin instance.

use crate::bus::Publisher;
use crate::plugin::state::unix_millis;
use std::time::SystemTime;

pub const STATUS_TOPIC_PREFIX: &str = "omh/status/plugins/";

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
}

impl StatusBoard {
    pub fn new(publisher: Publisher) -> Self {
        Self { publisher }
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
        self.publisher.publish(
            format!("{STATUS_TOPIC_PREFIX}{instance}"),
            payload.to_string().into_bytes(),
            true,
        );
    }
}
