//! Modbus polling throughput, in one run on one independent tokio-modbus
//! server (tests/support/modbus.rs):
//!
//! 1. a native Rust loop with tokio-modbus doing the driver's requests back
//!    to back, vs the WASM driver in omh-host polling the same requests as
//!    fast as the scheduler lets it (groups at the shortest interval, so one
//!    is always due): requests/s, points/s and the ratio;
//! 2. 10,000 tags over 10 devices at 100 ms: points/s published and the
//!    host's CPU use (from /proc/<pid>/stat).
//!
//! Run: `scripts/build-plugins && cargo bench -p omh-host --bench modbus`.
//! Points are counted from the group messages on the bus, so the WASM
//! figures include decoding, JSON encoding and publishing.

#[path = "../../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};
use support::modbus::{Memory, ModbusServer};
use support::proc::cpu_seconds;
use support::site::{BusCounter, RunningSite, free_port, manifest_header, plugins_dir};
use tokio_modbus::client::Reader;

/// Fast-polling device: groups x reads per group x tags per read.
const GROUPS: u16 = 16;
const READS_PER_GROUP: u16 = 10;
const TAGS_PER_READ: u16 = 10;
/// Registers between the starts of two reads: beyond `max_gap`, so the
/// planner cannot merge them.
const READ_STRIDE: u16 = 100;
const MEASURE: Duration = Duration::from_secs(5);

/// Tags of one group: `READS_PER_GROUP` runs of `TAGS_PER_READ` registers.
fn fast_group_tags(group: u16) -> String {
    (0..READS_PER_GROUP)
        .flat_map(|read| {
            (0..TAGS_PER_READ).map(move |tag| {
                let register = read_start(group, read) + tag + 1;
                format!("{{ name = \"t{read}_{tag}\", address = \"1!4{register:05}\", type = \"uint16\" }},")
            })
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn read_start(group: u16, read: u16) -> u16 {
    (group * READS_PER_GROUP + read) * READ_STRIDE
}

fn start_site(dir: &tempfile::TempDir, devices: &str) -> (RunningSite, BusCounter) {
    let mqtt_port = free_port();
    let manifest = dir.path().join("site.toml");
    std::fs::write(
        &manifest,
        manifest_header(dir.path(), &plugins_dir(), mqtt_port) + devices,
    )
    .unwrap();
    let site = RunningSite::start(&manifest, &[("OMH_LOG", "warn".into())], dir.path());
    (site, BusCounter::connect(mqtt_port, "/neuron/omh/#"))
}

/// Requests/s of tokio-modbus doing the fast device's reads back to back.
async fn native_requests_per_second(server: &ModbusServer) -> f64 {
    let mut client = tokio_modbus::client::tcp::connect(server.addr)
        .await
        .unwrap();
    let (mut requests, started) = (0u64, Instant::now());
    while started.elapsed() < MEASURE {
        for group in 0..GROUPS {
            for read in 0..READS_PER_GROUP {
                let registers = client
                    .read_holding_registers(read_start(group, read), TAGS_PER_READ)
                    .await
                    .unwrap()
                    .unwrap();
                std::hint::black_box(registers);
                requests += 1;
            }
        }
    }
    requests as f64 / started.elapsed().as_secs_f64()
}

async fn wasm_requests_per_second(server: &ModbusServer) -> f64 {
    let groups: String = (0..GROUPS)
        .map(|group| {
            format!(
                "[devices.fast.groups.g{group}]\ninterval = \"10ms\"\ntags = [\n{}\n]\n",
                fast_group_tags(group)
            )
        })
        .collect();
    let devices = format!(
        "[devices.fast]\ndriver = \"modbus-tcp\"\nendpoint = \"{}\"\n{groups}",
        server.addr
    );
    let dir = tempfile::tempdir().unwrap();
    let (mut site, bus) = start_site(&dir, &devices);
    let messages_per_second = bus.rate(MEASURE).await;
    site.assert_alive();
    assert!(!bus.errors_seen(), "{}", site.log());
    messages_per_second * f64::from(READS_PER_GROUP)
}

/// Points/s and host CPU% with 10,000 tags over 10 devices at 100 ms.
async fn ten_thousand_tags(server: &ModbusServer) -> (f64, f64) {
    const DEVICES: u16 = 10;
    const TAGS: u16 = 1000;
    let tags: String = (0..TAGS)
        .map(|tag| {
            format!(
                "{{ name = \"t{tag}\", address = \"1!4{:05}\", type = \"uint16\" }},\n",
                tag + 1
            )
        })
        .collect();
    let devices: String = (0..DEVICES)
        .map(|device| {
            format!(
                "[devices.d{device}]\ndriver = \"modbus-tcp\"\nendpoint = \"{}\"\n\
                 [devices.d{device}.groups.g]\ninterval = \"100ms\"\ntags = [\n{tags}]\n",
                server.addr
            )
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let (mut site, bus) = start_site(&dir, &devices);
    while bus.count() < u64::from(DEVICES) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let window = Duration::from_secs(10);
    let (cpu_before, messages_before, started) =
        (cpu_seconds(site.pid()), bus.count(), Instant::now());
    tokio::time::sleep(window).await;
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = (cpu_seconds(site.pid()) - cpu_before) / elapsed * 100.0;
    let points = (bus.count() - messages_before) as f64 * f64::from(TAGS) / elapsed;
    site.assert_alive();
    assert!(!bus.errors_seen(), "{}", site.log());
    (points, cpu)
}

#[tokio::main]
async fn main() {
    let mut memory = Memory::default();
    for (register, value) in memory.holding_registers.iter_mut().zip(0u16..) {
        *register = value;
    }
    let server = ModbusServer::start(memory).await;
    let points_per_read = f64::from(TAGS_PER_READ);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("modbus bench: {cores} cores, {MEASURE:?} per measurement");

    let native = native_requests_per_second(&server).await;
    let wasm = wasm_requests_per_second(&server).await;
    println!(
        "native tokio-modbus loop: {native:>9.0} requests/s {:>10.0} points/s",
        native * points_per_read
    );
    println!(
        "WASM driver in omh-host:  {wasm:>9.0} requests/s {:>10.0} points/s",
        wasm * points_per_read
    );
    println!("WASM / native:            {:>9.1} %", wasm / native * 100.0);

    let (points, cpu) = ten_thousand_tags(&server).await;
    println!(
        "10,000 tags, 10 devices, 100 ms: {points:.0} points/s, host CPU {cpu:.0} % of one core ({:.0} % of {cores} cores)",
        cpu / cores as f64
    );
}
