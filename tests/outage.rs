//! Store-and-forward, proven on real parts: 1,000 points/s from the
//! built-in simulator through the modbus-tcp driver, the embedded broker and
//! the timescale sink (narrow mapping, binary COPY) into TimescaleDB, while
//! the database is stopped for 30 s. An outside MQTT client is the witness
//! of what was produced; afterwards every point it saw is in `readings`
//! exactly once. Other tests SIGKILL the host during the outage and restart
//! it, lock the table for a while instead of stopping the server, and fill
//! the disk under the sink's buffer.

mod support;

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};
use support::disk::SmallDisk;
use support::postgres::{PgOptions, TestPostgres};
use support::site::{Collector, RunningSite, free_port, manifest_header, plugins_dir, wait_for};

const DEVICES: usize = 5;
const TAGS: usize = 20;
/// 5 devices x 20 tags x 10 polls/s = 1,000 points/s.
const INTERVAL: &str = "100ms";
const OUTAGE: Duration = Duration::from_secs(30);
const GROUP_FILTER: &str = "/neuron/omh/#";

/// (time in ms, device, tag)
type Point = (i64, String, String);

struct Plant {
    _dir: tempfile::TempDir,
    dir: std::path::PathBuf,
    manifest: std::path::PathBuf,
    mqtt_port: u16,
    postgres: TestPostgres,
}

impl Plant {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let postgres = TestPostgres::start(PgOptions { timescaledb: true }).unwrap();
        postgres.apply_migrations().await.unwrap();
        let mqtt_port = free_port();
        let manifest = dir.path().join("site.toml");
        std::fs::write(
            &manifest,
            site_manifest(
                &dir.path().join("data"),
                mqtt_port,
                free_port(),
                &postgres.url(),
            ),
        )
        .unwrap();
        Self {
            dir: dir.path().to_path_buf(),
            _dir: dir,
            manifest,
            mqtt_port,
            postgres,
        }
    }

    fn start_host(&self, run: &str) -> RunningSite {
        RunningSite::start(&self.manifest, &[], &self.dir.join(run))
    }

    async fn stored(&self) -> Vec<Point> {
        let client = self.postgres.client().await.unwrap();
        client
            .query(
                "SELECT (extract(epoch FROM time) * 1000)::bigint, device, tag FROM readings",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|row| (row.get(0), row.get(1), row.get(2)))
            .collect()
    }

    /// Waits until the database holds every point of `expected`, and
    /// prints how fast the sink caught up (the live 1,000 points/s go on
    /// meanwhile and are counted in).
    async fn wait_for_catch_up(&self, site: &mut RunningSite, expected: HashSet<Point>) {
        let (started, rows_before) = (Instant::now(), self.stored().await.len());
        let rows_after = wait_for(
            Duration::from_secs(60),
            "the sink to catch up after the outage",
            site,
            async |_| {
                let stored: HashSet<Point> = self.stored().await.into_iter().collect();
                expected.is_subset(&stored).then_some(stored.len())
            },
        )
        .await;
        let (rows, seconds) = (rows_after - rows_before, started.elapsed().as_secs_f64());
        eprintln!(
            "catch-up: {} backlog rows, {rows} rows stored in {seconds:.1} s = {:.0} rows/s",
            expected.len().saturating_sub(rows_before),
            rows as f64 / seconds
        );
    }
}

