//! rename: maps device tag names into unified-namespace names.
//!
//! Settings: `tags = { raw_name = "new/name" }` renames listed tags;
//! `prefix = "acme/plant1/line2/"` is put before every outgoing name
//! (renamed or not); `unmapped = "drop"` drops tags not listed in `tags`
//! (default `"keep"`). Values, quality and timestamps are untouched.

use std::collections::{BTreeMap, HashMap};

use omh_sdk::{Error, TaggedReading, Transform};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    #[serde(default)]
    tags: BTreeMap<String, String>,
    #[serde(default)]
    prefix: String,
    #[serde(default)]
    unmapped: Unmapped,
}

#[derive(Clone, Copy, Default, Deserialize, PartialEq)]
#[serde(rename_all = "lowercase")]
enum Unmapped {
    #[default]
    Keep,
    Drop,
}

pub struct Rename {
    /// Raw name to the full outgoing name (prefix included).
    tags: HashMap<String, String>,
    prefix: String,
    unmapped: Unmapped,
    /// For each bound input tag, by index: its index in the output table,
    /// or `None` when it is dropped.
    output_index: Vec<Option<u32>>,
}

impl Transform for Rename {
    fn configure(settings: &str) -> Result<Self, Error> {
        let settings: Settings = omh_sdk::settings(settings)?;
        if settings.tags.is_empty() && settings.prefix.is_empty() {
            return Err(Error::InvalidConfig(
                "nothing to rename: set `tags = { raw = \"new\" }` and/or `prefix`".into(),
            ));
        }
        if settings.tags.is_empty() && settings.unmapped == Unmapped::Drop {
            return Err(Error::InvalidConfig(
                "`unmapped = \"drop\"` with no `tags` would drop every reading".into(),
            ));
        }
        let mut sources_by_target: BTreeMap<&str, &str> = BTreeMap::new();
        for (source, target) in &settings.tags {
            if target.trim().is_empty() {
                return Err(Error::InvalidConfig(format!(
                    "invalid setting `tags.{source}`: the new name is empty"
                )));
            }
            if let Some(other) = sources_by_target.insert(target, source) {
                return Err(Error::InvalidConfig(format!(
                    "invalid setting `tags`: `{other}` and `{source}` are both renamed to `{target}`"
                )));
            }
        }
        let tags = settings
            .tags
            .iter()
            .map(|(source, target)| (source.clone(), format!("{}{target}", settings.prefix)))
            .collect();
        Ok(Self {
            tags,
            prefix: settings.prefix,
            unmapped: settings.unmapped,
            output_index: Vec::new(),
        })
    }

    fn bind(&mut self, tags: &[String]) -> Result<Vec<String>, Error> {
        let mut output: Vec<String> = Vec::new();
        // Outgoing name -> the input tag it comes from, to refuse two
        // tags published under one name (a rename onto a kept tag).
        let mut sources: HashMap<String, &str> = HashMap::new();
        self.output_index = Vec::with_capacity(tags.len());
        for tag in tags {
            let name = match self.tags.get(tag) {
                Some(name) => name.clone(),
                None if self.unmapped == Unmapped::Drop => {
                    self.output_index.push(None);
                    continue;
                }
                None => format!("{}{tag}", self.prefix),
            };
            if let Some(other) = sources.insert(name.clone(), tag) {
                return Err(Error::InvalidConfig(format!(
                    "invalid setting `tags`: `{other}` and `{tag}` would both be published as `{name}`"
                )));
            }
            self.output_index.push(Some(output.len() as u32));
            output.push(name);
        }
        Ok(output)
    }

    fn process(&mut self, mut batch: Vec<TaggedReading>) -> Result<Vec<TaggedReading>, Error> {
        batch.retain_mut(|reading| match self.output_index[reading.tag as usize] {
            Some(index) => {
                reading.tag = index;
                true
            }
            None => false,
        });
        Ok(batch)
    }
}

#[cfg(target_arch = "wasm32")]
omh_sdk::export_transform!(Rename);

#[cfg(test)]
mod tests {
    use omh_sdk::{Quality, Value};

    use super::*;

    /// The names a batch of `tags` goes out with, by the output table.
    fn names(settings: &str, tags: &[&str]) -> Vec<String> {
        let tags: Vec<String> = tags.iter().map(|tag| tag.to_string()).collect();
        let mut rename = Rename::configure(settings).unwrap();
        let output = rename.bind(&tags).unwrap();
        let batch = (0..tags.len() as u32)
            .map(|tag| TaggedReading {
                tag,
                value: Value::Int(1),
                quality: Quality::Good,
                timestamp_ms: 0,
            })
            .collect();
        rename
            .process(batch)
            .unwrap()
            .into_iter()
            .map(|r| output[r.tag as usize].clone())
            .collect()
    }

    #[test]
    fn renames_prefixes_and_drops() {
        let cases: [(&str, &[&str]); 4] = [
            (
                r#"{"tags": {"t1": "oven/temperature"}}"#,
                &["oven/temperature", "t2"],
            ),
            (
                r#"{"prefix": "acme/line2/"}"#,
                &["acme/line2/t1", "acme/line2/t2"],
            ),
            (
                r#"{"tags": {"t1": "oven/temperature"}, "prefix": "acme/"}"#,
                &["acme/oven/temperature", "acme/t2"],
            ),
            (
                r#"{"tags": {"t2": "humidity"}, "unmapped": "drop"}"#,
                &["humidity"],
            ),
        ];
        for (settings, expected) in cases {
            assert_eq!(names(settings, &["t1", "t2"]), expected, "{settings}");
        }
    }

    #[test]
    fn configure_errors_say_what_is_wrong() {
        let cases = [
            (
                r#"{}"#,
                "nothing to rename: set `tags = { raw = \"new\" }` and/or `prefix`",
            ),
            (
                r#"{"prefix": "a/", "unmapped": "drop"}"#,
                "`unmapped = \"drop\"` with no `tags` would drop every reading",
            ),
            (
                r#"{"tags": {"a": "x", "b": "x"}}"#,
                "invalid setting `tags`: `a` and `b` are both renamed to `x`",
            ),
            (
                r#"{"tags": {"a": " "}}"#,
                "invalid setting `tags.a`: the new name is empty",
            ),
            (
                r#"{"tags": {"a": "x"}, "unmapped": "hide"}"#,
                "invalid setting `unmapped`: unknown variant `hide`, expected `keep` or `drop` at line 1 column 39",
            ),
        ];
        for (settings, expected) in cases {
            let error = Rename::configure(settings).err();
            assert_eq!(
                error,
                Some(Error::InvalidConfig(expected.into())),
                "{settings}"
            );
        }
    }

    #[test]
    fn bind_refuses_a_rename_onto_a_kept_tag() {
        let mut rename = Rename::configure(r#"{"tags": {"t1": "t2"}}"#).unwrap();
        let tags = ["t1", "t2"].map(String::from);
        assert_eq!(
            rename.bind(&tags).err(),
            Some(Error::InvalidConfig(
                "invalid setting `tags`: `t1` and `t2` would both be published as `t2`".into()
            ))
        );
    }
}
