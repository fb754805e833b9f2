//! The retained topics the host has published for each device and sink, so
//! that a manifest reload that removes one clears them: a client that
//! subscribes later must not be shown the last value or status of a device
//! the site no longer has. Topics are recorded when first built or on a
//! state change, never per reading.

use super::Publisher;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

#[derive(Clone, Default)]
pub struct RetainedTopics(Arc<Mutex<HashMap<String, BTreeSet<String>>>>);

impl RetainedTopics {
    /// Records `topic` as published retained for `owner` (`devices.NAME`
    /// or `sinks.NAME`).
    pub fn record(&self, owner: &str, topic: &str) {
        let mut topics = self.0.lock().expect("retained topics lock");
        let owned = topics.entry(owner.to_string()).or_default();
        if !owned.contains(topic) {
            owned.insert(topic.to_string());
        }
    }

    /// Clears every retained topic of `owner` on the bus (an empty retained
    /// message deletes one) and forgets them; returns how many.
    pub fn clear(&self, owner: &str, publisher: &Publisher) -> usize {
        let topics = self
            .0
            .lock()
            .expect("retained topics lock")
            .remove(owner)
            .unwrap_or_default();
        for topic in &topics {
            publisher.publish(topic.clone(), Vec::new(), true);
        }
        topics.len()
    }
}

/// The device or sink a plugin instance belongs to: `devices.d` for
/// `devices.d` and `devices.d.groups.g.transforms.t`, `sinks.s` for
/// `sinks.s`.
pub fn owner_of(instance: &str) -> &str {
    match instance.match_indices('.').nth(1) {
        Some((at, _)) => &instance[..at],
        None => instance,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instance_belongs_to_its_device_or_sink() {
        assert_eq!(owner_of("devices.d"), "devices.d");
        assert_eq!(owner_of("devices.d.groups.g.transforms.t"), "devices.d");
        assert_eq!(owner_of("sinks.s"), "sinks.s");
    }
}