fn site_manifest(data_dir: &Path, mqtt_port: u16, modbus_port: u16, database: &str) -> String {
    let mut manifest = manifest_header(data_dir, &plugins_dir(), mqtt_port);
    manifest += &format!(
        "[simulators.plant]\nlisten = \"127.0.0.1:{modbus_port}\"\nupdate_interval = \"{INTERVAL}\"\nregisters = [\n"
    );
    for tag in 1..=TAGS {
        manifest += &format!("  {{ address = \"1!4{tag:04}\", min = 0, max = 30000 }},\n");
    }
    manifest += "]\n";
    for device in 1..=DEVICES {
        manifest += &format!(
            "[devices.line{device}]\ndriver = \"modbus-tcp\"\nendpoint = \"127.0.0.1:{modbus_port}\"\n\
             [devices.line{device}.groups.fast]\ninterval = \"{INTERVAL}\"\ntags = [\n"
        );
        for tag in 1..=TAGS {
            manifest += &format!(
                "  {{ name = \"t{tag:02}\", address = \"1!4{tag:04}\", type = \"int16\" }},\n"
            );
        }
        manifest += "]\n";
    }
    manifest += &format!(
        "[sinks.history]\nplugin = \"timescale\"\nurl = \"{database}\"\ntopics = [\"{GROUP_FILTER}\"]\n\
         flush_interval = \"200ms\"\nwrite_timeout = \"10s\"\n[sinks.history.settings]\nmapping = \"narrow\"\nsite = \"outage-test\"\n"
    );
    manifest
}

/// Every point in the group messages the outside client received.
fn witnessed(witness: &Collector) -> HashSet<Point> {
    let mut points = HashSet::new();
    for device in 1..=DEVICES {
        for message in witness.on(&format!("/neuron/omh/line{device}/fast")) {
            let time = message["timestamp"].as_i64().expect("timestamp");
            for tag in message["values"].as_object().expect("values").keys() {
                points.insert((time, format!("line{device}"), tag.clone()));
            }
        }
    }
    points
}

fn unix_millis() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    i64::try_from(now.as_millis()).unwrap()
}

fn assert_no_duplicates(stored: &[Point]) {
    let distinct: HashSet<&Point> = stored.iter().collect();
    assert_eq!(
        stored.len(),
        distinct.len(),
        "{} rows written twice",
        stored.len() - distinct.len()
    );
}

/// After a fault has passed: waits until the database holds every point
/// of `expected` (asked again as the witness sees more), stops the host
/// cleanly, and checks each of them is stored, and nothing twice. Returns
/// what is stored.
async fn catch_up_and_count(
    plant: &Plant,
    mut site: RunningSite,
    expected: impl Fn() -> HashSet<Point>,
    test: &str,
) -> HashSet<Point> {
    plant.wait_for_catch_up(&mut site, expected()).await;
    assert!(
        site.terminate().success(),
        "clean exit; log:\n{}",
        site.log()
    );
    let stored = plant.stored().await;
    assert_no_duplicates(&stored);
    let stored: HashSet<Point> = stored.into_iter().collect();
    let missing = expected().difference(&stored).count();
    assert_eq!(missing, 0, "{test}: {missing} expected points not stored");
    eprintln!(
        "{test}: {} points stored, 0 missing, 0 duplicated",
        stored.len()
    );
    stored
}

