//! Who may use the broker: passwords hashed by `omh-host passwd`, anonymous
//! clients refused, per-user topic permissions, and the TLS listener,
//! checked with rumqttc and Debian's mosquitto tools.

mod support;

use rumqttc::{AsyncClient, ConnectReturnCode, MqttOptions, Packet, QoS, SubscribeReasonCode};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;
use support::mqtt::{
    broker_site, connected, mosquitto, next_matching, publishes_until_quiet, subscribed, tls_chain,
};
use support::site::{free_port, http_get};

const PASSWORD: &str = "correct horse";
const SHORT: Duration = Duration::from_secs(2);

/// `[broker.users.NAME]` as `omh-host passwd` prints it, with its default
/// permissions replaced by `permissions`.
fn user(name: &str, permissions: &str) -> String {
    let mut passwd = Command::new(env!("CARGO_BIN_EXE_omh-host"))
        .args(["passwd", name])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(passwd.stdin.take().unwrap(), "{PASSWORD}").unwrap();
    let out = passwd.wait_with_output().unwrap();
    assert!(out.status.success());
    let printed = String::from_utf8(out.stdout).unwrap();
    let hash_line = printed
        .lines()
        .find(|l| l.starts_with("password_hash = \"$argon2id$"))
        .unwrap_or_else(|| panic!("no argon2 hash in:\n{printed}"));
    assert!(
        !printed.contains(PASSWORD),
        "the password itself is printed"
    );
    format!("[broker.users.{name}]\n{hash_line}\n{permissions}\n")
}

