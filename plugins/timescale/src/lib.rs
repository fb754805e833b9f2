//! TimescaleDB (or any SQL) sink for `omh-host`. Two mappings:
//!
//! - `template` (the seed's "wide" mapping): one row per group message,
//!   through an EMQX-style SQL template (see [`template`]), e.g.
//!   `INSERT INTO conditions(time,temperature,humidity) VALUES (${timestamp}, ${temperature}, ${humidity})`;
//! - `narrow`: one row per reading into
//!   `readings(time, site, device, tag, value_double, value_text, quality)`
//!   by binary COPY, which needs no schema work per site (see [`narrow`]).
//!
//! Settings: `mapping` (`"template"` or `"narrow"`; default `"template"`),
//! `template` (template mapping), `table` (narrow; default `readings`) and
//! `site` (narrow; the value of the `site` column, default `omh`).

mod narrow;
mod template;

use omh_sdk::{Error, Message, Sink};
use serde::Deserialize;

use crate::narrow::Narrow;
use crate::template::Template;

#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "lowercase")]
enum MappingKind {
    #[default]
    Template,
    Narrow,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    #[serde(default)]
    mapping: MappingKind,
    template: Option<String>,
    table: Option<String>,
    site: Option<String>,
}

enum Timescale {
    Template(Template),
    Narrow(Narrow),
}

impl Sink for Timescale {
    fn configure(settings: &str) -> Result<Self, Error> {
        let settings: Settings = omh_sdk::settings(settings)?;
        let misplaced = |setting: &str, mapping: &str| {
            Error::InvalidConfig(format!(
                "setting `{setting}` does not apply to mapping `{mapping}`"
            ))
        };
        match settings.mapping {
            MappingKind::Template => {
                if settings.table.is_some() {
                    return Err(misplaced("table", "template"));
                }
                if settings.site.is_some() {
                    return Err(misplaced("site", "template"));
                }
                let template = settings.template.ok_or_else(|| {
                    Error::InvalidConfig(
                        "missing setting `template` (or set `mapping = \"narrow\"`)".into(),
                    )
                })?;
                Ok(Self::Template(Template::parse(&template)?))
            }
            MappingKind::Narrow => {
                if settings.template.is_some() {
                    return Err(misplaced("template", "narrow"));
                }
                Ok(Self::Narrow(Narrow::new(
                    settings.table.unwrap_or_else(|| "readings".into()),
                    settings.site.unwrap_or_else(|| "omh".into()),
                )?))
            }
        }
    }

    fn write(&mut self, batch: Vec<Message>) -> Result<u64, Error> {
        if batch.is_empty() {
            return Ok(0);
        }
        // The host runs every call of one `write` in one transaction.
        match self {
            Self::Template(template) => template.write(&batch),
            Self::Narrow(narrow) => narrow.write(&batch),
        }
    }
}

omh_sdk::export_sink!(Timescale);
omh_sdk::describe_settings!(
    "mapping   \"template\" | \"narrow\"  (default \"template\")
template  SQL with ${tag}, ${timestamp}, ${node}, ${group} placeholders; one row per group message (template mapping)
table     (default \"readings\")  narrow mapping: table with columns time, site, device, tag, value_double, value_text, quality
site      (default \"omh\")       narrow mapping: value of the site column
See plugins/timescale/README.md"
);
