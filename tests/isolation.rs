//! Sandbox and supervision: a plugin that traps, one that loops forever and
//! one that allocates without bound each get dropped and restarted with
//! backoff, while a healthy device on the same host keeps delivering.

mod support;

use serde_json::Value;
use std::time::Duration;
use support::site::{
    Collector, RunningSite, free_port, manifest_header, plugins_dir, plugins_with,
    test_plugins_dir, wait_for,
};

const HEALTHY_TOPIC: &str = "/neuron/omh/healthy/g";

fn manifest(sim: u16) -> String {
    let misbehaving = |mode: &str| {
        format!(
            r#"
[devices.{mode}]
driver = "misbehaving-driver"
endpoint = "127.0.0.1:{sim}"
settings = {{ mode = "{mode}", after = 2 }}
[devices.{mode}.groups.g]
interval = "100ms"
tags = [{{ name = "counter", address = "none" }}]
"#
        )
    };
    format!(
        r#"
[plugins.limits]
memory_limit = "32MiB"
call_timeout = "1s"
[simulators.sim]
listen = "127.0.0.1:{sim}"
update_interval = "100ms"
registers = [{{ address = "1!40001", min = 280, max = 309 }}]
[devices.healthy]
driver = "modbus-tcp"
endpoint = "127.0.0.1:{sim}"
[devices.healthy.groups.g]
interval = "100ms"
tags = [{{ name = "temperature", address = "1!40001" }}]
{}{}{}"#,
        misbehaving("trap"),
        misbehaving("hang"),
        misbehaving("oom"),
    )
}

fn restarts(status: &Option<Value>) -> u64 {
    status
        .as_ref()
        .and_then(|s| s["restarts"].as_u64())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn misbehaving_plugins_restart_while_a_healthy_device_keeps_delivering() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = plugins_with(
        dir.path(),
        &[
            plugins_dir().join("modbus-tcp.wasm"),
            test_plugins_dir().join("misbehaving-driver.wasm"),
        ],
    );
    let mqtt_port = free_port();
    let manifest_path = dir.path().join("site.toml");
    let header = manifest_header(dir.path(), &plugins, mqtt_port);
    std::fs::write(&manifest_path, header + &manifest(free_port())).unwrap();
    let mut site = RunningSite::start(&manifest_path, &[], dir.path());
    let mqtt = Collector::connect(mqtt_port, &[HEALTHY_TOPIC, "omh/status/plugins/#"]);

    let status_of = |mode: &str| mqtt.last_on(&format!("omh/status/plugins/devices.{mode}"));
    wait_for(
        Duration::from_secs(20),
        "two restarts of each misbehaving plugin",
        &mut site,
        async |_| {
            ["trap", "hang", "oom"]
                .iter()
                .all(|mode| restarts(&status_of(mode)) >= 2)
                .then_some(())
        },
    )
    .await;

    // The guest's panic message is in the host's log, under its name.
    let log = site.log();
    assert!(
        log.lines().any(|line| line.contains("devices.trap")
            && line.contains("stderr: ")
            && line.contains("trapping on purpose")),
        "{log}"
    );
    // Each failure is named for what it was.
    let last_error = |mode: &str| {
        let mut errors: Vec<String> = mqtt
            .on(&format!("omh/status/plugins/devices.{mode}"))
            .iter()
            .filter_map(|s| s["last_error"].as_str().map(str::to_string))
            .collect();
        errors.pop().unwrap_or_default()
    };
    assert!(
        last_error("trap").contains("trapped"),
        "{}",
        last_error("trap")
    );
    assert!(
        last_error("hang").contains("call_timeout"),
        "{}",
        last_error("hang")
    );
    assert!(
        last_error("oom").contains("memory limit"),
        "{}",
        last_error("oom")
    );
    // Deadline overruns are counted apart from other crashes.
    let interrupts =
        |mode: &str| status_of(mode).map_or(0, |s| s["deadline_interrupts"].as_u64().unwrap_or(0));
    assert!(interrupts("hang") >= 2, "{:?}", status_of("hang"));
    assert_eq!(interrupts("trap"), 0, "{:?}", status_of("trap"));

    // The healthy device kept its 100 ms rhythm throughout and still does.
    let before = mqtt.on(HEALTHY_TOPIC).len();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let healthy = mqtt.on(HEALTHY_TOPIC);
    assert!(
        healthy.len() - before >= 12,
        "healthy device delivered {} messages in 2 s while others crashed; log:\n{}",
        healthy.len() - before,
        site.log()
    );
    for message in &healthy[before..] {
        let temperature = message["values"]["temperature"].as_i64().unwrap_or(-1);
        assert!((280..=309).contains(&temperature), "{message}");
    }
    site.assert_alive();
}

