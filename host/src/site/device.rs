//! One device: its supervised driver instance, its groups' schedules and
//! their transform chains. The host owns the schedule: each group is read
//! once per interval and published as one Neuron-shaped message.

use super::chain::TransformChain;
use super::writes::{Responder, WriteError, WriteRequest, to_plugin_value};
use crate::bus::{Publisher, neuron};
use crate::manifest::TopicTemplate;
use crate::plugin::bindings::types::Error as PluginError;
use crate::plugin::bindings::types::{GroupData, Message, TagError};
use crate::plugin::runtime::Driver;
use crate::plugin::state::unix_millis;
use crate::plugin::supervisor::{CallError, Supervised, describe};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Code in a message's `errors` when the whole group could not be read
/// (driver down or restarting); per-tag codes come from the driver.
const GROUP_UNAVAILABLE_CODE: i32 = -2;

pub struct GroupSchedule {
    pub name: String,
    pub interval: Duration,
    pub tags: Vec<String>,
    /// Tags the manifest marks `writable = true`.
    pub writable: HashSet<String>,
    pub topic: String,
    /// `None` for a group without transforms.
    pub chain: Option<TransformChain>,
}

pub struct DeviceTask {
    pub name: Arc<str>,
    pub driver: Supervised<Driver>,
    pub groups: Vec<GroupSchedule>,
    pub publisher: Publisher,
    pub writes: mpsc::Receiver<WriteRequest>,
    pub responder: Responder,
}

impl GroupSchedule {
    pub fn new(
        device: &str,
        name: &str,
        interval: Duration,
        tags: Vec<(String, bool)>,
        topic: &TopicTemplate,
        chain: Option<TransformChain>,
    ) -> Self {
        Self {
            name: name.to_string(),
            interval,
            writable: tags
                .iter()
                .filter(|(_, w)| *w)
                .map(|(t, _)| t.clone())
                .collect(),
            tags: tags.into_iter().map(|(t, _)| t).collect(),
            topic: topic.render(device, name),
            chain,
        }
    }
}

impl DeviceTask {
    pub async fn run(mut self) {
        for chain in self
            .groups
            .iter_mut()
            .filter_map(|group| group.chain.as_mut())
        {
            chain.bind().await;
        }
        let start = Instant::now();
        let mut due: Vec<Instant> = vec![start; self.groups.len()];
        let mut reading_ok = true;
        loop {
            let (index, at) = due
                .iter()
                .copied()
                .enumerate()
                .min_by_key(|&(_, at)| at)
                .expect("a device has at least one group (validated)");
            // Writes go between polls: one driver instance serves both.
            tokio::select! {
                _ = tokio::time::sleep_until(at) => {}
                Some(request) = self.writes.recv() => {
                    self.write(request).await;
                    continue;
                }
            }
            let polled_at = unix_millis(SystemTime::now());
            let message = self.poll(index, polled_at, &mut reading_ok).await;
            let group = &self.groups[index];
            self.publisher
                .publish(group.topic.clone(), neuron::encode(&message), false);
            // Fixed-rate schedule; after an overrun, skip the missed ticks
            // rather than firing a burst.
            let next = at + group.interval;
            due[index] = if next < Instant::now() {
                Instant::now() + group.interval
            } else {
                next
            };
        }
    }

    /// Checks a write against the manifest, then hands it to the driver,
    /// which checks it against the tag's type and encodes it.
    async fn write(&mut self, request: WriteRequest) {
        let WriteRequest {
            uuid,
            group,
            tag,
            value,
        } = request;
        let responder = &self.responder;
        let Some(schedule) = self.groups.iter().find(|g| g.name == group) else {
            let message = format!("device \"{}\" has no group \"{group}\"", self.name);
            return responder.failed(&uuid, WriteError::UnknownTag, &message);
        };
        if !schedule.tags.contains(&tag) {
            let message = format!("group \"{group}\" has no tag \"{tag}\"");
            return responder.failed(&uuid, WriteError::UnknownTag, &message);
        }
        if !schedule.writable.contains(&tag) {
            let message = format!("tag \"{tag}\" is read-only (writable = false in the manifest)");
            return responder.failed(&uuid, WriteError::ReadOnly, &message);
        }
        let Some(value) = to_plugin_value(&value) else {
            let message = format!("{value} is not a number, boolean or string");
            return responder.failed(&uuid, WriteError::BadValue, &message);
        };
        let written = self
            .driver
            .call(move |driver, store| {
                Box::pin(async move {
                    driver
                        .omh_plugin_driver_api()
                        .call_write_tag(store, &group, &tag, &value)
                        .await
                })
            })
            .await;
        match written {
            Ok(()) => responder.done(&uuid),
            Err(CallError::Plugin(
                error @ (PluginError::InvalidConfig(_) | PluginError::Unsupported(_)),
            )) => responder.failed(&uuid, WriteError::BadValue, &describe(&error)),
            Err(error) => responder.failed(&uuid, WriteError::DeviceError, &error.to_string()),
        }
    }

    async fn poll(&mut self, index: usize, polled_at: i64, reading_ok: &mut bool) -> Message {
        let group_name = self.groups[index].name.clone();
        let read = self
            .driver
            .call(move |driver, store| {
                Box::pin(async move {
                    driver
                        .omh_plugin_driver_api()
                        .call_read_group(store, &group_name)
                        .await
                })
            })
            .await;
        let group = &mut self.groups[index];
        let data = match read {
            Ok(data) => {
                if !*reading_ok {
                    tracing::info!(device = %self.name, "device readable again");
                    *reading_ok = true;
                }
                data
            }
            Err(error) => {
                // One line per change of state, not one per failed poll.
                if *reading_ok || matches!(error, CallError::Crashed(_)) {
                    tracing::warn!(device = %self.name, group = %group.name, %error, "cannot read group");
                }
                *reading_ok = false;
                all_failed(&group.tags, GROUP_UNAVAILABLE_CODE, &error.to_string())
            }
        };
        let data = match &mut group.chain {
            Some(chain) => chain.apply(&self.name, &group.name, data).await,
            None => data,
        };
        Message {
            node: self.name.to_string(),
            group: group.name.clone(),
            timestamp_ms: polled_at,
            readings: data.readings,
            errors: data.errors,
        }
    }
}

fn all_failed(tags: &[String], code: i32, message: &str) -> GroupData {
    GroupData {
        readings: Vec::new(),
        errors: tags
            .iter()
            .map(|tag| TagError {
                tag: tag.clone(),
                code,
                message: message.to_string(),
            })
            .collect(),
    }
}
