//! `[broker]`: the embedded MQTT broker outside clients connect to, its
//! listeners, users and their topic permissions.

use super::units;
use super::uns::{UnsSection, UnsTemplate};
use super::validate::{Problems, check_topic_filter};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerSection {
    /// Plain-TCP listener (MQTT 3.1.1 and 5 on the same port).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Let clients connect without a username, with full access. Off unless
    /// turned on; meant for a listener bound to loopback.
    #[serde(default)]
    pub anonymous: bool,
    /// A second listener, for TLS, from PEM files.
    pub tls: Option<TlsListener>,
    /// Who may connect, keyed by username.
    #[serde(default)]
    pub users: BTreeMap<String, BrokerUser>,
    /// Topic of each group message; `{device}` and `{group}` are replaced.
    /// The default is Neuron's topic for an app named `omh`.
    #[serde(default = "default_topic")]
    pub topic: String,
    /// Also publish each tag on its own retained topic of the unified
    /// namespace; off unless present.
    pub uns: Option<UnsSection>,
    /// Where outside clients publish Neuron write requests
    /// (`{"uuid":..,"node":..,"group":..,"tag":..,"value":..}`).
    #[serde(default = "default_write_topic")]
    pub write_topic: String,
    /// Where the result of each write request is published.
    #[serde(default = "default_write_response_topic")]
    pub write_response_topic: String,
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    #[serde(default = "default_max_payload", deserialize_with = "units::byte_size")]
    pub max_payload_size: u64,
}

impl Default for BrokerSection {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            anonymous: false,
            tls: None,
            users: BTreeMap::new(),
            topic: default_topic(),
            uns: None,
            write_topic: default_write_topic(),
            write_response_topic: default_write_response_topic(),
            max_connections: default_max_connections(),
            max_payload_size: default_max_payload(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsListener {
    pub listen: SocketAddr,
    /// Server certificate chain (PEM), relative to the manifest's directory.
    pub cert: PathBuf,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerUser {
    /// An argon2 PHC string, as printed by `omh-host passwd`.
    pub password_hash: String,
    /// Topic filters this user may publish to. `%u` is the username, `%c`
    /// the client id. None by default: a user only reads unless told.
    #[serde(default)]
    pub publish: Vec<String>,
    /// Topic filters this user may subscribe to (a subscription must lie
    /// within one of them).
    #[serde(default = "everything")]
    pub subscribe: Vec<String>,
}

/// Checks `[broker]`; returns the unified-namespace template if it is on
/// and valid.
pub(super) fn validate(broker: &BrokerSection, problems: &mut Problems) -> Option<UnsTemplate> {
    if let Some(tls) = &broker.tls
        && tls.listen == broker.listen
    {
        problems.add(
            "broker.tls.listen".into(),
            format!(
                "{} is already the plain listener (broker.listen)",
                tls.listen
            ),
        );
    }
    for (name, user) in &broker.users {
        let at = format!("broker.users.{name}");
        if name.is_empty() {
            problems.add(at.clone(), "a username must not be empty".into());
        }
        if let Err(error) = argon2::PasswordHash::new(&user.password_hash) {
            problems.add(
                format!("{at}.password_hash"),
                format!(
                    "\"{}\" is not a password hash ({error}); make one with `omh-host passwd`",
                    user.password_hash
                ),
            );
        }
        for (key, filters) in [("publish", &user.publish), ("subscribe", &user.subscribe)] {
            for (i, filter) in filters.iter().enumerate() {
                if let Err(message) = check_topic_filter(filter) {
                    problems.add(format!("{at}.{key}[{i}]"), message);
                }
            }
        }
    }
    let uns = broker.uns.as_ref()?;
    UnsTemplate::parse(&uns.topic)
        .map_err(|message| problems.add("broker.uns.topic".into(), message))
        .ok()
}

fn everything() -> Vec<String> {
    vec!["#".into()]
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 1883))
}

fn default_topic() -> String {
    "/neuron/omh/{device}/{group}".into()
}

fn default_write_topic() -> String {
    "/neuron/omh/write/req".into()
}

fn default_write_response_topic() -> String {
    "/neuron/omh/write/resp".into()
}

fn default_max_connections() -> usize {
    1000
}

fn default_max_payload() -> u64 {
    1 << 20
}
