//! The embedded broker (the real `omh-host` binary, a manifest with only a
//! `[broker]`) against `mosquitto` (tests/support/mosquitto.rs), in one run,
//! for the same load: QoS 0 and 1, 1 KiB and 100 B payloads, 1 and 8
//! publishers each on its own topic `bench/<n>`, one subscriber on
//! `bench/#` receiving everything. Per case and broker:
//!
//! - latency: publishers paced to `LATENCY_RATE` messages/s in total, where
//!   neither broker is saturated (at saturation latency is only queueing);
//!   p50/p99 of publish-to-receive time. The payload carries the sender's
//!   sequence number and send time (nanoseconds since one `Instant` shared
//!   by publishers and subscriber: same process, same clock).
//! - throughput: messages/s received by the subscriber over `MEASURE`
//!   after `WARM_UP`, publishers publishing as fast as flow control allows,
//!   and the broker's CPU use from /proc/<pid>/stat over that window.
//! - loss: every message a publisher handed to its client that never
//!   reached the subscriber (sequence numbers), after both phases.
//!
//! Flow control: a QoS 1 publisher is bounded by its inflight window, but a
//! broker acknowledges on receipt, not on delivery, and nothing bounds QoS
//! 0 at all; publishing flat out would then measure how fast the brokers
//! fill their queues (then drop) or how fast rumqttc fills its own request
//! channel, not what the subscriber receives. So all publishers share an
//! end-to-end window: at most `WINDOW` messages published and not yet
//! received (or seen lost) by the subscriber. It covers the clients'
//! channels, sockets and both brokers' queues, so the rate measured is the
//! rate of delivery, and it stays far below either broker's queue limit.
//!
//! Noise: the machine is shared, so the brokers alternate case by case
//! (the order flips every round) and each figure is the median of `ROUNDS`.
//! Run: `cargo bench -p omh-host --bench broker` (no plugins needed).

#[path = "../../tests/support/mod.rs"]
mod support;

use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::mosquitto::Mosquitto;
use support::proc::{CpuMeter, RssSampler, machine};
use support::site::{RunningSite, free_port, manifest_header, repo_root, wait_listening};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

const ROUNDS: usize = 3;
const LATENCY_RATE: f64 = 5_000.0;
const LATENCY_WARM_UP: Duration = Duration::from_millis(200);
const LATENCY_WINDOW: Duration = Duration::from_secs(1);
const WARM_UP: Duration = Duration::from_millis(300);
const MEASURE: Duration = Duration::from_millis(1500);
/// Messages published but not yet received, over all publishers: enough to
/// keep every stage busy (it is tens of milliseconds of either broker's
/// rate), far below either broker's queue limit.
const WINDOW: u64 = 2_000;
/// The subscriber wakes waiting publishers every this many messages, not
/// on each: waking 8 tasks per message would cost more than the broker.
const CREDIT_STEP: u64 = 64;
/// The payload's header: sample flag, publisher, sequence, send time.
const HEADER: usize = 1 + 4 + 8 + 8;

/// rumqttd's limits as host/src/bus/mod.rs sets them (keep in step), and
/// mosquitto's set to match: 100 unacknowledged QoS 1 messages each way
/// (rumqttd's outgoing window is fixed at 100 in its iobufs.rs); rumqttd
/// keeps what a subscriber has not read yet in its filter's log, 10 x 1
/// MiB segments, and skips the subscriber ahead (loss) when that is full;
/// mosquitto queues 10,000 messages beyond its inflight ones (10 MiB of 1
/// KiB messages). `WINDOW` keeps both far from their limits.
const RUMQTTD_LIMITS: &str = "max_inflight_count 100 (outgoing inflight fixed at 100), \
     max_outgoing_packet_count 200, log 10 x 1 MiB per filter";
const MOSQUITTO_LIMITS: &str = "max_inflight_messages 100\nmax_queued_messages 10000";
/// The baseline every other target is compared with.
const BASELINE: &str = "mosquitto";

#[derive(Clone, Copy)]
struct Case {
    qos: QoS,
    payload: usize,
    publishers: u32,
}

