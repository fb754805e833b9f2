//! The quickstart as README runs it: `examples/quickstart.toml`, built-in
//! simulator, embedded broker, rows landing in the embedded SQLite file.
//! Also checks the compiled-code cache: a second start loads from it.

mod support;

use std::time::Duration;
use support::site::{
    Collector, Quickstart, http_get, http_request, sqlite_conditions_at, wait_for,
};

const GROUP_TOPIC: &str = "/neuron/demo_app/demo/demo_group";

#[tokio::test(flavor = "multi_thread")]
async fn quickstart_stores_rows_in_the_embedded_database() {
    let dir = tempfile::tempdir().unwrap();
    let quickstart = Quickstart::new(dir.path());
    let mut site = quickstart.start(dir.path());
    let mqtt = Collector::connect(quickstart.mqtt_port, &["omh/status/plugins/#", GROUP_TOPIC]);

    let database = dir.path().join("quickstart.db");
    let count_rows = || -> Option<Vec<(String, f64, f64)>> {
        let db = rusqlite::Connection::open(&database).ok()?;
        let mut statement = db
            .prepare("SELECT time, temperature, humidity FROM conditions ORDER BY time")
            .ok()?;
        let rows = statement
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .ok()?
            .collect::<Result<Vec<_>, _>>()
            .ok()?;
        (rows.len() >= 2).then_some(rows)
    };
    let rows = wait_for(
        Duration::from_secs(10),
        "rows in quickstart.db",
        &mut site,
        async |_| count_rows(),
    )
    .await;
    for (time, temperature, humidity) in &rows {
        assert!(
            time.ends_with('Z') && time.len() == 24,
            "ISO-8601 time, got {time}"
        );
        assert!(
            (280.0..=309.0).contains(temperature),
            "temperature {temperature}"
        );
        assert!((700.0..=729.0).contains(humidity), "humidity {humidity}");
    }

    let status = wait_for(
        Duration::from_secs(5),
        "plugin status",
        &mut site,
        async |_| mqtt.last_on("omh/status/plugins/devices.demo"),
    )
    .await;
    assert_eq!(status["state"], "running", "{status}");
    assert!(site.log().contains("compiled in"), "first start compiles");
    check_live_view(quickstart.http_port).await;

    // A clean stop (SIGTERM) writes what is still on its way: every group
    // message an outside client saw is a row, found by its poll timestamp.
    let exit = site.terminate();
    assert!(exit.success(), "clean exit: {exit}; log:\n{}", site.log());
    let published = mqtt.timestamps_on(&[GROUP_TOPIC]);
    assert!(!published.is_empty());
    let db = rusqlite::Connection::open(&database).unwrap();
    for timestamp in published {
        assert_eq!(
            sqlite_conditions_at(&db, timestamp),
            1,
            "message of {timestamp} stored exactly once; log:\n{}",
            site.log()
        );
    }

    // Restart on the same data dir: the compiled code comes from the cache.
    let mut again = quickstart.start(&dir.path().join("again"));
    wait_for(
        Duration::from_secs(10),
        "second start",
        &mut again,
        async |site| site.log().contains("running").then_some(()),
    )
    .await;
    let log = again.log();
    assert!(
        log.contains("from compiled-code cache"),
        "second start uses the compiled-code cache; log:\n{log}"
    );
}

/// The live page, its API and the metrics, as a browser and Prometheus
/// would fetch them.
async fn check_live_view(port: u16) {
    let get = |path: &'static str| tokio::task::spawn_blocking(move || http_get(port, path));
    let (status, health) = get("/health").await.unwrap();
    assert_eq!(status, 200);
    assert!(health.contains(r#""status":"ok""#), "{health}");

    let (_, page) = get("/").await.unwrap();
    assert!(page.contains("<title>OMH live view</title>"), "{page}");

    let (_, tags) = get("/api/tags").await.unwrap();
    let tags: serde_json::Value = serde_json::from_str(&tags).unwrap();
    let temperature = tags
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["tag"] == "temperature" && t["device"] == "demo")
        .unwrap_or_else(|| panic!("temperature in {tags}"));
    assert!(
        (280..=309).contains(&temperature["value"].as_i64().unwrap()),
        "{temperature}"
    );
    assert!(!temperature["history"].as_array().unwrap().is_empty());

    // The stream carries the next group message as it is published.
    let (_, event) = get("/api/stream").await.unwrap();
    let event: serde_json::Value =
        serde_json::from_str(event.strip_prefix("data:").unwrap().trim()).unwrap();
    assert_eq!(event["group"], "demo_group");
    assert!(event["timestamp"].as_i64().unwrap() > temperature["timestamp"].as_i64().unwrap());

    let (_, plugins) = get("/api/plugins").await.unwrap();
    let plugins: serde_json::Value = serde_json::from_str(&plugins).unwrap();
    assert_eq!(plugins["devices.demo"]["state"], "running", "{plugins}");

    let (_, metrics) = get("/metrics").await.unwrap();
    assert!(
        metrics.contains("# TYPE omh_group_messages_total counter"),
        "{metrics}"
    );
    // Writes take the MQTT write path, checks included: the quickstart's
    // tags are read-only (3), and there is no device "nope" (2).
    for (request, code) in [
        (
            r#"{"node":"demo","group":"demo_group","tag":"temperature","value":250}"#,
            3,
        ),
        (r#"{"node":"nope","group":"g","tag":"t","value":1}"#, 2),
    ] {
        let (status, answer) = tokio::task::spawn_blocking(move || {
            http_request(port, "POST", "/api/write", Some(request))
        })
        .await
        .unwrap();
        assert_eq!(status, 200, "{answer}");
        let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
        assert_eq!(answer["error"], code, "{answer}");
    }

    for expected in [
        r#"omh_plugin_up{instance="sinks.storage"} 1"#,
        r#"omh_sink_buffer_pending_messages{sink="storage"}"#,
        "omh_bus_subscriber_skips_total 0",
        "# TYPE omh_bus_publish_queue_depth gauge",
        r#"omh_plugin_deadline_interrupts_total{instance="devices.demo"} 0"#,
    ] {
        assert!(metrics.contains(expected), "{expected} in:\n{metrics}");
    }
}
