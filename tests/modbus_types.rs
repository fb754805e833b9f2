//! The modbus-tcp driver against an independent Modbus TCP server
//! (tokio-modbus, see support/modbus.rs): every data type in every byte
//! order Neuron documents is published with its value; writes of each kind
//! reach the server as the right function with the right bytes; and the
//! connection faults a plant sees (a reply cut off mid-poll, a silent
//! slave, a dead primary endpoint) cost only the affected tags.
//!
//! Expected wire layouts come from Neuron's byte-order table (each digit is
//! the position of a byte of the big-endian value), not from the driver.

mod support;

use serde_json::{Value, json};
use std::borrow::Cow;
use std::time::Duration;
use support::modbus::{Fault, FaultyProxy, Memory, ModbusServer, SILENT_SLAVE};
use support::site::{Collector, RunningSite, free_port, manifest_header, plugins_dir, wait_for};
use tokio_modbus::prelude::Request;

/// Neuron's byte-order table: suffix and byte positions per value width.
fn permutation(order: &str, width: usize) -> &'static [usize] {
    match (order, width) {
        ("" | "L", 2) => &[1, 2],
        ("B", 2) => &[2, 1],
        ("" | "LL", 4) => &[1, 2, 3, 4],
        ("LB", 4) => &[2, 1, 4, 3],
        ("BL", 4) => &[3, 4, 1, 2],
        ("BB", 4) => &[4, 3, 2, 1],
        ("" | "LL", 8) => &[1, 2, 3, 4, 5, 6, 7, 8],
        ("LB", 8) => &[2, 1, 4, 3, 6, 5, 8, 7],
        ("BL", 8) => &[7, 8, 5, 6, 3, 4, 1, 2],
        ("BB", 8) => &[8, 7, 6, 5, 4, 3, 2, 1],
        other => panic!("no byte order {other:?}"),
    }
}

/// The registers a device holds for a value with big-endian bytes `be`.
fn on_the_wire(be: &[u8], order: &str) -> Vec<u16> {
    let wire: Vec<u8> = permutation(order, be.len())
        .iter()
        .map(|&position| be[position - 1])
        .collect();
    wire.chunks(2)
        .map(|pair| u16::from_be_bytes([pair[0], pair[1]]))
        .collect()
}

/// One STRING packing as Neuron documents it.
fn packed(text: &[u8], length: usize, packing: char) -> Vec<u16> {
    let mut bytes = text.to_vec();
    bytes.resize(length, 0);
    match packing {
        'H' => bytes
            .chunks(2)
            .map(|p| u16::from(p[0]) << 8 | u16::from(*p.get(1).unwrap_or(&0)))
            .collect(),
        'L' => bytes
            .chunks(2)
            .map(|p| u16::from(*p.get(1).unwrap_or(&0)) << 8 | u16::from(p[0]))
            .collect(),
        'D' => bytes.iter().map(|&b| u16::from(b)).collect(),
        'E' => bytes.iter().map(|&b| u16::from(b) << 8).collect(),
        other => panic!("no packing {other}"),
    }
}

/// A tag of the test manifest, where its value lives, and what must be
/// published for it.
struct Case {
    name: String,
    address: String,
    data_type: &'static str,
    expected: Value,
}

