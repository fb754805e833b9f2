//! Sink throughput into TimescaleDB, in one run on one database
//! (tests/support/postgres.rs), truncated between phases:
//!
//! 1. OMH steady state: the built-in simulator, modbus-tcp driver, embedded
//!    broker and two timescale sinks (narrow into `readings`, the seed's
//!    template into `conditions`) with the database up, at two rates:
//!    produced vs committed messages/s, and whether the backlog stays flat;
//! 2. PostgreSQL is stopped while the devices fill both sinks' disk buffers;
//! 3. raw: a plain tokio-postgres loop binary-COPYs rows shaped exactly like
//!    the narrow mapping's into `readings`, in COPYs as big as one sink batch;
//! 4. OMH narrow catch-up: a host with only the narrow sink (no devices
//!    competing for the CPU) replays its buffer, timed from its first
//!    committed batch to its last full one;
//! 5. seed: a plain loop doing one INSERT per message into `conditions`
//!    (autocommit, one round trip each), the way the seed's rule engine did;
//! 6. OMH template catch-up, as 4.
//!
//! The host's RSS is sampled from /proc throughout, and CPU use (host and
//! PostgreSQL backend) is read around each timed phase. Run:
//! `scripts/build-plugins && cargo bench -p omh-host --bench sink`.

#[path = "../../tests/support/mod.rs"]
mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};
use support::postgres::{PgOptions, TestPostgres};
use support::proc::{CpuMeter, RssSampler, machine};
use support::site::{BusCounter, RunningSite, free_port, manifest_header, plugins_dir, wait_for};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};

const DEVICES: usize = 20;
/// Tags of a `points` group, all in one Modbus read: rows per narrow message.
const TAGS: usize = 100;
/// 20 devices x 100 tags every 20 ms: 100,000 points/s offered during the
/// outage; the steady state is also measured at half that.
const POINTS_INTERVAL: Duration = Duration::from_millis(20);
/// The seed's group (temperature, humidity): 20 x 100 messages/s.
const CONDITIONS_INTERVAL: Duration = Duration::from_millis(10);
/// The sinks' `batch_size` (the manifest default), and the raw loop's
/// messages per COPY.
const BATCH_MESSAGES: usize = 500;
/// About the narrow backlog, so both take about as long.
const RAW_ROWS: usize = 1_500_000;
const SEED_LOOP: Duration = Duration::from_secs(5);
const STEADY: Duration = Duration::from_secs(10);
const OUTAGE: Duration = Duration::from_secs(15);

const NARROW: &str = "narrow";
const TEMPLATE: &str = "template";
const SEED_TEMPLATE: &str = "INSERT INTO conditions(time,temperature,humidity) VALUES (${timestamp}, ${temperature}, ${humidity})";

/// Rows/s of binary COPY of `RAW_ROWS` narrow rows, `BATCH_MESSAGES`
/// messages per COPY, keyed like the devices' rows (same index load).
async fn raw_copy(client: &tokio_postgres::Client) -> f64 {
    let types = [
        Type::TIMESTAMPTZ,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::FLOAT8,
        Type::TEXT,
        Type::TEXT,
    ];
    let devices: Vec<String> = (0..DEVICES).map(device_name).collect();
    let tags: Vec<String> = (0..TAGS).map(tag_name).collect();
    let start = SystemTime::now();
    let started = Instant::now();
    let messages = RAW_ROWS / TAGS;
    for first in (0..messages).step_by(BATCH_MESSAGES) {
        let sink = client
            .copy_in("COPY readings (time, site, device, tag, value_double, value_text, quality) FROM STDIN (FORMAT binary)")
            .await
            .unwrap();
        let writer = BinaryCopyInWriter::new(sink, &types);
        futures::pin_mut!(writer);
        for message in first..(first + BATCH_MESSAGES).min(messages) {
            let time = start + POINTS_INTERVAL * (message / DEVICES) as u32;
            for (index, tag) in tags.iter().enumerate() {
                let value = (message * TAGS + index) as f64;
                let row: [&(dyn ToSql + Sync); 7] = [
                    &time,
                    &"bench",
                    &devices[message % DEVICES],
                    tag,
                    &value,
                    &None::<&str>,
                    &"good",
                ];
                writer.as_mut().write(&row).await.unwrap();
            }
        }
        writer.finish().await.unwrap();
    }
    RAW_ROWS as f64 / started.elapsed().as_secs_f64()
}

