//! The device's `settings` table, parsed and checked once in `configure`.
//! Unknown keys are refused (a misspelt `timeout_ms` must not silently fall
//! back to the default); every problem names its key.

use std::net::SocketAddr;
use std::time::Duration;

use omh_sdk::Error;
use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Number of the first register in addresses: 1 (`1!40001` is offset 0,
    /// the Modbus convention) or 0 (`1!40000` is offset 0).
    pub address_base: u16,
    /// Bounds connecting and each request/response exchange.
    pub timeout_ms: u64,
    /// Further attempts, on a fresh connection, after a request fails.
    pub retries: u8,
    /// Least time between the end of one exchange and the next request, for
    /// devices that drop back-to-back requests.
    pub request_interval_ms: u64,
    /// Unused bits or registers one read may span to serve two tags.
    pub max_gap: u16,
    /// Once a slave times out, fail its remaining reads of this poll at
    /// once instead of waiting out a timeout for each.
    pub skip_silent_slave: bool,
    /// Write with functions 15/16 only (some devices implement no 5/6).
    pub write_multiple: bool,
    /// Failover `ip:port`. The host sets it from the device's
    /// `backup_endpoint` (which also admits it to the sandbox).
    pub backup_endpoint: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            address_base: 1,
            timeout_ms: 1000,
            retries: 0,
            request_interval_ms: 0,
            max_gap: 16,
            skip_silent_slave: true,
            write_multiple: false,
            backup_endpoint: None,
        }
    }
}

const MAX_TIMEOUT_MS: u64 = 60_000;
const MAX_RETRIES: u8 = 10;
const MAX_REQUEST_INTERVAL_MS: u64 = 10_000;

impl Settings {
    pub fn parse(json: &str) -> Result<Self, Error> {
        let settings: Settings = omh_sdk::settings(json)?;
        let invalid = |key: &str, why: String| {
            Err(Error::InvalidConfig(format!(
                "invalid setting `{key}`: {why}"
            )))
        };
        if settings.address_base > 1 {
            return invalid("address_base", "must be 1 or 0".into());
        }
        if !(1..=MAX_TIMEOUT_MS).contains(&settings.timeout_ms) {
            return invalid("timeout_ms", format!("must be 1..={MAX_TIMEOUT_MS}"));
        }
        if settings.retries > MAX_RETRIES {
            return invalid("retries", format!("must be 0..={MAX_RETRIES}"));
        }
        if settings.request_interval_ms > MAX_REQUEST_INTERVAL_MS {
            return invalid(
                "request_interval_ms",
                format!("must be 0..={MAX_REQUEST_INTERVAL_MS}"),
            );
        }
        if let Some(backup) = &settings.backup_endpoint
            && backup.parse::<SocketAddr>().is_err()
        {
            return invalid("backup_endpoint", format!("`{backup}` is not `ip:port`"));
        }
        Ok(settings)
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    pub fn request_interval(&self) -> Duration {
        Duration::from_millis(self.request_interval_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejection(json: &str) -> String {
        match Settings::parse(json) {
            Err(Error::InvalidConfig(message)) => message,
            other => panic!("{json} accepted: {other:?}"),
        }
    }

    #[test]
    fn defaults() {
        assert_eq!(Settings::parse("{}"), Ok(Settings::default()));
    }

    #[test]
    fn every_setting() {
        let settings = Settings::parse(
            r#"{"address_base": 0, "timeout_ms": 250, "retries": 2, "request_interval_ms": 20,
                "max_gap": 0, "skip_silent_slave": false, "write_multiple": true,
                "backup_endpoint": "10.0.0.2:502"}"#,
        )
        .unwrap();
        assert_eq!(settings.address_base, 0);
        assert_eq!(settings.timeout(), Duration::from_millis(250));
        assert_eq!(settings.retries, 2);
        assert_eq!(settings.request_interval(), Duration::from_millis(20));
        assert_eq!(settings.backup_endpoint.as_deref(), Some("10.0.0.2:502"));
    }

    #[test]
    fn each_problem_names_its_key() {
        for (json, key) in [
            (r#"{"timeout": 5}"#, "timeout"),
            (r#"{"address_base": 2}"#, "address_base"),
            (r#"{"timeout_ms": 0}"#, "timeout_ms"),
            (r#"{"retries": 11}"#, "retries"),
            (r#"{"retries": -1}"#, "retries"),
            (r#"{"request_interval_ms": 60000}"#, "request_interval_ms"),
            (r#"{"max_gap": "big"}"#, "max_gap"),
            (r#"{"backup_endpoint": "plc:502"}"#, "backup_endpoint"),
        ] {
            let message = rejection(json);
            assert!(message.contains(&format!("`{key}`")), "{json}: {message}");
        }
    }
}