async fn wait_until_flowing(plant: &Plant, site: &mut RunningSite) {
    wait_for(
        Duration::from_secs(20),
        "rows in readings",
        site,
        async |_| (plant.stored().await.len() >= 1_000).then_some(()),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_database_outage_loses_and_duplicates_nothing() {
    let mut plant = Plant::new().await;
    let mut site = plant.start_host("run");
    let witness = Collector::connect(plant.mqtt_port, &[GROUP_FILTER]);
    wait_until_flowing(&plant, &mut site).await;

    plant.postgres.stop().unwrap();
    tokio::time::sleep(OUTAGE).await;
    site.assert_alive();
    let during_outage = witnessed(&witness).len();
    plant.postgres.start_again().unwrap();
    // Everything produced, the outage's backlog included.
    let stored = catch_up_and_count(&plant, site, || witnessed(&witness), "outage test").await;
    let seen = witnessed(&witness);
    // The witness connected a moment after the host started and may miss
    // the last message before it stopped; in between, the database holds
    // nothing the bus did not carry.
    let first_seen = seen.iter().map(|p| p.0).min().unwrap() + 1_000;
    let last_seen = seen.iter().map(|p| p.0).max().unwrap() - 1_000;
    let unexplained = stored
        .iter()
        .filter(|p| (first_seen..last_seen).contains(&p.0) && !seen.contains(p))
        .count();
    assert_eq!(unexplained, 0, "rows that no bus message carried");
    assert!(
        during_outage >= 25_000,
        "expected ~1,000 points/s, witnessed {during_outage} by the end of the outage"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_killed_during_the_outage_delivers_after_restart() {
    let mut plant = Plant::new().await;
    let mut site = plant.start_host("first");
    let witness = Collector::connect(plant.mqtt_port, &[GROUP_FILTER]);
    wait_until_flowing(&plant, &mut site).await;

    plant.postgres.stop().unwrap();
    tokio::time::sleep(OUTAGE / 2).await;
    // What the bus carried up to a moment before the kill must survive it;
    // the last fsync batch in flight at the instant of SIGKILL may not.
    let before_kill = witnessed(&witness);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let killed_at = unix_millis();
    site.kill();

    let site = plant.start_host("second");
    tokio::time::sleep(OUTAGE / 2).await;
    assert!(
        site.log().contains("replaying them first"),
        "the restarted host replays its buffer; log:\n{}",
        site.log()
    );
    plant.postgres.start_again().unwrap();
    let after_restart = || -> HashSet<Point> {
        witnessed(&witness)
            .into_iter()
            .filter(|point| point.0 > killed_at)
            .collect()
    };
    let expected = || -> HashSet<Point> { &before_kill | &after_restart() };
    catch_up_and_count(&plant, site, expected, "kill test").await;
    assert!(
        !after_restart().is_empty(),
        "the restarted host produced points"
    );
    eprintln!("kill test: {} points before the kill", before_kill.len());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_table_locked_for_a_while_loses_and_duplicates_nothing() {
    let plant = Plant::new().await;
    let mut site = plant.start_host("run");
    let witness = Collector::connect(plant.mqtt_port, &[GROUP_FILTER]);
    wait_until_flowing(&plant, &mut site).await;

    // The server stays up and answers; writes to the table just wait,
    // past the sink's write_timeout (10 s).
    let locker = plant.postgres.client().await.unwrap();
    locker
        .batch_execute("BEGIN; LOCK TABLE readings IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    tokio::time::sleep(OUTAGE).await;
    site.assert_alive();
    assert!(
        site.log()
            .contains("(write_timeout); cancelled, reconnecting"),
        "the wait is reported as the database's; log:\n{}",
        site.log()
    );
    assert!(
        !site.log().contains("plugin crashed"),
        "a slow database is not a plugin crash; log:\n{}",
        site.log()
    );
    // Timed-out writes are cancelled, not left waiting on the lock: at
    // most the current one is.
    let waiting: i64 = locker
        .query_one(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE application_name = 'omh-host' AND wait_event_type = 'Lock'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        waiting <= 1,
        "{waiting} omh-host writes waiting on the lock"
    );
    locker.batch_execute("COMMIT").await.unwrap();
    catch_up_and_count(&plant, site, || witnessed(&witness), "lock test").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_under_the_buffer_loses_and_duplicates_nothing() {
    let plant = Plant::new().await;
    let Some(disk) = SmallDisk::mount(&plant.dir.join("data/buffer/history"), "8m") else {
        eprintln!("SKIPPED: cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN)");
        return;
    };
    let mut site = plant.start_host("run");
    let witness = Collector::connect(plant.mqtt_port, &[GROUP_FILTER]);
    wait_until_flowing(&plant, &mut site).await;

    // Nothing can be appended to the buffer now, so nothing reaches the
    // database; the bus holds the messages meanwhile.
    let filler = disk.fill();
    tokio::time::sleep(OUTAGE).await;
    site.assert_alive();
    assert!(
        site.log().contains("cannot append to the buffer"),
        "the full disk is logged; log:\n{}",
        site.log()
    );
    std::fs::remove_file(filler).unwrap();
    catch_up_and_count(&plant, site, || witnessed(&witness), "full-disk test").await;
}