/// Rows/s of one prepared INSERT per message, autocommit, for `SEED_LOOP`.
async fn seed_inserts(client: &tokio_postgres::Client) -> f64 {
    let insert = client
        .prepare("INSERT INTO conditions(time,temperature,humidity) VALUES ($1, $2, $3)")
        .await
        .unwrap();
    let (mut rows, started) = (0u64, Instant::now());
    while started.elapsed() < SEED_LOOP {
        let (temperature, humidity) = (28.0 + (rows % 30) as f64 / 10.0, 70.0);
        client
            .execute(&insert, &[&SystemTime::now(), &temperature, &humidity])
            .await
            .unwrap();
        rows += 1;
    }
    rows as f64 / started.elapsed().as_secs_f64()
}

fn device_name(device: usize) -> String {
    format!("d{device:02}")
}

fn tag_name(tag: usize) -> String {
    format!("t{tag:03}")
}

/// The simulator and the devices: each polls a `points` group of `TAGS`
/// registers and a `conditions` group of the seed's two.
fn devices_section(modbus_port: u16, points_interval: Duration) -> String {
    let registers: String = (1..=TAGS)
        .map(|r| format!("  {{ address = \"1!4{r:04}\", min = 0, max = 30000 }},\n"))
        .collect();
    let points: String = (0..TAGS)
        .map(|tag| {
            format!(
                "  {{ name = \"{}\", address = \"1!4{:04}\", type = \"int16\" }},\n",
                tag_name(tag),
                tag + 1
            )
        })
        .collect();
    let mut section = format!(
        "[simulators.plant]\nlisten = \"127.0.0.1:{modbus_port}\"\nupdate_interval = \"1s\"\nregisters = [\n{registers}]\n"
    );
    for device in (0..DEVICES).map(device_name) {
        section += &format!(
            "[devices.{device}]\ndriver = \"modbus-tcp\"\nendpoint = \"127.0.0.1:{modbus_port}\"\n\
             [devices.{device}.groups.points]\ninterval = \"{}ms\"\ntags = [\n{points}]\n\
             [devices.{device}.groups.conditions]\ninterval = \"{}ms\"\ntags = [\n\
             {{ name = \"temperature\", address = \"1!40001\", type = \"int16\" }},\n\
             {{ name = \"humidity\", address = \"1!40002\", type = \"int16\" }},\n]\n",
            points_interval.as_millis(),
            CONDITIONS_INTERVAL.as_millis(),
        );
    }
    section
}

/// A timescale sink on the `group` messages of every device.
fn sink_section(name: &str, group: &str, database: &str, settings: &str) -> String {
    format!(
        "[sinks.{name}]\nplugin = \"timescale\"\nurl = \"{database}\"\ntopics = [\"/neuron/omh/+/{group}\"]\n\
         batch_size = {BATCH_MESSAGES}\n[sinks.{name}.settings]\n{settings}\n"
    )
}

struct Bench {
    dir: tempfile::TempDir,
    postgres: TestPostgres,
    client: tokio_postgres::Client,
}

impl Bench {
    fn narrow_sink(&self) -> String {
        sink_section(
            NARROW,
            "points",
            &self.postgres.url(),
            "mapping = \"narrow\"\nsite = \"bench\"",
        )
    }

    fn template_sink(&self) -> String {
        sink_section(
            TEMPLATE,
            "conditions",
            &self.postgres.url(),
            &format!("template = \"{SEED_TEMPLATE}\""),
        )
    }

    /// Starts a host on `sections`; every run shares the data directory, so
    /// a later run replays what an earlier one buffered.
    fn start_host(&self, run: &str, sections: &str) -> (RunningSite, u16) {
        let mqtt_port = free_port();
        let data_dir = self.dir.path().join("data");
        let manifest = self.dir.path().join(format!("{run}.toml"));
        std::fs::write(
            &manifest,
            manifest_header(&data_dir, &plugins_dir(), mqtt_port) + sections,
        )
        .unwrap();
        // Plain log lines: `catch_up` reads a field from one.
        let env = [("OMH_LOG", "info".to_string()), ("NO_COLOR", "1".into())];
        let site = RunningSite::start(&manifest, &env, &self.dir.path().join(run));
        (site, mqtt_port)
    }

