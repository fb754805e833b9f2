use super::*;

fn reading(tag: &str, value: Value, quality: Quality, timestamp_ms: i64) -> Reading {
    Reading {
        tag: tag.into(),
        value,
        quality,
        timestamp_ms,
    }
}

use Quality::{Bad, Good, Uncertain};
use Value::{Float, Int, Text};

#[test]
fn rewrites_tags_and_computes_new_ones_from_the_batch_as_it_came_in() {
    let mut expression = Expression::configure(
        r#"{"tags": {"a": "value * 0.5 + 2", "b": "value + a"},
            "computed": {"mean": "(a + b) / 2", "ratio": "a / c", "missing": "a + nowhere"}}"#,
    )
    .unwrap();
    let output = expression
        .process(vec![
            reading("a", Int(10), Good, 100),
            reading("b", Float(4.0), Uncertain, 200),
            reading("c", Int(0), Good, 300),
        ])
        .unwrap();
    assert_eq!(
        output,
        [
            reading("a", Float(7.0), Good, 100),
            // `a` is read as it came in: 4 + 10.
            reading("b", Float(14.0), Uncertain, 200),
            reading("c", Int(0), Good, 300),
            reading("mean", Float(7.0), Uncertain, 200),
            // Division by zero: infinite, so bad.
            reading("ratio", Float(f64::INFINITY), Bad, 300),
        ]
    );
}

#[test]
fn text_inputs_make_results_bad_and_keep_the_original_value() {
    let mut expression =
        Expression::configure(r#"{"tags": {"s": "value * 2"}, "computed": {"twice": "s * 2"}}"#)
            .unwrap();
    let output = expression
        .process(vec![reading("s", Text("RUN".into()), Good, 5)])
        .unwrap();
    assert_eq!(output[0], reading("s", Text("RUN".into()), Bad, 5));
    assert_eq!(
        (&output[1].tag, output[1].quality),
        (&"twice".to_string(), Bad)
    );
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
