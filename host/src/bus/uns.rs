//! The unified namespace on the bus: each tag of a group message on its own
//! topic (`[broker.uns]`), as `{"value":..,"quality":..,"timestamp":..}`,
//! retained so a client that subscribes later sees the last value at once.
//! A tag the device could not read is published with `"value":null`,
//! `"quality":"bad"` and its `"error"` code.

use super::Publisher;
use super::retained::RetainedTopics;
use crate::manifest::GroupTopics;
use crate::plugin::bindings::types::{Message, Quality, Reading, Value};
use serde_json::json;
use std::collections::HashMap;

/// One group's tag topics; topics are built once per tag name, not per poll.
pub struct GroupUns {
    topics: GroupTopics,
    retain: bool,
    /// Where retained topics are recorded, under `owner` (`devices.NAME`).
    retained: RetainedTopics,
    owner: String,
    /// `None` for a tag name (made by a transform) that cannot be a topic
    /// level; it is skipped and logged once.
    built: HashMap<String, Option<String>>,
}

impl GroupUns {
    pub fn new(topics: GroupTopics, retain: bool, retained: RetainedTopics, device: &str) -> Self {
        Self {
            topics,
            retain,
            retained,
            owner: format!("devices.{device}"),
            built: HashMap::new(),
        }
    }

    pub fn publish(&mut self, publisher: &Publisher, message: &Message) {
        for reading in &message.readings {
            if let Some(topic) = self.topic(&reading.tag) {
                publisher.publish(topic, encode_reading(reading), self.retain);
            }
        }
        for error in &message.errors {
            if let Some(topic) = self.topic(&error.tag) {
                let payload = json!({
                    "value": null,
                    "quality": "bad",
                    "timestamp": message.timestamp_ms,
                    "error": error.code,
                });
                publisher.publish(topic, payload.to_string().into_bytes(), self.retain);
            }
        }
    }

    fn topic(&mut self, tag: &str) -> Option<String> {
        if let Some(topic) = self.built.get(tag) {
            return topic.clone();
        }
        let topic = if tag.is_empty() || tag.contains(['+', '#', '/']) {
            tracing::warn!(
                tag,
                "tag name cannot be a unified-namespace topic level; not published there"
            );
            None
        } else {
            let topic = self.topics.topic(tag);
            if self.retain {
                self.retained.record(&self.owner, &topic);
            }
            Some(topic)
        };
        self.built.insert(tag.to_string(), topic.clone());
        topic
    }
}

fn encode_reading(reading: &Reading) -> Vec<u8> {
    let value = match &reading.value {
        Value::Boolean(b) => json!(b),
        Value::Int(i) => json!(i),
        // NaN and infinities have no JSON form: null, like a missing value.
        Value::Float(f) => json!(f),
        Value::Text(t) => json!(t),
    };
    let quality = match reading.quality {
        Quality::Good => "good",
        Quality::Bad => "bad",
        Quality::Uncertain => "uncertain",
    };
    json!({ "value": value, "quality": quality, "timestamp": reading.timestamp_ms })
        .to_string()
        .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reading_payload() {
        let reading = Reading {
            tag: "t".into(),
            value: Value::Float(21.5),
            quality: Quality::Uncertain,
            timestamp_ms: 7,
        };
        assert_eq!(
            String::from_utf8(encode_reading(&reading)).unwrap(),
            r#"{"quality":"uncertain","timestamp":7,"value":21.5}"#
        );
    }
}
