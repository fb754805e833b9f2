//! Acceptance: the seed article's demo, end to end on real parts. A real
//! PostgreSQL with TimescaleDB, the migration, `examples/seed-demo.toml` as
//! shipped (only ports and URL re-pointed through the environment), and an
//! outside MQTT client reading the Neuron-shaped group messages.

mod support;

use std::time::Duration;
use support::postgres::{PgOptions, TestPostgres};
use support::site::{Collector, RunningSite, free_port, plugins_dir, repo_root, wait_for};

const SEED_TOPIC: &str = "/neuron/demo_app/demo/demo_group";

#[tokio::test(flavor = "multi_thread")]
async fn seed_demo_stores_rows_in_timescaledb_and_publishes_neuron_json() {
    let postgres = TestPostgres::start(PgOptions { timescaledb: true }).expect("PostgreSQL starts");
    postgres.apply_migrations().await.expect("migrations apply");
    let db = postgres.client().await.unwrap();
    let hypertable: i64 = db
        .query_one(
            "SELECT count(*) FROM timescaledb_information.hypertables WHERE hypertable_name = 'conditions'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(hypertable, 1, "conditions is a hypertable");

    let dir = tempfile::tempdir().unwrap();
    let mqtt_port = free_port();
    let mut site = RunningSite::start(
        &repo_root().join("examples/seed-demo.toml"),
        &[
            ("OMH_DATABASE_URL", postgres.url()),
            ("OMH_MQTT_LISTEN", format!("127.0.0.1:{mqtt_port}")),
            ("OMH_SIMULATOR_LISTEN", format!("127.0.0.1:{}", free_port())),
            ("OMH_PLUGINS_DIR", plugins_dir().display().to_string()),
            ("OMH_DATA_DIR", dir.path().display().to_string()),
        ],
        dir.path(),
    );
    let mqtt = Collector::connect(mqtt_port, &[SEED_TOPIC]);

    let rows = wait_for(
        Duration::from_secs(10),
        "rows in conditions",
        &mut site,
        async |_| {
            let rows = db
                .query("SELECT temperature, humidity FROM conditions", &[])
                .await
                .ok()?;
            (rows.len() >= 2).then_some(rows)
        },
    )
    .await;
    for row in &rows {
        let (temperature, humidity): (f64, f64) = (row.get(0), row.get(1));
        assert!(
            (280.0..=309.0).contains(&temperature),
            "temperature {temperature}"
        );
        assert!((700.0..=729.0).contains(&humidity), "humidity {humidity}");
    }

    let message = wait_for(
        Duration::from_secs(5),
        "a group message",
        &mut site,
        async |_| mqtt.last_on(SEED_TOPIC),
    )
    .await;
    assert_eq!(message["node"], "demo");
    assert_eq!(message["group"], "demo_group");
    assert!(message["timestamp"].as_i64().unwrap() > 1_600_000_000_000);
    let temperature = message["values"]["temperature"].as_i64().unwrap();
    let humidity = message["values"]["humidity"].as_i64().unwrap();
    assert!((280..=309).contains(&temperature), "{message}");
    assert!((700..=729).contains(&humidity), "{message}");
    assert_eq!(message["errors"], serde_json::json!({}), "{message}");
}
