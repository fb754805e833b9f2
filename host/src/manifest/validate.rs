//! Checks a parsed manifest for what serde types cannot express. All problems
//! are collected, not just the first, so one `omh-host check` run shows them.

use super::uns::{UnsTemplate, check_level};
use super::{BACKUP_ENDPOINT_SETTING, Limits, Manifest, Problem, UplinkSection};
use crate::simulator::RegisterAddress;
use std::collections::HashSet;
use std::time::Duration;

/// Shortest poll interval accepted: below it a Modbus device cannot answer.
const MIN_INTERVAL: Duration = Duration::from_millis(10);
const MAX_RESTART_BACKOFF: Duration = Duration::from_secs(24 * 3600);
/// A plugin instance needs a few pages of stack and heap to start at all.
const MIN_MEMORY_LIMIT: u64 = 1 << 20;

/// The broker topic of one group's messages, e.g. `/neuron/app/{device}/{group}`.
#[derive(Debug, Clone)]
pub struct TopicTemplate(String);

impl TopicTemplate {
    pub fn render(&self, device: &str, group: &str) -> String {
        self.0.replace("{device}", device).replace("{group}", group)
    }
}

/// Checks everything; returns the group topic template and, when
/// `[broker.uns]` is on, the per-tag one.
pub fn validate(manifest: &Manifest) -> Result<(TopicTemplate, Option<UnsTemplate>), Vec<Problem>> {
    let mut problems = Problems::default();
    let topic = check_topic_template(&manifest.broker.topic, &mut problems);
    for (key, topic) in [
        ("broker.write_topic", &manifest.broker.write_topic),
        (
            "broker.write_response_topic",
            &manifest.broker.write_response_topic,
        ),
    ] {
        if topic.is_empty() || topic.contains(['+', '#']) {
            problems.add(
                key.into(),
                format!("\"{topic}\" is not a topic name (no wildcards)"),
            );
        }
    }
    let uns = super::broker::validate(&manifest.broker, &mut problems);
    if manifest.broker.uns.is_some() {
        check_uns_levels(manifest, &mut problems);
    }
    check_limits("plugins.limits", &manifest.plugins.limits, &mut problems);

    for (name, simulator) in &manifest.simulators {
        for (i, register) in simulator.registers.iter().enumerate() {
            let at = format!("simulators.{name}.registers[{i}]");
            if let Err(message) = register.address.parse::<RegisterAddress>() {
                problems.add(format!("{at}.address"), message);
            }
            if register.min > register.max {
                problems.add(
                    format!("{at}.min"),
                    format!("{} is greater than max {}", register.min, register.max),
                );
            }
        }
    }

    for (name, device) in &manifest.devices {
        let at = format!("devices.{name}");
        if device.driver.trim().is_empty() {
            problems.add(format!("{at}.driver"), "must name a driver plugin".into());
        }
        if let Err(message) = check_endpoint(&device.endpoint) {
            problems.add(format!("{at}.endpoint"), message);
        }
        if let Some(Err(message)) = device.backup_endpoint.as_deref().map(check_endpoint) {
            problems.add(format!("{at}.backup_endpoint"), message);
        }
        if device.settings.contains_key(BACKUP_ENDPOINT_SETTING) {
            problems.add(
                format!("{at}.settings.{BACKUP_ENDPOINT_SETTING}"),
                "set backup_endpoint on the device, next to endpoint: only then may the driver reach it".into(),
            );
        }
        check_limits(&format!("{at}.limits"), &device.limits, &mut problems);
        if device.groups.is_empty() {
            problems.add(
                format!("{at}.groups"),
                "a device needs at least one group".into(),
            );
        }
        for (group_name, group) in &device.groups {
            let at = format!("{at}.groups.{group_name}");
            if group.interval < MIN_INTERVAL {
                problems.add(
                    format!("{at}.interval"),
                    format!(
                        "{} is shorter than the minimum {}",
                        humantime::format_duration(group.interval),
                        humantime::format_duration(MIN_INTERVAL)
                    ),
                );
            }
            for transform in &group.transforms {
                if !manifest.transforms.contains_key(transform) {
                    problems.add(
                        format!("{at}.transforms"),
                        format!("\"{transform}\" is not a transform defined under [transforms]"),
                    );
                }
            }
            if group.tags.is_empty() {
                problems.add(
                    format!("{at}.tags"),
                    "a group needs at least one tag".into(),
                );
            }
            let mut seen = HashSet::new();
            for (i, tag) in group.tags.iter().enumerate() {
                if tag.name.trim().is_empty() {
                    problems.add(format!("{at}.tags[{i}].name"), "must not be empty".into());
                } else if !seen.insert(tag.name.as_str()) {
                    problems.add(
                        format!("{at}.tags[{i}].name"),
                        format!("\"{}\" is used twice in this group", tag.name),
                    );
                }
                if tag.address.trim().is_empty() {
                    problems.add(
                        format!("{at}.tags[{i}].address"),
                        "must not be empty".into(),
                    );
                }
            }
        }
    }

    for (name, transform) in &manifest.transforms {
        check_limits(
            &format!("transforms.{name}.limits"),
            &transform.limits,
            &mut problems,
        );
    }

    for (name, sink) in &manifest.sinks {
        let at = format!("sinks.{name}");
        if let Err(message) = crate::storage::StorageUrl::parse(&sink.url) {
            problems.add(format!("{at}.url"), message);
        }
        if sink.topics.is_empty() {
            problems.add(
                format!("{at}.topics"),
                "a sink needs at least one topic filter".into(),
            );
        }
        for (i, filter) in sink.topics.iter().enumerate() {
            if let Err(message) = check_topic_filter(filter) {
                problems.add(format!("{at}.topics[{i}]"), message);
            }
        }
        if sink.batch_size == 0 {
            problems.add(format!("{at}.batch_size"), "0 is not a batch size".into());
        }
        check_buffer_size(&at, sink.buffer_max_bytes, &mut problems);
        if sink.write_timeout.is_zero() {
            problems.add(format!("{at}.write_timeout"), "0s is not a timeout".into());
        }
        check_limits(&format!("{at}.limits"), &sink.limits, &mut problems);
    }

    if let Some(uplink) = &manifest.uplink {
        check_uplink(uplink, &mut problems);
    }

    problems.finish((topic, uns))
}

