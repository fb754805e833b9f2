//! Tag writes over MQTT in Neuron's shape: requests on the write topic are
//! checked against the manifest before any byte goes to the device, and
//! every request gets an answer on the response topic.

mod support;

use rumqttc::{AsyncClient, MqttOptions, QoS};
use serde_json::{Value, json};
use std::time::Duration;
use support::site::{Collector, RunningSite, free_port, manifest_header, plugins_dir, wait_for};

const GROUP_TOPIC: &str = "/neuron/omh/plc/g";
const REQUEST_TOPIC: &str = "/neuron/omh/write/req";
const RESPONSE_TOPIC: &str = "/neuron/omh/write/resp";

fn manifest(sim: u16) -> String {
    format!(
        r#"
[simulators.sim]
listen = "127.0.0.1:{sim}"
update_interval = "1h"
registers = [
  {{ address = "1!40001", min = 500, max = 500 }},
  {{ address = "1!40002", min = 600, max = 600 }},
]
[devices.plc]
driver = "modbus-tcp"
endpoint = "127.0.0.1:{sim}"
[devices.plc.groups.g]
interval = "100ms"
tags = [
  {{ name = "setpoint", address = "1!40001", type = "int16", writable = true }},
  {{ name = "measured", address = "1!40002", type = "int16" }},
]
"#
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_write_requests_are_answered_and_never_reach_the_device() {
    let dir = tempfile::tempdir().unwrap();
    let mqtt_port = free_port();
    let manifest_path = dir.path().join("site.toml");
    let header = manifest_header(dir.path(), &plugins_dir(), mqtt_port);
    std::fs::write(&manifest_path, header + &manifest(free_port())).unwrap();
    let mut site = RunningSite::start(&manifest_path, &[], dir.path());
    let mqtt = Collector::connect(mqtt_port, &[GROUP_TOPIC, RESPONSE_TOPIC]);
    wait_for(
        Duration::from_secs(10),
        "first poll",
        &mut site,
        async |_| mqtt.last_on(GROUP_TOPIC),
    )
    .await;

    let (client, mut eventloop) =
        AsyncClient::new(MqttOptions::new("test-writer", "127.0.0.1", mqtt_port), 10);
    tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
    let requests: [(&str, Vec<u8>, i64); 6] = [
        (
            "read-only tag",
            json!({"uuid":"1","node":"plc","group":"g","tag":"measured","value":1})
                .to_string()
                .into(),
            3,
        ),
        (
            "unknown tag",
            json!({"uuid":"2","node":"plc","group":"g","tag":"nope","value":1})
                .to_string()
                .into(),
            2,
        ),
        (
            "unknown group",
            json!({"uuid":"3","node":"plc","group":"x","tag":"setpoint","value":1})
                .to_string()
                .into(),
            2,
        ),
        (
            "unknown device",
            json!({"uuid":"4","node":"nope","group":"g","tag":"setpoint","value":1})
                .to_string()
                .into(),
            2,
        ),
        (
            "not a scalar",
            json!({"uuid":"5","node":"plc","group":"g","tag":"setpoint","value":[1,2]})
                .to_string()
                .into(),
            4,
        ),
        (
            "missing value",
            json!({"uuid":"6","node":"plc","group":"g","tag":"setpoint"})
                .to_string()
                .into(),
            1,
        ),
    ];
    for (_, payload, _) in &requests {
        client
            .publish(REQUEST_TOPIC, QoS::AtLeastOnce, false, payload.clone())
            .await
            .unwrap();
    }
    let responses = wait_for(
        Duration::from_secs(10),
        "six responses",
        &mut site,
        async |_| {
            let responses = mqtt.on(RESPONSE_TOPIC);
            (responses.len() >= requests.len()).then_some(responses)
        },
    )
    .await;
    for (i, (case, _, code)) in requests.iter().enumerate() {
        let uuid = (i + 1).to_string();
        let response: &Value = responses
            .iter()
            .find(|r| r["uuid"] == uuid.as_str())
            .unwrap_or_else(|| panic!("{case}: no response in {responses:?}"));
        assert_eq!(response["error"], *code, "{case}: {response}");
        assert!(
            response["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{case}: {response}"
        );
    }

    // Nothing was written: the registers still hold the simulator's values.
    let latest = wait_for(
        Duration::from_secs(5),
        "a fresh poll",
        &mut site,
        async |_| mqtt.last_on(GROUP_TOPIC),
    )
    .await;
    assert_eq!(
        latest["values"],
        json!({"setpoint": 500, "measured": 600}),
        "{latest}"
    );
}
