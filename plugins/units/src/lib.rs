//! units: converts listed tags from one unit to another, e.g.
//! `tags = { temperature = { from = "degC", to = "degF" } }`. The units
//! known are in [`table`]; an unknown unit, or two units of different
//! quantities, fail `configure` with the units that would work.
//!
//! A listed tag whose value is not a number keeps flowing unchanged with
//! quality `bad`, as in the `scale` transform. Converted values are floats.

mod table;

use std::collections::HashMap;

use omh_sdk::{Error, Quality, TaggedReading, Transform, Value};
use serde::Deserialize;

use crate::table::Conversion;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    tags: HashMap<String, UnitPair>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UnitPair {
    from: String,
    to: String,
}

pub struct Units {
    tags: HashMap<String, Conversion>,
    /// The conversion of each bound tag, by tag index.
    by_index: Vec<Option<Conversion>>,
}

impl Transform for Units {
    fn configure(settings: &str) -> Result<Self, Error> {
        let settings: Settings = omh_sdk::settings(settings)?;
        if settings.tags.is_empty() {
            return Err(Error::InvalidConfig(
                "`tags` is empty: nothing to convert (e.g. `tags = { temperature = { from = \"degC\", to = \"degF\" } }`)"
                    .into(),
            ));
        }
        let tags = settings
            .tags
            .into_iter()
            .map(|(tag, UnitPair { from, to })| {
                let conversion = Conversion::between(&from, &to).map_err(|why| {
                    Error::InvalidConfig(format!("invalid setting `tags.{tag}`: {why}"))
                })?;
                Ok((tag, conversion))
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
            let Some(conversion) = &self.by_index[reading.tag as usize] else {
                continue;
            };
            match reading.value {
                Value::Int(i) => reading.value = Value::Float(conversion.apply(i as f64)),
                Value::Float(f) => reading.value = Value::Float(conversion.apply(f)),
                Value::Boolean(_) | Value::Text(_) => reading.quality = Quality::Bad,
            }
        }
        Ok(batch)
    }
}

#[cfg(target_arch = "wasm32")]
omh_sdk::export_transform!(Units);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_listed_tags_and_marks_text_bad() {
        let mut units = Units::configure(
            r#"{"tags": {"t": {"from": "degC", "to": "degF"}, "s": {"from": "bar", "to": "psi"}}}"#,
        )
        .unwrap();
        let tags = ["x", "s", "t"].map(String::from);
        assert_eq!(units.bind(&tags).unwrap(), tags);
        let batch = [
            (2, Value::Int(100)),
            (1, Value::Text("n/a".into())),
            (0, Value::Int(1)),
        ]
        .map(|(tag, value)| TaggedReading {
            tag,
            value,
            quality: Quality::Good,
            timestamp_ms: 0,
        });
        let output: Vec<(u32, Value, Quality)> = units
            .process(batch.to_vec())
            .unwrap()
            .into_iter()
            .map(|r| (r.tag, r.value, r.quality))
            .collect();
        assert_eq!(
            output,
            [
                (2, Value::Float(212.0), Quality::Good),
                (1, Value::Text("n/a".into()), Quality::Bad),
                (0, Value::Int(1), Quality::Good),
            ]
        );
    }

    #[test]
    fn configure_errors_name_the_tag() {
        let cases = [
            (
                r#"{"tags": {"p": {"from": "bar", "to": "degF"}}}"#,
                "invalid setting `tags.p`: cannot convert `bar` (pressure) to `degF` (temperature)",
            ),
            (
                r#"{"tags": {"p": {"from": "Bar", "to": "psi"}}}"#,
                "invalid setting `tags.p`: unknown unit `Bar`; did you mean `bar`?",
            ),
            (
                r#"{"tags": {"p": {"from": "bar"}}}"#,
                "invalid setting `tags.p`: missing field `to` at line 1 column 30",
            ),
        ];
        for (settings, expected) in cases {
            let error = Units::configure(settings).err();
            assert_eq!(
                error,
                Some(Error::InvalidConfig(expected.into())),
                "{settings}"
            );
        }
    }
}
