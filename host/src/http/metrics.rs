//! Prometheus text exposition: what the live view knows from the bus, and
//! the counters other parts of the host keep.

use super::Counters;
use super::live::Live;
use std::fmt::Write;
use std::sync::atomic::Ordering;

/// One metric family: its samples as (label value, value).
struct Family {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    label: &'static str,
    samples: Vec<(String, f64)>,
}

pub fn render(live: &Live, counters: &Counters) -> String {
    let devices = live.devices();
    let plugins = live.plugins();
    let sinks: Vec<_> = counters
        .sinks
        .iter()
        .map(|(name, metrics)| (name, metrics, metrics.buffer.stats()))
        .collect();
    let per_device = |value: fn(&super::live::DeviceStats) -> f64| {
        devices.iter().map(|(d, s)| (d.clone(), value(s))).collect()
    };
    let per_plugin = |value: fn(&serde_json::Value) -> f64| {
        plugins.iter().map(|(p, s)| (p.clone(), value(s))).collect()
    };
    let per_sink = |value: &dyn Fn(&super::SinkMetrics, &crate::buffer::Stats) -> f64| {
        sinks
            .iter()
            .map(|(n, m, b)| ((*n).clone(), value(m, b)))
            .collect()
    };
    let families = [
        Family {
            name: "omh_group_messages_total",
            kind: "counter",
            help: "Group messages published on the bus.",
            label: "device",
            samples: per_device(|s| s.messages as f64),
        },
        Family {
            name: "omh_tag_errors_total",
            kind: "counter",
            help: "Tags that could not be read, summed over polls.",
            label: "device",
            samples: per_device(|s| s.tag_errors as f64),
        },
        Family {
            name: "omh_plugin_up",
            kind: "gauge",
            help: "1 while the plugin instance is running, 0 while crashed or failed.",
            label: "instance",
            samples: per_plugin(|s| f64::from(u8::from(s["state"] == "running"))),
        },
        Family {
            name: "omh_plugin_restarts_total",
            kind: "counter",
            help: "Times the plugin instance was re-instantiated after a crash.",
            label: "instance",
            samples: per_plugin(|s| s["restarts"].as_f64().unwrap_or(0.0)),
        },
        Family {
            name: "omh_plugin_deadline_interrupts_total",
            kind: "counter",
            help: "Calls stopped at their deadline (epoch interrupt or call_timeout).",
            label: "instance",
            samples: per_plugin(|s| s["deadline_interrupts"].as_f64().unwrap_or(0.0)),
        },
        Family {
            name: "omh_sink_messages_total",
            kind: "counter",
            help: "Group messages committed to the sink's database.",
            label: "sink",
            samples: per_sink(&|m, _| m.messages.load(Ordering::Relaxed) as f64),
        },
        Family {
            name: "omh_sink_rows_total",
            kind: "counter",
            help: "Rows the sink plugin reported written.",
            label: "sink",
            samples: per_sink(&|m, _| m.rows.load(Ordering::Relaxed) as f64),
        },
        Family {
            name: "omh_sink_failed_attempts_total",
            kind: "counter",
            help: "Batch writes that failed and were retried.",
            label: "sink",
            samples: per_sink(&|m, _| m.failed_attempts.load(Ordering::Relaxed) as f64),
        },
        Family {
            name: "omh_sink_buffer_pending_messages",
            kind: "gauge",
            help: "Messages in the sink's disk buffer not yet committed (its lag).",
            label: "sink",
            samples: per_sink(&|_, b| b.pending as f64),
        },
        Family {
            name: "omh_sink_buffer_bytes",
            kind: "gauge",
            help: "Bytes of the sink's disk buffer.",
            label: "sink",
            samples: per_sink(&|_, b| b.bytes_on_disk as f64),
        },
        Family {
            name: "omh_sink_buffer_dropped_total",
            kind: "counter",
            help: "Messages dropped undelivered because the buffer was full.",
            label: "sink",
            samples: per_sink(&|_, b| b.dropped as f64),
        },
    ];
    let mut out = String::new();
    for family in &families {
        let _ = writeln!(
            out,
            "# HELP {0} {1}\n# TYPE {0} {2}",
            family.name, family.help, family.kind
        );
        for (label_value, value) in &family.samples {
            let _ = writeln!(
                out,
                "{}{{{}=\"{}\"}} {value}",
                family.name,
                family.label,
                escape(label_value)
            );
        }
    }
    let scalars = [
        (
            "omh_bus_publish_queue_depth",
            "gauge",
            "Messages waiting to enter the broker.",
            counters.bus_publish_queued.load(Ordering::Relaxed) as f64,
        ),
        (
            "omh_bus_publish_dropped_total",
            "counter",
            "Messages dropped because the bus's publish queue was full.",
            counters.bus_publish_dropped.load(Ordering::Relaxed) as f64,
        ),
        (
            "omh_bus_subscriber_skips_total",
            "counter",
            "Times the broker skipped a slow subscriber ahead.",
            counters.bus_subscriber_skips.load(Ordering::Relaxed) as f64,
        ),
        (
            "omh_mqtt_connections",
            "gauge",
            "Outside MQTT client connections open now (plain and TLS).",
            counters.gateway.connections.load(Ordering::Relaxed) as f64,
        ),
        (
            "omh_mqtt_auth_failures_total",
            "counter",
            "MQTT CONNECTs refused: unknown user, wrong password, or anonymous when not allowed.",
            counters.gateway.auth_failures.load(Ordering::Relaxed) as f64,
        ),
        (
            "omh_mqtt_acl_denials_total",
            "counter",
            "PUBLISHes and subscription filters refused: outside the user's topic permissions, or $ filters.",
            counters.gateway.acl_denials.load(Ordering::Relaxed) as f64,
        ),
        (
            "omh_uptime_seconds",
            "gauge",
            "Seconds since the host started.",
            live.started.elapsed().as_secs_f64(),
        ),
    ];
    let uplink = counters.uplink.as_ref().map(|uplink| {
        let buffer = uplink.buffer.stats();
        [
            (
                "omh_uplink_connected",
                "gauge",
                "1 while the uplink is connected to the upstream broker.",
                f64::from(u8::from(uplink.connected.load(Ordering::Relaxed))),
            ),
            (
                "omh_uplink_messages_total",
                "counter",
                "Messages the upstream broker acknowledged (QoS 0: sent).",
                uplink.messages.load(Ordering::Relaxed) as f64,
            ),
            (
                "omh_uplink_reconnects_total",
                "counter",
                "Connections to the upstream broker made after the first.",
                uplink.reconnects.load(Ordering::Relaxed) as f64,
            ),
            (
                "omh_uplink_buffer_pending_messages",
                "gauge",
                "Messages in the uplink's disk buffer not yet acknowledged upstream.",
                buffer.pending as f64,
            ),
            (
                "omh_uplink_buffer_bytes",
                "gauge",
                "Bytes of the uplink's disk buffer.",
                buffer.bytes_on_disk as f64,
            ),
            (
                "omh_uplink_buffer_dropped_total",
                "counter",
                "Messages dropped unsent because the uplink's buffer was full.",
                buffer.dropped as f64,
            ),
        ]
    });
    for (name, kind, help, value) in scalars.into_iter().chain(uplink.into_iter().flatten()) {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    }
    out
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
