//! A driver that misbehaves on purpose, for the host's isolation tests.
//!
//! Settings: `{"mode": "trap" | "hang" | "oom" | "ok", "after": N}`. The
//! first `after` (default 2) polls each return one good reading (the group's
//! first tag, valued with the poll count); every later poll misbehaves as
//! `mode` says, so tests can see healthy data before the failure.

use omh_sdk::{Driver, Error, Group, GroupData, Quality, Reading, Value};
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
    /// Keeps returning good readings.
    Ok,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    mode: Mode,
    #[serde(default = "default_after")]
    after: u64,
}

fn default_after() -> u64 {
    2
}

struct MisbehavingDriver {
    settings: Settings,
    groups: Vec<Group>,
    polls: u64,
}

impl Driver for MisbehavingDriver {
    fn configure(_endpoint: &str, settings: &str, groups: Vec<Group>) -> Result<Self, Error> {
        let settings = omh_sdk::settings(settings)?;
        Ok(Self {
            settings,
            groups,
            polls: 0,
        })
    }

    fn read_group(&mut self, group: &str) -> Result<GroupData, Error> {
        self.polls += 1;
        if self.polls > self.settings.after {
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
        Ok(GroupData {
            readings: vec![reading],
            errors: Vec::new(),
        })
    }
}

fn misbehave(mode: Mode) {
    match mode {
        Mode::Ok => {}
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
