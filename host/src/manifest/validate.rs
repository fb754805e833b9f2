//! Checks a parsed manifest for what serde types cannot express. All problems
//! are collected, not just the first, so one `omh-host check` run shows them.

use super::{BACKUP_ENDPOINT_SETTING, Limits, Manifest, Problem};
use crate::simulator::RegisterAddress;
use std::collections::HashSet;
use std::time::Duration;

/// Shortest poll interval accepted: below it a Modbus device cannot answer.
const MIN_INTERVAL: Duration = Duration::from_millis(10);
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

pub fn validate(manifest: &Manifest) -> Result<TopicTemplate, Vec<Problem>> {
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
    super::broker::validate(&manifest.broker, &mut problems);
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
        if sink.buffer_max_bytes < crate::site::MIN_BUFFER_BYTES {
            problems.add(
                format!("{at}.buffer_max_bytes"),
                format!(
                    "{} bytes is too small for a buffer (at least {} MiB)",
                    sink.buffer_max_bytes,
                    crate::site::MIN_BUFFER_BYTES >> 20
                ),
            );
        }
        check_limits(&format!("{at}.limits"), &sink.limits, &mut problems);
    }

    problems.finish(topic)
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