/// Lays out every type x byte order in holding registers from offset 0,
/// returning the tags and filling `memory`.
fn every_type_and_byte_order(memory: &mut Memory) -> Vec<Case> {
    let numbers: [(&str, Vec<u8>, Value); 8] = [
        ("int16", (-12345i16).to_be_bytes().to_vec(), json!(-12345)),
        ("uint16", 54321u16.to_be_bytes().to_vec(), json!(54321)),
        (
            "int32",
            (-123456789i32).to_be_bytes().to_vec(),
            json!(-123456789),
        ),
        (
            "uint32",
            3_000_000_000u32.to_be_bytes().to_vec(),
            json!(3_000_000_000u32),
        ),
        ("float", (-1234.5f32).to_be_bytes().to_vec(), json!(-1234.5)),
        (
            "int64",
            (-1234567890123456789i64).to_be_bytes().to_vec(),
            json!(-1234567890123456789i64),
        ),
        (
            "uint64",
            1234567890123456789u64.to_be_bytes().to_vec(),
            json!(1234567890123456789u64),
        ),
        (
            "double",
            std::f64::consts::PI.to_be_bytes().to_vec(),
            json!(std::f64::consts::PI),
        ),
    ];
    let mut cases = Vec::new();
    let mut offset = 0usize;
    let mut place = |memory: &mut Memory, registers: &[u16]| {
        memory.holding_registers[offset..offset + registers.len()].copy_from_slice(registers);
        let address = offset + 1;
        offset += registers.len();
        address
    };
    for (data_type, be, expected) in numbers {
        let orders: &[&str] = if be.len() == 2 {
            &["", "L", "B"]
        } else {
            &["", "LL", "LB", "BL", "BB"]
        };
        for order in orders {
            let address = place(memory, &on_the_wire(&be, order));
            let suffix = if order.is_empty() {
                String::new()
            } else {
                format!("#{order}")
            };
            cases.push(Case {
                name: format!(
                    "{data_type}_{}",
                    if order.is_empty() { "default" } else { order }
                ),
                address: format!("1!4{address:05}{suffix}"),
                data_type,
                expected: expected.clone(),
            });
        }
    }
    for packing in ['H', 'L', 'D', 'E'] {
        let address = place(memory, &packed(b"hello", 5, packing));
        cases.push(Case {
            name: format!("string_{packing}"),
            address: format!("1!4{address:05}.5{packing}"),
            data_type: "string",
            expected: json!("hello"),
        });
    }
    let flags = place(memory, &[0x8008]);
    for (name, bit, data_type, expected) in [
        ("flag_bit3", 3, "bit", json!(1)),
        ("flag_bit4", 4, "bit", json!(0)),
        ("flag_bit15", 15, "bool", json!(true)),
    ] {
        cases.push(Case {
            name: name.into(),
            address: format!("1!4{flags:04}.{bit}"),
            data_type,
            expected,
        });
    }
    memory.input_registers[0..2]
        .copy_from_slice(&on_the_wire(&(-123456789i32).to_be_bytes(), "BB"));
    memory.coils[0..3].copy_from_slice(&[true, false, true]);
    memory.discrete_inputs[0..2].copy_from_slice(&[true, false]);
    let fixed = [
        ("input_int32_BB", "1!300001#BB", "int32", json!(-123456789)),
        ("coil_bit", "1!000001", "bit", json!(1)),
        ("coil_bool", "1!000002", "bool", json!(false)),
        ("coil_default", "1!00003", "", json!(1)),
        ("input_bool", "1!100001", "bool", json!(true)),
        ("input_bit", "1!10002", "bit", json!(0)),
    ];
    cases.extend(fixed.map(|(name, address, data_type, expected)| Case {
        name: name.into(),
        address: address.into(),
        data_type,
        expected,
    }));
    cases
}

fn tags_toml(cases: &[Case]) -> String {
    cases
        .iter()
        .map(|case| {
            format!(
                "  {{ name = \"{}\", address = \"{}\", type = \"{}\" }},\n",
                case.name, case.address, case.data_type
            )
        })
        .collect()
}

/// Starts omh-host on `devices` (manifest text after the header) and an
/// MQTT client on `topics`.
fn start_site(
    dir: &tempfile::TempDir,
    devices: &str,
    topics: &[&str],
) -> (RunningSite, Collector, u16) {
    let mqtt_port = free_port();
    let manifest_path = dir.path().join("site.toml");
    let header = manifest_header(dir.path(), &plugins_dir(), mqtt_port);
    std::fs::write(&manifest_path, header + devices).unwrap();
    let site = RunningSite::start(&manifest_path, &[], dir.path());
    let mqtt = Collector::connect(mqtt_port, topics);
    (site, mqtt, mqtt_port)
}

