//! The uplink against a real `mosquitto` upstream: numbered messages
//! published into the site's bus arrive upstream, all of them and in order,
//! across a 20 s outage of the upstream broker; the host's retained status
//! upstream says online, offline at a clean stop, and offline (the last
//! will) after `kill -9`; and across a full disk under its buffer.

mod support;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::disk::SmallDisk;
use support::mosquitto::Mosquitto;
use support::mqtt::tls_chain;
use support::site::{RunningSite, free_port, http_get, manifest_header, plugins_dir, wait_for};

const PREFIX: &str = "acme/plant1/";
const COUNTER_TOPIC: &str = "line/counter";
const STATUS_TOPIC: &str = "acme/plant1/omh/status/host";
const OUTAGE: Duration = Duration::from_secs(20);
const PUBLISH_EVERY: Duration = Duration::from_millis(20);

/// A site named plant1 with no device (its bus is fed by an outside
/// client) forwarding `line/#` upstream: (site, MQTT port, HTTP port).
fn start_site(dir: &Path, upstream_port: u16) -> (RunningSite, u16, u16) {
    start_site_with(dir, &format!("mqtt://127.0.0.1:{upstream_port}"), "")
}

/// As [`start_site`], to `url`, with `extra` lines in `[uplink]`.
fn start_site_with(dir: &Path, url: &str, extra: &str) -> (RunningSite, u16, u16) {
    std::fs::create_dir_all(dir).unwrap();
    let (mqtt_port, http_port) = (free_port(), free_port());
    let header = manifest_header(&dir.join("data"), &plugins_dir(), mqtt_port).replacen(
        "[site]\n",
        "[site]\nname = \"plant1\"\n",
        1,
    );
    let manifest = dir.join("site.toml");
    std::fs::write(
        &manifest,
        format!(
            "{header}[http]\nlisten = \"127.0.0.1:{http_port}\"\n\
             [uplink]\nurl = \"{url}\"\ntopics = [\"line/#\"]\n\
             prefix = \"{PREFIX}\"\nkeep_alive = \"2s\"\n{extra}"
        ),
    )
    .unwrap();
    let site = RunningSite::start(&manifest, &[], &dir.join("log"));
    (site, mqtt_port, http_port)
}

/// An upstream subscriber to everything under the prefix; it resubscribes
/// whenever it reconnects (mosquitto keeps no session across a restart).
#[derive(Clone, Default)]
struct Upstream {
    messages: Arc<Mutex<Vec<(String, String)>>>,
}

impl Upstream {
    fn connect(port: u16) -> Self {
        let upstream = Self::default();
        let mut options = MqttOptions::new(format!("checker-{}", free_port()), "127.0.0.1", port);
        options.set_keep_alive(Duration::from_secs(5));
        let (client, mut eventloop) = AsyncClient::new(options, 100);
        let messages = upstream.messages.clone();
        tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => client
                        .subscribe(format!("{PREFIX}#"), QoS::AtLeastOnce)
                        .await
                        .unwrap(),
                    Ok(Event::Incoming(Packet::Publish(publish))) => {
                        let payload = String::from_utf8_lossy(&publish.payload).into_owned();
                        messages.lock().unwrap().push((publish.topic, payload));
                    }
                    Ok(_) => {}
                    // Upstream is down on purpose: try again soon, sooner
                    // than the uplink's backoff, so nothing replayed is missed.
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        upstream
    }

    fn on(&self, topic: &str) -> Vec<String> {
        let messages = self.messages.lock().unwrap();
        messages
            .iter()
            .filter(|(t, _)| t == topic)
            .map(|(_, p)| p.clone())
            .collect()
    }

    fn last_status(&self) -> Option<serde_json::Value> {
        let last = self.on(STATUS_TOPIC).pop()?;
        serde_json::from_str(&last).ok()
    }
}

/// Publishes 0, 1, 2, ... with QoS 1 into the site's bus; counts what the
/// local broker acknowledged.
struct Counter {
    client: AsyncClient,
    acked: Arc<AtomicU64>,
    next: u64,
}

impl Counter {
    fn connect(port: u16) -> Self {
        let options = MqttOptions::new(format!("counter-{}", free_port()), "127.0.0.1", port);
        let (client, mut eventloop) = AsyncClient::new(options, 100);
        let acked = Arc::new(AtomicU64::new(0));
        let counted = acked.clone();
        tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        counted.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        Self {
            client,
            acked,
            next: 0,
        }
    }

    async fn publish_for(&mut self, how_long: Duration) {
        let mut tick = tokio::time::interval(PUBLISH_EVERY);
        let end = tokio::time::Instant::now() + how_long;
        while tokio::time::Instant::now() < end {
            tick.tick().await;
            self.client
                .publish(
                    COUNTER_TOPIC,
                    QoS::AtLeastOnce,
                    false,
                    self.next.to_string(),
                )
                .await
                .unwrap();
            self.next += 1;
        }
    }
}