fn check_buffer_size(at: &str, bytes: u64, problems: &mut Problems) {
    if bytes < crate::site::MIN_BUFFER_BYTES {
        problems.add(
            format!("{at}.buffer_max_bytes"),
            format!(
                "{bytes} bytes is too small for a buffer (at least {} MiB)",
                crate::site::MIN_BUFFER_BYTES >> 20
            ),
        );
    }
}

fn check_uplink(uplink: &UplinkSection, problems: &mut Problems) {
    match crate::uplink::UplinkUrl::parse(&uplink.url) {
        Ok(url) if !url.tls && uplink.ca_file.is_some() => problems.add(
            "uplink.ca_file".into(),
            format!("only used with mqtts://, and url is \"{}\"", uplink.url),
        ),
        Ok(_) => {}
        Err(message) => problems.add("uplink.url".into(), message),
    }
    if uplink.client_id.as_deref().is_some_and(str::is_empty) {
        problems.add(
            "uplink.client_id".into(),
            "must not be empty (leave it out for omh-<site name>)".into(),
        );
    }
    if uplink.password.is_some() && uplink.username.is_none() {
        problems.add(
            "uplink.password".into(),
            "a password needs a username".into(),
        );
    }
    if uplink.topics.is_empty() {
        problems.add(
            "uplink.topics".into(),
            "the uplink needs at least one topic filter".into(),
        );
    }
    for (i, filter) in uplink.topics.iter().enumerate() {
        if let Err(message) = check_topic_filter(filter) {
            problems.add(format!("uplink.topics[{i}]"), message);
        }
    }
    if uplink.prefix.contains(['+', '#']) {
        problems.add(
            "uplink.prefix".into(),
            format!("\"{}\" contains an MQTT wildcard", uplink.prefix),
        );
    }
    if uplink.qos > 1 {
        problems.add(
            "uplink.qos".into(),
            format!("{} is not supported (0 or 1)", uplink.qos),
        );
    }
    // rumqttc refuses keep-alives under a second.
    if uplink.keep_alive < Duration::from_secs(1) {
        problems.add(
            "uplink.keep_alive".into(),
            format!(
                "{} is shorter than the minimum 1s",
                humantime::format_duration(uplink.keep_alive)
            ),
        );
    }
    check_buffer_size("uplink", uplink.buffer_max_bytes, problems);
}

#[derive(Default)]
pub(super) struct Problems(Vec<Problem>);

impl Problems {
    pub(super) fn add(&mut self, path: String, message: String) {
        self.0.push(Problem {
            path,
            message,
            line: None,
        });
    }

    fn finish<T>(self, value: T) -> Result<T, Vec<Problem>> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(self.0)
        }
    }
}

