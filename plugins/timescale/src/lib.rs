//! TimescaleDB (or any SQL) sink for `omh-host`: one row per group message,
//! through an EMQX-style SQL template (see [`template`]).
//!
//! Settings: `template` (required), e.g.
//! `INSERT INTO conditions(time,temperature,humidity) VALUES (now(), ${temperature}, ${humidity})`.

mod template;

use omh_sdk::{Error, Message, Sink, SqlValue, sql};
use serde::Deserialize;

use crate::template::Template;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    template: String,
}

struct Timescale {
    template: Template,
}

impl Sink for Timescale {
    fn configure(settings: &str) -> Result<Self, Error> {
        let settings: Settings = omh_sdk::settings(settings)?;
        Ok(Self {
            template: Template::parse(&settings.template)?,
        })
    }

    fn write(&mut self, batch: Vec<Message>) -> Result<u64, Error> {
        if batch.is_empty() {
            return Ok(0);
        }
        let rows: Vec<Vec<SqlValue>> = batch
            .iter()
            .map(|message| self.template.row(message))
            .collect();
        // One call: the host runs the whole batch in one transaction.
        sql::execute(self.template.statement(), &rows)
    }
}

omh_sdk::export_sink!(Timescale);