impl Case {
    fn all() -> Vec<Case> {
        let mut cases = Vec::new();
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce] {
            for payload in [1024, 100] {
                for publishers in [1, 8] {
                    cases.push(Case {
                        qos,
                        payload,
                        publishers,
                    });
                }
            }
        }
        cases
    }

    fn name(&self) -> String {
        let size = match self.payload {
            1024 => "1 KiB".to_string(),
            bytes => format!("{bytes} B"),
        };
        format!(
            "QoS {}, {size}, {} publisher{}",
            self.qos as u8,
            self.publishers,
            if self.publishers == 1 { "" } else { "s" }
        )
    }
}

/// A broker to measure: where clients connect, and the process whose CPU
/// and memory count (for a broker behind a proxy, the process doing the
/// work). Another target is one more line in `main`.
struct Target {
    name: &'static str,
    addr: SocketAddr,
    pid: u32,
}

/// What the subscriber of one run has seen; shared with the publishers,
/// which wait on it for credit.
#[derive(Default)]
struct Received {
    /// Messages received plus messages seen lost (gaps in a publisher's
    /// sequence): what no longer counts against the window.
    accounted: AtomicU64,
    received: AtomicU64,
    published: AtomicU64,
    credit: Notify,
    /// Publishers that waited `STALL` for credit and went on without it.
    stalls: AtomicU64,
    state: Mutex<SubscriberState>,
}

#[derive(Default)]
struct SubscriberState {
    /// Next expected sequence number of each publisher.
    next: Vec<u64>,
    /// Publish-to-receive times of the latency samples, in nanoseconds.
    latencies: Vec<u64>,
    /// Sequence numbers below the expected one: duplicates or reordering.
    late: u64,
}

/// After this long without credit, a publisher assumes the messages it
/// waits for were lost where no later one shows the gap, and goes on.
const STALL: Duration = Duration::from_millis(200);

impl Received {
    fn record(&self, payload: &[u8], clock: std::time::Instant) {
        let now = clock.elapsed().as_nanos() as u64;
        let sample = payload[0] == 1;
        let publisher = u32::from_le_bytes(payload[1..5].try_into().unwrap()) as usize;
        let seq = u64::from_le_bytes(payload[5..13].try_into().unwrap());
        let sent = u64::from_le_bytes(payload[13..21].try_into().unwrap());
        let mut state = self.state.lock().unwrap();
        let next = &mut state.next[publisher];
        let advanced = if seq >= *next {
            let advanced = seq + 1 - *next;
            *next = seq + 1;
            advanced
        } else {
            state.late += 1;
            0
        };
        if sample {
            state.latencies.push(now.saturating_sub(sent));
        }
        drop(state);
        self.received.fetch_add(1, Ordering::Relaxed);
        let before = self.accounted.fetch_add(advanced, Ordering::Relaxed);
        if before / CREDIT_STEP != (before + advanced) / CREDIT_STEP {
            self.credit.notify_waiters();
        }
    }

