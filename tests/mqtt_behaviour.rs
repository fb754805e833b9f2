//! What an MQTT user relies on, checked against the embedded broker through
//! the gateway with independent clients (rumqttc, Debian's mosquitto tools
//! and hand-written packets). Where rumqttd departs from what most brokers
//! do, the test pins the documented behaviour (README, "MQTT behaviour").

mod support;

use rumqttc::{LastWill, Packet, QoS};
use std::time::{Duration, Instant};
use support::mqtt::{
    broker_site, connect_packet, connected, mosquitto, next_matching, next_publish,
    publishes_until_quiet, raw_connect, session, subscribed, unique_id,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SHORT: Duration = Duration::from_secs(2);

#[tokio::test]
async fn retained_messages_reach_late_subscribers_and_resumed_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let (_site, port) = broker_site(dir.path(), "anonymous = true\n").await;
    let (publisher, mut publisher_loop) = session(port, &unique_id("pub"), true);
    connected(&mut publisher_loop).await;
    publisher
        .publish("plant/line1/speed", QoS::AtLeastOnce, true, "42")
        .await
        .unwrap();
    next_matching(&mut publisher_loop, SHORT, |p| {
        matches!(p, Packet::PubAck(_)).then_some(())
    })
    .await
    .expect("PUBACK");

    // A client that connects later gets the last value at once, flagged retained.
    let id = unique_id("late");
    let (client, mut eventloop) = session(port, &id, false);
    assert!(!connected(&mut eventloop).await, "no session yet");
    subscribed(&client, &mut eventloop, "plant/#", QoS::AtLeastOnce).await;
    let first = next_publish(&mut eventloop, SHORT)
        .await
        .expect("retained value");
    assert_eq!(
        (first.topic.as_str(), &first.payload[..], first.retain),
        ("plant/line1/speed", &b"42"[..], true)
    );
    drop((client, eventloop));

    // A value retained while the session was away is queued for it.
    publisher
        .publish("plant/line1/speed", QoS::AtLeastOnce, true, "43")
        .await
        .unwrap();
    next_matching(&mut publisher_loop, SHORT, |p| {
        matches!(p, Packet::PubAck(_)).then_some(())
    })
    .await
    .expect("PUBACK");
    let (client, mut eventloop) = session(port, &id, false);
    assert!(connected(&mut eventloop).await, "session resumed");
    let queued = publishes_until_quiet(&mut eventloop, SHORT).await;
    let payloads: Vec<&[u8]> = queued.iter().map(|p| &p.payload[..]).collect();
    assert_eq!(payloads, [b"43"]);

    // A new subscription in the resumed session gets the retained value.
    // (Subscribing again to the *same* filter does not re-send it with
    // rumqttd, although MQTT 3.1.1 section 3.8.4 says it must: README.)
    subscribed(&client, &mut eventloop, "plant/+/speed", QoS::AtLeastOnce).await;
    let resent = next_publish(&mut eventloop, SHORT)
        .await
        .expect("retained value");
    assert_eq!((&resent.payload[..], resent.retain), (&b"43"[..], true));

    // mosquitto_sub, MQTT 5, sees it too.
    let out = mosquitto(
        "mosquitto_sub",
        &[
            "-p",
            &port.to_string(),
            "-V",
            "5",
            "-t",
            "plant/#",
            "-C",
            "1",
            "-v",
        ],
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "plant/line1/speed 43"
    );

    // An empty retained message clears it.
    publisher
        .publish("plant/line1/speed", QoS::AtLeastOnce, true, "")
        .await
        .unwrap();
    next_matching(&mut publisher_loop, SHORT, |p| {
        matches!(p, Packet::PubAck(_)).then_some(())
    })
    .await
    .expect("PUBACK");
    let (client, mut eventloop) = session(port, &unique_id("after-clear"), true);
    connected(&mut eventloop).await;
    subscribed(&client, &mut eventloop, "plant/#", QoS::AtLeastOnce).await;
    assert!(next_publish(&mut eventloop, SHORT).await.is_none());
}

