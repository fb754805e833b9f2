//! Modbus TCP driver for `omh-host`: reads holding and input registers.
//!
//! Tag addresses use Neuron's syntax (`1!40001`, see [`address`]). All
//! validation and request planning happens in `configure`; a poll replays
//! the group's plan over one lazily (re)connected TCP connection.
//!
//! Settings (all optional): `timeout_ms` (default 1000) bounds connect and
//! each request; `max_gap` (default 16) is how many unused registers one
//! request may span to serve two tags.

mod address;
mod connection;
mod frame;
mod plan;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use omh_sdk::{Driver, Error, Group, GroupData, Quality, Reading, TagError};
use serde::Deserialize;

use crate::connection::Connection;
use crate::frame::Reply;
use crate::plan::PlannedRead;

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Settings {
    timeout_ms: u64,
    max_gap: u16,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            timeout_ms: 1000,
            max_gap: 16,
        }
    }
}

struct ModbusTcp {
    connection: Connection,
    plans: HashMap<String, Vec<PlannedRead>>,
}

impl Driver for ModbusTcp {
    fn configure(endpoint: &str, settings: &str, groups: Vec<Group>) -> Result<Self, Error> {
        let settings: Settings = omh_sdk::settings(settings)?;
        if settings.timeout_ms == 0 {
            return Err(Error::InvalidConfig(
                "`timeout_ms` must be at least 1".to_string(),
            ));
        }
        endpoint.parse::<SocketAddr>().map_err(|_| {
            Error::InvalidConfig(format!("endpoint `{endpoint}` is not an `ip:port` address"))
        })?;
        let plans = groups
            .into_iter()
            .map(|group| {
                let tags = group
                    .tags
                    .iter()
                    .map(address::parse_tag)
                    .collect::<Result<_, _>>()?;
                Ok((group.name, plan::plan_group(tags, settings.max_gap)))
            })
            .collect::<Result<_, Error>>()?;
        let timeout = Duration::from_millis(settings.timeout_ms);
        Ok(Self {
            connection: Connection::new(endpoint, timeout),
            plans,
        })
    }

    fn read_group(&mut self, group: &str) -> Result<GroupData, Error> {
        let reads = self
            .plans
            .get(group)
            .ok_or_else(|| Error::InvalidConfig(format!("unknown group `{group}`")))?;
        let mut data = GroupData {
            readings: Vec::new(),
            errors: Vec::new(),
        };
        for read in reads {
            let reply = self
                .connection
                .read_registers(read.slave, read.table, read.start, read.count);
            match reply {
                Ok(Reply::Registers(registers)) => {
                    data.readings
                        .extend(readings(read, &registers, omh_sdk::now_ms()));
                }
                Ok(Reply::Exception(exception)) => {
                    let message = format!("modbus exception: {}", exception.name());
                    data.errors
                        .extend(tag_errors(read, i32::from(exception.0), &message));
                }
                Err(error) => {
                    data.errors
                        .extend(tag_errors(read, io_error_code(&error), error.message()));
                }
            }
        }
        Ok(data)
    }
}

/// Decodes the tags of `read` from its reply registers.
fn readings(
    read: &PlannedRead,
    registers: &[u16],
    timestamp_ms: i64,
) -> impl Iterator<Item = Reading> {
    read.tags.iter().map(move |tag| {
        let first = usize::from(tag.offset - read.start);
        let last = first + usize::from(tag.data_type.register_count());
        Reading {
            tag: tag.name.clone(),
            value: tag.data_type.decode(&registers[first..last]),
            quality: Quality::Good,
            timestamp_ms,
        }
    })
}

fn tag_errors(read: &PlannedRead, code: i32, message: &str) -> impl Iterator<Item = TagError> {
    read.tags.iter().map(move |tag| TagError {
        tag: tag.name.clone(),
        code,
        message: message.to_string(),
    })
}

/// Negative codes keep I/O failures apart from Modbus exception codes.
fn io_error_code(error: &Error) -> i32 {
    match error {
        Error::Timeout(_) => -2,
        Error::Protocol(_) => -3,
        _ => -1,
    }
}

omh_sdk::export_driver!(ModbusTcp);
