//! What a group takes from its driver: at most one reading or error per
//! tag its manifest declares. A driver is untrusted code; one that returns
//! a million readings, or tags the group does not have, must not become a
//! million-entry message on the bus or a million rows in a sink. (How much
//! it can return at all is bounded by its memory limit.)

use crate::plugin::bindings::types::{GroupData, Reading, TagError};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Dropped readings are logged at most this often per group.
const WARN_EVERY: Duration = Duration::from_secs(60);

pub struct Admission {
    /// The group's tags in manifest order.
    tags: Vec<String>,
    /// Index in `tags` of each tag.
    index: HashMap<String, u32>,
    /// Per tag, whether this batch already has it (scratch, reused).
    seen: Vec<bool>,
    last_warning: Option<Instant>,
    /// Dropped since the last warning.
    unreported: u64,
}

/// A batch as the group took it.
pub struct Admitted {
    pub readings: Vec<Reading>,
    /// Index in the group's tags of each reading, in the same order.
    pub tag_indexes: Vec<u32>,
    pub errors: Vec<TagError>,
}

impl Admitted {
    pub fn into_data(self) -> GroupData {
        GroupData {
            readings: self.readings,
            errors: self.errors,
        }
    }
}

impl Admission {
    pub fn new(tags: Vec<String>) -> Self {
        let index = tags
            .iter()
            .enumerate()
            .map(|(index, tag)| (tag.clone(), index as u32))
            .collect();
        Self {
            seen: vec![false; tags.len()],
            tags,
            index,
            last_warning: None,
            unreported: 0,
        }
    }

    /// Keeps the first reading of each declared tag and, for a tag without
    /// one, its first error; drops the rest, with a warning at most once a
    /// minute.
    pub fn admit(&mut self, device: &str, group: &str, data: GroupData) -> Admitted {
        self.seen.fill(false);
        let wanted = self.tags.len();
        let mut readings = Vec::with_capacity(data.readings.len().min(wanted));
        let mut tag_indexes = Vec::with_capacity(readings.capacity());
        let mut dropped = 0u64;
        // Drivers report a group's tags in manifest order as a rule: the
        // tag after the previous one is compared before the map is hashed.
        let mut next = 0;
        for reading in data.readings {
            match self.take(&reading.tag, next) {
                Some(index) => {
                    next = index as usize + 1;
                    readings.push(reading);
                    tag_indexes.push(index);
                }
                None => dropped += 1,
            }
        }
        let mut errors = Vec::with_capacity(data.errors.len().min(wanted));
        for error in data.errors {
            match self.take(&error.tag, 0) {
                Some(_) => errors.push(error),
                None => dropped += 1,
            }
        }
        if dropped > 0 {
            self.warn(device, group, dropped);
        }
        Admitted {
            readings,
            tag_indexes,
            errors,
        }
    }

    /// `tag`'s index if the group has it and this batch does not yet;
    /// `next` is the index to try first.
    fn take(&mut self, tag: &str, next: usize) -> Option<u32> {
        let index = match self.tags.get(next) {
            Some(expected) if expected == tag => next as u32,
            _ => *self.index.get(tag)?,
        };
        let seen = &mut self.seen[index as usize];
        (!std::mem::replace(seen, true)).then_some(index)
    }

    fn warn(&mut self, device: &str, group: &str, dropped: u64) {
        self.unreported += dropped;
        if self
            .last_warning
            .is_some_and(|at| at.elapsed() < WARN_EVERY)
        {
            return;
        }
        tracing::warn!(
            device,
            group,
            dropped = self.unreported,
            "driver returned readings of tags the group does not have, or a tag twice; dropped (logged at most once a minute)"
        );
        self.last_warning = Some(Instant::now());
        self.unreported = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::bindings::types::{Quality, Value};

    fn reading(tag: &str, value: i64) -> Reading {
        Reading {
            tag: tag.to_string(),
            value: Value::Int(value),
            quality: Quality::Good,
            timestamp_ms: 0,
        }
    }

    fn int(value: &Value) -> i64 {
        match value {
            Value::Int(i) => *i,
            other => panic!("not an int: {other:?}"),
        }
    }

    fn error(tag: &str) -> TagError {
        TagError {
            tag: tag.to_string(),
            code: -1,
            message: String::new(),
        }
    }

    #[test]
    fn takes_one_reading_or_error_per_declared_tag_in_any_order() {
        let mut admission = Admission::new(["a", "b", "c"].map(String::from).to_vec());
        let data = GroupData {
            readings: vec![
                reading("a", 1),
                reading("c", 2),
                reading("nowhere", 3),
                reading("c", 4),
                reading("a", 5),
            ],
            errors: vec![error("b"), error("a"), error("b"), error("elsewhere")],
        };
        let admitted = admission.admit("d", "g", data);
        let values: Vec<_> = admitted
            .readings
            .iter()
            .map(|r| (r.tag.as_str(), int(&r.value)))
            .collect();
        assert_eq!(values, [("a", 1), ("c", 2)]);
        assert_eq!(admitted.tag_indexes, [0, 2]);
        let errors: Vec<_> = admitted.errors.iter().map(|e| e.tag.as_str()).collect();
        assert_eq!(errors, ["b"]);
        assert_eq!(
            admission.unreported, 0,
            "the first drop is reported at once"
        );
        assert!(admission.last_warning.is_some());

        // The next batch starts afresh.
        let admitted = admission.admit(
            "d",
            "g",
            GroupData {
                readings: vec![reading("b", 6), reading("a", 7), reading("a", 8)],
                errors: Vec::new(),
            },
        );
        assert_eq!(admitted.tag_indexes, [1, 0]);
        assert_eq!(
            admission.unreported, 1,
            "within the minute: counted, not logged"
        );
    }

    #[test]
    fn a_million_readings_become_at_most_one_per_tag() {
        let mut admission = Admission::new(vec!["t".into()]);
        let readings = (0..1_000_000)
            .map(|i| reading(if i % 2 == 0 { "t" } else { "x" }, i))
            .collect();
        let admitted = admission.admit(
            "d",
            "g",
            GroupData {
                readings,
                errors: Vec::new(),
            },
        );
        assert_eq!(admitted.readings.len(), 1);
        assert_eq!(int(&admitted.readings[0].value), 0);
    }
}