#[tokio::test]
async fn a_will_is_published_when_a_client_vanishes_not_when_it_says_goodbye() {
    let dir = tempfile::tempdir().unwrap();
    let (_site, port) = broker_site(dir.path(), "anonymous = true\n").await;
    let (watcher, mut watcher_loop) = session(port, &unique_id("watch"), true);
    connected(&mut watcher_loop).await;
    subscribed(&watcher, &mut watcher_loop, "wills/#", QoS::AtLeastOnce).await;

    for (name, vanish) in [("vanished", true), ("polite", false)] {
        let mut options = rumqttc::MqttOptions::new(unique_id(name), "127.0.0.1", port);
        options.set_keep_alive(Duration::from_secs(5));
        options.set_last_will(LastWill::new(
            format!("wills/{name}"),
            "offline",
            QoS::AtLeastOnce,
            false,
        ));
        let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 10);
        connected(&mut eventloop).await;
        if vanish {
            // The socket closes without DISCONNECT, as when a device loses power.
            drop((client, eventloop));
        } else {
            client.disconnect().await.unwrap();
            let _ = eventloop.poll().await;
            let _ = eventloop.poll().await;
        }
    }
    let wills = publishes_until_quiet(&mut watcher_loop, SHORT).await;
    let topics: Vec<&str> = wills.iter().map(|p| p.topic.as_str()).collect();
    assert_eq!(topics, ["wills/vanished"]);
}

#[tokio::test]
async fn a_silent_client_is_dropped_after_one_and_a_half_keep_alives() {
    let dir = tempfile::tempdir().unwrap();
    let (_site, port) = broker_site(dir.path(), "anonymous = true\n").await;
    let (mut silent, code) = raw_connect(port, &unique_id("silent"), 2).await;
    assert_eq!(code, 0);
    let started = Instant::now();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), silent.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "the broker never closed a silent connection");
    let after = started.elapsed();
    assert!(
        after >= Duration::from_secs(2) && after <= Duration::from_secs(5),
        "closed after {after:?}; keep-alive 2 s allows 3 s"
    );

    // Keep-alive 0 (no timeout) is legal MQTT: accepted, unlike rumqttd alone.
    let (_patient, code) = raw_connect(port, &unique_id("patient"), 0).await;
    assert_eq!(code, 0, "keep-alive 0 refused");
}

#[tokio::test]
async fn a_persistent_session_gets_what_was_published_while_it_was_away() {
    let dir = tempfile::tempdir().unwrap();
    let (_site, port) = broker_site(dir.path(), "anonymous = true\n").await;
    let id = unique_id("persistent");
    let (client, mut eventloop) = session(port, &id, false);
    connected(&mut eventloop).await;
    subscribed(&client, &mut eventloop, "orders/#", QoS::AtLeastOnce).await;
    drop((client, eventloop));

    let (publisher, mut publisher_loop) = session(port, &unique_id("pub"), true);
    connected(&mut publisher_loop).await;
    for n in 1..=3 {
        publisher
            .publish("orders/new", QoS::AtLeastOnce, false, n.to_string())
            .await
            .unwrap();
    }
    let mut acked = 0;
    while acked < 3 {
        next_matching(&mut publisher_loop, SHORT, |p| {
            matches!(p, Packet::PubAck(_)).then_some(())
        })
        .await
        .expect("PUBACK");
        acked += 1;
    }

    // Back, with acknowledgements held back: the messages arrive in order...
    let mut options = rumqttc::MqttOptions::new(&id, "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(5));
    options.set_clean_session(false);
    options.set_manual_acks(true);
    let (client, mut eventloop) = rumqttc::AsyncClient::new(options.clone(), 10);
    assert!(connected(&mut eventloop).await, "session resumed");
    let queued = publishes_until_quiet(&mut eventloop, SHORT).await;
    let payloads: Vec<&[u8]> = queued.iter().map(|p| &p.payload[..]).collect();
    assert_eq!(payloads, [b"1", b"2", b"3"]);
    drop((client, eventloop));

    // ...and, never acknowledged, they come again on the next connection.
    let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 10);
    assert!(connected(&mut eventloop).await);
    let again = publishes_until_quiet(&mut eventloop, SHORT).await;
    let payloads: Vec<&[u8]> = again.iter().map(|p| &p.payload[..]).collect();
    assert_eq!(
        payloads,
        [b"1", b"2", b"3"],
        "unacknowledged QoS 1 redelivered"
    );
    for publish in &again {
        client.ack(publish).await.unwrap();
    }
    let _ = publishes_until_quiet(&mut eventloop, Duration::from_millis(500)).await;
    drop((client, eventloop));

    // Acknowledged now: nothing left for the session.
    let (_client, mut eventloop) = session(port, &id, false);
    assert!(connected(&mut eventloop).await);
    assert!(next_publish(&mut eventloop, SHORT).await.is_none());
}

