//! The narrow mapping: one row per reading, in a table every site can share:
//!
//! ```sql
//! readings(time TIMESTAMPTZ, site TEXT, device TEXT, tag TEXT,
//!          value_double DOUBLE PRECISION, value_text TEXT, quality TEXT)
//! ```
//!
//! Numbers and booleans (as 0/1) go to `value_double`, strings to
//! `value_text`. A tag that failed this poll gets a row too, with quality
//! `bad` and no value, so gaps are visible in the data.

use omh_sdk::{Error, Message, Quality, SqlValue, Value, sql};

pub struct Narrow {
    table: String,
    columns: Vec<String>,
    site: String,
}

const COLUMNS: [&str; 7] = [
    "time",
    "site",
    "device",
    "tag",
    "value_double",
    "value_text",
    "quality",
];

impl Narrow {
    pub fn new(table: String, site: String) -> Result<Self, Error> {
        if table.trim().is_empty() {
            return Err(Error::InvalidConfig("setting `table` is empty".into()));
        }
        if site.trim().is_empty() {
            return Err(Error::InvalidConfig("setting `site` is empty".into()));
        }
        Ok(Self {
            table,
            columns: COLUMNS.map(String::from).to_vec(),
            site,
        })
    }

    pub fn write(&self, batch: &[Message]) -> Result<u64, Error> {
        sql::copy_rows(&self.table, &self.columns, &self.rows(batch))
    }

    fn rows(&self, batch: &[Message]) -> Vec<Vec<SqlValue>> {
        let mut rows = Vec::with_capacity(
            batch
                .iter()
                .map(|m| m.readings.len() + m.errors.len())
                .sum(),
        );
        for message in batch {
            let device = SqlValue::Text(message.node.clone());
            for reading in &message.readings {
                let (double, text) = match &reading.value {
                    Value::Boolean(b) => (SqlValue::Float(f64::from(u8::from(*b))), SqlValue::Null),
                    Value::Int(i) => (SqlValue::Float(*i as f64), SqlValue::Null),
                    Value::Float(f) => (SqlValue::Float(*f), SqlValue::Null),
                    Value::Text(t) => (SqlValue::Null, SqlValue::Text(t.clone())),
                };
                rows.push(vec![
                    SqlValue::TimestampMs(reading.timestamp_ms),
                    SqlValue::Text(self.site.clone()),
                    device.clone(),
                    SqlValue::Text(reading.tag.clone()),
                    double,
                    text,
                    SqlValue::Text(quality_name(reading.quality).into()),
                ]);
            }
            for error in &message.errors {
                rows.push(vec![
                    SqlValue::TimestampMs(message.timestamp_ms),
                    SqlValue::Text(self.site.clone()),
                    device.clone(),
                    SqlValue::Text(error.tag.clone()),
                    SqlValue::Null,
                    SqlValue::Null,
                    SqlValue::Text(quality_name(Quality::Bad).into()),
                ]);
            }
        }
        rows
    }
}

fn quality_name(quality: Quality) -> &'static str {
    match quality {
        Quality::Good => "good",
        Quality::Bad => "bad",
        Quality::Uncertain => "uncertain",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use omh_sdk::{Reading, TagError};

    #[test]
    fn one_row_per_reading_and_per_failed_tag() {
        let narrow = Narrow::new("readings".into(), "plant-1".into()).unwrap();
        let reading = |tag: &str, value, quality| Reading {
            tag: tag.into(),
            value,
            quality,
            timestamp_ms: 1_000,
        };
        let message = Message {
            node: "boiler".into(),
            group: "fast".into(),
            timestamp_ms: 2_000,
            readings: vec![
                reading("t", Value::Int(290), Quality::Good),
                reading("on", Value::Boolean(true), Quality::Uncertain),
                reading("name", Value::Text("B-1".into()), Quality::Good),
            ],
            errors: vec![TagError {
                tag: "p".into(),
                code: 2,
                message: "illegal data address".into(),
            }],
        };
        let rows = narrow.rows(&[message]);
        let text = |s: &str| SqlValue::Text(s.into());
        assert_eq!(
            rows,
            vec![
                vec![
                    SqlValue::TimestampMs(1_000),
                    text("plant-1"),
                    text("boiler"),
                    text("t"),
                    SqlValue::Float(290.0),
                    SqlValue::Null,
                    text("good")
                ],
                vec![
                    SqlValue::TimestampMs(1_000),
                    text("plant-1"),
                    text("boiler"),
                    text("on"),
                    SqlValue::Float(1.0),
                    SqlValue::Null,
                    text("uncertain")
                ],
                vec![
                    SqlValue::TimestampMs(1_000),
                    text("plant-1"),
                    text("boiler"),
                    text("name"),
                    SqlValue::Null,
                    text("B-1"),
                    text("good")
                ],
                vec![
                    SqlValue::TimestampMs(2_000),
                    text("plant-1"),
                    text("boiler"),
                    text("p"),
                    SqlValue::Null,
                    SqlValue::Null,
                    text("bad")
                ],
            ]
        );
    }

    #[test]
    fn empty_names_are_refused() {
        assert!(Narrow::new(" ".into(), "s".into()).is_err());
        assert!(Narrow::new("readings".into(), "".into()).is_err());
    }
}
