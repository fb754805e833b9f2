//! One device: its supervised driver instance, its groups' schedules and
//! their transform chains. The host owns the schedule: each group is read
//! once per interval and published as one Neuron-shaped message.

use super::admission::{Admission, Admitted};
use super::chain::TransformChain;
use super::writes::{Responder, WriteError, WriteRequest, to_plugin_value};
use crate::bus::uns::GroupUns;
use crate::bus::{Publisher, neuron};
use crate::manifest::TopicTemplate;
use crate::plugin::bindings::types::Error as PluginError;
use crate::plugin::bindings::types::{Message, Reading, TagError};
use crate::plugin::runtime::Driver;
use crate::plugin::state::unix_millis;
use crate::plugin::supervisor::{CallError, Supervised, describe};
use crate::status::StatusBoard;
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
    /// Per-tag topics of the unified namespace, when `[broker.uns]` is on.
    pub uns: Option<GroupUns>,
    /// `None` for a group without transforms.
    pub chain: Option<TransformChain>,
    admission: Admission,
}

pub struct DeviceTask {
    pub name: Arc<str>,
    pub driver: Supervised<Driver>,
    pub groups: Vec<GroupSchedule>,
    pub publisher: Publisher,
    pub status: StatusBoard,
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
        uns: Option<GroupUns>,
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
            admission: Admission::new(tags.iter().map(|(t, _)| t.clone()).collect()),
            tags: tags.into_iter().map(|(t, _)| t).collect(),
            topic: topic.render(device, name),
            uns,
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
        let mut health = Health::new(self.groups.len());
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
            let message = self.poll(index, polled_at, &mut health).await;
            let group = &mut self.groups[index];
            self.publisher
                .publish(group.topic.clone(), neuron::encode(&message), false);
            if let Some(uns) = &mut group.uns {
                uns.publish(&self.publisher, &message);
            }
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

    async fn poll(&mut self, index: usize, polled_at: i64, health: &mut Health) -> Message {
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
        let (data, failure) = match read {
            Ok(data) => {
                let data = group.admission.admit(&self.name, &group.name, data);
                let failure = unanswered(&data.readings, &data.errors);
                (data, failure)
            }
            Err(error) => {
                let message = error.to_string();
                // A crash is worth a line even while the group is down.
                if health.answered[index] == Some(false) && matches!(error, CallError::Crashed(_)) {
                    tracing::warn!(device = %self.name, group = %group.name, %error, "cannot read group");
                }
                let data = all_failed(&group.tags, GROUP_UNAVAILABLE_CODE, &message);
                (data, Some(message))
            }
        };
        // One log line per group and one status message per device per
        // change, not per poll.
        if health.answered[index] != Some(failure.is_none()) {
            match &failure {
                Some(error) => {
                    tracing::warn!(device = %self.name, group = %group.name, %error, "cannot read group")
                }
                None if health.answered[index].is_some() => {
                    tracing::info!(device = %self.name, group = %group.name, "group readable again")
                }
                None => {}
            }
        }
        if health.record(index, failure.is_none()) {
            self.status.device(&self.name, failure.as_deref());
        }
        let data = match &mut group.chain {
            Some(chain) => chain.apply(&self.name, &group.name, data).await,
            None => data.into_data(),
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

/// Whether the device answers, from each group's last poll: connected while
/// any group's last poll was answered, so a group of a silent slave beside
/// a good one does not make the device's status flap every poll.
struct Health {
    /// Per group: `None` until its first poll.
    answered: Vec<Option<bool>>,
    /// The device's state as last published.
    published: Option<bool>,
}

impl Health {
    fn new(groups: usize) -> Self {
        Self {
            answered: vec![None; groups],
            published: None,
        }
    }

    /// Records group `index`'s poll; true when the device's state changed
    /// (or is known for the first time) and is to be published.
    fn record(&mut self, index: usize, answered: bool) -> bool {
        self.answered[index] = Some(answered);
        let connected = self.answered.iter().flatten().any(|&a| a);
        let changed = self.published != Some(connected);
        self.published = Some(connected);
        changed
    }
}

/// Why a poll counts as the device not answering: nothing was read and
/// every error is an I/O error (negative code, by the WIT's convention;
/// a protocol exception means the device did answer). `None` otherwise.
fn unanswered(readings: &[Reading], errors: &[TagError]) -> Option<String> {
    let io_only = errors.iter().all(|error| error.code < 0);
    match errors.first() {
        Some(first) if readings.is_empty() && io_only => Some(first.message.clone()),
        _ => None,
    }
}

fn all_failed(tags: &[String], code: i32, message: &str) -> Admitted {
    Admitted {
        readings: Vec::new(),
        tag_indexes: Vec::new(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_is_connected_while_any_group_answers() {
        let mut health = Health::new(2);
        assert!(
            health.record(0, false),
            "first poll: disconnected, published"
        );
        assert!(health.record(1, true), "another group answers: connected");
        assert!(
            !health.record(0, false),
            "a silent group alone does not flap it"
        );
        assert!(!health.record(1, true));
        assert!(health.record(1, false), "no group answers: disconnected");
        assert!(!health.record(0, false));
        assert!(health.record(0, true), "back");
    }

    #[test]
    fn only_io_errors_without_readings_mean_unanswered() {
        let error = |code| TagError {
            tag: "t".into(),
            code,
            message: format!("code {code}"),
        };
        assert_eq!(
            unanswered(&[], &[error(-1), error(-2)]).as_deref(),
            Some("code -1")
        );
        // A Modbus exception is an answer.
        assert_eq!(unanswered(&[], &[error(-2), error(2)]), None);
        assert_eq!(unanswered(&[], &[]), None);
    }
}
