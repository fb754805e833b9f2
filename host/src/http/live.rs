//! What the HTTP surface shows, kept up to date from the bus: the last value
//! of every tag with a few minutes of history, per-device counts, and the
//! plugins' retained status. It is one more bus consumer, so it shows what
//! the bus carried, nothing the bus did not.

use crate::bus::{Subscription, neuron};
use crate::plugin::bindings::types::{Message, Value};
use crate::status::STATUS_TOPIC_PREFIX;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;
use tokio::sync::{broadcast, oneshot};

/// How much history a tag keeps for the page's charts.
const HISTORY_MS: i64 = 5 * 60 * 1000;
const HISTORY_POINTS: usize = 600;
/// Group messages an SSE client may fall behind before it skips ahead.
const STREAM_BACKLOG: usize = 1024;

pub struct Live {
    snapshot: Mutex<Snapshot>,
    /// Write requests made over HTTP, waiting for their answer on the bus's
    /// write response topic, by uuid.
    pending_writes: Mutex<HashMap<String, oneshot::Sender<serde_json::Value>>>,
    write_response_topic: String,
    /// Every group message, as published, for the live stream.
    updates: broadcast::Sender<Arc<str>>,
    pub started: Instant,
}

#[derive(Default)]
struct Snapshot {
    tags: BTreeMap<(String, String, String), TagState>,
    devices: BTreeMap<String, DeviceStats>,
    plugins: BTreeMap<String, serde_json::Value>,
}

#[derive(Default)]
struct TagState {
    value: Option<serde_json::Value>,
    error: Option<i32>,
    timestamp_ms: i64,
    /// (time, value) of numeric readings, oldest first.
    history: VecDeque<(i64, f64)>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct DeviceStats {
    pub messages: u64,
    pub tag_errors: u64,
    pub last_message_ms: i64,
}

#[derive(Serialize)]
pub struct TagView {
    pub device: String,
    pub group: String,
    pub tag: String,
    pub value: Option<serde_json::Value>,
    /// The driver's error code when the last poll could not read the tag.
    pub error: Option<i32>,
    pub timestamp: i64,
    pub history: Vec<(i64, f64)>,
}

impl Live {
    pub fn new(write_response_topic: String) -> Arc<Self> {
        Arc::new(Self {
            snapshot: Mutex::default(),
            pending_writes: Mutex::default(),
            write_response_topic,
            updates: broadcast::channel(STREAM_BACKLOG).0,
            started: Instant::now(),
        })
    }

    fn snapshot(&self) -> MutexGuard<'_, Snapshot> {
        self.snapshot.lock().expect("live snapshot lock")
    }

    /// Consumes group messages and status updates until the bus closes.
    pub async fn follow(self: Arc<Self>, mut bus: Subscription) {
        while let Some((topic, payload)) = bus.next_with_topic().await {
            if topic == self.write_response_topic.as_bytes() {
                self.answer_write(&payload);
                continue;
            }
            if topic.starts_with(STATUS_TOPIC_PREFIX.as_bytes()) {
                if let Ok(status) = serde_json::from_slice::<serde_json::Value>(&payload)
                    && let Some(instance) = status["instance"].as_str()
                {
                    self.snapshot().plugins.insert(instance.to_string(), status);
                }
                continue;
            }
            let Ok(message) = neuron::decode(&payload) else {
                continue;
            };
            self.record(&message);
            if let Ok(json) = std::str::from_utf8(&payload) {
                // No subscriber is fine: nobody has the page open.
                let _ = self.updates.send(json.into());
            }
        }
    }

    fn record(&self, message: &Message) {
        let mut snapshot = self.snapshot();
        let device = snapshot.devices.entry(message.node.clone()).or_default();
        device.messages += 1;
        device.tag_errors += message.errors.len() as u64;
        device.last_message_ms = message.timestamp_ms;
        let key = |tag: &str| (message.node.clone(), message.group.clone(), tag.to_string());
        for reading in &message.readings {
            let state = snapshot.tags.entry(key(&reading.tag)).or_default();
            state.value = Some(json_value(&reading.value));
            state.error = None;
            state.timestamp_ms = reading.timestamp_ms;
            if let Some(number) = numeric(&reading.value) {
                state.history.push_back((reading.timestamp_ms, number));
                while state.history.len() > HISTORY_POINTS
                    || state
                        .history
                        .front()
                        .is_some_and(|(t, _)| *t < reading.timestamp_ms - HISTORY_MS)
                {
                    state.history.pop_front();
                }
            }
        }
        for error in &message.errors {
            let state = snapshot.tags.entry(key(&error.tag)).or_default();
            state.error = Some(error.code);
            state.timestamp_ms = message.timestamp_ms;
        }
    }

    /// Registers a write request's uuid; the receiver gets its answer.
    pub fn expect_write_answer(&self, uuid: &str) -> oneshot::Receiver<serde_json::Value> {
        let (answer, receiver) = oneshot::channel();
        self.writes().insert(uuid.to_string(), answer);
        receiver
    }

    /// Forgets a write whose caller stopped waiting.
    pub fn forget_write(&self, uuid: &str) {
        self.writes().remove(uuid);
    }

    fn answer_write(&self, payload: &[u8]) {
        let Ok(response) = serde_json::from_slice::<serde_json::Value>(payload) else {
            return;
        };
        // Answers to MQTT clients' writes are not ours to take.
        let waiting = response["uuid"]
            .as_str()
            .and_then(|uuid| self.writes().remove(uuid));
        if let Some(answer) = waiting {
            let _ = answer.send(response);
        }
    }

    fn writes(&self) -> MutexGuard<'_, HashMap<String, oneshot::Sender<serde_json::Value>>> {
        self.pending_writes.lock().expect("pending writes lock")
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<str>> {
        self.updates.subscribe()
    }

    pub fn tags(&self) -> Vec<TagView> {
        self.snapshot()
            .tags
            .iter()
            .map(|((device, group, tag), state)| TagView {
                device: device.clone(),
                group: group.clone(),
                tag: tag.clone(),
                value: state.value.clone(),
                error: state.error,
                timestamp: state.timestamp_ms,
                history: state.history.iter().copied().collect(),
            })
            .collect()
    }

    pub fn devices(&self) -> BTreeMap<String, DeviceStats> {
        self.snapshot().devices.clone()
    }

    pub fn plugins(&self) -> BTreeMap<String, serde_json::Value> {
        self.snapshot().plugins.clone()
    }
}

fn json_value(value: &Value) -> serde_json::Value {
    match value {
        Value::Boolean(b) => (*b).into(),
        Value::Int(i) => (*i).into(),
        Value::Float(f) => (*f).into(),
        Value::Text(t) => t.as_str().into(),
    }
}

fn numeric(value: &Value) -> Option<f64> {
    match value {
        Value::Boolean(b) => Some(f64::from(u8::from(*b))),
        Value::Int(i) => Some(*i as f64),
        Value::Float(f) => Some(*f),
        Value::Text(_) => None,
    }
}