#[tokio::test(flavor = "multi_thread")]
async fn every_type_and_byte_order_is_published_with_its_value() {
    let mut memory = Memory::default();
    let cases = every_type_and_byte_order(&mut memory);
    let server = ModbusServer::start(memory).await;
    let devices = format!(
        "[devices.plc]\ndriver = \"modbus-tcp\"\nendpoint = \"{}\"\n\
         [devices.plc.groups.all]\ninterval = \"100ms\"\ntags = [\n{}]\n",
        server.addr,
        tags_toml(&cases)
    );
    let dir = tempfile::tempdir().unwrap();
    let topic = "/neuron/omh/plc/all";
    let (mut site, mqtt, _) = start_site(&dir, &devices, &[topic]);
    let message = wait_for(
        Duration::from_secs(10),
        "a poll of every type",
        &mut site,
        async |_| mqtt.last_on(topic).filter(|m| m["values"].is_object()),
    )
    .await;
    let expected: serde_json::Map<String, Value> = cases
        .iter()
        .map(|case| (case.name.clone(), case.expected.clone()))
        .collect();
    assert_eq!(message["errors"], json!({}), "{message}");
    for (name, value) in &expected {
        assert_eq!(&message["values"][name], value, "tag {name} in {message}");
    }
    assert_eq!(message["values"], Value::Object(expected));
}

fn write_request(uuid: usize, node: &str, tag: &str, value: Value) -> Vec<u8> {
    json!({"uuid": uuid.to_string(), "node": node, "group": "w", "tag": tag, "value": value})
        .to_string()
        .into_bytes()
}

