//! deadband: report on change. A reading within its tag's deadband of the
//! last value reported for that tag is dropped; the last reported value of
//! each tag is kept in the instance (one instance per device group).
//!
//! Settings: `tags = { NAME = BAND }` and/or `default = BAND` for every tag
//! not listed, where BAND is `{ absolute = 0.5 }`, `{ percent = 2 }` (of the
//! last reported value, as Node-RED's RBE node) or `{}` (any change).
//! `heartbeat_ms` reports an unchanged value again once that long has
//! passed since it was last reported (reading timestamps), so a still value
//! can be told from a dead tag. Tags covered by neither pass untouched.
//!
//! Quality: a `bad` reading always passes (a gap must show); any change of
//! quality is reported. Booleans and text are reported when they differ.

mod band;

use std::collections::HashMap;

use omh_sdk::{Error, Quality, TaggedReading, Transform, Value};
use serde::Deserialize;

use crate::band::{Band, BandSettings};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    #[serde(default)]
    tags: HashMap<String, BandSettings>,
    default: Option<BandSettings>,
    heartbeat_ms: Option<u64>,
}

pub struct Deadband {
    tags: HashMap<String, Band>,
    default: Option<Band>,
    heartbeat_ms: Option<i64>,
    /// Per bound tag, by tag index: its band, and what was last reported.
    bound: Vec<TagState>,
}

struct TagState {
    band: Option<Band>,
    last_reported: Option<Reported>,
}

/// What was last let through for a tag.
struct Reported {
    value: Value,
    quality: Quality,
    timestamp_ms: i64,
}

impl Transform for Deadband {
    fn configure(settings: &str) -> Result<Self, Error> {
        let settings: Settings = omh_sdk::settings(settings)?;
        let invalid = |key: &str, why: String| {
            Error::InvalidConfig(format!("invalid setting `{key}`: {why}"))
        };
        if settings.tags.is_empty() && settings.default.is_none() {
            return Err(Error::InvalidConfig(
                "no band: set `default = { absolute = ... }` or per-tag `tags = { NAME = { percent = ... } }`"
                    .into(),
            ));
        }
        let tags = settings
            .tags
            .into_iter()
            .map(|(tag, band)| {
                let band = Band::new(band).map_err(|why| invalid(&format!("tags.{tag}"), why))?;
                Ok((tag, band))
            })
            .collect::<Result<_, Error>>()?;
        let default = settings
            .default
            .map(Band::new)
            .transpose()
            .map_err(|why| invalid("default", why))?;
        let heartbeat_ms = settings
            .heartbeat_ms
            .map(|ms| match i64::try_from(ms) {
                Ok(ms) if ms > 0 => Ok(ms),
                _ => Err(invalid(
                    "heartbeat_ms",
                    format!("{ms} is not a positive duration"),
                )),
            })
            .transpose()?;
        Ok(Self {
            tags,
            default,
            heartbeat_ms,
            bound: Vec::new(),
        })
    }

    fn bind(&mut self, tags: &[String]) -> Result<Vec<String>, Error> {
        self.bound = omh_sdk::by_tag_index(tags, &self.tags)
            .into_iter()
            .map(|band| TagState {
                band: band.or(self.default),
                last_reported: None,
            })
            .collect();
        Ok(tags.to_vec())
    }

    fn process(&mut self, mut batch: Vec<TaggedReading>) -> Result<Vec<TaggedReading>, Error> {
        batch.retain(|reading| self.report(reading));
        Ok(batch)
    }
}

impl Deadband {
    /// Whether `reading` is passed on; remembers it when it is.
    fn report(&mut self, reading: &TaggedReading) -> bool {
        let state = &mut self.bound[reading.tag as usize];
        let Some(band) = &state.band else {
            return true;
        };
        let changed = match &state.last_reported {
            None => true,
            Some(last) => {
                reading.quality == Quality::Bad
                    || reading.quality != last.quality
                    || band.exceeded(&last.value, &reading.value)
                    || self
                        .heartbeat_ms
                        .is_some_and(|ms| reading.timestamp_ms - last.timestamp_ms >= ms)
            }
        };
        if changed {
            state.last_reported = Some(Reported {
                value: reading.value.clone(),
                quality: reading.quality,
                timestamp_ms: reading.timestamp_ms,
            });
        }
        changed
    }
}

#[cfg(target_arch = "wasm32")]
omh_sdk::export_transform!(Deadband);

#[cfg(test)]
mod tests {
    use super::*;