fn options(port: u16, client_id: &str, login: Option<(&str, &str)>) -> MqttOptions {
    let mut options = MqttOptions::new(client_id, "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(5));
    if let Some((username, password)) = login {
        options.set_credentials(username, password);
    }
    options
}

/// The CONNACK code a client gets.
async fn connack(options: MqttOptions) -> ConnectReturnCode {
    let (_client, mut eventloop) = AsyncClient::new(options, 10);
    match eventloop.poll().await {
        Ok(rumqttc::Event::Incoming(Packet::ConnAck(ack))) => ack.code,
        Err(rumqttc::ConnectionError::ConnectionRefused(code)) => code,
        other => panic!("no CONNACK: {other:?}"),
    }
}

/// Users of every test: an operator allowed everything, a dashboard that
/// only reads the plant, and presses that may only command themselves.
fn users() -> String {
    user("operator", "publish = [\"#\"]\nsubscribe = [\"#\"]")
        + &user("dashboard", "subscribe = [\"plant/#\"]")
        + &user("press", "publish = [\"plant/cmd/%c\"]")
}

#[tokio::test]
async fn wrong_or_missing_credentials_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let http = free_port();
    let (_site, port) = broker_site(
        dir.path(),
        &format!("{}[http]\nlisten = \"127.0.0.1:{http}\"\n", users()),
    )
    .await;
    for (login, expected) in [
        (None, ConnectReturnCode::NotAuthorized),
        (
            Some(("operator", "wrong")),
            ConnectReturnCode::BadUserNamePassword,
        ),
        (
            Some(("nobody", PASSWORD)),
            ConnectReturnCode::BadUserNamePassword,
        ),
        (Some(("operator", PASSWORD)), ConnectReturnCode::Success),
    ] {
        let code = connack(options(port, "c", login)).await;
        assert_eq!(code, expected, "{login:?}");
    }
    // The same from mosquitto_sub, MQTT 5.
    let out = mosquitto(
        "mosquitto_sub",
        &[
            "-p",
            &port.to_string(),
            "-V",
            "5",
            "-u",
            "operator",
            "-P",
            "nope",
            "-t",
            "#",
        ],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Bad User Name or Password"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_, metrics) = http_get(http, "/metrics");
    assert!(
        metrics.contains("omh_mqtt_auth_failures_total 4"),
        "{metrics}"
    );
}

#[tokio::test]
async fn users_publish_and_subscribe_only_within_their_permissions() {
    let dir = tempfile::tempdir().unwrap();
    let (_site, port) = broker_site(dir.path(), &users()).await;
    let login = |user| Some((user, PASSWORD));

    // Subscriptions: (user, filter, granted).
    let (dashboard, mut dashboard_loop) =
        AsyncClient::new(options(port, "dashboard-1", login("dashboard")), 10);
    connected(&mut dashboard_loop).await;
    for (filter, granted) in [
        ("plant/#", true),
        ("plant/+/temperature", true),
        ("#", false),
        ("office/#", false),
    ] {
        dashboard.subscribe(filter, QoS::AtMostOnce).await.unwrap();
        let codes = next_matching(&mut dashboard_loop, SHORT, |p| match p {
            Packet::SubAck(suback) => Some(suback.return_codes),
            _ => None,
        })
        .await
        .expect("SUBACK");
        let expected = if granted {
            SubscribeReasonCode::Success(QoS::AtMostOnce)
        } else {
            SubscribeReasonCode::Failure
        };
        assert_eq!(codes, [expected], "dashboard subscribing to {filter}");
    }

    // Publishes: (user, client id, topic, delivered). Every one is
    // acknowledged (MQTT 3.1.1 has no way to refuse); only allowed ones
    // reach the operator, who reads everything.
    let (operator, mut operator_loop) =
        AsyncClient::new(options(port, "operator-1", login("operator")), 10);
    connected(&mut operator_loop).await;
    subscribed(&operator, &mut operator_loop, "#", QoS::AtLeastOnce).await;
    let cases = [
        ("press", "press1", "plant/cmd/press1", true),
        ("press", "press1", "plant/cmd/press2", false),
        ("dashboard", "dashboard-2", "plant/cmd/press1", false),
        ("operator", "operator-2", "office/notice", true),
    ];
    for (user, client_id, topic, _) in cases {
        let (client, mut eventloop) = AsyncClient::new(options(port, client_id, login(user)), 10);
        connected(&mut eventloop).await;
        client
            .publish(topic, QoS::AtLeastOnce, false, user)
            .await
            .unwrap();
        next_matching(&mut eventloop, SHORT, |p| {
            matches!(p, Packet::PubAck(_)).then_some(())
        })
        .await
        .unwrap_or_else(|| panic!("{user} publishing to {topic}: no PUBACK"));
    }
    // The host's own retained status is not part of this test.
    let seen: Vec<String> = publishes_until_quiet(&mut operator_loop, SHORT)
        .await
        .into_iter()
        .map(|p| p.topic)
        .filter(|topic| !topic.starts_with("omh/status/"))
        .collect();
    let expected: Vec<&str> = cases
        .iter()
        .filter(|case| case.3)
        .map(|case| case.2)
        .collect();
    assert_eq!(seen, expected);

    // MQTT 5 clients are told: PUBACK reason 135, "not authorized".
    let out = mosquitto(
        "mosquitto_pub",
        &[
            "-p",
            &port.to_string(),
            "-V",
            "5",
            "-u",
            "press",
            "-P",
            PASSWORD,
            "-i",
            "press1",
            "-q",
            "1",
            "-t",
            "plant/cmd/press2",
            "-m",
            "x",
            "-d",
        ],
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("RC:135"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[tokio::test]
async fn the_tls_listener_serves_clients_that_trust_its_certificate() {
    let dir = tempfile::tempdir().unwrap();
    tls_chain(dir.path());
    let tls_port = free_port();
    let tls = format!(
        "[broker.tls]\nlisten = \"127.0.0.1:{tls_port}\"\ncert = \"cert.pem\"\nkey = \"key.pem\"\n"
    );
    let (mut site, _) = broker_site(dir.path(), &(tls + &users())).await;
    site.wait_for_log("mqtts").await;
    let cafile = dir.path().join("ca.pem");
    let cafile = cafile.to_str().unwrap();
    let tls_port = tls_port.to_string();
    let common = [
        "-h",
        "127.0.0.1",
        "-p",
        &tls_port,
        "--cafile",
        cafile,
        "-u",
        "operator",
        "-P",
        PASSWORD,
    ];

    let subscriber = std::thread::scope(|scope| {
        let subscriber = scope.spawn(|| {
            let mut args = common.to_vec();
            args.extend(["-t", "secure/#", "-C", "1", "-v"]);
            mosquitto("mosquitto_sub", &args)
        });
        // Publish until the subscriber (which needs a moment to connect) has it.
        for _ in 0..50 {
            if subscriber.is_finished() {
                break;
            }
            let mut args = common.to_vec();
            args.extend(["-t", "secure/hello", "-m", "over tls"]);
            assert!(mosquitto("mosquitto_pub", &args).status.success());
            std::thread::sleep(Duration::from_millis(100));
        }
        subscriber.join().unwrap()
    });
    assert_eq!(
        String::from_utf8_lossy(&subscriber.stdout).trim(),
        "secure/hello over tls"
    );

    // Plain MQTT on the TLS port gets nowhere.
    let (_client, mut eventloop) =
        AsyncClient::new(options(tls_port.parse().unwrap(), "plain", None), 10);
    assert!(eventloop.poll().await.is_err());
}
