//! A real `mosquitto` broker (the Debian package, `scripts/install-deps`)
//! on a free loopback port, anonymous and without persistence: an
//! independent broker to compare with or to connect to, which a test can
//! stop and start again on the same port.

use super::site::free_port;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const BINARY: &str = "/usr/sbin/mosquitto";

pub struct Mosquitto {
    pub addr: SocketAddr,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Mosquitto {
    /// Starts mosquitto with its config and log in `dir` and `extra` config
    /// lines; returns once it accepts connections.
    pub fn start(dir: &Path, extra: &str) -> Self {
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
        let mut broker = Self {
            addr,
            config,
            log: dir.join("mosquitto.log"),
            child: None,
        };
        broker.restart();
        broker
    }

    /// Starts the stopped broker again, on the same port.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "mosquitto already runs");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(BINARY)
            .arg("-c")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("{BINARY} starts (scripts/install-deps installs it): {e}"));
        self.child = Some(child);
        for _ in 0..200 {
            if std::net::TcpStream::connect(self.addr).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("mosquitto does not listen on {}: {}", self.addr, self.log());
    }

    /// SIGTERM, as an operator's `systemctl stop` would; waits for the exit.
    pub fn stop(&mut self) {
        let mut child = self.child.take().expect("mosquitto runs");
        let pid = child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        child.wait().unwrap();
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("mosquitto runs").id()
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
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
