//! A group's transform chain. Readings cross it as indexes into the
//! chain's tag tables (see `TagTables`), so a batch costs no tag strings on
//! the way into a plugin or back: the driver's readings come indexed by the
//! group's table (see `Admission`), each step maps a batch of indexes to a
//! batch of indexes, and the last table names them again for the bus.

use super::admission::Admitted;
use crate::plugin::bindings::types::{GroupData, Reading, TagError};
use crate::plugin::runtime::{TaggedReading, Transform};
use crate::plugin::supervisor::Supervised;
use crate::plugin::tag_tables::TagTables;
use std::sync::Arc;

/// Code for readings a failed transform could not produce.
const TRANSFORM_FAILED_CODE: i32 = -3;

pub struct TransformChain {
    /// Each step's transform name and instance, in order.
    steps: Vec<(String, Supervised<Transform>)>,
    tables: Arc<TagTables>,
}

impl TransformChain {
    /// `steps` were built over `tables` (step `i` bound to table `i`).
    pub fn new(steps: Vec<(String, Supervised<Transform>)>, tables: Arc<TagTables>) -> Self {
        Self { steps, tables }
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
    pub async fn apply(&mut self, device: &str, group: &str, admitted: Admitted) -> GroupData {
        let Admitted {
            readings,
            tag_indexes,
            mut errors,
        } = admitted;
        let mut batch: Vec<TaggedReading> = readings
            .into_iter()
            .zip(tag_indexes)
            .map(|(reading, tag)| TaggedReading {
                tag,
                value: reading.value,
                quality: reading.quality,
                timestamp_ms: reading.timestamp_ms,
            })
            .collect();
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

    fn tagged(tag: u32) -> TaggedReading {
        TaggedReading {
            tag,
            value: Value::Int(1),
            quality: Quality::Good,
            timestamp_ms: 0,
        }
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