fn metric(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} not in /metrics:\n{metrics}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_arrives_upstream_in_order_across_a_20s_outage() {
    let dir = tempfile::tempdir().unwrap();
    let mut mosquitto = Mosquitto::start(
        &dir.path().join("mosquitto"),
        // Every message of a replayed backlog must reach the subscriber,
        // not the default 1,000 queued.
        "max_queued_messages 0\nlog_dest stderr\nlog_type error\nlog_type warning\nlog_type notice",
    );
    let upstream = Upstream::connect(mosquitto.addr.port());
    let (mut site, mqtt_port, http_port) = start_site(dir.path(), mosquitto.addr.port());
    site.wait_for_log("uplink connected").await;
    let mut counter = Counter::connect(mqtt_port);

    counter.publish_for(Duration::from_secs(5)).await;
    mosquitto.stop();
    let outage_started = tokio::time::Instant::now();
    counter.publish_for(OUTAGE / 2).await;
    let metrics = http_get(http_port, "/metrics").1;
    assert_eq!(metric(&metrics, "omh_uplink_connected"), 0.0, "{metrics}");
    assert!(
        metric(&metrics, "omh_uplink_buffer_pending_messages") > 0.0,
        "{metrics}"
    );
    counter
        .publish_for(OUTAGE.saturating_sub(outage_started.elapsed()))
        .await;
    mosquitto.restart();
    counter.publish_for(Duration::from_secs(5)).await;

    let published = counter.next;
    wait_until_upstream_has_all(&mut site, &counter, &upstream).await;
    let (received, duplicates) = assert_every_number_in_order(&upstream, published);
    eprintln!(
        "{published} messages published, {received} received upstream ({duplicates} duplicates), \
         {}s outage",
        OUTAGE.as_secs()
    );

    let metrics = http_get(http_port, "/metrics").1;
    assert_eq!(metric(&metrics, "omh_uplink_connected"), 1.0, "{metrics}");
    assert_eq!(
        metric(&metrics, "omh_uplink_reconnects_total"),
        1.0,
        "{metrics}"
    );
    assert!(
        metric(&metrics, "omh_uplink_messages_total") >= published as f64,
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "omh_uplink_buffer_pending_messages"),
        0.0,
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "omh_uplink_buffer_dropped_total"),
        0.0,
        "{metrics}"
    );

    // One line per state change, none per failed retry.
    let log = site.log();
    assert_eq!(log.matches("uplink connection lost").count(), 1, "{log}");
    assert_eq!(log.matches("uplink connected").count(), 2, "{log}");
    assert_eq!(log.matches("uplink cannot connect").count(), 0, "{log}");
}

/// Waits until the site's bus has acknowledged every publish of `counter`
/// and the last of them has arrived upstream. The uplink's backoff (1, 2,
/// 4, 8, 16 s) reconnects within ~31 s of a loss.
async fn wait_until_upstream_has_all(
    site: &mut RunningSite,
    counter: &Counter,
    upstream: &Upstream,
) {
    let published = counter.next;
    wait_for(
        Duration::from_secs(5),
        "the site's bus to acknowledge every publish",
        site,
        async |_| (counter.acked.load(Ordering::Relaxed) == published).then_some(()),
    )
    .await;
    let upstream_topic = format!("{PREFIX}{COUNTER_TOPIC}");
    wait_for(
        Duration::from_secs(60),
        &format!("{published} messages upstream"),
        site,
        async |_| {
            let seen = upstream.on(&upstream_topic);
            seen.last()
                .is_some_and(|n| *n == (published - 1).to_string())
                .then_some(())
        },
    )
    .await;
}

