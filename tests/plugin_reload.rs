//! Hot reload of plugin files: a running site notices a `.wasm` replaced in
//! its plugins directory. A file built for another WIT version, and one
//! whose `configure` refuses the device's settings, are rejected and the
//! running driver keeps publishing; a valid new build is swapped in, and
//! the group's messages go on with no gap and no error. A transform whose
//! new version would emit other tags than its chain was built with is
//! refused too.

mod support;

use serde_json::Value;
use std::path::Path;
use std::time::Duration;
use support::site::{
    Collector, RunningSite, free_port, manifest_header, plugins_dir, plugins_with, test_plugins_dir,
};

const TOPIC: &str = "/neuron/omh/line/g";
const INTERVAL: Duration = Duration::from_millis(200);

fn manifest(sim: u16) -> String {
    format!(
        r#"
[simulators.sim]
listen = "127.0.0.1:{sim}"
update_interval = "100ms"
registers = [{{ address = "1!40001", min = 280, max = 309 }}]
[devices.line]
driver = "modbus-tcp"
endpoint = "127.0.0.1:{sim}"
[devices.line.groups.g]
interval = "{}ms"
tags = [{{ name = "temperature", address = "1!40001" }}]
"#,
        INTERVAL.as_millis()
    )
}

/// The same component with a custom section appended: a different file
/// (another hash) with the same behaviour, like a rebuild.
fn rebuilt(component: &[u8]) -> Vec<u8> {
    let name = b"omh-test-build";
    let payload = b"2";
    let mut section = leb128(name.len());
    section.extend_from_slice(name);
    section.extend_from_slice(payload);
    let mut bytes = component.to_vec();
    bytes.push(0); // custom section id
    bytes.extend(leb128(section.len()));
    bytes.extend(section);
    bytes
}

fn leb128(mut value: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

/// Copies `bytes` over the plugin file in place, as `cp` does.
fn replace(plugin: &Path, bytes: &[u8]) {
    std::fs::write(plugin, bytes).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replaced_plugin_file_is_swapped_in_or_rejected_while_the_device_keeps_publishing() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = plugins_with(dir.path(), &[plugins_dir().join("modbus-tcp.wasm")]);
    let driver = plugins.join("modbus-tcp.wasm");
    let original = std::fs::read(&driver).unwrap();
    let mqtt_port = free_port();
    let manifest_path = dir.path().join("site.toml");
    let header = manifest_header(dir.path(), &plugins, mqtt_port);
    std::fs::write(&manifest_path, header + &manifest(free_port())).unwrap();
    let mut site = RunningSite::start(&manifest_path, &[], dir.path());
    let mqtt = Collector::connect(mqtt_port, &[TOPIC]);
    mqtt.wait_for_more(&mut site, TOPIC, 5).await;

    // Built for another WIT version: refused before compiling.
    replace(
        &driver,
        &std::fs::read(test_plugins_dir().join("future-wit-driver.wasm")).unwrap(),
    );
    site.wait_for_log("plugin modbus-tcp: rejected new file: built for omh:plugin@0.9.0")
        .await;
    mqtt.wait_for_more(&mut site, TOPIC, 5).await;

    // A driver that compiles and links, but whose configure refuses the
    // device's settings: the instance keeps the running version.
    replace(
        &driver,
        &std::fs::read(test_plugins_dir().join("misbehaving-driver.wasm")).unwrap(),
    );
    site.wait_for_log("plugin modbus-tcp: rejected new file: devices.line: invalid configuration")
        .await;
    mqtt.wait_for_more(&mut site, TOPIC, 5).await;

    // A valid new build: swapped in between two polls.
    replace(&driver, &rebuilt(&original));
    site.wait_for_log("plugin modbus-tcp: new version loaded (sha256 ")
        .await;
    assert!(site.log().contains("1 instances swapped"), "{}", site.log());
    mqtt.wait_for_more(&mut site, TOPIC, 5).await;

    // Throughout: a reading every interval, never an error, no gap.
    let messages = mqtt.on(TOPIC);
    let log = site.log();
    for message in &messages {
        assert!(
            message["values"]["temperature"].is_i64() && message["errors"] == serde_json::json!({}),
            "message without the reading: {message}; log:\n{log}"
        );
    }
    let times: Vec<i64> = messages
        .iter()
        .map(|m: &Value| m["timestamp"].as_i64().unwrap())
        .collect();
    let longest = times.windows(2).map(|w| w[1] - w[0]).max().unwrap();
    assert!(
        longest <= 2 * INTERVAL.as_millis() as i64,
        "a gap of {longest} ms between group messages; log:\n{log}"
    );
    site.assert_alive();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_transform_version_emitting_other_tags_is_refused_and_the_old_one_keeps_going() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = plugins_with(dir.path(), &[plugins_dir().join("modbus-tcp.wasm")]);
    // `flex` starts as rename, for which these settings rename
    // `temperature` to `value`; expression reads the same settings as the
    // formula `value` for `temperature`, so it would emit `temperature`.
    let transform = plugins.join("flex.wasm");
    std::fs::copy(plugins_dir().join("rename.wasm"), &transform).unwrap();
    let chain = r#"transforms = ["t"]
[transforms.t]
plugin = "flex"
settings = { tags = { temperature = "value" } }
"#;
    let mqtt_port = free_port();
    let manifest_path = dir.path().join("site.toml");
    let header = manifest_header(dir.path(), &plugins, mqtt_port);
    std::fs::write(&manifest_path, header + &manifest(free_port()) + chain).unwrap();
    let mut site = RunningSite::start(&manifest_path, &[], dir.path());
    let mqtt = Collector::connect(mqtt_port, &[TOPIC]);
    mqtt.wait_for_more(&mut site, TOPIC, 3).await;

    replace(
        &transform,
        &std::fs::read(plugins_dir().join("expression.wasm")).unwrap(),
    );
    site.wait_for_log(
        "plugin flex: rejected new file: devices.line.groups.g.transforms.t: \
         bind returned other tags than the chain was built with (tag 0 is `temperature`, was `value`)",
    )
    .await;
    mqtt.wait_for_more(&mut site, TOPIC, 3).await;

    let log = site.log();
    for message in mqtt.on(TOPIC) {
        assert!(
            message["values"]["value"].is_i64() && message["errors"] == serde_json::json!({}),
            "message not renamed by the running version: {message}; log:\n{log}"
        );
    }
    site.assert_alive();
}
