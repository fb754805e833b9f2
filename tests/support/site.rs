//! Runs the real `omh-host` binary on a manifest, with its log captured to a
//! file that failing assertions print, plus the pieces end-to-end tests
//! and benches share: free ports, the built plugins, an MQTT client that
//! collects and one that only counts.

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ has a parent")
        .to_path_buf()
}

/// Directory of the built production plugins (scripts/build-plugins).
pub fn plugins_dir() -> PathBuf {
    built(repo_root().join("target/plugins"))
}

/// Directory of the misbehaving test plugins (scripts/build-plugins).
pub fn test_plugins_dir() -> PathBuf {
    built(repo_root().join("target/test-plugins"))
}

fn built(dir: PathBuf) -> PathBuf {
    assert!(
        dir.is_dir(),
        "{} is missing: run scripts/build-plugins (scripts/test does) before the tests",
        dir.display()
    );
    dir
}

/// A plugins directory holding copies of the named `.wasm` files.
pub fn plugins_with(dir: &Path, files: &[PathBuf]) -> PathBuf {
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    for file in files {
        std::fs::copy(file, plugins.join(file.file_name().unwrap())).unwrap();
    }
    plugins
}

/// The `[site]`, `[plugins]` and `[broker]` sections of a test manifest
/// (the broker on loopback, open to anonymous clients).
pub fn manifest_header(data_dir: &Path, plugins: &Path, mqtt_port: u16) -> String {
    format!(
        "[site]\ndata_dir = \"{}\"\n[plugins]\ndir = \"{}\"\n[broker]\nlisten = \"127.0.0.1:{mqtt_port}\"\nanonymous = true\n",
        data_dir.display(),
        plugins.display()
    )
}