#[tokio::test]
async fn subscriptions_match_as_the_spec_says() {
    let dir = tempfile::tempdir().unwrap();
    let (_site, port) = broker_site(dir.path(), "anonymous = true\n").await;
    let (client, mut eventloop) = session(port, &unique_id("sub"), true);
    connected(&mut eventloop).await;
    subscribed(&client, &mut eventloop, "#", QoS::AtMostOnce).await;
    subscribed(&client, &mut eventloop, "area/+", QoS::AtMostOnce).await;
    // rumqttd would drop the connection for a `$` filter; the gateway
    // refuses the filter in the SUBACK instead, and the session goes on.
    client.subscribe("$omh/#", QoS::AtMostOnce).await.unwrap();
    let codes = next_matching(&mut eventloop, SHORT, |p| match p {
        Packet::SubAck(suback) => Some(suback.return_codes),
        _ => None,
    })
    .await
    .expect("SUBACK");
    assert_eq!(codes, [rumqttc::SubscribeReasonCode::Failure]);
    let (publisher, mut publisher_loop) = session(port, &unique_id("pub"), true);
    connected(&mut publisher_loop).await;
    for topic in ["$omh/internal", "area/x"] {
        publisher
            .publish(topic, QoS::AtLeastOnce, false, topic)
            .await
            .unwrap();
    }
    tokio::spawn(async move { while publisher_loop.poll().await.is_ok() {} });
    let received = publishes_until_quiet(&mut eventloop, SHORT).await;
    // The host's own retained status (`omh/status/host`) may be among them.
    let mut topics: Vec<&str> = received
        .iter()
        .map(|p| p.topic.as_str())
        .filter(|topic| !topic.starts_with("omh/status/"))
        .collect();
    topics.sort();
    // `#` does not match `$omh/internal`. `area/x` matches both `#` and
    // `area/+`: rumqttd delivers one copy per matching subscription, which
    // MQTT allows (3.1.1 section 3.3.5, 5.0 section 3.3.4: "MAY deliver
    // further copies"); mosquitto sends one.
    assert_eq!(topics, ["area/x", "area/x"]);

    // After UNSUBSCRIBE (acknowledged), nothing more arrives on the filter.
    client.unsubscribe("#").await.unwrap();
    client.unsubscribe("area/+").await.unwrap();
    let mut unsubacks = 0;
    while unsubacks < 2 {
        next_matching(&mut eventloop, SHORT, |p| {
            matches!(p, Packet::UnsubAck(_)).then_some(())
        })
        .await
        .expect("UNSUBACK");
        unsubacks += 1;
    }
    let out = mosquitto(
        "mosquitto_pub",
        &["-p", &port.to_string(), "-t", "area/x", "-m", "late"],
    );
    assert!(out.status.success());
    assert!(next_publish(&mut eventloop, SHORT).await.is_none());
}

/// Deterministic noise, so a failure can be replayed.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

#[tokio::test]
async fn malformed_packets_end_only_their_own_connection() {
    let dir = tempfile::tempdir().unwrap();
    let (mut site, port) = broker_site(dir.path(), "anonymous = true\n").await;
    let (client, mut eventloop) = session(port, &unique_id("bystander"), true);
    connected(&mut eventloop).await;
    subscribed(&client, &mut eventloop, "still/#", QoS::AtMostOnce).await;
    // Kept polled (and so pinging) while the noise goes on.
    let (received, mut bystander) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(event) = eventloop.poll().await {
            if let rumqttc::Event::Incoming(Packet::Publish(publish)) = event {
                let _ = received.send(publish);
            }
        }
    });

    // 300 connections, MQTT 3.1.1 and 5, reusing five client ids, each
    // sending CONNECT and then garbage: noise, a packet only a server may
    // send (UNSUBACK with a body, which panics rumqttd's MQTT 5 decoder),
    // or a packet announcing 200 MB.
    for seed in 0..300u64 {
        let level = if seed % 2 == 0 { 5 } else { 4 };
        let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
            panic!("the broker stopped accepting connections at {seed}");
        };
        let mut bytes = connect_packet(&format!("fuzz-{}", seed % 5), 10, level);
        match seed % 3 {
            0 => bytes.extend(noise(seed, 1 + (seed as usize * 7) % 300)),
            1 => bytes.extend([0xB0, 0x03, 0x00, 0x01, 0x00]),
            _ => bytes.extend([0x30, 0xFF, 0xFF, 0xFF, 0x7F]),
        }
        let _ = stream.write_all(&bytes).await;
        let mut rest = Vec::new();
        let _ =
            tokio::time::timeout(Duration::from_millis(50), stream.read_to_end(&mut rest)).await;
    }
    site.assert_alive();

    // The bystander still gets messages, and a well-behaved MQTT 5 client
    // can use one of the abused client ids.
    let out = mosquitto(
        "mosquitto_pub",
        &[
            "-p",
            &port.to_string(),
            "-V",
            "5",
            "-i",
            "fuzz-1",
            "-t",
            "still/here",
            "-m",
            "yes",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let publish = tokio::time::timeout(SHORT, bystander.recv())
        .await
        .ok()
        .flatten()
        .expect("bystander served");
    assert_eq!(&publish.payload[..], b"yes");
    drop(client);
}
