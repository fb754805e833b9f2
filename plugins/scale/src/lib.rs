//! scale: engineering units from raw register values, per tag. Each listed
//! tag gets `value * scale + offset`, or a linear map of a raw range onto
//! an engineering range (4-20 mA, 0-27648 counts), optionally clamped and
//! rounded. Tags not listed pass through untouched.
//!
//! A listed tag whose value is not a number (text, boolean) keeps flowing
//! unchanged with quality `bad`: publishing it unscaled under a name
//! consumers read as scaled would be worse than a gap.

mod linear;

use std::collections::HashMap;

use omh_sdk::{Error, Quality, TaggedReading, Transform, Value};
use serde::Deserialize;

use crate::linear::{Linear, LinearSettings};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    tags: HashMap<String, LinearSettings>,
}

pub struct Scale {
    tags: HashMap<String, Linear>,
    /// The map of each bound tag, by tag index.
    by_index: Vec<Option<Linear>>,
}

impl Transform for Scale {
    fn configure(settings: &str) -> Result<Self, Error> {
        let settings: Settings = omh_sdk::settings(settings)?;
        if settings.tags.is_empty() {
            return Err(Error::InvalidConfig(
                "`tags` is empty: nothing to scale (e.g. `tags = { temperature = { scale = 0.1 } }`)"
                    .into(),
            ));
        }
        let tags = settings
            .tags
            .into_iter()
            .map(|(tag, linear)| {
                let linear = Linear::new(linear).map_err(|why| {
                    Error::InvalidConfig(format!("invalid setting `tags.{tag}`: {why}"))
                })?;
                Ok((tag, linear))
            })
            .collect::<Result<_, Error>>()?;
        Ok(Self {
            tags,
            by_index: Vec::new(),
        })
    }

    fn bind(&mut self, tags: &[String]) -> Result<Vec<String>, Error> {
        self.by_index = omh_sdk::by_tag_index(tags, &self.tags);
        Ok(tags.to_vec())
    }

    fn process(&mut self, mut batch: Vec<TaggedReading>) -> Result<Vec<TaggedReading>, Error> {
        for reading in &mut batch {
            let Some(linear) = &self.by_index[reading.tag as usize] else {
                continue;
            };
            match reading.value {
                Value::Int(raw) => reading.value = Value::Float(linear.apply(raw as f64)),
                Value::Float(raw) => reading.value = Value::Float(linear.apply(raw)),
                Value::Boolean(_) | Value::Text(_) => reading.quality = Quality::Bad,
            }
        }
        Ok(batch)
    }
}

// Only the component exports: natively the export names (`omh:plugin/...`)
// cannot be linked, and the benchmark links several transforms together.
#[cfg(target_arch = "wasm32")]
omh_sdk::export_transform!(Scale);

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(tag: u32, value: Value) -> TaggedReading {
        TaggedReading {
            tag,
            value,
            quality: Quality::Good,
            timestamp_ms: 1,
        }
    }

    fn bound(settings: &str, tags: &[&str]) -> Scale {
        let mut scale = Scale::configure(settings).unwrap();
        let tags: Vec<String> = tags.iter().map(|tag| tag.to_string()).collect();
        assert_eq!(scale.bind(&tags).unwrap(), tags);
        scale
    }

    #[test]
    fn scales_listed_tags_and_passes_the_rest() {
        let mut scale = bound(
            r#"{"tags": {"temperature": {"scale": 0.1, "offset": -40}, "level": {"input": [0, 27648], "output": [0, 100]}, "elsewhere": {"scale": 3}}}"#,
            &["level", "untouched", "temperature"],
        );
        let output = scale
            .process(vec![
                reading(2, Value::Int(650)),
                reading(0, Value::Float(13824.0)),
                reading(1, Value::Int(7)),
            ])
            .unwrap();
        assert_eq!(
            output,
            vec![
                reading(2, Value::Float(25.0)),
                reading(0, Value::Float(50.0)),
                reading(1, Value::Int(7)),
            ]
        );
    }

    #[test]
    fn a_value_that_is_not_a_number_flows_on_as_bad() {
        let mut scale = bound(r#"{"tags": {"state": {"scale": 2}}}"#, &["state"]);
        let output = scale
            .process(vec![reading(0, Value::Text("RUN".into()))])
            .unwrap();
        assert_eq!(output[0].value, Value::Text("RUN".into()));
        assert_eq!(output[0].quality, Quality::Bad);
    }

    #[test]
    fn configure_errors_name_the_setting() {
        let cases = [
            (
                r#"{}"#,
                "invalid settings: missing field `tags` at line 1 column 2",
            ),
            (
                r#"{"tags": {}}"#,
                "`tags` is empty: nothing to scale (e.g. `tags = { temperature = { scale = 0.1 } }`)",
            ),
            (
                r#"{"tags": {"t": {"scale": "x"}}}"#,
                "invalid setting `tags.t.scale`: invalid type: string \"x\", expected f64 at line 1 column 28",
            ),
            (
                r#"{"tags": {"t": {"factor": 2}}}"#,
                "invalid setting `tags.t.factor`: unknown field `factor`, expected one of `scale`, `offset`, `input`, `output`, `clamp`, `decimals` at line 1 column 24",
            ),
            (
                r#"{"tags": {"t": {"scale": 2, "input": [0, 1], "output": [0, 2]}}}"#,
                "invalid setting `tags.t`: give either `scale`/`offset` or `input`/`output`, not both",
            ),
        ];
        for (settings, expected) in cases {
            let error = Scale::configure(settings).err();
            assert_eq!(
                error,
                Some(Error::InvalidConfig(expected.into())),
                "{settings}"
            );
        }
    }
}
