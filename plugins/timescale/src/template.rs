//! EMQX-style SQL templates: `${name}` placeholders in plain SQL.
//!
//! A template is compiled once, at configure time, into a statement with
//! `$1..$n` parameters and the list of fields that fill them, so writing a
//! batch only looks values up. Placeholders:
//!
//! - `${timestamp}`: the message timestamp, bound as a timestamp;
//! - `${node}`, `${group}`: the message's device and group names, as text;
//! - `${<tag>}`: that tag's value (bool, int, float or text), or NULL when
//!   the tag was not read this poll.
//!
//! `'${name}'` (wrapped in single quotes) binds the value as text and drops
//! the quotes, since a bound parameter must not sit inside a SQL literal.
//! A placeholder used twice reuses its parameter.
//!
//! When the template is one `INSERT ... VALUES (...)` with every placeholder
//! inside the parenthesis, a batch is written as multi-row statements
//! (`VALUES (...), (...), ...`, [`CHUNK_ROWS`] rows each): one statement per
//! chunk instead of one per message.

use omh_sdk::{Error, Message, SqlValue, Value, sql};

/// Rows per multi-row statement: big enough to amortise the statement,
/// small enough for any database's parameter limit (SQLite: 32,766).
const CHUNK_ROWS: usize = 100;
const MAX_PARAMETERS: usize = 32_766;

/// A compiled template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    statement: String,
    parameters: Vec<Parameter>,
    /// The same insert for a chunk of rows, when the template allows it.
    multi_row: Option<MultiRow>,
}

#[derive(Debug, Clone, PartialEq)]
struct MultiRow {
    statement: String,
    rows: usize,
}

/// What fills one `$n`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Parameter {
    field: Field,
    as_text: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Field {
    Timestamp,
    Node,
    Group,
    Tag(String),
}

impl Field {
    fn named(name: &str) -> Self {
        match name {
            "timestamp" => Field::Timestamp,
            "node" => Field::Node,
            "group" => Field::Group,
            tag => Field::Tag(tag.to_string()),
        }
    }
}

impl Template {
    /// Compiles `template`, or explains what is wrong with it.
    pub fn parse(template: &str) -> Result<Self, Error> {
        let invalid = |why: String| Error::InvalidConfig(format!("invalid `template`: {why}"));
        let mut statement = String::with_capacity(template.len());
        let mut parameters: Vec<Parameter> = Vec::new();
        let mut rest = template;

        while let Some(open) = rest.find("${") {
            let (before, after_open) = (&rest[..open], &rest[open + 2..]);
            let close = after_open.find('}').ok_or_else(|| {
                invalid(format!(
                    "unterminated `${{` at byte {}",
                    template.len() - rest.len() + open
                ))
            })?;
            let name = &after_open[..close];
            if name.is_empty() || name.contains("${") {
                return Err(invalid(format!("bad placeholder `${{{name}}}`")));
            }
            let mut after = &after_open[close + 1..];
            let mut before = before;
            let quoted = before.ends_with('\'') && after.starts_with('\'');
            if quoted {
                before = &before[..before.len() - 1];
                after = &after[1..];
            }
            reject_positional_parameters(before).map_err(invalid)?;
            statement.push_str(before);

            let parameter = Parameter {
                field: Field::named(name),
                as_text: quoted,
            };
            let index = match parameters.iter().position(|known| *known == parameter) {
                Some(index) => index,
                None => {
                    parameters.push(parameter);
                    parameters.len() - 1
                }
            };
            statement.push_str(&format!("${}", index + 1));
            rest = after;
        }
        reject_positional_parameters(rest).map_err(invalid)?;
        statement.push_str(rest);
        let multi_row = multi_row(&statement, parameters.len());
        Ok(Self {
            statement,
            parameters,
            multi_row,
        })
    }