    fn buffer_dir(&self, sink: &str) -> PathBuf {
        self.dir.path().join("data/buffer").join(sink)
    }

    /// Runs a plain client loop on the bench's connection; returns its
    /// rows/s and its backend's CPU use (% of one core).
    async fn measure_plain(
        &self,
        run: impl AsyncFnOnce(&tokio_postgres::Client) -> f64,
    ) -> (f64, f64) {
        let backend: i32 = self
            .client
            .query_one("SELECT pg_backend_pid()", &[])
            .await
            .unwrap()
            .get(0);
        let cpu = CpuMeter::start(&[backend.try_into().unwrap()]);
        let rate = run(&self.client).await;
        (rate, cpu.percent()[0])
    }

    async fn client(&self) -> tokio_postgres::Client {
        self.postgres.client().await.unwrap()
    }

    async fn truncate(&self) {
        self.client
            .batch_execute("TRUNCATE readings, conditions")
            .await
            .unwrap();
    }

    async fn count(&self, table: &str) -> i64 {
        self.client
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .unwrap()
            .get(0)
    }

    /// Polls the sink's position closely (a template backlog is gone in a
    /// second or two) until `reached`; returns it.
    async fn wait_position(
        &self,
        site: &mut RunningSite,
        sink: &str,
        reached: impl Fn(u64) -> bool,
    ) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let position = self.position(sink).await;
            if reached(position) {
                return position;
            }
            site.assert_alive();
            assert!(Instant::now() < deadline, "{sink} stuck at {position}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The PostgreSQL backend serving the (only) host's sink.
    async fn backend_of_host(&self) -> u32 {
        let pid: i32 = self
            .client
            .query_one(
                "SELECT pid FROM pg_stat_activity WHERE application_name = 'omh-host'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        pid.try_into().unwrap()
    }

    /// The sink's committed buffer position (0 before its first commit).
    async fn position(&self, sink: &str) -> u64 {
        let row = self
            .client
            .query_opt(
                "SELECT position FROM omh_sink_progress WHERE sink = $1",
                &[&format!("site/{sink}")],
            )
            .await;
        match row {
            Ok(row) => row.map_or(0, |row| u64::try_from(row.get::<_, i64>(0)).unwrap()),
            // The host creates the table when a sink first connects.
            Err(error) if error.code() == Some(&SqlState::UNDEFINED_TABLE) => 0,
            Err(error) => panic!("reading the sinks' progress: {error}"),
        }
    }
}

/// Produced vs committed messages/s of one sink over a window, and how far
/// its backlog (produced minus committed, both counted from the window's
/// start) moved: flat means the sink keeps up.
struct Steady {
    produced: f64,
    committed: f64,
    backlog_range: (i64, i64),
}

async fn steady_state(bench: &Bench, sinks: &[(&str, &BusCounter)]) -> Vec<Steady> {
    let started = Instant::now();
    let mut origin = Vec::new();
    for (sink, bus) in sinks {
        origin.push((bus.count(), bench.position(sink).await));
    }
    let mut ranges = vec![(0i64, 0i64); sinks.len()];
    let mut last = origin.clone();
    while started.elapsed() < STEADY {
        tokio::time::sleep(Duration::from_millis(250)).await;
        for (index, (sink, bus)) in sinks.iter().enumerate() {
            last[index] = (bus.count(), bench.position(sink).await);
            let produced = (last[index].0 - origin[index].0) as i64;
            let committed = (last[index].1 - origin[index].1) as i64;
            let range = &mut ranges[index];
            *range = (
                range.0.min(produced - committed),
                range.1.max(produced - committed),
            );
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    origin
        .iter()
        .zip(&last)
        .zip(ranges)
        .map(|((origin, last), backlog_range)| Steady {
            produced: (last.0 - origin.0) as f64 / seconds,
            committed: (last.1 - origin.1) as f64 / seconds,
            backlog_range,
        })
        .collect()
}

/// A host with the devices and both sinks, the database up: its steady
/// state; the host keeps running, with its RSS sampler and points counter.
async fn live(
    bench: &Bench,
    run: &str,
    points_interval: Duration,
) -> (RunningSite, RssSampler, BusCounter, Vec<Steady>) {
    let sections = devices_section(free_port(), points_interval)
        + &bench.narrow_sink()
        + &bench.template_sink();
    let (mut site, mqtt_port) = bench.start_host(run, &sections);
    let rss = RssSampler::start(site.pid());
    let points = BusCounter::connect(mqtt_port, "/neuron/omh/+/points");
    let conditions = BusCounter::connect(mqtt_port, "/neuron/omh/+/conditions");
    // A later run starts where the earlier one left off.
    let before = [bench.position(NARROW).await, bench.position(TEMPLATE).await];
    wait_for(
        Duration::from_secs(60),
        "both sinks to commit",
        &mut site,
        async |_| {
            (bench.position(NARROW).await > before[0] && bench.position(TEMPLATE).await > before[1])
                .then_some(())
        },
    )
    .await;
    let steady = steady_state(bench, &[(NARROW, &points), (TEMPLATE, &conditions)]).await;
    site.assert_alive();
    assert!(
        !points.errors_seen() && !conditions.errors_seen(),
        "{}",
        site.log()
    );
    (site, rss, points, steady)
}

/// A host with only one sink replaying its buffer, timed from its first
/// committed batch to its last.
struct CatchUp {
    messages_per_second: f64,
    /// Messages written, the first batch's included.
    messages: u64,
    rss: String,
    /// Of one core, over the timed part: the host, and its PostgreSQL backend.
    host_cpu: f64,
    database_cpu: f64,
}

async fn catch_up(bench: &Bench, sink: &str, section: &str) -> CatchUp {
    let acked: u64 = std::fs::read_to_string(bench.buffer_dir(sink).join("acked"))
        .map_or(0, |text| text.trim().parse().unwrap());
    let before = bench.position(sink).await;
    let (mut site, _) = bench.start_host(&format!("catch-up-{sink}"), section);
    let rss = RssSampler::start(site.pid());
    let pending = wait_for(
        Duration::from_secs(30),
        "the buffer's replay",
        &mut site,
        async |site| replay_pending(&site.log()),
    )
    .await;
    let last = acked + pending;
    // Batches are full from `acked` on; the last, partial one waits out
    // `flush_interval` for more messages, which says nothing about speed.
    let last_full = last - pending % BATCH_MESSAGES as u64;
    let first = bench.wait_position(&mut site, sink, |p| p > before).await;
    let cpu = CpuMeter::start(&[site.pid(), bench.backend_of_host().await]);
    let started = Instant::now();
    bench
        .wait_position(&mut site, sink, |p| p >= last_full)
        .await;
    let seconds = started.elapsed().as_secs_f64();
    let [host_cpu, database_cpu] = cpu.percent()[..] else {
        unreachable!("two processes")
    };
    bench.wait_position(&mut site, sink, |p| p >= last).await;
    let rss = rss.report();
    site.kill();
    CatchUp {
        messages_per_second: (last_full - first) as f64 / seconds,
        messages: last - before,
        rss,
        host_cpu,
        database_cpu,
    }
}

/// The `pending` count of the buffer's "replaying them first" log line.
fn replay_pending(log: &str) -> Option<u64> {
    let line = log.lines().find(|l| l.contains("replaying them first"))?;
    let value = line.split("pending=").nth(1)?;
    value.split_whitespace().next()?.parse().ok()
}

fn machine_notes(versions: &str) -> String {
    format!("{}; {versions}; fsync = off (test cluster)", machine())
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let postgres = TestPostgres::start(PgOptions { timescaledb: true }).unwrap();
    postgres.apply_migrations().await.unwrap();
    let client = postgres.client().await.unwrap();
    let versions: String = client
        .query_one(
            "SELECT split_part(version(), ' ', 2) || ' + TimescaleDB ' || extversion \
             FROM pg_extension WHERE extname = 'timescaledb'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let mut bench = Bench {
        dir,
        postgres,
        client,
    };
    println!(
        "sink bench: {}\n{DEVICES} devices x {TAGS} tags every {POINTS_INTERVAL:?} (narrow), \
         x 2 tags every {CONDITIONS_INTERVAL:?} (template); sink batch_size {BATCH_MESSAGES} messages",
        machine_notes(&versions)
    );

    // Both sinks live at half the rate, then at the full rate, which goes
    // on into the outage that fills their buffers.
    let half_rate = POINTS_INTERVAL * 2;
    let (mut site, _, _, steady_half) = live(&bench, "live-half", half_rate).await;
    assert!(
        site.terminate().success(),
        "clean exit; log:\n{}",
        site.log()
    );
    let (mut site, live_rss, points, steady_full) = live(&bench, "live", POINTS_INTERVAL).await;
    let steady = [(half_rate, steady_half), (POINTS_INTERVAL, steady_full)];

    bench.postgres.stop().unwrap();
    let outage_started = Instant::now();
    let produced_before = points.count();
    tokio::time::sleep(OUTAGE).await;
    let outage_rate = (points.count() - produced_before) as f64 * TAGS as f64
        / outage_started.elapsed().as_secs_f64();
    site.assert_alive();
    let live_rss = live_rss.report();
    // SIGKILL: what the consumer fsynced is the backlog; a clean stop would
    // spend its drain timeout retrying the database.
    site.kill();
    bench.postgres.start_again().unwrap();
    bench.client = bench.client().await;
    // Each plain loop runs right before the OMH phase it is compared with,
    // so both see the same load from the rest of the machine; what the live
    // phase committed stays out of the catch-up counts.
    bench.truncate().await;
    let (raw, raw_cpu) = bench.measure_plain(raw_copy).await;
    assert_eq!(bench.count("readings").await, RAW_ROWS as i64);
    bench.truncate().await;
    let narrow = catch_up(&bench, NARROW, &bench.narrow_sink()).await;
    let narrow_rows = narrow.messages * TAGS as u64;
    assert_eq!(bench.count("readings").await, narrow_rows as i64);
    let (seed, seed_cpu) = bench.measure_plain(seed_inserts).await;
    bench.truncate().await;
    let template = catch_up(&bench, TEMPLATE, &bench.template_sink()).await;
    assert_eq!(bench.count("conditions").await, template.messages as i64);

    let narrow_rate = narrow.messages_per_second * TAGS as f64;
    let template_rate = template.messages_per_second;
    let row = |what: &str, rate: f64, ratio: &str, host: &str, database: f64, rss: &str| {
        println!("{what:<44} {rate:>9.0} {ratio:>14} {host:>6} {database:>5.0} % {rss}");
    };
    println!(
        "\n{:<44} {:>9} {:>14} {:>6} {:>7} host RSS (peak VmRSS / VmHWM)",
        "", "rows/s", "ratio", "host", "db CPU"
    );
    row(
        &format!("raw binary COPY, {RAW_ROWS} rows"),
        raw,
        "",
        "",
        raw_cpu,
        "",
    );
    row(
        &format!("OMH narrow, catch-up of {narrow_rows} rows"),
        narrow_rate,
        &format!("{:.1} % of raw", narrow_rate / raw * 100.0),
        &format!("{:.0} %", narrow.host_cpu),
        narrow.database_cpu,
        &narrow.rss,
    );
    row("seed: one INSERT per message", seed, "", "", seed_cpu, "");
    row(
        &format!("OMH template, catch-up of {} rows", template.messages),
        template_rate,
        &format!("{:.1} x seed", template_rate / seed),
        &format!("{:.0} %", template.host_cpu),
        template.database_cpu,
        &template.rss,
    );
    println!(
        "\nsteady state, database up, both sinks and the devices in one host, {STEADY:?} \
         (host RSS {live_rss} over this and the {OUTAGE:?} outage):"
    );
    for (interval, results) in &steady {
        println!("  points every {interval:?}:");
        for (name, rows_per_message, result) in [
            ("narrow  ", TAGS as f64, &results[0]),
            ("template", 1.0, &results[1]),
        ] {
            println!(
                "    {name}: produced {:>7.0} rows/s, committed {:>7.0} rows/s, backlog moved within {}..{} messages",
                result.produced * rows_per_message,
                result.committed * rows_per_message,
                result.backlog_range.0,
                result.backlog_range.1,
            );
        }
    }
    println!(
        "  during the outage the devices put {outage_rate:.0} narrow points/s into the buffer"
    );
}
