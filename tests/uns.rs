//! The unified namespace and the status topics: each tag on its own
//! retained topic (`[broker.uns]`), seen at once by a client that subscribes
//! later (the Debian `mosquitto_sub`, MQTT 3.1.1 and 5); device status
//! connected/disconnected; host status online, then offline at a clean stop.

mod support;

use std::time::Duration;
use support::mqtt::mosquitto;
use support::site::{
    Collector, Quickstart, RunningSite, free_port, manifest_header, plugins_dir, wait_for,
};

const TEMPERATURE: &str = "acme/quickstart/hall1/line1/demo/temperature";
const HUMIDITY: &str = "acme/quickstart/hall1/line1/demo/humidity";

#[tokio::test(flavor = "multi_thread")]
async fn late_subscribers_get_each_tags_last_value_and_the_host_goes_offline_at_stop() {
    let dir = tempfile::tempdir().unwrap();
    let quickstart = Quickstart::new(dir.path());
    let mut site = quickstart.start(dir.path());
    let watcher = Collector::connect(quickstart.mqtt_port, &["omh/status/host"]);
    site.wait_for_log("running (").await;
    // Wait for a poll to have published, then subscribe afresh.
    let early = Collector::connect(quickstart.mqtt_port, &[TEMPERATURE]);
    early.wait_for_more(&mut site, TEMPERATURE, 1).await;

    let port = quickstart.mqtt_port.to_string();
    for version in ["mqttv311", "mqttv5"] {
        let output = mosquitto(
            "mosquitto_sub",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-V",
                version,
                "-t",
                "acme/#",
                "-C",
                "2",
                "-F",
                "%r %t %p",
            ],
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{version}: {stdout} {output:?}");
        let mut lines: Vec<&str> = stdout.lines().collect();
        lines.sort();
        assert_eq!(lines.len(), 2, "{version}: {stdout}");
        for (line, (topic, range)) in lines
            .iter()
            .zip([(HUMIDITY, 700..=729), (TEMPERATURE, 280..=309)])
        {
            let mut fields = line.splitn(3, ' ');
            assert_eq!(fields.next(), Some("1"), "{version}: retained flag: {line}");
            assert_eq!(fields.next(), Some(topic), "{version}: {line}");
            let value: serde_json::Value = serde_json::from_str(fields.next().unwrap()).unwrap();
            assert_eq!(value["quality"], "good", "{value}");
            assert!(
                value["timestamp"].as_i64().unwrap() > 1_700_000_000_000,
                "{value}"
            );
            assert!(range.contains(&value["value"].as_i64().unwrap()), "{value}");
        }
    }

    let status = |topic: &str| {
        let output = mosquitto(
            "mosquitto_sub",
            &["-h", "127.0.0.1", "-p", &port, "-t", topic, "-C", "1"],
        );
        serde_json::from_slice::<serde_json::Value>(&output.stdout)
            .unwrap_or_else(|e| panic!("{topic}: {e}: {output:?}"))
    };
    let device = status("omh/status/devices/demo");
    assert_eq!(device["state"], "connected", "{device}");
    assert_eq!(device["last_error"], serde_json::Value::Null, "{device}");
    let host = status("omh/status/host");
    assert_eq!(host["state"], "online", "{host}");
    assert_eq!(host["site"], "quickstart", "{host}");

    assert!(site.terminate().success());
    let last = watcher.last_on("omh/status/host").expect("host status");
    assert_eq!(last["state"], "offline", "{last}");
    assert_eq!(last["reason"], "stopped", "{last}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_device_is_bad_quality_and_disconnected_beside_a_good_one() {
    let dir = tempfile::tempdir().unwrap();
    let (mqtt_port, simulator, nobody) = (free_port(), free_port(), free_port());
    let manifest = dir.path().join("site.toml");
    let body = format!(
        r#"
[broker.uns]
retain = true

[simulators.sim]
listen = "127.0.0.1:{simulator}"
update_interval = "100ms"
registers = [{{ address = "1!40001", min = 280, max = 309 }}]

[devices.press]
driver = "modbus-tcp"
endpoint = "127.0.0.1:{simulator}"
area = "hall"
line = "l1"
[devices.press.groups.g]
interval = "200ms"
tags = [{{ name = "temperature", address = "1!40001", type = "int16" }}]

[devices.ghost]
driver = "modbus-tcp"
endpoint = "127.0.0.1:{nobody}"
[devices.ghost.groups.g]
interval = "200ms"
tags = [{{ name = "t", address = "1!40001", type = "int16" }}]
"#
    );
    let header = manifest_header(&dir.path().join("data"), &plugins_dir(), mqtt_port);
    std::fs::write(&manifest, header + &body).unwrap();
    let mut site = RunningSite::start(&manifest, &[], dir.path());
    let mqtt = Collector::connect(mqtt_port, &["site/#", "omh/status/devices/#"]);

    // No enterprise, and ghost has no area or line: those levels are left out.
    let (good, bad) = wait_for(
        Duration::from_secs(20),
        "tag values of both devices",
        &mut site,
        async |_| {
            Some((
                mqtt.last_on("site/hall/l1/press/temperature")?,
                mqtt.last_on("site/ghost/t")?,
            ))
        },
    )
    .await;
    assert_eq!(good["quality"], "good", "{good}");
    assert!(
        (280..=309).contains(&good["value"].as_i64().unwrap()),
        "{good}"
    );
    assert_eq!(bad["quality"], "bad", "{bad}");
    assert_eq!(bad["value"], serde_json::Value::Null, "{bad}");
    assert_eq!(bad["error"], -1, "{bad}"); // modbus-tcp: unreachable

    let (press, ghost) = wait_for(
        Duration::from_secs(10),
        "status of both devices",
        &mut site,
        async |_| {
            Some((
                mqtt.last_on("omh/status/devices/press")?,
                mqtt.last_on("omh/status/devices/ghost")?,
            ))
        },
    )
    .await;
    assert_eq!(press["state"], "connected", "{press}");
    assert_eq!(ghost["state"], "disconnected", "{ghost}");
    assert!(
        ghost["last_error"].as_str().is_some_and(|e| !e.is_empty()),
        "{ghost}"
    );
    site.assert_alive();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_device_removed_by_a_reload_leaves_no_retained_topics_behind() {
    let dir = tempfile::tempdir().unwrap();
    let (mqtt_port, simulator) = (free_port(), free_port());
    let manifest = dir.path().join("site.toml");
    let header = manifest_header(&dir.path().join("data"), &plugins_dir(), mqtt_port);
    let site_with = |devices: &[&str]| {
        let mut body = format!(
            "[broker.uns]\n[simulators.sim]\nlisten = \"127.0.0.1:{simulator}\"\n\
             registers = [{{ address = \"1!40001\", min = 280, max = 309 }}]\n"
        );
        for device in devices {
            body += &format!(
                "[devices.{device}]\ndriver = \"modbus-tcp\"\nendpoint = \"127.0.0.1:{simulator}\"\n\
                 [devices.{device}.groups.g]\ninterval = \"200ms\"\n\
                 tags = [{{ name = \"temperature\", address = \"1!40001\" }}]\n"
            );
        }
        header.clone() + &body
    };
    std::fs::write(&manifest, site_with(&["kept", "removed"])).unwrap();
    let mut site = RunningSite::start(&manifest, &[], dir.path());
    let mqtt = Collector::connect(mqtt_port, &["site/#"]);
    mqtt.wait_for_more(&mut site, "site/removed/temperature", 1)
        .await;

    std::fs::write(&manifest, site_with(&["kept"])).unwrap();
    let hang_up = std::process::Command::new("kill")
        .args(["-HUP", &site.pid().to_string()])
        .status()
        .unwrap();
    assert!(hang_up.success());
    site.wait_for_log("manifest reload: applied").await;

    // What a client subscribing now is shown as retained.
    let output = mosquitto(
        "mosquitto_sub",
        &[
            "-p",
            &mqtt_port.to_string(),
            "-t",
            "#",
            "-W",
            "2",
            "-F",
            "%r %t",
        ],
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let retained: Vec<&str> = stdout
        .lines()
        .filter_map(|line| line.strip_prefix("1 "))
        .collect();
    for topic in [
        "site/kept/temperature",
        "omh/status/devices/kept",
        "omh/status/plugins/devices.kept",
    ] {
        assert!(retained.contains(&topic), "{topic} not in {retained:?}");
    }
    assert!(
        !retained.iter().any(|topic| topic.contains("removed")),
        "{retained:?}"
    );
    site.assert_alive();
}
