//! The group message on the bus, in exactly the shape Neuron publishes, so
//! anything built for Neuron + EMQX (rules, dashboards, scripts) reads it:
//! `{"node":..,"group":..,"timestamp":..,"values":{tag: value},"errors":{tag: code}}`.

use crate::plugin::bindings::types::{Message, Quality, Reading, TagError, Value};
use serde::ser::{SerializeMap, Serializer};
use serde_json::Value as Json;

/// Code Neuron-style consumers see for a reading a transform marked bad.
const BAD_QUALITY_CODE: i32 = -1;

pub fn encode(message: &Message) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + 32 * message.readings.len());
    let mut json = serde_json::Serializer::new(&mut out);
    let write = |json: &mut serde_json::Serializer<&mut Vec<u8>>| -> serde_json::Result<()> {
        let mut map = json.serialize_map(Some(5))?;
        map.serialize_entry("node", &message.node)?;
        map.serialize_entry("group", &message.group)?;
        map.serialize_entry("timestamp", &message.timestamp_ms)?;
        map.serialize_entry("values", &Values(&message.readings))?;
        map.serialize_entry("errors", &Errors(message))?;
        map.end()
    };
    write(&mut json).expect("serializing to a Vec cannot fail");
    out
}

struct Values<'a>(&'a [Reading]);

impl serde::Serialize for Values<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        for reading in self.0.iter().filter(|r| r.quality != Quality::Bad) {
            match &reading.value {
                Value::Boolean(b) => map.serialize_entry(&reading.tag, b)?,
                Value::Int(i) => map.serialize_entry(&reading.tag, i)?,
                Value::Float(f) => map.serialize_entry(&reading.tag, f)?,
                Value::Text(t) => map.serialize_entry(&reading.tag, t)?,
            }
        }
        map.end()
    }
}

struct Errors<'a>(&'a Message);

impl serde::Serialize for Errors<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        for error in &self.0.errors {
            map.serialize_entry(&error.tag, &error.code)?;
        }
        for reading in self.0.readings.iter().filter(|r| r.quality == Quality::Bad) {
            map.serialize_entry(&reading.tag, &BAD_QUALITY_CODE)?;
        }
        map.end()
    }
}

/// Reads a group message from the bus. Outside clients may publish on the
/// same topics, so anything malformed is an error for the caller to count.
pub fn decode(payload: &[u8]) -> Result<Message, String> {
    let json: Json = serde_json::from_slice(payload).map_err(|e| format!("not JSON: {e}"))?;
    let object = json.as_object().ok_or("not a JSON object")?;
    let text = |key: &str| -> Result<String, String> {
        object
            .get(key)
            .and_then(Json::as_str)
            .map(str::to_string)
            .ok_or_else(|| format!("no string \"{key}\""))
    };
    let timestamp_ms = object
        .get("timestamp")
        .and_then(Json::as_i64)
        .ok_or("no integer \"timestamp\"")?;
    let mut readings = Vec::new();
    if let Some(values) = object.get("values").and_then(Json::as_object) {
        for (tag, value) in values {
            let value = match value {
                Json::Bool(b) => Value::Boolean(*b),
                Json::Number(n) => match n.as_i64() {
                    Some(i) => Value::Int(i),
                    None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
                },
                Json::String(s) => Value::Text(s.clone()),
                other => Value::Text(other.to_string()),
            };
            readings.push(Reading {
                tag: tag.clone(),
                value,
                quality: Quality::Good,
                timestamp_ms,
            });
        }
    }
    let mut errors = Vec::new();
    if let Some(object) = object.get("errors").and_then(Json::as_object) {
        for (tag, code) in object {
            errors.push(TagError {
                tag: tag.clone(),
                code: code.as_i64().unwrap_or(-1) as i32,
                message: String::new(),
            });
        }
    }
    Ok(Message {
        node: text("node")?,
        group: text("group")?,
        timestamp_ms,
        readings,
        errors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(tag: &str, value: Value) -> Reading {
        Reading {
            tag: tag.into(),
            value,
            quality: Quality::Good,
            timestamp_ms: 1,
        }
    }

    #[test]
    fn encodes_neuron_shape_and_round_trips() {
        let message = Message {
            node: "demo".into(),
            group: "demo_group".into(),
            timestamp_ms: 1_690_000_000_000,
            readings: vec![
                reading("temperature", Value::Int(290)),
                reading("humidity", Value::Float(71.5)),
            ],
            errors: vec![TagError {
                tag: "pressure".into(),
                code: 2,
                message: "illegal data address".into(),
            }],
        };
        let json = String::from_utf8(encode(&message)).unwrap();
        assert_eq!(
            json,
            r#"{"node":"demo","group":"demo_group","timestamp":1690000000000,"values":{"temperature":290,"humidity":71.5},"errors":{"pressure":2}}"#
        );
        let back = decode(json.as_bytes()).unwrap();
        assert_eq!(back.node, "demo");
        assert_eq!(back.readings.len(), 2);
        assert_eq!(back.errors[0].code, 2);
    }

    #[test]
    fn rejects_foreign_payloads() {
        assert!(decode(b"hello").is_err());
        assert!(decode(br#"{"node":"x"}"#).is_err());
    }
}
