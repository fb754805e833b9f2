//! `SIGHUP` reloads the manifest: a broken one is rejected with its key
//! path and the running configuration goes on; a valid one (a new group, a
//! changed sink, a broker change that needs a restart) takes effect, and
//! every group message published before and after reaches the database.

mod support;

use std::process::Command;
use support::site::{
    Collector, RunningSite, free_port, manifest_header, plugins_dir, plugins_with,
    sqlite_conditions_at,
};

const GROUP_A: &str = "/neuron/omh/line/a";
const GROUP_B: &str = "/neuron/omh/line/b";

fn group(name: &str, interval: &str) -> String {
    format!(
        r#"
[devices.line.groups.{name}]
interval = "{interval}"
tags = [
  {{ name = "temperature", address = "1!40001" }},
  {{ name = "humidity", address = "1!40002" }},
]
"#
    )
}

fn site(sim: u16, sink_extra: &str, groups: &str) -> String {
    format!(
        r#"
[simulators.sim]
listen = "127.0.0.1:{sim}"
update_interval = "100ms"
registers = [
  {{ address = "1!40001", min = 280, max = 309 }},
  {{ address = "1!40002", min = 700, max = 729 }},
]
[devices.line]
driver = "modbus-tcp"
endpoint = "127.0.0.1:{sim}"
{groups}
[sinks.storage]
plugin = "timescale"
url = "sqlite:site.db"
topics = ["/neuron/omh/#"]
flush_interval = "100ms"
{sink_extra}
[sinks.storage.settings]
template = "INSERT INTO conditions(time, temperature, humidity) VALUES (${{timestamp}}, ${{temperature}}, ${{humidity}})"
"#
    )
}

fn hang_up(site: &RunningSite) {
    let sent = Command::new("kill")
        .args(["-HUP", &site.pid().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_rejects_a_broken_manifest_and_applies_a_valid_one_without_losing_readings() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = plugins_with(
        dir.path(),
        &[
            plugins_dir().join("modbus-tcp.wasm"),
            plugins_dir().join("timescale.wasm"),
        ],
    );
    let (mqtt_port, sim) = (free_port(), free_port());
    let header = manifest_header(dir.path(), &plugins, mqtt_port);
    let manifest_path = dir.path().join("site.toml");
    std::fs::write(
        &manifest_path,
        header.clone() + &site(sim, "", &group("a", "200ms")),
    )
    .unwrap();
    let mut running = RunningSite::start(&manifest_path, &[], dir.path());
    let mqtt = Collector::connect(mqtt_port, &["/neuron/omh/#"]);
    mqtt.wait_for_more(&mut running, GROUP_A, 5).await;

    // Broken: rejected, naming file, key path and value; group a goes on.
    std::fs::write(
        &manifest_path,
        header.clone() + &site(sim, "", &group("a", "fast")),
    )
    .unwrap();
    hang_up(&running);
    running.wait_for_log("manifest reload rejected").await;
    let log = running.log();
    assert!(
        log.contains(&format!(
            "{}: devices.line.groups.a.interval",
            manifest_path.display()
        )) && log.contains("fast"),
        "{log}"
    );
    mqtt.wait_for_more(&mut running, GROUP_A, 5).await;

    // Valid: a new group, a changed sink, and a broker limit that needs a
    // restart (reported, not applied).
    let groups = group("a", "200ms") + &group("b", "300ms");
    std::fs::write(
        &manifest_path,
        header + "max_connections = 500\n" + &site(sim, "batch_size = 50", &groups),
    )
    .unwrap();
    hang_up(&running);
    running.wait_for_log("manifest reload: applied").await;
    assert!(
        running
            .log()
            .contains("manifest reload: [broker] changed: that needs a restart"),
        "{}",
        running.log()
    );
    mqtt.wait_for_more(&mut running, GROUP_B, 5).await;
    mqtt.wait_for_more(&mut running, GROUP_A, 5).await;

    // Every message seen, before and after both reloads, is a row.
    let exit = running.terminate();
    assert!(
        exit.success(),
        "clean exit: {exit}; log:\n{}",
        running.log()
    );
    let db = rusqlite::Connection::open(dir.path().join("site.db")).unwrap();
    for timestamp in mqtt.timestamps_on(&[GROUP_A, GROUP_B]) {
        assert!(
            sqlite_conditions_at(&db, timestamp) >= 1,
            "message of {timestamp} is not in the database; log:\n{}",
            running.log()
        );
    }
}