#[tokio::test(flavor = "multi_thread")]
async fn writes_of_each_kind_reach_the_server_with_the_right_bytes() {
    let server = ModbusServer::start(Memory::default()).await;
    server.memory().holding_registers[110] = 0x8000;
    let devices = format!(
        r#"
[devices.plc]
driver = "modbus-tcp"
endpoint = "{server}"
[devices.plc.groups.w]
interval = "100ms"
tags = [
  {{ name = "coil", address = "1!000010", type = "bit", writable = true }},
  {{ name = "setpoint", address = "1!40101", type = "int16", writable = true }},
  {{ name = "flow", address = "1!40102#BL", type = "float", writable = true }},
  {{ name = "total", address = "1!40104#LB", type = "int64", writable = true }},
  {{ name = "label", address = "1!40108.5L", type = "string", writable = true }},
  {{ name = "alarm", address = "1!40111.3", type = "bit", writable = true }},
]
[devices.multi]
driver = "modbus-tcp"
endpoint = "{server}"
settings = {{ write_multiple = true }}
[devices.multi.groups.w]
interval = "100ms"
tags = [
  {{ name = "coil", address = "1!000011", type = "bool", writable = true }},
  {{ name = "setpoint", address = "1!40121", type = "uint16", writable = true }},
]
"#,
        server = server.addr
    );
    let dir = tempfile::tempdir().unwrap();
    let responses_topic = "/neuron/omh/write/resp";
    let (mut site, mqtt, mqtt_port) =
        start_site(&dir, &devices, &["/neuron/omh/plc/w", responses_topic]);
    wait_for(
        Duration::from_secs(10),
        "first poll",
        &mut site,
        async |_| mqtt.last_on("/neuron/omh/plc/w"),
    )
    .await;

    let requests = [
        ("plc", "coil", json!(1), 0),
        ("plc", "setpoint", json!(-1234), 0),
        ("plc", "flow", json!(12.5), 0),
        ("plc", "total", json!(-5), 0),
        ("plc", "label", json!("abc"), 0),
        ("plc", "alarm", json!(true), 0),
        ("multi", "coil", json!(true), 0),
        ("multi", "setpoint", json!(65535), 0),
        // Checked against the tag's type before anything is sent.
        ("plc", "setpoint", json!("hot"), 4),
        ("plc", "setpoint", json!(40000), 4),
        ("plc", "label", json!("too long"), 4),
        ("plc", "coil", json!(2), 4),
    ];
    let (client, mut eventloop) = rumqttc::AsyncClient::new(
        rumqttc::MqttOptions::new("test-writer", "127.0.0.1", mqtt_port),
        20,
    );
    tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
    for (uuid, (node, tag, value, _)) in requests.iter().enumerate() {
        client
            .publish(
                "/neuron/omh/write/req",
                rumqttc::QoS::AtLeastOnce,
                false,
                write_request(uuid, node, tag, value.clone()),
            )
            .await
            .unwrap();
    }
    let responses = wait_for(
        Duration::from_secs(10),
        "a response to every write",
        &mut site,
        async |_| {
            let responses = mqtt.on(responses_topic);
            (responses.len() >= requests.len()).then_some(responses)
        },
    )
    .await;
    for (uuid, (node, tag, value, error)) in requests.iter().enumerate() {
        let response = responses
            .iter()
            .find(|r| r["uuid"] == *uuid.to_string())
            .unwrap_or_else(|| panic!("no response to {uuid} in {responses:?}"));
        assert_eq!(
            response["error"], *error,
            "{node}.{tag} = {value}: {response}"
        );
    }

    let float = on_the_wire(&12.5f32.to_be_bytes(), "BL");
    let int64 = on_the_wire(&(-5i64).to_be_bytes(), "LB");
    let expected = [
        Request::WriteSingleCoil(9, true),
        Request::WriteSingleRegister(100, -1234i16 as u16),
        Request::WriteMultipleRegisters(101, Cow::Owned(float)),
        Request::WriteMultipleRegisters(103, Cow::Owned(int64)),
        Request::WriteMultipleRegisters(107, Cow::Owned(packed(b"abc", 5, 'L'))),
        // Read-modify-write: bit 3 set, bit 15 kept.
        Request::WriteSingleRegister(110, 0x8008),
        Request::WriteMultipleCoils(10, Cow::Owned(vec![true])),
        Request::WriteMultipleRegisters(120, Cow::Owned(vec![65535])),
    ];
    let writes = server.writes();
    for request in &expected {
        assert!(writes.contains(request), "{request:?} not in {writes:?}");
    }
    assert_eq!(writes.len(), expected.len(), "{writes:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn faults_cost_only_the_affected_tags() {
    let server = ModbusServer::start(Memory::default()).await;
    server.memory().holding_registers[0] = 7;
    let proxy = FaultyProxy::start(server.addr).await;
    let devices = format!(
        r#"
[devices.cut]
driver = "modbus-tcp"
endpoint = "{proxy}"
[devices.cut.groups.g]
interval = "100ms"
tags = [ {{ name = "v", address = "1!40001", type = "uint16" }} ]

[devices.failover]
driver = "modbus-tcp"
endpoint = "127.0.0.1:{dead}"
backup_endpoint = "{server}"
[devices.failover.groups.g]
interval = "100ms"
tags = [ {{ name = "v", address = "1!40001", type = "uint16" }} ]

[devices.silent]
driver = "modbus-tcp"
endpoint = "{server}"
settings = {{ timeout_ms = 200 }}
[devices.silent.groups.g]
interval = "1s"
tags = [
  {{ name = "answering", address = "1!40001", type = "uint16" }},
  {{ name = "first", address = "{SILENT_SLAVE}!40001", type = "uint16" }},
  {{ name = "second", address = "{SILENT_SLAVE}!40500", type = "uint16" }},
]
"#,
        proxy = proxy.addr,
        dead = free_port(),
        server = server.addr,
    );
    let dir = tempfile::tempdir().unwrap();
    let topics = [
        "/neuron/omh/cut/g",
        "/neuron/omh/failover/g",
        "/neuron/omh/silent/g",
    ];
    let (mut site, mqtt, _) = start_site(&dir, &devices, &topics);
    let good = |m: &Value| m["values"]["v"] == 7;

    // The primary endpoint is dead: the driver fails over to the backup.
    wait_for(
        Duration::from_secs(10),
        "values via the backup endpoint",
        &mut site,
        async |_| mqtt.last_on("/neuron/omh/failover/g").filter(good),
    )
    .await;
    assert!(site.log().contains("(backup endpoint)"), "{}", site.log());

    // A silent slave: its first read times out, its second is skipped, and
    // the other slave's tags still publish.
    let silent = wait_for(
        Duration::from_secs(10),
        "a poll with a silent slave",
        &mut site,
        async |_| mqtt.last_on("/neuron/omh/silent/g"),
    )
    .await;
    assert_eq!(silent["values"], json!({"answering": 7}), "{silent}");
    assert_eq!(
        silent["errors"],
        json!({"first": -2, "second": -4}),
        "{silent}"
    );

    // The device drops the connection in the middle of a poll: that poll's
    // tags are bad, and the next poll reconnects on its own.
    wait_for(
        Duration::from_secs(10),
        "values through the proxy",
        &mut site,
        async |_| mqtt.last_on("/neuron/omh/cut/g").filter(good),
    )
    .await;
    let before_cut = mqtt.on("/neuron/omh/cut/g").len();
    proxy.spoil_next_reply(Fault::Cut);
    let after_cut = wait_for(
        Duration::from_secs(10),
        "the cut poll",
        &mut site,
        async |_| {
            let messages = mqtt.on("/neuron/omh/cut/g");
            let cut = messages[before_cut..]
                .iter()
                .position(|m| m["errors"]["v"] == -1)?;
            messages[before_cut + cut..]
                .iter()
                .any(good)
                .then_some(before_cut + cut)
        },
    )
    .await;
    assert!(after_cut >= before_cut);
    // One line per state change: lost once, connected before and after.
    let log = site.log();
    let cut_lines = |needle: &str| {
        log.lines()
            .filter(|line| line.contains("devices.cut") && line.contains(needle))
            .count()
    };
    assert_eq!(cut_lines("lost"), 1, "{log}");
    assert_eq!(cut_lines("connected to"), 2, "{log}");
    let silent_lines = log
        .lines()
        .filter(|line| line.contains("devices.silent") && line.contains("not answering"))
        .count();
    assert_eq!(silent_lines, 1, "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn garbage_or_late_replies_cost_one_poll_and_never_publish_a_wrong_value() {
    let server = ModbusServer::start(Memory::default()).await;
    server.memory().holding_registers[0] = 7;
    let proxy = FaultyProxy::start(server.addr).await;
    let devices = format!(
        r#"
[devices.garbled]
driver = "modbus-tcp"
endpoint = "{proxy}"
settings = {{ timeout_ms = 300 }}
[devices.garbled.groups.g]
interval = "100ms"
tags = [ {{ name = "v", address = "1!40001", type = "uint16" }} ]
"#,
        proxy = proxy.addr,
    );
    let dir = tempfile::tempdir().unwrap();
    let topic = "/neuron/omh/garbled/g";
    let (mut site, mqtt, _) = start_site(&dir, &devices, &[topic]);
    let good = |m: &Value| m["values"]["v"] == 7;
    wait_for(
        Duration::from_secs(10),
        "values through the proxy",
        &mut site,
        async |_| mqtt.last_on(topic).filter(good),
    )
    .await;

    // Garbage is a protocol error (-3), a late answer a timeout (-2).
    let faults = Fault::GARBAGE.map(|fault| (fault, -3));
    for (fault, expected) in faults.into_iter().chain([(Fault::Late, -2)]) {
        let before = mqtt.on(topic).len();
        proxy.spoil_next_reply(fault);
        // The spoiled poll's tag is bad, and the poll after it good again:
        // the driver dropped the connection, so nothing of the spoiled
        // exchange can be taken for the next one's answer.
        let code = wait_for(
            Duration::from_secs(10),
            &format!("a bad poll and then a good one after {fault:?}"),
            &mut site,
            async |_| {
                let messages = mqtt.on(topic);
                let bad = messages[before..]
                    .iter()
                    .position(|m| m["errors"].get("v").is_some())?;
                let code = messages[before + bad]["errors"]["v"].as_i64();
                messages[before + bad..].iter().any(good).then_some(code)
            },
        )
        .await;
        assert_eq!(code, Some(expected), "{fault:?}");
        println!("{fault:?}: that poll's tag had error {expected}, then good again");
    }
    // Never a value that was not in the register.
    for message in mqtt.on(topic) {
        assert!(
            good(&message) || message["values"].as_object().unwrap().is_empty(),
            "{message}"
        );
    }
    site.assert_alive();
}