#[tokio::test(flavor = "multi_thread")]
async fn plugin_rejecting_its_configuration_fails_once_and_is_not_restarted() {
    let dir = tempfile::tempdir().unwrap();
    let mqtt_port = free_port();
    let manifest_path = dir.path().join("site.toml");
    let device = r#"
[devices.misconfigured]
driver = "modbus-tcp"
endpoint = "127.0.0.1:9"
settings = { timeout_ms = 0 }
[devices.misconfigured.groups.g]
interval = "100ms"
tags = [{ name = "t", address = "1!40001" }]
"#;
    let header = manifest_header(dir.path(), &plugins_dir(), mqtt_port);
    std::fs::write(&manifest_path, header + device).unwrap();
    let mut site = RunningSite::start(&manifest_path, &[], dir.path());
    let mqtt = Collector::connect(
        mqtt_port,
        &["omh/status/plugins/#", "/neuron/omh/misconfigured/g"],
    );
    let topic = "omh/status/plugins/devices.misconfigured";

    let status = wait_for(
        Duration::from_secs(10),
        "failed status",
        &mut site,
        async |_| mqtt.last_on(topic).filter(|s| s["state"] == "failed"),
    )
    .await;
    assert!(
        status["last_error"]
            .as_str()
            .unwrap()
            .contains("timeout_ms"),
        "{status}"
    );

    // Polls go on publishing the tags as errors, but nothing restarts.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let statuses = mqtt.on(topic);
    assert_eq!(
        statuses.len(),
        1,
        "one status, no restart loop: {statuses:?}"
    );
    let message = mqtt
        .last_on("/neuron/omh/misconfigured/g")
        .expect("group still published");
    assert!(message["errors"].get("t").is_some(), "{message}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_driver_reaches_only_the_endpoint_its_manifest_names() {
    // Two listeners: the device's endpoint, and one the manifest never grants.
    let endpoint = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let forbidden = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (endpoint_addr, forbidden_addr) = (
        endpoint.local_addr().unwrap(),
        forbidden.local_addr().unwrap(),
    );
    tokio::spawn(async move { while endpoint.accept().await.is_ok() {} });
    let intruded = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = intruded.clone();
    tokio::spawn(async move {
        if forbidden.accept().await.is_ok() {
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    });

    let dir = tempfile::tempdir().unwrap();
    let plugins = plugins_with(
        dir.path(),
        &[test_plugins_dir().join("misbehaving-driver.wasm")],
    );
    let mqtt_port = free_port();
    let device = format!(
        r#"
[devices.escaper]
driver = "misbehaving-driver"
endpoint = "{endpoint_addr}"
settings = {{ mode = "escape", target = "{forbidden_addr}" }}
[devices.escaper.groups.g]
interval = "200ms"
tags = [{{ name = "forbidden", address = "-" }}, {{ name = "endpoint", address = "-" }}]
"#
    );
    let manifest_path = dir.path().join("site.toml");
    std::fs::write(
        &manifest_path,
        manifest_header(dir.path(), &plugins, mqtt_port) + &device,
    )
    .unwrap();
    let mut site = RunningSite::start(&manifest_path, &[], dir.path());
    let mqtt = Collector::connect(mqtt_port, &["/neuron/omh/escaper/g"]);

    let message = wait_for(
        Duration::from_secs(10),
        "an escape attempt",
        &mut site,
        async |_| mqtt.on("/neuron/omh/escaper/g").into_iter().nth(2),
    )
    .await;
    assert_eq!(
        message["values"]["endpoint"], true,
        "the granted endpoint is reachable: {message}"
    );
    assert_eq!(
        message["errors"]["forbidden"], -1,
        "the other address is refused: {message}"
    );
    assert!(
        !intruded.load(std::sync::atomic::Ordering::SeqCst),
        "no connection reached the address the manifest did not grant"
    );
}

/// Starts a site of one misbehaving-driver device, `settings` and `limits`
/// as inline TOML tables, polling group `g` (tag `counter`) every
/// `interval`; returns it with a collector of its group and status topics.
fn misbehaving_site(
    dir: &std::path::Path,
    settings: &str,
    limits: &str,
    interval: &str,
) -> (RunningSite, Collector) {
    let plugins = plugins_with(dir, &[test_plugins_dir().join("misbehaving-driver.wasm")]);
    let mqtt_port = free_port();
    let manifest_path = dir.join("site.toml");
    let device = format!(
        r#"
[devices.d]
driver = "misbehaving-driver"
endpoint = "127.0.0.1:9"
settings = {settings}
limits = {limits}
[devices.d.groups.g]
interval = "{interval}"
tags = [{{ name = "counter", address = "none" }}]
"#
    );
    std::fs::write(
        &manifest_path,
        manifest_header(dir, &plugins, mqtt_port) + &device,
    )
    .unwrap();
    let site = RunningSite::start(&manifest_path, &[], dir);
    let mqtt = Collector::connect(mqtt_port, &["/neuron/omh/d/g", "omh/status/plugins/#"]);
    (site, mqtt)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_driver_returning_a_million_readings_publishes_one_per_tag() {
    let dir = tempfile::tempdir().unwrap();
    // Memory enough for the million readings to reach the host (at the
    // default 64 MiB the instance is stopped at its limit first).
    let (mut site, mqtt) = misbehaving_site(
        dir.path(),
        r#"{ mode = "flood", after = 1 }"#,
        // Lifting them takes a while in a debug build on a slow machine.
        r#"{ memory_limit = "256MiB", call_timeout = "30s" }"#,
        "500ms",
    );
    let rss = support::proc::RssSampler::start(site.pid());
    site.wait_for_log("dropped=999999").await;
    mqtt.wait_for_more(&mut site, "/neuron/omh/d/g", 3).await;

    let messages = mqtt.on("/neuron/omh/d/g");
    assert!(messages.len() >= 4, "{messages:?}");
    for message in &messages {
        let values = message["values"].as_object().unwrap();
        assert_eq!(values.len(), 1, "{message}");
        // The first reading of the tag wins: the poll count, not a flood value.
        assert!(values["counter"].as_i64().unwrap() > 0, "{message}");
    }
    assert_eq!(
        mqtt.last_on("omh/status/plugins/devices.d").unwrap()["restarts"],
        0,
        "a flood is not a crash"
    );
    println!(
        "million-reading polls: {} messages, host RSS peak/HWM {}",
        messages.len(),
        rss.report()
    );
    site.assert_alive();
}

#[tokio::test(flavor = "multi_thread")]
async fn host_memory_stays_flat_across_a_thousand_plugin_restarts() {
    let dir = tempfile::tempdir().unwrap();
    // Traps on every poll; restarted after 1 ms instead of backing off, so
    // a thousand restarts take seconds.
    let (mut site, mqtt) = misbehaving_site(
        dir.path(),
        r#"{ mode = "trap", after = 0 }"#,
        r#"{ restart_backoff = "1ms", restart_backoff_max = "1ms" }"#,
        "10ms",
    );
    let pid = site.pid();
    let restarts_at_least = async |site: &mut RunningSite, count: u64| {
        wait_for(
            Duration::from_secs(120),
            &format!("{count} restarts"),
            site,
            async |_| {
                let status = mqtt.last_on("omh/status/plugins/devices.d");
                (restarts(&status) >= count).then_some(())
            },
        )
        .await;
        support::proc::status_kib(pid, "VmRSS").unwrap() as f64 / 1024.0
    };
    // The first hundred warm up the allocator and the broker's log.
    let warm = restarts_at_least(&mut site, 100).await;
    let after = restarts_at_least(&mut site, 1_100).await;
    println!("host RSS after 100 restarts {warm:.1} MiB, after 1,100 {after:.1} MiB");
    assert!(
        after - warm < 16.0,
        "RSS grew from {warm:.1} MiB to {after:.1} MiB over 1,000 restarts"
    );
    site.assert_alive();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_logging_in_a_loop_gets_a_bounded_share_of_the_log() {
    let dir = tempfile::tempdir().unwrap();
    // 10,000 lines of 10 KB through `logging` and 1,000 to stderr in every
    // poll, every 100 ms.
    let (mut site, mqtt) = misbehaving_site(
        dir.path(),
        r#"{ mode = "chatty", after = 0 }"#,
        "{}",
        "100ms",
    );
    let started = std::time::Instant::now();
    mqtt.wait_for_more(&mut site, "/neuron/omh/d/g", 20).await;
    let seconds = started.elapsed().as_secs_f64() + 2.0;
    let log = site.log();
    let chatter: Vec<&str> = log.lines().filter(|l| l.contains("chatter")).collect();
    let longest = chatter.iter().map(|l| l.len()).max().unwrap_or(0);
    println!(
        "chatty plugin: {} of its lines logged over 20+ polls (11,000 a poll sent), longest {longest} bytes; log {} KiB",
        chatter.len(),
        log.len() >> 10
    );
    // A burst of 100, then 20 a second (the start-up counted in).
    let allowed = 100.0 + 20.0 * seconds;
    assert!(
        chatter.len() >= 100 && chatter.len() as f64 <= allowed,
        "{} lines in about {seconds:.0} s",
        chatter.len()
    );
    assert!(longest < 4400, "lines are cut at 4 KiB: {longest}");
    assert!(
        chatter.iter().any(|line| line.contains("stderr: chatter")),
        "stderr shares the budget"
    );
    assert!(log.contains("plugin logs too much; lines dropped"), "{log}");
    site.assert_alive();
}