fn check_topic_template(template: &str, problems: &mut Problems) -> TopicTemplate {
    let rendered = template.replace("{device}", "").replace("{group}", "");
    if rendered.contains(['{', '}']) {
        problems.add(
            "broker.topic".into(),
            format!("\"{template}\" has an unknown placeholder (known: {{device}}, {{group}})"),
        );
    }
    if rendered.contains(['+', '#']) {
        problems.add(
            "broker.topic".into(),
            format!("\"{template}\" contains an MQTT wildcard"),
        );
    }
    if !template.contains("{group}") {
        problems.add(
            "broker.topic".into(),
            format!("\"{template}\" has no {{group}}: every group would share one topic"),
        );
    }
    TopicTemplate(template.to_string())
}

/// Every name that becomes a level of a tag's unified-namespace topic.
fn check_uns_levels(manifest: &Manifest, problems: &mut Problems) {
    let site = &manifest.site;
    check_level("site.name".into(), &site.name, problems);
    if let Some(enterprise) = &site.enterprise {
        check_level("site.enterprise".into(), enterprise, problems);
    }
    for (name, device) in &manifest.devices {
        let at = format!("devices.{name}");
        check_level(at.clone(), name, problems);
        for (key, value) in [("area", &device.area), ("line", &device.line)] {
            if let Some(value) = value {
                check_level(format!("{at}.{key}"), value, problems);
            }
        }
        for (group_name, group) in &device.groups {
            let at = format!("{at}.groups.{group_name}");
            check_level(at.clone(), group_name, problems);
            for (i, tag) in group.tags.iter().enumerate() {
                check_level(format!("{at}.tags[{i}].name"), &tag.name, problems);
            }
        }
    }
}

fn check_limits(at: &str, limits: &Limits, problems: &mut Problems) {
    if let Some(bytes) = limits.memory_limit
        && bytes < MIN_MEMORY_LIMIT
    {
        problems.add(
            format!("{at}.memory_limit"),
            format!("{bytes} bytes is below the minimum of 1MiB"),
        );
    }
    if limits.call_timeout == Some(Duration::ZERO) {
        problems.add(format!("{at}.call_timeout"), "0s is not a timeout".into());
    }
    if limits.restart_backoff == Some(Duration::ZERO) {
        problems.add(
            format!("{at}.restart_backoff"),
            "0s would restart a crashing plugin in a busy loop".into(),
        );
    }
    for (key, value) in [
        ("restart_backoff", limits.restart_backoff),
        ("restart_backoff_max", limits.restart_backoff_max),
    ] {
        if let Some(value) = value
            && value > MAX_RESTART_BACKOFF
        {
            problems.add(
                format!("{at}.{key}"),
                format!("{} is longer than a day", humantime::format_duration(value)),
            );
        }
    }
    if let (Some(first), Some(max)) = (limits.restart_backoff, limits.restart_backoff_max)
        && max < first
    {
        problems.add(
            format!("{at}.restart_backoff_max"),
            format!(
                "{} is less than restart_backoff ({})",
                humantime::format_duration(max),
                humantime::format_duration(first)
            ),
        );
    }
}

fn check_endpoint(endpoint: &str) -> Result<(), String> {
    let (host, port) = endpoint
        .rsplit_once(':')
        .ok_or_else(|| format!("\"{endpoint}\" is not host:port"))?;
    if host.is_empty() {
        return Err(format!("\"{endpoint}\" has no host"));
    }
    port.parse::<u16>()
        .map(drop)
        .map_err(|_| format!("\"{endpoint}\" has no valid port (1-65535)"))
}

/// MQTT filter rules: `#` only as the whole last level, `+` only as a whole level.
pub(super) fn check_topic_filter(filter: &str) -> Result<(), String> {
    if filter.is_empty() {
        return Err("\"\" is not a topic filter".into());
    }
    let levels: Vec<&str> = filter.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        let misplaced_hash = level.contains('#') && (*level != "#" || i + 1 != levels.len());
        let misplaced_plus = level.contains('+') && *level != "+";
        if misplaced_hash || misplaced_plus {
            return Err(format!(
                "\"{filter}\" is not a valid MQTT topic filter (wildcards must fill a whole level; # only last)"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_filters() {
        assert!(check_topic_filter("/neuron/demo_app/#").is_ok());
        assert!(check_topic_filter("a/+/c").is_ok());
        assert!(check_topic_filter("a/#/c").is_err());
        assert!(check_topic_filter("a/b#").is_err());
        assert!(check_topic_filter("a/b+/c").is_err());
    }

    #[test]
    fn endpoints() {
        assert!(check_endpoint("127.0.0.1:502").is_ok());
        assert!(check_endpoint("plc.local:5020").is_ok());
        assert!(check_endpoint("127.0.0.1").is_err());
        assert!(check_endpoint("127.0.0.1:99999").is_err());
    }
}