    /// Binds the tags the inputs name, feeds one reading per batch and
    /// returns the values that passed.
    fn passed(settings: &str, inputs: &[(&str, Value, Quality, i64)]) -> Vec<(String, Value)> {
        let mut deadband = Deadband::configure(settings).unwrap();
        let mut tags: Vec<String> = inputs.iter().map(|(tag, ..)| tag.to_string()).collect();
        tags.sort();
        tags.dedup();
        assert_eq!(deadband.bind(&tags).unwrap(), tags);
        let index = |tag: &str| tags.iter().position(|t| t == tag).unwrap() as u32;
        inputs
            .iter()
            .flat_map(|(tag, value, quality, timestamp_ms)| {
                let reading = TaggedReading {
                    tag: index(tag),
                    value: value.clone(),
                    quality: *quality,
                    timestamp_ms: *timestamp_ms,
                };
                deadband.process(vec![reading]).unwrap()
            })
            .map(|r| (tags[r.tag as usize].clone(), r.value))
            .collect()
    }

    use Quality::{Bad, Good, Uncertain};
    use Value::{Float, Int, Text};

    #[test]
    fn drops_readings_within_the_band_of_the_last_reported_value() {
        let settings = r#"{"tags": {"t": {"absolute": 0.5}}}"#;
        let inputs = [
            ("t", Float(10.0), Good, 0),
            ("t", Float(10.4), Good, 1),
            ("t", Float(10.5), Good, 2),
            // Against the last reported 10.0, not the last seen 10.5.
            ("t", Float(10.6), Good, 3),
            ("t", Float(10.2), Good, 4),
            ("other", Int(1), Good, 5),
            ("other", Int(1), Good, 6),
        ];
        let expected = [
            ("t", Float(10.0)),
            ("t", Float(10.6)),
            ("other", Int(1)),
            ("other", Int(1)),
        ];
        assert_eq!(
            passed(settings, &inputs),
            expected.map(|(t, v)| (t.to_string(), v))
        );
    }

    #[test]
    fn percent_is_of_the_last_reported_value() {
        let settings = r#"{"default": {"percent": 10}}"#;
        let inputs = [
            ("t", Int(200), Good, 0),
            ("t", Int(220), Good, 1),
            ("t", Int(179), Good, 2),
            ("t", Int(196), Good, 3),
            ("t", Int(0), Good, 4),
            ("t", Int(0), Good, 5),
            ("t", Int(1), Good, 6),
        ];
        let expected = [Int(200), Int(179), Int(0), Int(1)];
        assert_eq!(
            passed(settings, &inputs),
            expected.map(|v| ("t".to_string(), v))
        );
    }

    #[test]
    fn quality_changes_bad_readings_text_and_heartbeats_pass() {
        let settings = r#"{"default": {"absolute": 5}, "heartbeat_ms": 1000}"#;
        let inputs = [
            ("t", Int(1), Good, 0),
            ("t", Int(2), Uncertain, 10),
            ("t", Int(2), Bad, 20),
            ("t", Int(2), Bad, 30),
            ("t", Int(2), Good, 40),
            ("t", Int(3), Good, 1039),
            ("t", Int(3), Good, 1040),
            ("s", Text("RUN".into()), Good, 0),
            ("s", Text("RUN".into()), Good, 1),
            ("s", Text("STOP".into()), Good, 2),
            ("s", Int(1), Good, 3),
        ];
        let expected = [
            ("t", Int(1)),
            ("t", Int(2)),
            ("t", Int(2)),
            ("t", Int(2)),
            ("t", Int(2)),
            ("t", Int(3)),
            ("s", Text("RUN".into())),
            ("s", Text("STOP".into())),
            ("s", Int(1)),
        ];
        assert_eq!(
            passed(settings, &inputs),
            expected.map(|(t, v)| (t.to_string(), v))
        );
    }

    #[test]
    fn configure_errors_name_the_setting() {
        let cases = [
            (
                r#"{}"#,
                "no band: set `default = { absolute = ... }` or per-tag `tags = { NAME = { percent = ... } }`",
            ),
            (
                r#"{"tags": {"t": {"absolute": 1, "percent": 2}}}"#,
                "invalid setting `tags.t`: give `absolute` or `percent`, not both",
            ),
            (
                r#"{"default": {"absolute": -1}}"#,
                "invalid setting `default`: `absolute` is -1; a band is a finite number >= 0",
            ),
            (
                r#"{"default": {}, "heartbeat_ms": 0}"#,
                "invalid setting `heartbeat_ms`: 0 is not a positive duration",
            ),
            (
                r#"{"default": {"relative": 1}}"#,
                "invalid setting `default.relative`: unknown field `relative`, expected `absolute` or `percent` at line 1 column 23",
            ),
        ];
        for (settings, expected) in cases {
            let error = Deadband::configure(settings).err();
            assert_eq!(
                error,
                Some(Error::InvalidConfig(expected.into())),
                "{settings}"
            );
        }
    }
}
