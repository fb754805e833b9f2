//! expression: arithmetic on tag values. `tags = { NAME = "value * 0.1 + 2" }`
//! rewrites a tag's value (`value` is its own value; other names are tags
//! of the same batch); `computed = { NAME = "(a + b) / 2" }` adds new tags
//! computed from tags of the same batch. The syntax is in [`parser`].
//!
//! Every expression reads the batch as it came in, so their order does not
//! matter and a computed tag cannot read another computed tag. Results are
//! floats; booleans read as 0 and 1. The result's quality is the worst of
//! its inputs', and `bad` when an input is text or missing, or the result is
//! not a finite number (division by zero). A rewritten tag that is bad keeps
//! its original value; a computed tag with an input missing from the batch
//! is left out (the missing tag's own error explains the gap).
//!
//! At `bind`, names resolve to tag indexes: computed tags are appended to
//! the tag table, except those reading a tag the table lacks (they could
//! never be computed; the same settings may serve several groups), and a
//! computed tag named like an incoming tag is refused.

mod formula;
mod lexer;
mod parser;

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use omh_sdk::{Error, Quality, TaggedReading, Transform, Value};
use serde::Deserialize;

use crate::formula::Formula;

/// The name a per-tag expression uses for the tag's own value.
const OWN_VALUE: &str = "value";

#[derive(Debug, PartialEq)]
pub struct SyntaxError {
    column: usize,
    message: String,
}

impl SyntaxError {
    fn new(column: usize, message: String) -> Self {
        Self { column, message }
    }
}

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "column {}: {}", self.column, self.message)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    #[serde(default)]
    tags: BTreeMap<String, String>,
    #[serde(default)]
    computed: BTreeMap<String, String>,
}

/// Where an expression's input comes from, by name.
enum Input {
    Own,
    Tag(String),
}

/// Where an expression's input comes from once the tag table is bound.
#[derive(Clone, Copy)]
enum Source {
    Own,
    /// Index into [`Expression::positions`].
    Slot(usize),
    /// A tag the bound table does not have: never in a batch.
    Absent,
}

struct Compiled {
    formula: Formula,
    inputs: Vec<Input>,
    /// `inputs` resolved at `bind`.
    sources: Vec<Source>,
}

pub struct Expression {
    tags: Vec<(String, Compiled)>,
    computed: Vec<(String, Compiled)>,
    /// By input tag index: the entry of `tags` rewriting it.
    rewrite: Vec<Option<usize>>,
    /// By input tag index: the slot of a tag some expression reads.
    slot: Vec<Option<usize>>,
    /// Per slot: where its tag is in the batch being processed.
    positions: Vec<Option<usize>>,
    /// The computed tags emitted: (output tag index, entry of `computed`).
    emitted: Vec<(u32, usize)>,
    /// Input values of the expression being evaluated, reused per batch.
    scratch: Vec<f64>,
}

impl Transform for Expression {
    fn configure(settings: &str) -> Result<Self, Error> {
        let settings: Settings = omh_sdk::settings(settings)?;
        if settings.tags.is_empty() && settings.computed.is_empty() {
            return Err(Error::InvalidConfig(
                "no expressions: set `tags = { NAME = \"value * 0.1\" }` and/or `computed = { NAME = \"(a + b) / 2\" }`"
                    .into(),
            ));
        }
        let compile = |key: &str, text: &str, own_value: bool| {
            let invalid = |at: SyntaxError| {
                Error::InvalidConfig(format!("invalid setting `{key}`: `{text}`: {at}"))
            };
            let formula = parser::parse(text).map_err(invalid)?;
            if !own_value && formula.inputs.is_empty() {
                return Err(Error::InvalidConfig(format!(
                    "invalid setting `{key}`: `{text}` reads no tag; a constant is not a reading"
                )));
            }
            let inputs = formula
                .inputs
                .iter()
                .map(|(name, column)| match name.as_str() {
                    OWN_VALUE if own_value => Ok(Input::Own),
                    OWN_VALUE => Err(invalid(SyntaxError::new(
                        *column,
                        "`value` is only defined in `tags` expressions; name the tag to read"
                            .into(),
                    ))),
                    _ if settings.computed.contains_key(name) => Err(invalid(SyntaxError::new(
                        *column,
                        format!(
                            "`{name}` is a computed tag; expressions read the batch as it came in"
                        ),
                    ))),
                    _ => Ok(Input::Tag(name.clone())),
                })
                .collect::<Result<_, Error>>()?;
            Ok(Compiled {
                formula,
                inputs,
                sources: Vec::new(),
            })
        };
        let tags: Vec<(String, Compiled)> = settings
            .tags
            .iter()
            .map(|(tag, text)| Ok((tag.clone(), compile(&format!("tags.{tag}"), text, true)?)))
            .collect::<Result<_, Error>>()?;
        let computed: Vec<(String, Compiled)> = settings
            .computed
            .iter()
            .map(|(tag, text)| {
                Ok((
                    tag.clone(),
                    compile(&format!("computed.{tag}"), text, false)?,
                ))
            })
            .collect::<Result<_, Error>>()?;
        Ok(Self {
            tags,
            computed,
            rewrite: Vec::new(),
            slot: Vec::new(),
            positions: Vec::new(),
            emitted: Vec::new(),
            scratch: Vec::new(),
        })
    }

