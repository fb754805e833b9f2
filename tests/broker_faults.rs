//! The broker under clients that misbehave without breaking the protocol:
//! one that subscribes and never reads, a thousand that connect and idle,
//! one that publishes more than `max_payload_size`. Each costs bounded
//! memory and nothing to the other clients. (Malformed packets are in
//! `mqtt_behaviour.rs`.)

mod support;

use rumqttc::{AsyncClient, MqttOptions, Packet, QoS};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use support::mqtt::{broker_site, connected, mosquitto, raw_connect, subscribed, unique_id};
use support::proc::status_kib;
use support::site::RunningSite;
use tokio::io::AsyncWriteExt;

fn rss_mib(site: &RunningSite) -> f64 {
    status_kib(site.pid(), "VmRSS").expect("host alive") as f64 / 1024.0
}

/// A subscriber that counts what it receives on `filter`, kept polled.
async fn counting_subscriber(port: u16, filter: &str) -> Arc<AtomicU64> {
    let mut options = MqttOptions::new(unique_id("reader"), "127.0.0.1", port);
    options.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut eventloop) = AsyncClient::new(options, 100);
    connected(&mut eventloop).await;
    subscribed(&client, &mut eventloop, filter, QoS::AtMostOnce).await;
    let received = Arc::new(AtomicU64::new(0));
    let counter = received.clone();
    tokio::spawn(async move {
        let _client = client;
        while let Ok(event) = eventloop.poll().await {
            if let rumqttc::Event::Incoming(Packet::Publish(_)) = event {
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    received
}

/// `counter` once it reaches `count`, or once it has not moved for a second.
async fn all_or_stalled(counter: &AtomicU64, count: u64) -> u64 {
    let mut last = u64::MAX;
    loop {
        let now = counter.load(Ordering::Relaxed);
        if now >= count || now == last {
            return now;
        }
        last = now;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// SUBSCRIBE (MQTT 3.1.1, packet id 1) to `filter` at QoS 0, by hand.
fn subscribe_packet(filter: &str) -> Vec<u8> {
    let mut body = vec![0, 1];
    body.extend_from_slice(&(filter.len() as u16).to_be_bytes());
    body.extend_from_slice(filter.as_bytes());
    body.push(0);
    let mut packet = vec![0x82, body.len() as u8];
    packet.extend(body);
    packet
}

/// Publishes `count` messages of `size` bytes at QoS 0 on `topic/<i>`, at
/// about `rate` messages/s (a pace a reading subscriber keeps up with, so
/// only a stalled one falls behind).
async fn publish_load(port: u16, topic: &str, count: usize, size: usize, rate: usize) {
    let mut options = MqttOptions::new(unique_id("load"), "127.0.0.1", port);
    options.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut eventloop) = AsyncClient::new(options, 100);
    connected(&mut eventloop).await;
    let driver = tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
    let payload = vec![b'x'; size];
    let mut pace = tokio::time::interval(Duration::from_millis(10));
    for burst in 0..count.div_ceil(rate / 100) {
        pace.tick().await;
        for i in burst * rate / 100..((burst + 1) * rate / 100).min(count) {
            let topic = format!("{topic}/{}", i % 16);
            client
                .publish(topic, QoS::AtMostOnce, false, payload.clone())
                .await
                .unwrap();
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    driver.abort();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_subscriber_that_never_reads_holds_up_no_one_and_memory_stays_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let (mut site, port) = broker_site(dir.path(), "anonymous = true\n").await;
    let reader = counting_subscriber(port, "load/#").await;
    // Subscribes to everything, then never reads a byte.
    let (mut stalled, code) = raw_connect(port, "stalled", 600).await;
    assert_eq!(code, 0);
    stalled
        .write_all(&subscribe_packet("load/#"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_mib(&site);

    // 96 MB through the broker, ten times what rumqttd keeps per filter.
    const COUNT: usize = 6_000;
    publish_load(port, "load", COUNT, 16 << 10, 1_000).await;
    let after = rss_mib(&site);
    let delivered = all_or_stalled(&reader, COUNT as u64).await;
    println!(
        "stalled subscriber: {COUNT} x 16 KiB at 1,000 msgs/s; the reading subscriber got \
         {delivered}; host RSS {before:.0} -> {after:.0} MiB"
    );
    // At QoS 0 a reader that falls a whole log (about 640 of these
    // messages) behind is skipped ahead by rumqttd; on a loaded machine a
    // few may go that way, whoever else is subscribed.
    assert!(
        delivered as f64 >= COUNT as f64 * 0.99,
        "the reading subscriber got {delivered} of {COUNT}"
    );
    assert!(
        after - before < 64.0,
        "RSS grew from {before:.0} to {after:.0} MiB for 96 MB sent past a stalled reader"
    );
    site.assert_alive();
    drop(stalled);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_idle_connections_cost_little_and_others_keep_working() {
    const IDLE: usize = 1_000;
    let dir = tempfile::tempdir().unwrap();
    let (mut site, port) =
        broker_site(dir.path(), "anonymous = true\nmax_connections = 1100\n").await;
    // The test holds a socket per connection too.
    rlimit::increase_nofile_limit(u64::MAX).unwrap();
    let before = rss_mib(&site);
    let started = Instant::now();
    let mut idle = Vec::with_capacity(IDLE);
    for i in 0..IDLE {
        let (stream, code) = raw_connect(port, &format!("idle-{i}"), 600).await;
        assert_eq!(code, 0, "connection {i} refused");
        idle.push(stream);
    }
    let connect_time = started.elapsed();
    let after = rss_mib(&site);

    // A publisher and a subscriber beside them still get through at once.
    let reader = counting_subscriber(port, "work/#").await;
    let started = Instant::now();
    let out = mosquitto(
        "mosquitto_pub",
        &[
            "-p",
            &port.to_string(),
            "-t",
            "work/x",
            "-m",
            "hello",
            "-q",
            "1",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    while reader.load(Ordering::Relaxed) == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "message not delivered"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let round_trip = started.elapsed();
    println!(
        "{IDLE} idle connections: connected in {:.1} s; host RSS {before:.0} -> {after:.0} MiB \
         ({:.0} KiB each); a publish beside them reached its subscriber in {} ms",
        connect_time.as_secs_f64(),
        (after - before) * 1024.0 / IDLE as f64,
        round_trip.as_millis()
    );
    assert!(
        (after - before) * 1024.0 / (IDLE as f64) < 200.0,
        "{before:.0} -> {after:.0} MiB for {IDLE} idle connections"
    );
    site.assert_alive();
    drop(idle);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_oversized_publish_ends_only_its_own_connection() {
    let dir = tempfile::tempdir().unwrap();
    let (mut site, port) = broker_site(
        dir.path(),
        "anonymous = true\nmax_payload_size = \"64KiB\"\n",
    )
    .await;
    let reader = counting_subscriber(port, "size/#").await;
    let port = port.to_string();

    let big = dir.path().join("big");
    std::fs::write(&big, vec![b'x'; 100 << 10]).unwrap();
    let big = big.to_str().unwrap();
    let out = mosquitto(
        "mosquitto_pub",
        &["-p", &port, "-t", "size/big", "-f", big, "-q", "1"],
    );
    assert!(
        !out.status.success(),
        "a 100 KiB publish over a 64 KiB limit is refused"
    );
    // Just under the limit, and small, still work, as does the reader.
    let fits = dir.path().join("fits");
    std::fs::write(&fits, vec![b'x'; 60 << 10]).unwrap();
    for args in [
        ["-t", "size/fits", "-f", fits.to_str().unwrap()],
        ["-t", "size/small", "-m", "ok"],
    ] {
        let out = mosquitto(
            "mosquitto_pub",
            &[&["-p", &port, "-q", "1"][..], &args].concat(),
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(
        all_or_stalled(&reader, 2).await,
        2,
        "the two that fit, not the big one"
    );
    assert!(
        // By the gateway past max_payload_size plus room for the topic
        // (64 KiB), else, as here, by rumqttd behind it.
        site.log().contains("larger than broker.max_payload_size")
            || site.log().contains("PayloadSizeLimitExceeded(102"),
        "the refusal is logged; log:\n{}",
        site.log()
    );
    site.assert_alive();
}