    /// Writes one row per message: full chunks through the multi-row
    /// statement, the rest through the single-row one.
    pub fn write(&self, batch: &[Message]) -> Result<u64, Error> {
        let rows: Vec<Vec<SqlValue>> = batch.iter().map(|message| self.row(message)).collect();
        let Some(multi) = self.multi_row.as_ref().filter(|m| rows.len() >= m.rows) else {
            return sql::execute(&self.statement, &rows);
        };
        let (chunked, rest) = rows.split_at(rows.len() - rows.len() % multi.rows);
        let chunks: Vec<Vec<SqlValue>> = chunked.chunks(multi.rows).map(<[_]>::concat).collect();
        let mut written = sql::execute(&multi.statement, &chunks)?;
        if !rest.is_empty() {
            written += sql::execute(&self.statement, rest)?;
        }
        Ok(written)
    }

    /// The parameter values for one message, in `$n` order.
    pub fn row(&self, message: &Message) -> Vec<SqlValue> {
        self.parameters
            .iter()
            .map(|parameter| {
                let value = field_value(&parameter.field, message);
                if parameter.as_text {
                    as_text(value)
                } else {
                    value
                }
            })
            .collect()
    }
}

/// The multi-row form of `statement`, if it is `... VALUES (<tuple>) ...`
/// with every parameter inside the one tuple.
fn multi_row(statement: &str, parameters: usize) -> Option<MultiRow> {
    if parameters == 0 {
        return None;
    }
    let (open, close) = values_tuple(statement)?;
    let (prefix, tuple, suffix) = (
        &statement[..open],
        &statement[open..=close],
        &statement[close + 1..],
    );
    if reject_positional_parameters(prefix).is_err()
        || reject_positional_parameters(suffix).is_err()
        || suffix.trim_start().starts_with(',')
    {
        return None;
    }
    let rows = CHUNK_ROWS.min(MAX_PARAMETERS / parameters);
    if rows < 2 {
        return None;
    }
    let tuples: Vec<String> = (0..rows)
        .map(|row| renumber(tuple, row * parameters))
        .collect();
    Some(MultiRow {
        statement: format!("{prefix}{}{suffix}", tuples.join(", ")),
        rows,
    })
}

/// Byte offsets of the parentheses of the tuple after the (one) `VALUES`
/// keyword, outside quotes.
fn values_tuple(statement: &str) -> Option<(usize, usize)> {
    let bytes = statement.as_bytes();
    let mut quote: Option<u8> = None;
    let mut found: Option<(usize, usize)> = None;
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        match quote {
            Some(q) if byte == q => quote = None,
            Some(_) => {}
            None if byte == b'\'' || byte == b'"' => quote = Some(byte),
            None if bytes.len() - i >= 6
                && bytes[i..i + 6].eq_ignore_ascii_case(b"values")
                && (i == 0 || !is_word(bytes[i - 1]))
                && bytes.get(i + 6).is_none_or(|b| !is_word(*b)) =>
            {
                if found.is_some() {
                    return None;
                }
                let open = i + 6 + statement[i + 6..].find(|c: char| !c.is_whitespace())?;
                if bytes[open] != b'(' {
                    return None;
                }
                let close = matching_parenthesis(statement, open)?;
                found = Some((open, close));
                i = close;
            }
            None => {}
        }
        i += 1;
    }
    found
}

fn is_word(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_'
}