    fn bind(&mut self, tags: &[String]) -> Result<Vec<String>, Error> {
        let index: HashMap<&str, usize> = tags
            .iter()
            .enumerate()
            .map(|(at, tag)| (tag.as_str(), at))
            .collect();
        if let Some((name, _)) = self
            .computed
            .iter()
            .find(|(name, _)| index.contains_key(name.as_str()))
        {
            return Err(Error::InvalidConfig(format!(
                "invalid setting `computed.{name}`: `{name}` is already a tag of this group"
            )));
        }
        self.rewrite = vec![None; tags.len()];
        self.slot = vec![None; tags.len()];
        let mut slots = 0;
        for (entry, (name, compiled)) in self.tags.iter_mut().enumerate() {
            if let Some(&at) = index.get(name.as_str()) {
                self.rewrite[at] = Some(entry);
            }
            compiled.bind(&index, &mut self.slot, &mut slots);
        }
        let mut output = tags.to_vec();
        self.emitted.clear();
        for (entry, (name, compiled)) in self.computed.iter_mut().enumerate() {
            compiled.bind(&index, &mut self.slot, &mut slots);
            if compiled
                .sources
                .iter()
                .all(|source| !matches!(source, Source::Absent))
            {
                self.emitted.push((output.len() as u32, entry));
                output.push(name.clone());
            }
        }
        self.positions = vec![None; slots];
        Ok(output)
    }

    fn process(&mut self, mut batch: Vec<TaggedReading>) -> Result<Vec<TaggedReading>, Error> {
        if !self.positions.is_empty() {
            self.positions.fill(None);
            for (at, reading) in batch.iter().enumerate() {
                if let Some(slot) = self.slot[reading.tag as usize] {
                    self.positions[slot] = Some(at);
                }
            }
        }
        let (positions, scratch) = (&self.positions, &mut self.scratch);
        let rewritten: Vec<(usize, Option<Outcome>)> = batch
            .iter()
            .enumerate()
            .filter_map(|(at, reading)| {
                let (_, compiled) = &self.tags[self.rewrite[reading.tag as usize]?];
                Some((
                    at,
                    compiled.evaluate(Some(reading), &batch, positions, scratch),
                ))
            })
            .collect();
        let computed: Vec<TaggedReading> = self
            .emitted
            .iter()
            .filter_map(|&(tag, entry)| {
                let (_, compiled) = &self.computed[entry];
                let outcome = compiled.evaluate(None, &batch, positions, scratch)?;
                Some(TaggedReading {
                    tag,
                    value: Value::Float(outcome.value),
                    quality: outcome.quality,
                    timestamp_ms: outcome.timestamp_ms,
                })
            })
            .collect();
        for (at, outcome) in rewritten {
            let reading = &mut batch[at];
            match outcome {
                Some(outcome) if outcome.quality != Quality::Bad => {
                    reading.value = Value::Float(outcome.value);
                    reading.quality = outcome.quality;
                }
                _ => reading.quality = Quality::Bad,
            }
        }
        batch.extend(computed);
        Ok(batch)
    }
}

/// An expression's result for one batch.
struct Outcome {
    value: f64,
    quality: Quality,
    /// The latest of the inputs' timestamps.
    timestamp_ms: i64,
}

impl Compiled {
    /// Resolves the inputs against the tag table (`index`: name to tag
    /// index), giving each tag read a slot (`slot`, by tag index; `slots`
    /// counts them).
    fn bind(
        &mut self,
        index: &HashMap<&str, usize>,
        slot: &mut [Option<usize>],
        slots: &mut usize,
    ) {
        self.sources = self
            .inputs
            .iter()
            .map(|input| match input {
                Input::Own => Source::Own,
                Input::Tag(name) => match index.get(name.as_str()) {
                    Some(&at) => Source::Slot(*slot[at].get_or_insert_with(|| {
                        *slots += 1;
                        *slots - 1
                    })),
                    None => Source::Absent,
                },
            })
            .collect();
    }

    /// `None` when an input tag is not in the batch (`positions`: where
    /// each slot's tag is in `batch`).
    fn evaluate(
        &self,
        own: Option<&TaggedReading>,
        batch: &[TaggedReading],
        positions: &[Option<usize>],
        scratch: &mut Vec<f64>,
    ) -> Option<Outcome> {
        scratch.clear();
        let mut quality = Quality::Good;
        let mut timestamp_ms = own.map_or(i64::MIN, |own| own.timestamp_ms);
        for source in &self.sources {
            let reading = match *source {
                Source::Own => own.expect("only `tags` expressions read their own value"),
                Source::Slot(slot) => &batch[positions[slot]?],
                Source::Absent => return None,
            };
            let number = match reading.value {
                Value::Int(i) => i as f64,
                Value::Float(f) => f,
                Value::Boolean(b) => f64::from(u8::from(b)),
                Value::Text(_) => {
                    quality = Quality::Bad;
                    f64::NAN
                }
            };
            scratch.push(number);
            quality = worse(quality, reading.quality);
            timestamp_ms = timestamp_ms.max(reading.timestamp_ms);
        }
        let value = self.formula.root.eval(scratch);
        if !value.is_finite() {
            quality = Quality::Bad;
        }
        Some(Outcome {
            value,
            quality,
            timestamp_ms,
        })
    }
}

fn worse(a: Quality, b: Quality) -> Quality {
    let rank = |quality| match quality {
        Quality::Good => 0,
        Quality::Uncertain => 1,
        Quality::Bad => 2,
    };
    if rank(b) > rank(a) { b } else { a }
}

#[cfg(target_arch = "wasm32")]
omh_sdk::export_transform!(Expression);

#[cfg(test)]
mod tests;
