use super::*;

fn reading(tag: u32, value: Value, quality: Quality, timestamp_ms: i64) -> TaggedReading {
    TaggedReading {
        tag,
        value,
        quality,
        timestamp_ms,
    }
}

/// Configured and bound to `tags`; returns the output table too.
fn bound(settings: &str, tags: &[&str]) -> (Expression, Vec<String>) {
    let mut expression = Expression::configure(settings).unwrap();
    let tags: Vec<String> = tags.iter().map(|tag| tag.to_string()).collect();
    let output = expression.bind(&tags).unwrap();
    (expression, output)
}

use Quality::{Bad, Good, Uncertain};
use Value::{Float, Int, Text};

#[test]
fn rewrites_tags_and_computes_new_ones_from_the_batch_as_it_came_in() {
    let (mut expression, tags) = bound(
        r#"{"tags": {"a": "value * 0.5 + 2", "b": "value + a", "elsewhere": "value * 2"},
            "computed": {"mean": "(a + b) / 2", "ratio": "a / c", "missing": "a + nowhere"}}"#,
        &["c", "b", "a"],
    );
    // `missing` reads a tag this group does not have: it is never emitted.
    assert_eq!(tags, ["c", "b", "a", "mean", "ratio"]);
    let output = expression
        .process(vec![
            reading(2, Int(10), Good, 100),
            reading(1, Float(4.0), Uncertain, 200),
            reading(0, Int(0), Good, 300),
        ])
        .unwrap();
    assert_eq!(
        output,
        [
            reading(2, Float(7.0), Good, 100),
            // `a` is read as it came in: 4 + 10.
            reading(1, Float(14.0), Uncertain, 200),
            reading(0, Int(0), Good, 300),
            reading(3, Float(7.0), Uncertain, 200),
            // Division by zero: infinite, so bad.
            reading(4, Float(f64::INFINITY), Bad, 300),
        ]
    );
    // `c` missing from this batch: `ratio` is left out, `mean` is not.
    let output = expression
        .process(vec![
            reading(2, Int(10), Good, 400),
            reading(1, Int(4), Good, 400),
        ])
        .unwrap();
    let emitted: Vec<u32> = output.iter().map(|r| r.tag).collect();
    assert_eq!(emitted, [2, 1, 3]);
}

#[test]
fn text_inputs_make_results_bad_and_keep_the_original_value() {
    let (mut expression, _) = bound(
        r#"{"tags": {"s": "value * 2"}, "computed": {"twice": "s * 2"}}"#,
        &["s"],
    );
    let output = expression
        .process(vec![reading(0, Text("RUN".into()), Good, 5)])
        .unwrap();
    assert_eq!(output[0], reading(0, Text("RUN".into()), Bad, 5));
    assert_eq!((output[1].tag, output[1].quality), (1, Bad));
}

#[test]
fn configure_errors_name_the_setting_the_column_and_what_was_expected() {
    let cases = [
        (
            r#"{}"#,
            "no expressions: set `tags = { NAME = \"value * 0.1\" }` and/or `computed = { NAME = \"(a + b) / 2\" }`",
        ),
        (
            r#"{"tags": {"t": "value * * 0.1"}}"#,
            "invalid setting `tags.t`: `value * * 0.1`: column 9: expected a number, a tag name, `(` or `-`, found `*`",
        ),
        (
            r#"{"computed": {"avg": "(value + b) / 2"}}"#,
            "invalid setting `computed.avg`: `(value + b) / 2`: column 2: `value` is only defined in `tags` expressions; name the tag to read",
        ),
        (
            r#"{"computed": {"x": "a + 1", "y": "x * 2"}}"#,
            "invalid setting `computed.y`: `x * 2`: column 1: `x` is a computed tag; expressions read the batch as it came in",
        ),
        (
            r#"{"computed": {"k": "2 * 21"}}"#,
            "invalid setting `computed.k`: `2 * 21` reads no tag; a constant is not a reading",
        ),
        (
            r#"{"tags": {"t": 5}}"#,
            "invalid setting `tags.t`: invalid type: integer `5`, expected a string at line 1 column 16",
        ),
    ];
    for (settings, expected) in cases {
        let error = Expression::configure(settings).err();
        assert_eq!(
            error,
            Some(Error::InvalidConfig(expected.into())),
            "{settings}"
        );
    }
}

#[test]
fn bind_refuses_a_computed_tag_named_like_an_incoming_one() {
    let mut expression = Expression::configure(r#"{"computed": {"b": "a * 2"}}"#).unwrap();
    let tags = ["a", "b"].map(String::from);
    assert_eq!(
        expression.bind(&tags).err(),
        Some(Error::InvalidConfig(
            "invalid setting `computed.b`: `b` is already a tag of this group".into()
        ))
    );
}
