//! Prometheus text exposition of what the live view knows.

use super::live::Live;
use std::fmt::Write;

pub fn render(live: &Live) -> String {
    let mut out = String::new();
    let devices = live.devices();
    family(
        &mut out,
        "omh_group_messages_total",
        "counter",
        "Group messages published on the bus, per device.",
    );
    for (device, stats) in &devices {
        sample(
            &mut out,
            "omh_group_messages_total",
            "device",
            device,
            stats.messages as f64,
        );
    }
    family(
        &mut out,
        "omh_tag_errors_total",
        "counter",
        "Tags that could not be read, summed over polls, per device.",
    );
    for (device, stats) in &devices {
        sample(
            &mut out,
            "omh_tag_errors_total",
            "device",
            device,
            stats.tag_errors as f64,
        );
    }

    let plugins = live.plugins();
    family(
        &mut out,
        "omh_plugin_up",
        "gauge",
        "1 while the plugin instance is running, 0 while crashed or failed.",
    );
    for (instance, status) in &plugins {
        let up = status["state"].as_str() == Some("running");
        sample(
            &mut out,
            "omh_plugin_up",
            "instance",
            instance,
            f64::from(u8::from(up)),
        );
    }
    family(
        &mut out,
        "omh_plugin_restarts_total",
        "counter",
        "Times the plugin instance was re-instantiated after a crash.",
    );
    for (instance, status) in &plugins {
        let restarts = status["restarts"].as_f64().unwrap_or(0.0);
        sample(
            &mut out,
            "omh_plugin_restarts_total",
            "instance",
            instance,
            restarts,
        );
    }

    family(
        &mut out,
        "omh_uptime_seconds",
        "gauge",
        "Seconds since the host started.",
    );
    let _ = writeln!(
        out,
        "omh_uptime_seconds {}",
        live.started.elapsed().as_secs_f64()
    );
    out
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, label: &str, value_of_label: &str, value: f64) {
    let _ = writeln!(
        out,
        "{name}{{{label}=\"{}\"}} {value}",
        escape(value_of_label)
    );
}

/// Label values escape backslash, double quote and newline.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_label_values() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
