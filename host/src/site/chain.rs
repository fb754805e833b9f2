//! A group's transform chain. Readings cross it as indexes into the
//! chain's tag tables (see `TagTables`), so a batch costs no tag strings on
//! the way into a plugin or back: the driver's readings are indexed by the
//! group's table once per batch, each step maps a batch of indexes to a
//! batch of indexes, and the last table names them again for the bus.

use crate::plugin::bindings::types::{GroupData, Reading, TagError};
use crate::plugin::runtime::{TaggedReading, Transform};
use crate::plugin::supervisor::Supervised;
use crate::plugin::tag_tables::TagTables;
use std::collections::HashMap;
use std::sync::Arc;

/// Code for readings a failed transform could not produce.
const TRANSFORM_FAILED_CODE: i32 = -3;

pub struct TransformChain {
    /// Each step's transform name and instance, in order.
    steps: Vec<(String, Supervised<Transform>)>,
    tables: Arc<TagTables>,
    /// Index in table 0 of each of the group's tags.
    group_index: HashMap<String, u32>,
    /// Whether a reading of a tag the group does not have has been logged.
    stray_tag_logged: bool,
}

impl TransformChain {
    /// `steps` were built over `tables` (step `i` bound to table `i`).
    pub fn new(steps: Vec<(String, Supervised<Transform>)>, tables: Arc<TagTables>) -> Self {
        let group_index = group_table(&tables)
            .iter()
            .enumerate()
            .map(|(index, tag)| (tag.clone(), index as u32))
            .collect();
        Self {
            steps,
            tables,
            group_index,
            stray_tag_logged: false,
        }
    }

    /// Starts the steps in order, each binding to what the one before it
    /// emits, so configuration errors show before the first poll. A step
    /// that cannot start (the supervisor logs why) is started again by the
    /// first batch that reaches it, and the steps after it then.
    pub async fn bind(&mut self) {
        for (_, transform) in &mut self.steps {
            if transform.start().await.is_err() {
                break;
            }
        }
    }

    /// Runs the readings through the chain, one batch per step. A failed
    /// step turns its input into errors: publishing unscaled values as if
    /// scaled would be worse than a gap.
    pub async fn apply(&mut self, device: &str, group: &str, data: GroupData) -> GroupData {
        let GroupData {
            readings,
            mut errors,
        } = data;
        let mut batch = self.index(device, group, readings);
        for (step, (name, transform)) in self.steps.iter_mut().enumerate() {
            if batch.is_empty() {
                break;
            }
            let input = Arc::new(std::mem::take(&mut batch));
            let sent = input.clone();
            let result = transform
                .call(move |t, store| {
                    Box::pin(async move {
                        t.omh_plugin_transform_api()
                            .call_process(store, &sent)
                            .await
                    })
                })
                .await
                .map_err(|error| error.to_string())
                .and_then(|output| within(output, self.tables.get(step + 1)));
            match result {
                Ok(output) => batch = output,
                Err(reason) => {
                    tracing::warn!(device, group, transform = %name, error = %reason, "transform failed");
                    // The step's input table: known, as the batch reached it.
                    let names = self.tables.get(step).unwrap_or_default();
                    errors.extend(input.iter().map(|reading| TagError {
                        tag: names[reading.tag as usize].clone(),
                        code: TRANSFORM_FAILED_CODE,
                        message: reason.clone(),
                    }));
                }
            }
        }
        // A batch still holding readings went through every step.
        let names = self.tables.get(self.steps.len()).unwrap_or_default();
        let readings = batch
            .into_iter()
            .map(|reading| Reading {
                tag: names[reading.tag as usize].clone(),
                value: reading.value,
                quality: reading.quality,
                timestamp_ms: reading.timestamp_ms,
            })
            .collect();
        GroupData { readings, errors }
    }

    /// The driver's readings with their tags as indexes into the group's
    /// table. A reading of a tag the group does not have is dropped (and
    /// logged once): no transform could be told its name.
    fn index(&mut self, device: &str, group: &str, readings: Vec<Reading>) -> Vec<TaggedReading> {
        let table = group_table(&self.tables);
        let mut batch = Vec::with_capacity(readings.len());
        // Drivers report a group's tags in manifest order as a rule: the
        // tag after the previous one is compared before the map is hashed.
        let mut next = 0;
        for reading in readings {
            let index = if table.get(next) == Some(&reading.tag) {
                next
            } else if let Some(&index) = self.group_index.get(&reading.tag) {
                index as usize
            } else {
                if !self.stray_tag_logged {
                    tracing::warn!(device, group, tag = %reading.tag, "driver returned a tag the group does not have; dropped before the transforms (logged once)");
                    self.stray_tag_logged = true;
                }
                continue;
            };
            next = index + 1;
            batch.push(TaggedReading {
                tag: index as u32,
                value: reading.value,
                quality: reading.quality,
                timestamp_ms: reading.timestamp_ms,
            });
        }
        batch
    }
}

fn group_table(tables: &TagTables) -> &[String] {
    tables
        .get(0)
        .expect("table 0, the group's tags, is set at creation")
}

/// `output` when each of its tags indexes `table`, the step's output table
/// (known once the step is bound, as it is after a successful call).
fn within(
    output: Vec<TaggedReading>,
    table: Option<&[String]>,
) -> Result<Vec<TaggedReading>, String> {
    let tags = table.map_or(0, <[String]>::len);
    match output.iter().find(|reading| reading.tag as usize >= tags) {
        None => Ok(output),
        Some(stray) => Err(format!(
            "returned tag index {} outside its tag table of {tags} tags",
            stray.tag
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::bindings::types::{Quality, Value};

    fn reading(tag: &str) -> Reading {
        Reading {
            tag: tag.to_string(),
            value: Value::Int(1),
            quality: Quality::Good,
            timestamp_ms: 0,
        }
    }

    fn tagged(tag: u32) -> TaggedReading {
        TaggedReading {
            tag,
            value: Value::Int(1),
            quality: Quality::Good,
            timestamp_ms: 0,
        }
    }

    #[test]
    fn readings_are_indexed_by_the_group_table_in_any_order_and_strays_dropped() {
        let tags = ["a", "b", "c"].map(String::from).to_vec();
        let mut chain = TransformChain::new(Vec::new(), Arc::new(TagTables::new(tags, 0)));
        let readings = ["a", "c", "b", "nowhere", "c"].map(reading).to_vec();
        let indexes: Vec<u32> = chain
            .index("d", "g", readings)
            .iter()
            .map(|reading| reading.tag)
            .collect();
        assert_eq!(indexes, [0, 2, 1, 2]);
        assert!(chain.stray_tag_logged);
    }

    #[test]
    fn a_step_output_must_index_its_table() {
        let table = ["x", "y"].map(String::from);
        assert!(within(vec![tagged(1), tagged(0)], Some(&table)).is_ok());
        assert_eq!(
            within(vec![tagged(0), tagged(2)], Some(&table)).unwrap_err(),
            "returned tag index 2 outside its tag table of 2 tags"
        );
        assert!(within(Vec::new(), None).is_ok());
    }
}
