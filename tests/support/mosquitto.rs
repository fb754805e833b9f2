//! A real `mosquitto` broker (the Debian package, `scripts/install-deps`)
//! on a free loopback port, as an independent broker to compare with or
//! connect to.

use super::site::{free_port, wait_listening};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const BINARY: &str = "/usr/sbin/mosquitto";

pub struct Mosquitto {
    child: Child,
    pub addr: SocketAddr,
    log: PathBuf,
}

impl Mosquitto {
    /// Starts mosquitto in `dir` (config and log go there) listening on
    /// 127.0.0.1, anonymous, without persistence, with `extra` config
    /// lines; returns once it accepts connections.
    pub async fn start(dir: &Path, extra: &str) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let config = dir.join("mosquitto.conf");
        // Started as root, mosquitto would switch to the `mosquitto` user,
        // which cannot write the log here; as anyone else `user` is ignored.
        let user = Command::new("id").arg("-un").output().unwrap();
        let user = String::from_utf8_lossy(&user.stdout).trim().to_string();
        std::fs::write(
            &config,
            format!(
                "listener {} {}\nallow_anonymous true\npersistence false\nuser {user}\n{extra}\n",
                addr.port(),
                addr.ip()
            ),
        )
        .unwrap();
        let log = dir.join("mosquitto.log");
        let log_file = std::fs::File::create(&log).unwrap();
        let child = Command::new(BINARY)
            .arg("-c")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("{BINARY} starts (scripts/install-deps installs it): {e}"));
        let mut mosquitto = Self { child, addr, log };
        if !wait_listening(addr, Duration::from_secs(10)).await {
            mosquitto.kill();
            panic!(
                "mosquitto did not listen on {addr}; log:\n{}",
                mosquitto.log()
            );
        }
        mosquitto
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// "mosquitto version 2.0.11", from `mosquitto -h`.
    pub fn version() -> String {
        let out = Command::new(BINARY).arg("-h").output().unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or("mosquitto, unknown version")
            .to_string()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.kill();
    }
}
