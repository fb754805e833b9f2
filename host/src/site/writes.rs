//! Tag writes from the bus, in Neuron's shape: a request
//! `{"uuid":..,"node":..,"group":..,"tag":..,"value":..}` on the write topic
//! is routed to its device's task, checked against the manifest (the tag
//! exists and is writable, the value is a scalar) before the driver sees it,
//! and answered `{"uuid":..,"error":0}` or with a non-zero code and a
//! message on the response topic.

use crate::bus::{Publisher, Subscription};
use crate::plugin::bindings::types::Value;
use serde_json::{Value as Json, json};
use std::collections::HashMap;
use tokio::sync::{mpsc, watch};

/// Result codes in a write response (`error`); 0 is success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteError {
    /// Not JSON, or a field is missing.
    BadRequest = 1,
    /// No such node, group or tag in the manifest.
    UnknownTag = 2,
    /// The tag is not `writable = true` in the manifest.
    ReadOnly = 3,
    /// The value does not fit the tag (checked by host, then driver).
    BadValue = 4,
    /// The device refused the write, or could not be reached.
    DeviceError = 5,
    /// The device's write queue is full; try again.
    Busy = 6,
}

/// A write request bound for one device.
pub struct WriteRequest {
    pub uuid: Json,
    pub group: String,
    pub tag: String,
    pub value: Json,
}

/// Answers write requests on the response topic.
#[derive(Clone)]
pub struct Responder {
    publisher: Publisher,
    topic: String,
}

impl Responder {
    pub fn new(publisher: Publisher, topic: String) -> Self {
        Self { publisher, topic }
    }

    pub fn done(&self, uuid: &Json) {
        self.send(json!({ "uuid": uuid, "error": 0 }));
    }

    pub fn failed(&self, uuid: &Json, error: WriteError, message: &str) {
        self.send(json!({ "uuid": uuid, "error": error as i32, "message": message }));
    }

    fn send(&self, response: Json) {
        self.publisher
            .publish(self.topic.clone(), response.to_string().into_bytes(), false);
    }
}

/// The value of a request as a plugin value; only scalars can be written.
pub fn to_plugin_value(value: &Json) -> Option<Value> {
    Some(match value {
        Json::Bool(b) => Value::Boolean(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Value::Int(i),
            None => Value::Float(n.as_f64()?),
        },
        Json::String(s) => Value::Text(s.clone()),
        Json::Null | Json::Array(_) | Json::Object(_) => return None,
    })
}

/// Each device's write queue, by device name; replaced when a manifest
/// reload rebuilds the devices.
pub type WriteQueues = HashMap<String, mpsc::Sender<WriteRequest>>;

/// Reads write requests off the bus and hands each to its device's queue.
pub async fn route(
    mut subscription: Subscription,
    devices: watch::Receiver<WriteQueues>,
    responder: Responder,
) {
    while let Some(payload) = subscription.next().await {
        let Ok(Json::Object(request)) = serde_json::from_slice::<Json>(&payload) else {
            responder.failed(&Json::Null, WriteError::BadRequest, "not a JSON object");
            continue;
        };
        let uuid = request.get("uuid").cloned().unwrap_or(Json::Null);
        let field = |key: &str| request.get(key).and_then(Json::as_str).map(str::to_string);
        let (Some(node), Some(group), Some(tag), Some(value)) = (
            field("node"),
            field("group"),
            field("tag"),
            request.get("value").cloned(),
        ) else {
            responder.failed(
                &uuid,
                WriteError::BadRequest,
                "needs node, group, tag and value",
            );
            continue;
        };
        let Some(device) = devices.borrow().get(&node).cloned() else {
            responder.failed(
                &uuid,
                WriteError::UnknownTag,
                &format!("no device \"{node}\""),
            );
            continue;
        };
        let request = WriteRequest {
            uuid,
            group,
            tag,
            value,
        };
        if let Err(
            mpsc::error::TrySendError::Full(request) | mpsc::error::TrySendError::Closed(request),
        ) = device.try_send(request)
        {
            responder.failed(
                &request.uuid,
                WriteError::Busy,
                &format!("device \"{node}\" is busy"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_scalars_are_writable_values() {
        assert!(matches!(to_plugin_value(&json!(12)), Some(Value::Int(12))));
        assert!(matches!(to_plugin_value(&json!(1.5)), Some(Value::Float(f)) if f == 1.5));
        assert!(matches!(
            to_plugin_value(&json!(true)),
            Some(Value::Boolean(true))
        ));
        assert!(matches!(
            to_plugin_value(&json!("on")),
            Some(Value::Text(_))
        ));
        assert!(to_plugin_value(&json!(null)).is_none());
        assert!(to_plugin_value(&json!([1])).is_none());
    }
}
