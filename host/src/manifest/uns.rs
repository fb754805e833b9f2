//! `[broker.uns]`: the unified-namespace topic of each tag, e.g.
//! `{enterprise}/{site}/{area}/{line}/{device}/{tag}`. Parsed once at
//! configure time into a per-group prefix and suffix around the tag, so the
//! hot path only concatenates.

use super::validate::Problems;
use serde::Deserialize;

pub const DEFAULT_UNS_TOPIC: &str = "{enterprise}/{site}/{area}/{line}/{device}/{tag}";
const PLACEHOLDERS: [&str; 7] = [
    "enterprise",
    "site",
    "area",
    "line",
    "device",
    "group",
    "tag",
];

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnsSection {
    /// Topic of each tag's value. A level that is only a placeholder whose
    /// value is unset (a device without `area`, say) is left out.
    #[serde(default = "default_topic")]
    pub topic: String,
    /// Publish retained, so a client that subscribes later sees the last
    /// value at once.
    #[serde(default = "yes")]
    pub retain: bool,
}

/// Where one group's tags are published: `{prefix}{tag}{suffix}`.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupTopics {
    prefix: String,
    suffix: String,
}

impl GroupTopics {
    pub fn topic(&self, tag: &str) -> String {
        let mut topic = String::with_capacity(self.prefix.len() + tag.len() + self.suffix.len());
        topic.push_str(&self.prefix);
        topic.push_str(tag);
        topic.push_str(&self.suffix);
        topic
    }
}

/// Values of the placeholders other than `{tag}` for one group.
pub struct Place<'a> {
    pub enterprise: Option<&'a str>,
    pub site: &'a str,
    pub area: Option<&'a str>,
    pub line: Option<&'a str>,
    pub device: &'a str,
    pub group: &'a str,
}

impl Place<'_> {
    fn value(&self, placeholder: &str) -> Option<&str> {
        match placeholder {
            "enterprise" => self.enterprise,
            "site" => Some(self.site),
            "area" => self.area,
            "line" => self.line,
            "device" => Some(self.device),
            "group" => Some(self.group),
            _ => None,
        }
    }
}

/// A checked `[broker.uns]` topic template.
#[derive(Debug, Clone, PartialEq)]
pub struct UnsTemplate {
    levels: Vec<String>,
}

impl UnsTemplate {
    pub fn parse(template: &str) -> Result<Self, String> {
        let mut rest = template;
        let mut tags = 0;
        while let Some(at) = rest.find(['{', '}']) {
            if rest[at..].starts_with('}') {
                return Err(format!("\"{template}\" has a '}}' without '{{'"));
            }
            let close = rest[at..]
                .find('}')
                .ok_or_else(|| format!("\"{template}\" has a '{{' without '}}'"))?;
            let name = &rest[at + 1..at + close];
            if !PLACEHOLDERS.contains(&name) {
                return Err(format!(
                    "\"{template}\" has an unknown placeholder {{{name}}} (known: {})",
                    PLACEHOLDERS.map(|p| format!("{{{p}}}")).join(", ")
                ));
            }
            tags += usize::from(name == "tag");
            rest = &rest[at + close + 1..];
        }
        if tags != 1 {
            return Err(format!(
                "\"{template}\" must contain {{tag}} exactly once: each tag has its own topic"
            ));
        }
        if template.contains(['+', '#']) {
            return Err(format!("\"{template}\" contains an MQTT wildcard"));
        }
        Ok(Self {
            levels: template.split('/').map(str::to_string).collect(),
        })
    }

    /// The topics of one group's tags.
    pub fn group(&self, place: &Place) -> GroupTopics {
        // The tag's own value is marked by a character no topic contains,
        // then the rendered topic is cut there.
        const TAG_MARK: char = '\0';
        let mut levels = Vec::with_capacity(self.levels.len());
        for level in &self.levels {
            let whole = level
                .strip_prefix('{')
                .and_then(|l| l.strip_suffix('}'))
                .filter(|name| !name.contains(['{', '}']));
            if let Some(name) = whole
                && name != "tag"
                && place.value(name).is_none_or(str::is_empty)
            {
                continue;
            }
            let mut rendered = level.replace("{tag}", &TAG_MARK.to_string());
            for name in PLACEHOLDERS {
                if name != "tag" {
                    let value = place.value(name).unwrap_or_default();
                    rendered = rendered.replace(&format!("{{{name}}}"), value);
                }
            }
            levels.push(rendered);
        }
        let topic = levels.join("/");
        let (prefix, suffix) = topic
            .split_once(TAG_MARK)
            .expect("the template has {tag} (checked by parse)");
        GroupTopics {
            prefix: prefix.to_string(),
            suffix: suffix.to_string(),
        }
    }
}

/// Names that become topic levels must not be MQTT wildcards or split a
/// level in two.
pub(super) fn check_level(at: String, value: &str, problems: &mut Problems) {
    if value.contains(['+', '#', '/']) {
        problems.add(
            at,
            format!(
                "\"{value}\" cannot be a topic level of the unified namespace (no '+', '#' or '/')"
            ),
        );
    }
}

fn default_topic() -> String {
    DEFAULT_UNS_TOPIC.into()
}

fn yes() -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn place<'a>(area: Option<&'a str>, line: Option<&'a str>) -> Place<'a> {
        Place {
            enterprise: Some("acme"),
            site: "plant1",
            area,
            line,
            device: "press",
            group: "g",
        }
    }

    #[test]
    fn renders_isa95_levels() {
        let template = UnsTemplate::parse(DEFAULT_UNS_TOPIC).unwrap();
        let topics = template.group(&place(Some("hall"), Some("l1")));
        assert_eq!(
            topics.topic("temperature"),
            "acme/plant1/hall/l1/press/temperature"
        );
    }

    #[test]
    fn leaves_out_unset_levels() {
        let template = UnsTemplate::parse(DEFAULT_UNS_TOPIC).unwrap();
        assert_eq!(
            template.group(&place(None, None)).topic("t"),
            "acme/plant1/press/t"
        );
        let template = UnsTemplate::parse("x/{area}-{line}/{tag}/value").unwrap();
        assert_eq!(
            template.group(&place(None, Some("l"))).topic("t"),
            "x/-l/t/value"
        );
    }

    #[test]
    fn rejects_bad_templates() {
        for bad in [
            "a/{device}",
            "{tag}/{tag}",
            "a/{zone}/{tag}",
            "a/+/{tag}",
            "a/{tag",
            "a}/{tag}",
        ] {
            assert!(UnsTemplate::parse(bad).is_err(), "{bad}");
        }
    }
}
