//! MQTT clients for the broker tests: rumqttc sessions, the Debian
//! `mosquitto_sub`/`mosquitto_pub` tools, and raw CONNECT bytes for what no
//! client library will send (a silent client, keep-alive 0).

use super::site::{RunningSite, free_port, plugins_dir};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, Publish, QoS};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A site that is only a broker, with `broker_extra` appended to its
/// `[broker]` section (and any further sections after it).
pub async fn broker_site(dir: &Path, broker_extra: &str) -> (RunningSite, u16) {
    let port = free_port();
    let manifest = dir.join("site.toml");
    std::fs::write(
        &manifest,
        format!(
            "[site]\nname = \"broker\"\ndata_dir = \"{}\"\n[plugins]\ndir = \"{}\"\n[broker]\nlisten = \"127.0.0.1:{port}\"\n{broker_extra}",
            dir.join("data").display(),
            plugins_dir().display()
        ),
    )
    .unwrap();
    let mut site = RunningSite::start(&manifest, &[], &dir.join("logs"));
    site.wait_for_log("running (").await;
    (site, port)
}

/// A rumqttc session: `clean` false keeps the session across connections.
pub fn session(port: u16, client_id: &str, clean: bool) -> (AsyncClient, EventLoop) {
    let mut options = MqttOptions::new(client_id, "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(5));
    options.set_clean_session(clean);
    AsyncClient::new(options, 100)
}

/// Polls until `want` picks an incoming packet, or `within` passes.
pub async fn next_matching<T>(
    eventloop: &mut EventLoop,
    within: Duration,
    mut want: impl FnMut(Packet) -> Option<T>,
) -> Option<T> {
    tokio::time::timeout(within, async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(packet)) => {
                    if let Some(found) = want(packet) {
                        return found;
                    }
                }
                Ok(Event::Outgoing(_)) => {}
                Err(error) => panic!("MQTT connection failed: {error}"),
            }
        }
    })
    .await
    .ok()
}

/// The next PUBLISH within `within`.
pub async fn next_publish(eventloop: &mut EventLoop, within: Duration) -> Option<Publish> {
    next_matching(eventloop, within, |packet| match packet {
        Packet::Publish(publish) => Some(publish),
        _ => None,
    })
    .await
}

/// Every PUBLISH until `quiet` passes without one.
pub async fn publishes_until_quiet(eventloop: &mut EventLoop, quiet: Duration) -> Vec<Publish> {
    let mut received = Vec::new();
    while let Some(publish) = next_publish(eventloop, quiet).await {
        received.push(publish);
    }
    received
}

/// Connects, waits for CONNACK, and returns whether a session was present.
pub async fn connected(eventloop: &mut EventLoop) -> bool {
    next_matching(eventloop, Duration::from_secs(10), |packet| match packet {
        Packet::ConnAck(ack) => Some(ack.session_present),
        _ => None,
    })
    .await
    .expect("CONNACK within 10 s")
}

/// Subscribes and waits for the SUBACK.
pub async fn subscribed(client: &AsyncClient, eventloop: &mut EventLoop, filter: &str, qos: QoS) {
    client.subscribe(filter, qos).await.unwrap();
    next_matching(eventloop, Duration::from_secs(10), |packet| {
        matches!(packet, Packet::SubAck(_)).then_some(())
    })
    .await
    .expect("SUBACK within 10 s");
}

/// A clean-session CONNECT for `client_id` with `keep_alive` seconds and no
/// credentials, written by hand: MQTT 3.1.1 (`level` 4) or 5.
pub fn connect_packet(client_id: &str, keep_alive: u16, level: u8) -> Vec<u8> {
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', level, 0x02];
    body.extend_from_slice(&keep_alive.to_be_bytes());
    if level == 5 {
        body.push(0); // no properties
    }
    body.extend_from_slice(&(client_id.len() as u16).to_be_bytes());
    body.extend_from_slice(client_id.as_bytes());
    let mut packet = vec![0x10, body.len() as u8];
    packet.extend(body);
    packet
}

/// Sends a hand-written CONNECT and returns the stream and the CONNACK's
/// return code.
pub async fn raw_connect(port: u16, client_id: &str, keep_alive: u16) -> (TcpStream, u8) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stream
        .write_all(&connect_packet(client_id, keep_alive, 4))
        .await
        .unwrap();
    let mut connack = [0u8; 4];
    stream.read_exact(&mut connack).await.unwrap();
    assert_eq!(connack[0], 0x20, "CONNACK expected, got {connack:?}");
    (stream, connack[3])
}

/// Runs a Debian mosquitto client tool (`mosquitto_sub`, `mosquitto_pub`)
/// with a time limit.
pub fn mosquitto(tool: &str, args: &[&str]) -> Output {
    Command::new("timeout")
        .arg("10")
        .arg(tool)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{tool} runs (apt install mosquitto-clients): {e}"))
}

/// A client id no other test uses.
pub fn unique_id(prefix: &str) -> String {
    format!("{prefix}-{}", free_port())
}

/// A test CA (`ca.pem`) and a server certificate for 127.0.0.1 signed by it
/// (`cert.pem`, `key.pem`), made in `dir` by the openssl CLI. A real chain,
/// not a self-signed leaf: rustls (webpki) refuses a CA certificate used as
/// a server's.
pub fn tls_chain(dir: &Path) {
    let openssl = |args: &[&str]| {
        let status = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stderr(Stdio::null())
            .status()
            .expect("openssl runs (apt install openssl)");
        assert!(status.success(), "openssl {args:?}");
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(
        &[
            &["req", "-x509"][..],
            &ec,
            &[
                "-days",
                "1",
                "-subj",
                "/CN=omh-test-ca",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
            ],
        ]
        .concat(),
    );
    openssl(
        &[
            &["req"][..],
            &ec,
            &[
                "-subj",
                "/CN=127.0.0.1",
                "-keyout",
                "key.pem",
                "-out",
                "server.csr",
            ],
        ]
        .concat(),
    );
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        "server.ext",
        "-out",
        "cert.pem",
    ]);
}
