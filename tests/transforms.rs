//! Transform chains in the real omh-host, fed by an independent Modbus
//! server (support/modbus.rs) whose registers the test sets: what reaches
//! the bus is each group's readings after its chain, in order (scale ->
//! deadband -> rename; scale -> units -> expression); and a
//! transform that rejects its settings is reported `failed` on the status
//! topic while its group's tags show the transform error code.

mod support;

use serde_json::{Value, json};
use std::time::Duration;
use support::modbus::{Memory, ModbusServer};
use support::site::{Collector, RunningSite, free_port, manifest_header, plugins_dir, wait_for};

const LINE_TOPIC: &str = "/neuron/omh/plc/line";
const DERIVED_TOPIC: &str = "/neuron/omh/plc/derived";
const BROKEN_TOPIC: &str = "/neuron/omh/plc/broken";
const BROKEN_STATUS: &str = "omh/status/plugins/devices.plc.groups.broken.transforms.misconfigured";

/// Holding registers 40001.. as the test sets them.
const TEMPERATURE: usize = 0;
const PRESSURE: usize = 1;

fn manifest(server: &ModbusServer) -> String {
    format!(
        r#"
[devices.plc]
driver = "modbus-tcp"
endpoint = "{server}"

[devices.plc.groups.line]
interval = "100ms"
transforms = ["engineering", "on_change", "namespace"]
tags = [
  {{ name = "temperature", address = "1!40001", type = "int16" }},
  {{ name = "pressure", address = "1!40002", type = "uint16" }},
]

[devices.plc.groups.derived]
interval = "100ms"
transforms = ["engineering", "fahrenheit", "calc"]
tags = [
  {{ name = "temperature", address = "1!40001", type = "int16" }},
  {{ name = "pressure", address = "1!40002", type = "uint16" }},
]

[devices.plc.groups.broken]
interval = "100ms"
transforms = ["misconfigured"]
tags = [{{ name = "temperature", address = "1!40001", type = "int16" }}]

[transforms.engineering]
plugin = "scale"
[transforms.engineering.settings.tags]
temperature = {{ scale = 0.1, offset = -40, decimals = 1 }}
pressure = {{ input = [0, 10000], output = [0, 10] }}

[transforms.on_change]
plugin = "deadband"
settings = {{ default = {{ absolute = 0.5 }} }}

[transforms.namespace]
plugin = "rename"
settings = {{ prefix = "acme/line1/", tags = {{ temperature = "oven/temperature" }} }}

[transforms.fahrenheit]
plugin = "units"
settings = {{ tags = {{ temperature = {{ from = "degC", to = "degF" }} }} }}

[transforms.calc]
plugin = "expression"
[transforms.calc.settings]
tags = {{ pressure = "value * 100" }}
computed = {{ mean = "(temperature + pressure) / 2" }}

[transforms.misconfigured]
plugin = "scale"
settings = {{ tags = {{ temperature = {{ scale = 2, input = [0, 1], output = [0, 2] }} }} }}
"#,
        server = server.addr
    )
}

/// Every value the bus carried for `tag` on `topic`, in order.
fn history(mqtt: &Collector, topic: &str, tag: &str) -> Vec<Value> {
    mqtt.on(topic)
        .iter()
        .filter_map(|message| message["values"].get(tag).cloned())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn chains_transform_each_poll_in_order_and_a_bad_transform_is_reported() {
    let server = ModbusServer::start(Memory::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let mqtt_port = free_port();
    let manifest_path = dir.path().join("site.toml");
    let header = manifest_header(dir.path(), &plugins_dir(), mqtt_port);
    std::fs::write(&manifest_path, header + &manifest(&server)).unwrap();
    let mut site = RunningSite::start(&manifest_path, &[], dir.path());
    let mqtt = Collector::connect(
        mqtt_port,
        &[
            LINE_TOPIC,
            DERIVED_TOPIC,
            BROKEN_TOPIC,
            "omh/status/plugins/#",
        ],
    );
    // The deadband reports a value once: set the registers only when the
    // collector is surely listening.
    wait_for(
        Duration::from_secs(10),
        "the collector to see a poll",
        &mut site,
        async |_| mqtt.last_on(LINE_TOPIC),
    )
    .await;
    server.memory().holding_registers[TEMPERATURE] = 650;
    server.memory().holding_registers[PRESSURE] = 2500;
    let first = wait_for(
        Duration::from_secs(10),
        "the first transformed poll",
        &mut site,
        async |_| {
            mqtt.on(LINE_TOPIC)
                .into_iter()
                .find(|m| m["values"]["acme/line1/oven/temperature"] == json!(25.0))
        },
    )
    .await;
    assert_eq!(
        first["values"],
        json!({"acme/line1/oven/temperature": 25.0, "acme/line1/pressure": 2.5}),
        "{first}"
    );
    assert_eq!(first["errors"], json!({}), "{first}");

    let derived = wait_for(
        Duration::from_secs(10),
        "the derived group after the registers were set",
        &mut site,
        async |_| {
            mqtt.last_on(DERIVED_TOPIC)
                .filter(|m| m["values"]["temperature"] == json!(77.0))
        },
    )
    .await;
    // The expression reads the batch as it came in: pressure 2.5, not 250.
    assert_eq!(
        derived["values"],
        json!({"temperature": 77.0, "pressure": 250.0, "mean": 39.75}),
        "{derived}"
    );

    // 25.4 is within 0.5 of the 25.0 reported: polls go on without it.
    server.memory().holding_registers[TEMPERATURE] = 654;
    let polls_before = mqtt.on(LINE_TOPIC).len();
    wait_for(
        Duration::from_secs(10),
        "five polls of 25.4",
        &mut site,
        async |_| (mqtt.on(LINE_TOPIC).len() >= polls_before + 5).then_some(()),
    )
    .await;
    server.memory().holding_registers[TEMPERATURE] = 656;
    wait_for(
        Duration::from_secs(10),
        "25.6, beyond the deadband",
        &mut site,
        async |_| {
            history(&mqtt, LINE_TOPIC, "acme/line1/oven/temperature")
                .contains(&json!(25.6))
                .then_some(())
        },
    )
    .await;
    // Registers start at 0: -40.0 and 0.0 may have been reported before.
    let since_set = |tag: &str, set: Value| {
        let values = history(&mqtt, LINE_TOPIC, tag);
        let at = values.iter().position(|v| *v == set).unwrap();
        values[at..].to_vec()
    };
    assert_eq!(
        since_set("acme/line1/oven/temperature", json!(25.0)),
        [json!(25.0), json!(25.6)]
    );
    assert_eq!(since_set("acme/line1/pressure", json!(2.5)), [json!(2.5)]);

    let status = wait_for(
        Duration::from_secs(10),
        "the misconfigured transform's status",
        &mut site,
        async |_| mqtt.last_on(BROKEN_STATUS),
    )
    .await;
    assert_eq!(status["state"], "failed", "{status}");
    assert_eq!(
        status["last_error"],
        "invalid configuration: invalid setting `tags.temperature`: \
         give either `scale`/`offset` or `input`/`output`, not both",
        "{status}"
    );
    let broken = wait_for(
        Duration::from_secs(10),
        "a poll of the group with the misconfigured transform",
        &mut site,
        async |_| mqtt.last_on(BROKEN_TOPIC),
    )
    .await;
    assert_eq!(broken["values"], json!({}), "{broken}");
    assert_eq!(broken["errors"], json!({"temperature": -3}), "{broken}");
    site.assert_alive();
}