fn matching_parenthesis(statement: &str, open: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut quote: Option<u8> = None;
    for (i, byte) in statement.bytes().enumerate().skip(open) {
        match (quote, byte) {
            (Some(q), b) if b == q => quote = None,
            (Some(_), _) => {}
            (None, b'\'' | b'"') => quote = Some(byte),
            (None, b'(') => depth += 1,
            (None, b')') => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

/// `tuple` with every `$n` turned into `$(n + offset)`.
fn renumber(tuple: &str, offset: usize) -> String {
    let mut out = String::with_capacity(tuple.len() + 8);
    let mut rest = tuple;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let digits = rest[dollar + 1..]
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len() - dollar - 1);
        match rest[dollar + 1..dollar + 1 + digits].parse::<usize>() {
            Ok(n) => out.push_str(&format!("${}", n + offset)),
            Err(_) => out.push('$'),
        }
        rest = &rest[dollar + 1 + digits..];
    }
    out.push_str(rest);
    out
}

/// `$1`-style parameters written by hand would collide with the generated
/// ones.
fn reject_positional_parameters(sql: &str) -> Result<(), String> {
    let mut dollars = sql.match_indices('$');
    match dollars.find(|(at, _)| sql[at + 1..].starts_with(|c: char| c.is_ascii_digit())) {
        Some((at, _)) => Err(format!(
            "positional parameter `{}` is not allowed; use `${{name}}` placeholders",
            &sql[at..(at + 2).min(sql.len())]
        )),
        None => Ok(()),
    }
}

fn field_value(field: &Field, message: &Message) -> SqlValue {
    match field {
        Field::Timestamp => SqlValue::TimestampMs(message.timestamp_ms),
        Field::Node => SqlValue::Text(message.node.clone()),
        Field::Group => SqlValue::Text(message.group.clone()),
        Field::Tag(tag) => {
            if message.errors.iter().any(|error| error.tag == *tag) {
                return SqlValue::Null;
            }
            match message.readings.iter().find(|reading| reading.tag == *tag) {
                Some(reading) => match &reading.value {
                    Value::Boolean(value) => SqlValue::Boolean(*value),
                    Value::Int(value) => SqlValue::Int(*value),
                    Value::Float(value) => SqlValue::Float(*value),
                    Value::Text(value) => SqlValue::Text(value.clone()),
                },
                None => SqlValue::Null,
            }
        }
    }
}

fn as_text(value: SqlValue) -> SqlValue {
    let text = match value {
        SqlValue::Null | SqlValue::Text(_) => return value,
        SqlValue::Boolean(value) => value.to_string(),
        SqlValue::Int(value) | SqlValue::TimestampMs(value) => value.to_string(),
        SqlValue::Float(value) => value.to_string(),
    };
    SqlValue::Text(text)
}

#[cfg(test)]
mod tests {
    use omh_sdk::{Quality, Reading, TagError};

    use super::*;

    fn parsed(template: &str) -> (String, Vec<Parameter>) {
        let template = Template::parse(template).unwrap();
        (template.statement, template.parameters)
    }

    fn parameter(field: Field, as_text: bool) -> Parameter {
        Parameter { field, as_text }
    }

    fn message() -> Message {
        let reading = |tag: &str, value| Reading {
            tag: tag.to_string(),
            value,
            quality: Quality::Good,
            timestamp_ms: 5,
        };
        Message {
            node: "boiler-1".to_string(),
            group: "fast".to_string(),
            timestamp_ms: 1_700_000_000_000,
            readings: vec![
                reading("temperature", Value::Float(21.5)),
                reading("humidity", Value::Int(40)),
                reading("running", Value::Boolean(true)),
            ],
            errors: vec![TagError {
                tag: "pressure".to_string(),
                code: 2,
                message: "illegal data address".to_string(),
            }],
        }
    }

    #[test]
    fn compiles_the_emqx_example() {
        let (statement, parameters) = parsed(
            "INSERT INTO conditions(time,temperature,humidity) VALUES (now(), ${temperature}, ${humidity})",
        );
        assert_eq!(
            statement,
            "INSERT INTO conditions(time,temperature,humidity) VALUES (now(), $1, $2)"
        );
        assert_eq!(
            parameters,
            vec![
                parameter(Field::Tag("temperature".into()), false),
                parameter(Field::Tag("humidity".into()), false),
            ]
        );
    }

    #[test]
    fn reserved_names_and_quotes() {
        let (statement, parameters) =
            parsed("INSERT INTO t VALUES (${timestamp}, '${node}', ${group}, '${humidity}')");
        assert_eq!(statement, "INSERT INTO t VALUES ($1, $2, $3, $4)");
        assert_eq!(
            parameters,
            vec![
                parameter(Field::Timestamp, false),
                parameter(Field::Node, true),
                parameter(Field::Group, false),
                parameter(Field::Tag("humidity".into()), true),
            ]
        );
    }

    #[test]
    fn repeated_placeholders_share_a_parameter() {
        let (statement, parameters) = parsed("SELECT ${a}, ${b}, ${a}, '${a}', '${a}'");
        assert_eq!(statement, "SELECT $1, $2, $1, $3, $3");
        assert_eq!(parameters.len(), 3);
    }

    #[test]
    fn one_sided_quote_is_kept() {
        let (statement, _) = parsed("SELECT '${a}, ${b}'");
        assert_eq!(statement, "SELECT '$1, $2'");
    }

    #[test]
    fn no_placeholders_is_fine() {
        assert_eq!(parsed("SELECT 1").0, "SELECT 1");
    }

    #[test]
    fn rejects_malformed_templates() {
        for template in [
            "SELECT ${a",
            "SELECT ${}",
            "SELECT ${a ${b}",
            "SELECT $1, ${a}",
            "${a} $2",
        ] {
            match Template::parse(template) {
                Err(Error::InvalidConfig(message)) => {
                    assert!(message.contains("template"), "{message}")
                }
                other => panic!("{template}: expected invalid-config, got {other:?}"),
            }
        }
    }

    #[test]
    fn a_values_insert_gets_a_multi_row_form() {
        let template = Template::parse(
            "INSERT INTO t(time, a) VALUES (${timestamp}, coalesce(${a}, 0)) ON CONFLICT DO NOTHING",
        )
        .unwrap();
        let multi = template.multi_row.unwrap();
        assert_eq!(multi.rows, CHUNK_ROWS);
        assert!(multi.statement.starts_with(
            "INSERT INTO t(time, a) VALUES ($1, coalesce($2, 0)), ($3, coalesce($4, 0)), ($5, "
        ));
        assert!(
            multi
                .statement
                .ends_with("($199, coalesce($200, 0)) ON CONFLICT DO NOTHING")
        );
    }

    #[test]
    fn other_shapes_stay_single_row() {
        for template in [
            "INSERT INTO t SELECT ${a}",
            "INSERT INTO t VALUES (${a}) ON CONFLICT (k) DO UPDATE SET a = ${b}",
            "INSERT INTO t VALUES (${a}), (${b})",
            "INSERT INTO t VALUES (1)",
            "INSERT INTO t VALUES (${a}); INSERT INTO u VALUES (${a})",
        ] {
            let parsed = Template::parse(template).unwrap();
            assert_eq!(parsed.multi_row, None, "{template}");
        }
        // `values` inside a literal or a name is not the keyword.
        let quoted =
            Template::parse("INSERT INTO \"values\"(v, é) VALUES ('values(', ${a})").unwrap();
        assert_eq!(
            quoted.multi_row.unwrap().statement[..60],
            "INSERT INTO \"values\"(v, é) VALUES ('values(', $1), ('values(', $2)"[..60]
        );
    }

    #[test]
    fn binds_a_row() {
        let template = Template::parse(
            "INSERT INTO t VALUES (${timestamp}, ${node}, ${temperature}, ${humidity}, ${running}, \
             ${pressure}, ${missing}, '${humidity}', '${timestamp}')",
        )
        .unwrap();
        assert_eq!(
            template.row(&message()),
            vec![
                SqlValue::TimestampMs(1_700_000_000_000),
                SqlValue::Text("boiler-1".into()),
                SqlValue::Float(21.5),
                SqlValue::Int(40),
                SqlValue::Boolean(true),
                SqlValue::Null,
                SqlValue::Null,
                SqlValue::Text("40".into()),
                SqlValue::Text("1700000000000".into()),
            ]
        );
    }
}