/// Every number `0..published` arrived upstream, first arrivals in order;
/// a number may come again only as part of a resent run (at least once),
/// never out of sequence. Returns (received, duplicates).
fn assert_every_number_in_order(upstream: &Upstream, published: u64) -> (usize, u64) {
    let seen: Vec<u64> = upstream
        .on(&format!("{PREFIX}{COUNTER_TOPIC}"))
        .iter()
        .map(|n| n.parse().unwrap())
        .collect();
    let mut next = 0;
    let mut duplicates = 0;
    for &n in &seen {
        if n == next {
            next += 1;
        } else {
            assert!(n < next, "{n} arrived before {next}: out of order");
            duplicates += 1;
        }
    }
    assert_eq!(next, published, "every message arrives upstream");
    (seen.len(), duplicates)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_arrives_upstream_across_a_full_disk_under_the_buffer() {
    let dir = tempfile::tempdir().unwrap();
    let Some(disk) = SmallDisk::mount(&dir.path().join("data/uplink"), "4m") else {
        eprintln!("SKIPPED: cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN)");
        return;
    };
    let mosquitto = Mosquitto::start(&dir.path().join("mosquitto"), "max_queued_messages 0");
    let upstream = Upstream::connect(mosquitto.addr.port());
    let (mut site, mqtt_port, _) = start_site(dir.path(), mosquitto.addr.port());
    site.wait_for_log("uplink connected").await;
    let mut counter = Counter::connect(mqtt_port);

    counter.publish_for(Duration::from_secs(3)).await;
    // Nothing can be appended to the uplink's buffer now; the bus holds the
    // messages meanwhile.
    let filler = disk.fill();
    counter.publish_for(OUTAGE).await;
    assert!(
        site.log().contains("cannot append to the buffer"),
        "the full disk is logged; log:\n{}",
        site.log()
    );
    std::fs::remove_file(filler).unwrap();
    counter.publish_for(Duration::from_secs(3)).await;

    let published = counter.next;
    wait_until_upstream_has_all(&mut site, &counter, &upstream).await;
    let (received, duplicates) = assert_every_number_in_order(&upstream, published);
    eprintln!(
        "full disk under the uplink's buffer for {}s: {published} published, {received} received \
         upstream ({duplicates} duplicates)",
        OUTAGE.as_secs()
    );
}

/// The retained status a subscriber connecting now sees.
async fn retained_status(port: u16) -> Option<serde_json::Value> {
    let subscriber = Upstream::connect(port);
    for _ in 0..50 {
        if let Some(status) = subscriber.last_status() {
            return Some(status);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_status_upstream_is_online_then_offline_at_a_clean_stop_and_after_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mosquitto = Mosquitto::start(
        &dir.path().join("mosquitto"),
        // Every message of a replayed backlog must reach the subscriber,
        // not the default 1,000 queued.
        "max_queued_messages 0\nlog_dest stderr\nlog_type error\nlog_type warning\nlog_type notice",
    );
    let upstream = Upstream::connect(mosquitto.addr.port());
    // Waits for the `count`th online status: the host's `count`th start.
    let wait_online = async |site: &mut RunningSite, count: usize| {
        wait_for(
            Duration::from_secs(20),
            &format!("online #{count} on {STATUS_TOPIC}"),
            site,
            async |_| {
                let online: Vec<serde_json::Value> = upstream
                    .on(STATUS_TOPIC)
                    .iter()
                    .filter_map(|s| serde_json::from_str(s).ok())
                    .filter(|s: &serde_json::Value| s["state"] == "online")
                    .collect();
                online.get(count - 1).cloned()
            },
        )
        .await
    };

    let (mut site, _, _) = start_site(dir.path(), mosquitto.addr.port());
    let online = wait_online(&mut site, 1).await;
    assert_eq!(online["site"], "plant1", "{online}");
    assert!(online["timestamp"].is_i64(), "{online}");
    let exit = site.terminate();
    assert!(exit.success(), "clean stop: {exit}; log:\n{}", site.log());
    let stopped = retained_status(mosquitto.addr.port()).await;
    assert!(
        stopped.as_ref().is_some_and(|s| s["state"] == "offline"
            && s["reason"] == "stopped"
            && s["timestamp"].is_i64()),
        "retained after a clean stop: {stopped:?}; log:\n{}",
        site.log()
    );

    let (mut site, _, _) = start_site(dir.path(), mosquitto.addr.port());
    wait_online(&mut site, 2).await;
    site.kill(); // SIGKILL: only the broker's last will can say it
    let mut will = None;
    for _ in 0..20 {
        will = retained_status(mosquitto.addr.port()).await;
        if will.as_ref().is_some_and(|s| s["state"] == "offline") {
            break;
        }
    }
    assert!(
        will.as_ref()
            .is_some_and(|s| s["reason"] == "connection lost" && s["site"] == "plant1"),
        "retained after kill -9: {will:?}; mosquitto log:\n{}",
        mosquitto.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_uplink_forwards_over_tls_to_a_broker_it_trusts_and_only_to_one() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    tls_chain(&certs);
    let tls_port = free_port();
    // mosquitto with its plain listener (for the checker) and a TLS one.
    let mosquitto = Mosquitto::start(
        &dir.path().join("mosquitto"),
        &format!(
            "listener {tls_port} 127.0.0.1\ncertfile {}\nkeyfile {}\n",
            certs.join("cert.pem").display(),
            certs.join("key.pem").display()
        ),
    );
    let upstream = Upstream::connect(mosquitto.addr.port());
    let url = format!("mqtts://127.0.0.1:{tls_port}");
    let ca_file = format!("ca_file = \"{}\"\n", certs.join("ca.pem").display());
    let (mut site, mqtt_port, _) = start_site_with(&dir.path().join("trusting"), &url, &ca_file);
    site.wait_for_log("uplink connected").await;
    let mut counter = Counter::connect(mqtt_port);
    counter.publish_for(Duration::from_secs(1)).await;
    let published = counter.next;
    let upstream_topic = format!("{PREFIX}{COUNTER_TOPIC}");
    wait_for(
        Duration::from_secs(10),
        &format!("{published} messages upstream over TLS"),
        &mut site,
        async |_| (upstream.on(&upstream_topic).len() as u64 >= published).then_some(()),
    )
    .await;

    // Without the test CA (the system's roots), the certificate is refused,
    // and the log says why.
    let (mut doubting, _, _) = start_site_with(&dir.path().join("doubting"), &url, "");
    doubting.wait_for_log("uplink cannot connect").await;
    let log = doubting.log();
    assert!(log.to_lowercase().contains("certificate"), "{log}");
}
