//! The modbus-tcp driver plugin against an independent Modbus TCP server
//! (tokio-modbus in this test, not the host's simulator): known values per
//! slave, area and type; a Modbus exception marks only its tag; and after
//! the server drops, the driver reconnects on its own.

mod support;

use serde_json::{Value, json};
use std::future;
use std::net::SocketAddr;
use std::time::Duration;
use support::site::{Collector, RunningSite, free_port, manifest_header, plugins_dir, wait_for};
use tokio::net::TcpListener;
use tokio_modbus::prelude::{ExceptionCode, Request, Response, SlaveRequest};
use tokio_modbus::server::tcp::{Server, accept_tcp_connection};

const TOPIC: &str = "/neuron/omh/plc/g";

/// Holding registers 0..2 and input register 0, per slave.
struct Peer;

impl tokio_modbus::server::Service for Peer {
    type Request = SlaveRequest<'static>;
    type Response = Response;
    type Exception = ExceptionCode;
    type Future = future::Ready<Result<Response, ExceptionCode>>;

    fn call(&self, request: Self::Request) -> Self::Future {
        let holding: &[u16] = match request.slave {
            1 => &[1234, 0xFFFF, 7],
            2 => &[77, 0, 0],
            _ => &[],
        };
        let window = |table: &[u16], start: u16, count: u16| {
            table
                .get(start as usize..start as usize + count as usize)
                .map(<[u16]>::to_vec)
                .ok_or(ExceptionCode::IllegalDataAddress)
        };
        future::ready(match request.request {
            Request::ReadHoldingRegisters(start, count) => {
                window(holding, start, count).map(Response::ReadHoldingRegisters)
            }
            Request::ReadInputRegisters(start, count) => {
                window(&[42], start, count).map(Response::ReadInputRegisters)
            }
            _ => Err(ExceptionCode::IllegalFunction),
        })
    }
}

async fn serve(addr: SocketAddr) -> tokio::task::JoinHandle<()> {
    let listener = TcpListener::bind(addr).await.unwrap();
    tokio::spawn(async move {
        let server = Server::new(listener);
        let service = std::sync::Arc::new(Peer);
        let new_service = |_| Ok(Some(service.clone()));
        let on_connected =
            |stream, addr| async move { accept_tcp_connection(stream, addr, new_service) };
        let _ = server.serve(&on_connected, |_| {}).await;
    })
}

fn manifest(peer: u16) -> String {
    format!(
        r#"
[devices.plc]
driver = "modbus-tcp"
endpoint = "127.0.0.1:{peer}"
settings = {{ timeout_ms = 500 }}
[devices.plc.groups.g]
interval = "200ms"
tags = [
  {{ name = "signed", address = "1!40001", type = "int16" }},
  {{ name = "minus_one", address = "1!40002", type = "int16" }},
  {{ name = "unsigned", address = "1!40002", type = "uint16" }},
  {{ name = "six_digit", address = "1!400003" }},
  {{ name = "input", address = "1!30001", type = "uint16" }},
  {{ name = "other_slave", address = "2!40001" }},
  {{ name = "missing", address = "1!40100" }},
]
"#
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn driver_reads_an_independent_modbus_server_and_reconnects() {
    let peer_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let server = serve(peer_addr).await;

    let dir = tempfile::tempdir().unwrap();
    let mqtt_port = free_port();
    let manifest_path = dir.path().join("site.toml");
    let header = manifest_header(dir.path(), &plugins_dir(), mqtt_port);
    std::fs::write(&manifest_path, header + &manifest(peer_addr.port())).unwrap();
    let mut site = RunningSite::start(&manifest_path, &[], dir.path());
    let mqtt = Collector::connect(mqtt_port, &[TOPIC]);

    let good = |m: &Value| m["values"].get("signed").is_some();
    let message = wait_for(
        Duration::from_secs(10),
        "values from the peer",
        &mut site,
        async |_| mqtt.last_on(TOPIC).filter(good),
    )
    .await;
    assert_eq!(
        message["values"],
        json!({"signed": 1234, "minus_one": -1, "unsigned": 65535, "six_digit": 7, "input": 42, "other_slave": 77}),
        "{message}"
    );
    // Illegal data address (exception 2) marks only the tag it concerns.
    assert_eq!(message["errors"], json!({"missing": 2}), "{message}");

    // The device goes away: the group is published with every tag in errors...
    server.abort();
    let _ = server.await;
    wait_for(
        Duration::from_secs(10),
        "errors while the peer is down",
        &mut site,
        async |_| {
            mqtt.last_on(TOPIC)
                .filter(|m| m["errors"].get("signed").is_some())
        },
    )
    .await;
    // ...and when it is back, the driver reconnects without a restart of anything.
    let _server = serve(peer_addr).await;
    let since = mqtt.on(TOPIC).len();
    wait_for(
        Duration::from_secs(15),
        "values after the peer is back",
        &mut site,
        async |_| {
            mqtt.on(TOPIC)[since..]
                .iter()
                .rev()
                .find(|m| good(m))
                .cloned()
        },
    )
    .await;
}
