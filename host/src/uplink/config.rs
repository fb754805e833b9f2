//! The `[uplink]` section turned into what a connection needs: the
//! broker's address and transport, credentials, topics, and the host's
//! status messages (its last will among them).

use crate::manifest::UplinkSection;
use crate::status::{HOST_STATUS_TOPIC, HostState, host_status};
use anyhow::Context;
use rumqttc::{LastWill, MqttOptions, QoS, TlsConfiguration, Transport};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use std::path::Path;
use std::sync::Arc;

/// Room for a topic and the MQTT header around the largest bus payload.
const PACKET_OVERHEAD: usize = 64 << 10;

/// `mqtt://host[:port]` or `mqtts://host[:port]`.
#[derive(Debug, PartialEq)]
pub struct UplinkUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
}

impl UplinkUrl {
    pub fn parse(url: &str) -> Result<Self, String> {
        let (tls, rest) = match url.split_once("://") {
            Some(("mqtt", rest)) => (false, rest),
            Some(("mqtts", rest)) => (true, rest),
            _ => {
                return Err(format!(
                    "\"{url}\" is not mqtt://host:port or mqtts://host:port"
                ));
            }
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '@', '?', '#']) {
            return Err(format!(
                "\"{url}\" has a path, query or user part: only host and port (credentials go in username and password)"
            ));
        }
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port)) => {
                let port = port
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| format!("\"{url}\" has no valid port (1-65535)"))?;
                (host, port)
            }
            None => (rest, if tls { 8883 } else { 1883 }),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(format!("\"{url}\" has no host"));
        }
        Ok(Self {
            tls,
            host: host.to_string(),
            port,
        })
    }
}

/// What every connection of the uplink is made from.
pub struct Upstream {
    /// Shown in log lines.
    pub url: String,
    pub options: MqttOptions,
    pub qos: QoS,
    pub prefix: String,
    pub site: String,
}

impl Upstream {
    /// Validated settings (see the manifest's checks) into client options.
    /// `base` resolves a relative `ca_file`.
    pub fn new(
        section: &UplinkSection,
        site: &str,
        base: &Path,
        max_payload: u64,
        inflight: u16,
    ) -> anyhow::Result<Self> {
        let url = UplinkUrl::parse(&section.url).map_err(anyhow::Error::msg)?;
        let client_id = section
            .client_id
            .clone()
            .unwrap_or_else(|| format!("omh-{site}"));
        let mut options = MqttOptions::new(client_id, &url.host, url.port);
        // A fresh session each time: the window resends what was not
        // acknowledged (see the connection module for why).
        options.set_clean_session(true);
        options.set_keep_alive(section.keep_alive);
        options.set_inflight(inflight);
        let max_packet = usize::try_from(max_payload)
            .unwrap_or(usize::MAX)
            .saturating_add(PACKET_OVERHEAD);
        options.set_max_packet_size(max_packet, max_packet);
        if let Some(username) = &section.username {
            options.set_credentials(username, section.password.as_deref().unwrap_or(""));
        }
        options.set_last_will(LastWill::new(
            format!("{}{HOST_STATUS_TOPIC}", section.prefix),
            host_status(site, HostState::Lost),
            QoS::AtLeastOnce,
            true,
        ));
        if url.tls {
            options.set_transport(Transport::tls_with_config(tls_config(
                section.ca_file.as_deref().map(|f| base.join(f)).as_deref(),
            )?));
        }
        Ok(Self {
            url: section.url.clone(),
            options,
            qos: if section.qos == 0 {
                QoS::AtMostOnce
            } else {
                QoS::AtLeastOnce
            },
            prefix: section.prefix.clone(),
            site: site.to_string(),
        })
    }

    pub fn status_topic(&self) -> String {
        format!("{}{HOST_STATUS_TOPIC}", self.prefix)
    }
}

/// rustls with the CAs of `ca_file`, or the system's roots.
fn tls_config(ca_file: Option<&Path>) -> anyhow::Result<TlsConfiguration> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let pem = std::fs::read(path)
                .with_context(|| format!("uplink.ca_file: cannot read {}", path.display()))?;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert =
                    cert.with_context(|| format!("uplink.ca_file: {} is not PEM", path.display()))?;
                roots
                    .add(cert)
                    .context("uplink.ca_file: not a CA certificate")?;
            }
            if roots.is_empty() {
                anyhow::bail!("uplink.ca_file: {} holds no certificate", path.display());
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(native.certs);
        }
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConfiguration::Rustls(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let parse = |url| UplinkUrl::parse(url);
        assert_eq!(
            parse("mqtt://broker.example:1884"),
            Ok(UplinkUrl {
                tls: false,
                host: "broker.example".into(),
                port: 1884
            })
        );
        assert_eq!(
            parse("mqtts://10.0.0.1").map(|u| (u.tls, u.port)),
            Ok((true, 8883))
        );
        assert_eq!(parse("mqtt://[::1]:1883").map(|u| u.host), Ok("::1".into()));
        for bad in [
            "tcp://h:1",
            "mqtt://:1883",
            "mqtt://h:0",
            "mqtt://u:p@h:1",
            "mqtt://h:1/x",
            "h:1883",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn status_messages() {
        let online: serde_json::Value =
            serde_json::from_slice(&host_status("p1", HostState::Online)).unwrap();
        assert_eq!(
            (online["state"].as_str(), online["site"].as_str()),
            (Some("online"), Some("p1"))
        );
        assert!(online["timestamp"].is_i64());
        let will: serde_json::Value =
            serde_json::from_slice(&host_status("p1", HostState::Lost)).unwrap();
        assert!(will.get("timestamp").is_none());
    }
}
