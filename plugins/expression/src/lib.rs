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

mod formula;
mod lexer;
mod parser;

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use omh_sdk::{Error, Quality, Reading, Transform, Value};
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

/// Where an expression's input comes from.
enum Input {
    Own,
    Tag(String),
}

struct Compiled {
    formula: Formula,
    inputs: Vec<Input>,
}

pub struct Expression {
    tags: HashMap<String, Compiled>,
    computed: Vec<(String, Compiled)>,
    /// Whether any expression reads another tag (else no batch index).
    reads_tags: bool,
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
            Ok(Compiled { formula, inputs })
        };
        let tags: HashMap<String, Compiled> = settings
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
        let reads_tags = tags
            .values()
            .chain(computed.iter().map(|(_, compiled)| compiled))
            .any(|compiled| {
                compiled
                    .inputs
                    .iter()
                    .any(|input| matches!(input, Input::Tag(_)))
            });
        Ok(Self {
            tags,
            computed,
            reads_tags,
            scratch: Vec::new(),
        })
    }

    fn process(&mut self, mut batch: Vec<Reading>) -> Result<Vec<Reading>, Error> {
        let index: HashMap<&str, usize> = if self.reads_tags {
            batch
                .iter()
                .enumerate()
                .map(|(at, r)| (r.tag.as_str(), at))
                .collect()
        } else {
            HashMap::new()
        };
        let scratch = &mut self.scratch;
        let rewritten: Vec<(usize, Option<Outcome>)> = batch
            .iter()
            .enumerate()
            .filter_map(|(at, reading)| {
                let compiled = self.tags.get(&reading.tag)?;
                Some((
                    at,
                    compiled.evaluate(Some(reading), &batch, &index, scratch),
                ))
            })
            .collect();
        let computed: Vec<Reading> = self
            .computed
            .iter()
            .filter_map(|(tag, compiled)| {
                let outcome = compiled.evaluate(None, &batch, &index, scratch)?;
                Some(Reading {
                    tag: tag.clone(),
                    value: Value::Float(outcome.value),
                    quality: outcome.quality,
                    timestamp_ms: outcome.timestamp_ms,
                })
            })
            .collect();
        drop(index);
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
    /// `None` when an input tag is not in the batch.
    fn evaluate(
        &self,
        own: Option<&Reading>,
        batch: &[Reading],
        index: &HashMap<&str, usize>,
        scratch: &mut Vec<f64>,
    ) -> Option<Outcome> {
        scratch.clear();
        let mut quality = Quality::Good;
        let mut timestamp_ms = own.map_or(i64::MIN, |own| own.timestamp_ms);
        for input in &self.inputs {
            let reading = match input {
                Input::Own => own.expect("only `tags` expressions read their own value"),
                Input::Tag(tag) => &batch[*index.get(tag.as_str())?],
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
