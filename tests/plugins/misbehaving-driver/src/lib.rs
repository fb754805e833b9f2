//! A driver that misbehaves on purpose, for the host's isolation tests.
//!
//! Settings: `{"mode": "trap" | "hang" | "oom" | "flood" | "chatty" | "ok",
//! "after": N}`. The first `after` (default 2) polls each return one good
//! reading (the group's first tag, valued with the poll count); every later
//! poll misbehaves as `mode` says, so tests can see healthy data before the
//! failure.
//!
//! `{"mode": "escape", "target": "ip:port"}` instead tries, on every poll, to
//! connect to `target` (first tag) and to its own endpoint (second tag), so a
//! test can show the sandbox admits only the endpoint the manifest names.

use std::time::Duration;

use omh_sdk::net::TcpConnection;
use omh_sdk::{Driver, Error, Group, GroupData, Quality, Reading, TagError, Value};
use serde::Deserialize;

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum Mode {
    /// Panics, which aborts into a wasm trap.
    Trap,
    /// Spins forever without calling the host: only epoch or fuel
    /// interruption can stop it.
    Hang,
    /// Allocates and touches memory until the host's limit stops it.
    Oom,
    /// Returns a million readings: the group's first tag, then tags the
    /// group does not have and the first tag again, alternating.
    Flood,
    /// Logs 10,000 lines of 10 KB in every poll, and writes 1,000 to
    /// stderr, then reads as `ok`.
    Chatty,
    /// Keeps returning good readings.
    Ok,
    /// Tries to connect to `target` as well as to its endpoint.
    Escape,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    mode: Mode,
    #[serde(default = "default_after")]
    after: u64,
    /// Escape mode: an address the manifest did not grant.
    #[serde(default)]
    target: String,
}

fn default_after() -> u64 {
    2
}

struct MisbehavingDriver {
    endpoint: String,
    settings: Settings,
    groups: Vec<Group>,
    polls: u64,
}

impl Driver for MisbehavingDriver {
    fn configure(endpoint: &str, settings: &str, groups: Vec<Group>) -> Result<Self, Error> {
        let settings = omh_sdk::settings(settings)?;
        Ok(Self {
            endpoint: endpoint.to_string(),
            settings,
            groups,
            polls: 0,
        })
    }

    fn read_group(&mut self, group: &str) -> Result<GroupData, Error> {
        if let Mode::Escape = self.settings.mode {
            return Ok(self.try_to_escape(group));
        }
        self.polls += 1;
        let misbehaving = self.polls > self.settings.after;
        if misbehaving {
            misbehave(self.settings.mode);
        }
        let tag = self
            .groups
            .iter()
            .find(|candidate| candidate.name == group)
            .and_then(|group| group.tags.first())
            .ok_or_else(|| Error::InvalidConfig(format!("group `{group}` has no tags")))?;
        let reading = Reading {
            tag: tag.name.clone(),
            value: Value::Int(self.polls as i64),
            quality: Quality::Good,
            timestamp_ms: omh_sdk::now_ms(),
        };
        let readings = match self.settings.mode {
            Mode::Flood if misbehaving => flood(reading),
            _ => vec![reading],
        };
        Ok(GroupData {
            readings,
            errors: Vec::new(),
        })
    }
}

const FLOOD: usize = 1_000_000;

/// `first`, then `FLOOD - 1` more readings alternating between tags the
/// group does not have and `first`'s tag again.
fn flood(first: Reading) -> Vec<Reading> {
    let mut readings = Vec::with_capacity(FLOOD);
    readings.push(first.clone());
    for i in 1..FLOOD {
        readings.push(Reading {
            tag: if i % 2 == 0 {
                first.tag.clone()
            } else {
                format!("stray-{i}")
            },
            value: Value::Int(-(i as i64)),
            ..first.clone()
        });
    }
    readings
}

impl MisbehavingDriver {
    /// The first tag reports connecting to `target`, the second to the
    /// endpoint: a reading `true` when the connection opened, an error with
    /// code -1 when it was refused.
    fn try_to_escape(&self, group: &str) -> GroupData {
        let mut data = GroupData {
            readings: Vec::new(),
            errors: Vec::new(),
        };
        let tags = self
            .groups
            .iter()
            .find(|g| g.name == group)
            .map(|g| &g.tags);
        let addresses = [self.settings.target.as_str(), self.endpoint.as_str()];
        for (tag, address) in tags.into_iter().flatten().zip(addresses) {
            match TcpConnection::connect(address, Duration::from_millis(500)) {
                Ok(_) => data.readings.push(Reading {
                    tag: tag.name.clone(),
                    value: Value::Boolean(true),
                    quality: Quality::Good,
                    timestamp_ms: omh_sdk::now_ms(),
                }),
                Err(error) => data.errors.push(TagError {
                    tag: tag.name.clone(),
                    code: -1,
                    message: error.message().to_string(),
                }),
            }
        }
        data
    }
}

fn misbehave(mode: Mode) {
    match mode {
        Mode::Ok | Mode::Escape | Mode::Flood => {}
        Mode::Chatty => {
            let line = "chatter ".repeat(1250);
            for i in 0..10_000 {
                omh_sdk::log(omh_sdk::Level::Info, &line, &[]);
                // Fewer: each stderr line is several host calls.
                if i % 10 == 0 {
                    eprintln!("{line}");
                }
            }
        }
        Mode::Trap => panic!("misbehaving-driver: trapping on purpose"),
        Mode::Hang => {
            let mut spins = 0u64;
            loop {
                // black_box keeps the optimiser from proving the loop empty.
                spins = core::hint::black_box(spins.wrapping_add(1));
            }
        }
        Mode::Oom => {
            const CHUNK: usize = 1 << 20;
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                // Non-zero fill so every page is really touched.
                hoard.push(vec![0xA5; CHUNK]);
                core::hint::black_box(&hoard);
            }
        }
    }
}

omh_sdk::export_driver!(MisbehavingDriver);
