//! Headless Chromium driven over WebDriver (Debian's `chromium` and
//! `chromium-driver`), to test pages in a real browser. The protocol is a
//! few JSON requests, so it goes through the same small HTTP client as the
//! other tests.

use super::site::{free_port, http_get, http_request};
use base64::Engine;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Browser {
    driver: Child,
    port: u16,
    session: String,
}

impl Browser {
    pub fn start() -> Self {
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "chromedriver (Debian package chromium-driver; scripts/install-deps installs it)",
            );
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        // As root Chromium needs --no-sandbox; the rest keeps it off the
        // network, which this machine's sandbox refuses anyway.
        let capabilities = serde_json::json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--disable-background-networking", "--disable-component-update",
                         "--disable-sync", "--no-first-run", "--window-size=1100,700"],
            },
        }}});
        let mut browser = Self {
            driver,
            port,
            session: String::new(),
        };
        let created = browser.call("POST", "/session", Some(capabilities));
        browser.session = created["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {created}"))
            .to_string();
        browser
    }

    pub fn goto(&self, url: &str) {
        self.session_call("POST", "url", Some(serde_json::json!({ "url": url })));
    }

    /// Runs `script` (a function body) in the page; returns its value.
    pub fn eval(&self, script: &str) -> serde_json::Value {
        self.session_call(
            "POST",
            "execute/sync",
            Some(serde_json::json!({ "script": script, "args": [] })),
        )
    }

    pub fn screenshot(&self, path: &Path) {
        let png = self.session_call("GET", "screenshot", None);
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().expect("base64 PNG"))
            .unwrap();
        std::fs::write(path, bytes).unwrap();
    }

    fn session_call(
        &self,
        method: &str,
        command: &str,
        body: Option<serde_json::Value>,
    ) -> serde_json::Value {
        self.call(
            method,
            &format!("/session/{}/{command}", self.session),
            body,
        )
    }

    /// One WebDriver command; its `value`.
    fn call(&self, method: &str, path: &str, body: Option<serde_json::Value>) -> serde_json::Value {
        let body = body.map(|b| b.to_string());
        let (status, response) = match method {
            "GET" => http_get(self.port, path),
            _ => http_request(self.port, method, path, body.as_deref()),
        };
        assert_eq!(status, 200, "WebDriver {method} {path}: {response}");
        let response: serde_json::Value = serde_json::from_str(&response).unwrap();
        response["value"].clone()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = http_request(
                self.port,
                "DELETE",
                &format!("/session/{}", self.session),
                None,
            );
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