/// A port nothing listens on right now (the OS picks it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until something accepts TCP connections on `addr` (a broker
/// that is starting), for at most `timeout`; false if nothing did.
pub async fn wait_listening(addr: std::net::SocketAddr, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// `examples/quickstart.toml` on free ports with its data in `data_dir`:
/// the manifest, its environment, and the MQTT and HTTP ports.
pub struct Quickstart {
    pub manifest: PathBuf,
    pub env: Vec<(&'static str, String)>,
    pub mqtt_port: u16,
    pub http_port: u16,
}

impl Quickstart {
    pub fn new(data_dir: &Path) -> Self {
        let (mqtt_port, http_port) = (free_port(), free_port());
        Self {
            manifest: repo_root().join("examples/quickstart.toml"),
            env: vec![
                ("OMH_MQTT_LISTEN", format!("127.0.0.1:{mqtt_port}")),
                ("OMH_HTTP_LISTEN", format!("127.0.0.1:{http_port}")),
                ("OMH_SIMULATOR_LISTEN", format!("127.0.0.1:{}", free_port())),
                ("OMH_PLUGINS_DIR", plugins_dir().display().to_string()),
                ("OMH_DATA_DIR", data_dir.display().to_string()),
            ],
            mqtt_port,
            http_port,
        }
    }

    pub fn start(&self, log_dir: &Path) -> RunningSite {
        RunningSite::start(&self.manifest, &self.env, log_dir)
    }
}

pub struct RunningSite {
    child: Child,
    log: PathBuf,
}

impl RunningSite {
    /// Starts `omh-host --manifest <manifest>` with `env` set.
    pub fn start(manifest: &Path, env: &[(&str, String)], log_dir: &Path) -> Self {
        std::fs::create_dir_all(log_dir).unwrap();
        let log = log_dir.join("omh-host.log");
        let log_file = std::fs::File::create(&log).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_omh-host"));
        command
            .arg("--manifest")
            .arg(manifest)
            .env("OMH_LOG", "info,omh_host=debug")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file);
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command.spawn().expect("omh-host starts");
        Self { child, log }
    }

    /// The host's process id, for reading its CPU time from /proc.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the host's log contains `line`.
    pub async fn wait_for_log(&mut self, line: &str) {
        wait_for(
            Duration::from_secs(30),
            &format!("log line containing {line:?}"),
            self,
            async |site| site.log().contains(line).then_some(()),
        )
        .await;
    }

    /// Panics with the host's log when the process has exited.
    pub fn assert_alive(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!("omh-host exited with {status}; log:\n{}", self.log());
        }
    }

    /// SIGTERM, as systemd or Ctrl-C would stop it; waits for the exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(sent.success(), "kill -TERM {pid}");
        self.child.wait().unwrap()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RunningSite {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `check` until it returns `Some` or `timeout` passes.
pub async fn wait_for<T>(
    timeout: Duration,
    what: &str,
    site: &mut RunningSite,
    mut check: impl AsyncFnMut(&RunningSite) -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        site.assert_alive();
        if let Some(value) = check(site).await {
            return value;
        }
        if Instant::now() > deadline {
            panic!(
                "timed out after {timeout:?} waiting for {what}; omh-host log:\n{}",
                site.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `GET path` over plain HTTP/1.1 on loopback: (status code, body). Reads
/// until the server closes, or, for an event stream, until the first event.
pub fn http_get(port: u16, path: &str) -> (u16, String) {
    http_request(port, "GET", path, None)
}

/// One HTTP/1.1 request on loopback with an optional JSON body.
pub fn http_request(port: u16, method: &str, path: &str, json: Option<&str>) -> (u16, String) {
    use std::io::{BufRead, BufReader, Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("HTTP connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let body = json.unwrap_or("");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    reader.read_line(&mut status_line).unwrap();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP status line: {status_line:?}"));
    let mut headers = String::new();
    while reader.read_line(&mut headers).unwrap() > 2 {}
    let mut body = String::new();
    if headers.contains("text/event-stream") {
        // The first `data:` line; chunk sizes and keep-alives come between.
        loop {
            body.clear();
            if reader.read_line(&mut body).unwrap() == 0 || body.starts_with("data:") {
                break;
            }
        }
    } else if let Some(length) = content_length(&headers) {
        // Some servers (chromedriver) keep the connection open regardless.
        let mut bytes = vec![0; length];
        reader.read_exact(&mut bytes).unwrap();
        body = String::from_utf8(bytes).unwrap();
    } else {
        reader.read_to_string(&mut body).unwrap();
    }
    (status, body)
}

fn content_length(headers: &str) -> Option<usize> {
    headers.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse().ok())?
    })
}

/// An outside MQTT client that records every message on its filters.
#[derive(Clone, Default)]
pub struct Collector {
    messages: Arc<Mutex<HashMap<String, Vec<serde_json::Value>>>>,
}

impl Collector {
    /// Connects to the broker at `port` (retrying while it starts) and
    /// subscribes to `filters`.
    pub fn connect(port: u16, filters: &[&str]) -> Self {
        let collector = Self::default();
        let mut options = MqttOptions::new(format!("test-{}", free_port()), "127.0.0.1", port);
        options.set_keep_alive(Duration::from_secs(5));
        let (client, mut eventloop) = AsyncClient::new(options, 100);
        let filters: Vec<String> = filters.iter().map(|f| f.to_string()).collect();
        let messages = collector.messages.clone();
        tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        for filter in &filters {
                            client
                                .subscribe(filter.clone(), QoS::AtMostOnce)
                                .await
                                .unwrap();
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(publish))) => {
                        let json = serde_json::from_slice(&publish.payload)
                            .unwrap_or(serde_json::Value::Null);
                        messages
                            .lock()
                            .unwrap()
                            .entry(publish.topic)
                            .or_default()
                            .push(json);
                    }
                    Ok(_) => {}
                    // The broker may not be up yet: retry.
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        collector
    }

    pub fn on(&self, topic: &str) -> Vec<serde_json::Value> {
        self.messages
            .lock()
            .unwrap()
            .get(topic)
            .cloned()
            .unwrap_or_default()
    }

    /// Waits until `count` more messages than now have arrived on `topic`.
    pub async fn wait_for_more(&self, site: &mut RunningSite, topic: &str, count: usize) {
        let target = self.on(topic).len() + count;
        wait_for(
            Duration::from_secs(20),
            &format!("{count} more messages on {topic}"),
            site,
            async |_| (self.on(topic).len() >= target).then_some(()),
        )
        .await;
    }

    /// Poll timestamps (Unix ms) of the group messages seen on `topics`.
    pub fn timestamps_on(&self, topics: &[&str]) -> Vec<i64> {
        topics
            .iter()
            .flat_map(|topic| self.on(topic))
            .map(|m| m["timestamp"].as_i64().expect("group message timestamp"))
            .collect()
    }

    pub fn last_on(&self, topic: &str) -> Option<serde_json::Value> {
        self.on(topic).pop()
    }
}

/// Counts group messages on one topic filter, and whether any carried
/// errors; cheap enough to watch a bench's full rate.
#[derive(Clone, Default)]
pub struct BusCounter {
    messages: Arc<AtomicU64>,
    errors_seen: Arc<AtomicBool>,
}

impl BusCounter {
    /// Connects to the broker at `port` (retrying while it starts) and
    /// subscribes to `filter`.
    pub fn connect(port: u16, filter: &str) -> Self {
        let counter = Self::default();
        let mut options = MqttOptions::new(format!("bench-{}", free_port()), "127.0.0.1", port);
        options.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut eventloop) = AsyncClient::new(options, 1000);
        let (messages, errors_seen) = (counter.messages.clone(), counter.errors_seen.clone());
        let filter = filter.to_string();
        tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => client
                        .subscribe(filter.clone(), QoS::AtMostOnce)
                        .await
                        .unwrap(),
                    Ok(Event::Incoming(Packet::Publish(publish))) => {
                        messages.fetch_add(1, Ordering::Relaxed);
                        // A good group message ends with an empty errors object.
                        if !publish.payload.ends_with(b"\"errors\":{}}") {
                            errors_seen.store(true, Ordering::Relaxed);
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        counter
    }

    pub fn count(&self) -> u64 {
        self.messages.load(Ordering::Relaxed)
    }

    pub fn errors_seen(&self) -> bool {
        self.errors_seen.load(Ordering::Relaxed)
    }

    /// Messages per second over `window`, after the first message arrived.
    pub async fn rate(&self, window: Duration) -> f64 {
        while self.count() == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await; // warm-up
        let (before, started) = (self.count(), Instant::now());
        tokio::time::sleep(window).await;
        (self.count() - before) as f64 / started.elapsed().as_secs_f64()
    }
}

/// Rows of the seed table `conditions` in an embedded SQLite database whose
/// time is the poll time `timestamp_ms` (stored as ISO-8601 UTC text).
pub fn sqlite_conditions_at(db: &rusqlite::Connection, timestamp_ms: i64) -> i64 {
    let time = humantime::format_rfc3339_millis(
        std::time::UNIX_EPOCH + Duration::from_millis(timestamp_ms as u64),
    )
    .to_string();
    db.query_row(
        "SELECT count(*) FROM conditions WHERE time = ?1",
        [&time],
        |r| r.get(0),
    )
    .unwrap()
}