    /// Returns once fewer than `WINDOW` messages are outstanding.
    async fn wait_for_credit(&self) {
        loop {
            let notified = self.credit.notified();
            tokio::pin!(notified);
            // Registered before the check, so a notification between the
            // check and the await is not missed.
            notified.as_mut().enable();
            // A message may arrive before its `publish` call returns.
            let outstanding = self
                .published
                .load(Ordering::Relaxed)
                .saturating_sub(self.accounted.load(Ordering::Relaxed));
            if outstanding < WINDOW {
                return;
            }
            if tokio::time::timeout(STALL, notified).await.is_err() {
                self.stalls.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
    }
}

/// One connected client and the task polling its event loop.
struct Connection {
    client: AsyncClient,
    event_loop: JoinHandle<()>,
}

impl Connection {
    /// Connects (MQTT 3.1.1, clean session), calls `on_publish` for every
    /// message received; returns after the CONNACK, and the SUBACK when
    /// `subscribe` names a filter.
    async fn open(
        target: &Target,
        client_id: String,
        qos: QoS,
        subscribe: Option<&str>,
        mut on_publish: impl FnMut(&[u8]) + Send + 'static,
    ) -> Self {
        let id = client_id.clone();
        let mut options =
            MqttOptions::new(client_id, target.addr.ip().to_string(), target.addr.port());
        options.set_keep_alive(Duration::from_secs(30));
        // The brokers' window; rumqttc's default is the same 100, stated here
        // because mosquitto's is matched to it.
        options.set_inflight(100);
        let (client, mut event_loop) = AsyncClient::new(options, 64);
        // Nagle's algorithm on the clients would hold small publishes until
        // the broker's delayed ACK (milliseconds on loopback): latency of the
        // client, not of the broker. The brokers keep their defaults
        // (rumqttd 0.20 cannot set it; mosquitto's `set_tcp_nodelay` is off).
        let mut network = event_loop.network_options();
        network.set_tcp_nodelay(true);
        event_loop.set_network_options(network);
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let mut ready = Some(ready_tx);
        let mut signal_ready = move || {
            if let Some(ready) = ready.take() {
                let _ = ready.send(());
            }
        };
        let filter = subscribe.map(str::to_string);
        let subscriber = client.clone();
        let event_loop = tokio::spawn(async move {
            loop {
                match event_loop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => match &filter {
                        Some(filter) => subscriber.subscribe(filter, qos).await.unwrap(),
                        None => signal_ready(),
                    },
                    Ok(Event::Incoming(Packet::SubAck(_))) => signal_ready(),
                    Ok(Event::Incoming(Packet::Publish(publish))) => on_publish(&publish.payload),
                    Ok(Event::Outgoing(Outgoing::Disconnect)) => return,
                    Ok(_) => {}
                    Err(error) => {
                        // Before the CONNACK this drops `ready`: `open` fails.
                        eprintln!("{id}: {error}");
                        return;
                    }
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), ready_rx)
            .await
            .expect("connected within 10 s")
            .expect("connected");
        Self { client, event_loop }
    }

    async fn close(self) {
        let _ = self.client.try_disconnect();
        let _ = tokio::time::timeout(Duration::from_millis(200), self.event_loop).await;
    }
}

struct Publisher {
    index: u32,
    topic: String,
    connection: Connection,
    next_seq: u64,
    case: Case,
    received: Arc<Received>,
    clock: std::time::Instant,
}

impl Publisher {
    async fn send(&mut self, sample: bool) {
        let mut payload = vec![0u8; self.case.payload];
        payload[0] = sample.into();
        payload[1..5].copy_from_slice(&self.index.to_le_bytes());
        payload[5..13].copy_from_slice(&self.next_seq.to_le_bytes());
        let now = self.clock.elapsed().as_nanos() as u64;
        payload[13..HEADER].copy_from_slice(&now.to_le_bytes());
        self.connection
            .client
            .publish(&self.topic, self.case.qos, false, payload)
            .await
            .unwrap();
        self.next_seq += 1;
        self.received.published.fetch_add(1, Ordering::Relaxed);
    }

    /// `rate` messages/s on a fixed schedule (tokio's timer has 1 ms
    /// resolution, so at 5,000/s a publisher sends bursts of 5 per tick);
    /// only those after `warm_up` are latency samples.
    async fn paced(mut self, rate: f64, warm_up: Duration, window: Duration) -> Self {
        let begin = Instant::now();
        let period = Duration::from_secs_f64(1.0 / rate);
        let mut due = begin;
        while due < begin + warm_up + window {
            tokio::time::sleep_until(due).await;
            self.send(due >= begin + warm_up).await;
            due += period;
        }
        self
    }

    async fn flat_out(mut self, until: Instant) -> Self {
        while Instant::now() < until {
            self.received.wait_for_credit().await;
            self.send(false).await;
        }
        self
    }
}

/// One broker, one case, one round.
struct Run {
    rate: f64,
    p50: Duration,
    p99: Duration,
    lost: u64,
    late: u64,
    stalls: u64,
    /// Broker CPU over the whole run, and per message in the throughput
    /// window.
    cpu_seconds: f64,
    cpu_per_message: Duration,
    cpu_percent: f64,
    rss_mib: f64,
}

async fn run(target: &Target, case: Case, label: &str) -> Run {
    let clock = std::time::Instant::now();
    let received = Arc::new(Received::default());
    received.state.lock().unwrap().next = vec![0; case.publishers as usize];
    let whole_run = CpuMeter::start(&[target.pid]);
    let rss = RssSampler::start(target.pid);
    let sink = received.clone();
    let subscriber = Connection::open(
        target,
        format!("{label}-sub"),
        case.qos,
        Some("bench/#"),
        move |payload| sink.record(payload, clock),
    )
    .await;
    let mut publishers = Vec::new();
    for index in 0..case.publishers {
        let connection = Connection::open(
            target,
            format!("{label}-pub{index}"),
            case.qos,
            None,
            |_| {},
        )
        .await;
        publishers.push(Publisher {
            index,
            topic: format!("bench/{index}"),
            connection,
            next_seq: 0,
            case,
            received: received.clone(),
            clock,
        });
    }

    let rate = LATENCY_RATE / f64::from(case.publishers);
    let paced = publishers
        .into_iter()
        .map(|p| tokio::spawn(p.paced(rate, LATENCY_WARM_UP, LATENCY_WINDOW)));
    let publishers = futures::future::try_join_all(paced).await.unwrap();
    let mut latencies = std::mem::take(&mut received.state.lock().unwrap().latencies);

    let until = Instant::now() + WARM_UP + MEASURE;
    let flat_out = publishers
        .into_iter()
        .map(|p| tokio::spawn(p.flat_out(until)));
    let flat_out = tokio::spawn(futures::future::try_join_all(flat_out));
    tokio::time::sleep(WARM_UP).await;
    let (before, started) = (received.received.load(Ordering::Relaxed), Instant::now());
    let window_cpu = CpuMeter::start(&[target.pid]);
    tokio::time::sleep(MEASURE).await;
    let in_window = received.received.load(Ordering::Relaxed) - before;
    let seconds = started.elapsed().as_secs_f64();
    let window_cpu_seconds = window_cpu.seconds()[0];
    let publishers = flat_out.await.unwrap().unwrap();

    drain(&received).await;
    let late = received.state.lock().unwrap().late;
    let lost = (received.published.load(Ordering::Relaxed) + late)
        .saturating_sub(received.received.load(Ordering::Relaxed));
    let rss_mib = rss.peak_mib();
    for publisher in publishers {
        publisher.connection.close().await;
    }
    subscriber.close().await;

    latencies.sort_unstable();
    let percentile = |p: f64| {
        let index = ((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1));
        Duration::from_nanos(latencies.get(index).copied().unwrap_or_default())
    };
    Run {
        rate: in_window as f64 / seconds,
        p50: percentile(0.50),
        p99: percentile(0.99),
        lost,
        late,
        stalls: received.stalls.load(Ordering::Relaxed),
        cpu_seconds: whole_run.seconds()[0],
        cpu_per_message: Duration::from_secs_f64(window_cpu_seconds / in_window.max(1) as f64),
        cpu_percent: window_cpu_seconds / seconds * 100.0,
        rss_mib,
    }
}

/// Waits until the subscriber has everything published, or nothing more
/// arrived for half a second (the rest is lost).
async fn drain(received: &Received) {
    let mut last = (received.received.load(Ordering::Relaxed), Instant::now());
    loop {
        let now = received.received.load(Ordering::Relaxed);
        if now >= received.published.load(Ordering::Relaxed) {
            return;
        }
        if now != last.0 {
            last = (now, Instant::now());
        } else if last.1.elapsed() > Duration::from_millis(500) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn median<T: Copy + PartialOrd>(values: impl IntoIterator<Item = T>) -> T {
    let mut values: Vec<T> = values.into_iter().collect();
    values.sort_by(|a, b| a.partial_cmp(b).unwrap());
    values[values.len() / 2]
}

/// The host's rumqttd version, from the lock file.
fn rumqttd_version() -> String {
    let lock = std::fs::read_to_string(repo_root().join("Cargo.lock")).unwrap_or_default();
    let lines: Vec<&str> = lock.lines().collect();
    lines
        .windows(2)
        .find(|pair| pair[0] == "name = \"rumqttd\"")
        .and_then(|pair| pair[1].strip_prefix("version = "))
        .map_or("rumqttd".into(), |version| {
            format!("rumqttd {}", version.trim_matches('"'))
        })
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().unwrap();

    // The embedded broker: a site with nothing but its `[broker]` (loopback,
    // anonymous) and an empty plugins directory, which the host scans at start.
    let host_addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let manifest = dir.path().join("site.toml");
    std::fs::write(
        &manifest,
        manifest_header(&dir.path().join("data"), &plugins, host_addr.port()),
    )
    .unwrap();
    // Logging at warn: the host's log must not cost it CPU the broker needs.
    let mut host = RunningSite::start(
        &manifest,
        &[("OMH_LOG", "warn".into())],
        &dir.path().join("host"),
    );
    if !wait_listening(host_addr, Duration::from_secs(60)).await {
        host.assert_alive();
        panic!(
            "omh-host did not listen on {host_addr}; log:\n{}",
            host.log()
        );
    }
    let mosquitto = Mosquitto::start(&dir.path().join("mosquitto"), MOSQUITTO_LIMITS);

    let targets = [
        Target {
            name: "embedded",
            addr: host_addr,
            pid: host.pid(),
        },
        Target {
            name: BASELINE,
            addr: mosquitto.addr,
            pid: mosquitto.pid(),
        },
    ];
    println!(
        "broker bench: {}; omh-host ({}) vs {}",
        machine(),
        rumqttd_version(),
        Mosquitto::version()
    );
    println!("  rumqttd: {RUMQTTD_LIMITS}");
    println!("  mosquitto: {}", MOSQUITTO_LIMITS.replace('\n', ", "));
    println!(
        "  latency at {LATENCY_RATE} msg/s in total for {LATENCY_WINDOW:?}; throughput over \
         {MEASURE:?} after {WARM_UP:?}, at most {WINDOW} messages outstanding; \
         median of {ROUNDS} rounds, brokers alternating"
    );

    // OMH_BENCH_CASES=<substring of a case's name> runs only those cases.
    let only = std::env::var("OMH_BENCH_CASES").unwrap_or_default();
    let cases: Vec<Case> = Case::all()
        .into_iter()
        .filter(|case| case.name().contains(&only))
        .collect();
    // runs[case][target][round]
    let mut runs: Vec<Vec<Vec<Run>>> = cases
        .iter()
        .map(|_| targets.iter().map(|_| Vec::new()).collect())
        .collect();
    for round in 0..ROUNDS {
        for (c, case) in cases.iter().enumerate() {
            let mut order: Vec<usize> = (0..targets.len()).collect();
            if round % 2 == 1 {
                order.reverse();
            }
            for t in order {
                let label = format!("bench-r{round}-c{c}-{}", targets[t].name);
                let result = run(&targets[t], *case, &label).await;
                host.assert_alive();
                runs[c][t].push(result);
            }
        }
        eprintln!("round {} of {ROUNDS} done", round + 1);
    }

    let mut summary = Vec::new();
    let baseline = targets.iter().position(|t| t.name == BASELINE).unwrap();
    for (case, by_target) in cases.iter().zip(&runs) {
        println!(
            "\n{}\n  {:<10} {:>9} {:>8} {:>9} {:>9} {:>5} {:>7} {:>9} {:>7} {:>8}",
            case.name(),
            "target",
            "msgs/s",
            "ratio",
            "p50",
            "p99",
            "lost",
            "CPU %",
            "CPU/msg",
            "CPU s",
            "RSS MiB"
        );
        let base_rate = median(by_target[baseline].iter().map(|r| r.rate));
        for (target, rounds) in targets.iter().zip(by_target) {
            let rate = median(rounds.iter().map(|r| r.rate));
            let sum = |f: fn(&Run) -> u64| rounds.iter().map(f).sum::<u64>();
            println!(
                "  {:<10} {:>9.0} {:>8.2} {:>9.2?} {:>9.2?} {:>5} {:>7.0} {:>9.2?} {:>7.2} {:>8.1}{}",
                target.name,
                rate,
                rate / base_rate,
                median(rounds.iter().map(|r| r.p50)),
                median(rounds.iter().map(|r| r.p99)),
                sum(|r| r.lost),
                median(rounds.iter().map(|r| r.cpu_percent)),
                median(rounds.iter().map(|r| r.cpu_per_message)),
                rounds.iter().map(|r| r.cpu_seconds).sum::<f64>(),
                rounds.iter().map(|r| r.rss_mib).fold(0.0, f64::max),
                notes(sum(|r| r.late), sum(|r| r.stalls)),
            );
            if target.name != BASELINE {
                summary.push(format!(
                    "{}: {}/{BASELINE} = {:.2}",
                    case.name(),
                    target.name,
                    rate / base_rate
                ));
            }
        }
    }
    println!(
        "\n(msgs/s, CPU %, CPU/msg: throughput phase; p50/p99: paced phase; lost: both \
         phases, all rounds; CPU s: the broker process over all rounds; RSS: peak sampled)\n"
    );
    for line in summary {
        println!("{line}");
    }
    host.assert_alive();
}

fn notes(late: u64, stalls: u64) -> String {
    let mut notes = String::new();
    if late > 0 {
        notes += &format!("  {late} duplicate or out of order");
    }
    if stalls > 0 {
        notes += &format!("  {stalls} credit stalls");
    }
    notes
}
