//! Modbus TCP driver for `omh-host`, compatible with Neuron's tag syntax:
//! coils, discrete inputs, input and holding registers; bits, 16/32/64-bit
//! integers, floats, doubles and strings in every Neuron byte order. See
//! README.md for the address grammar, settings and error codes.
//!
//! All validation and read planning happens in `configure`; a poll replays
//! the group's plan over one lazily (re)connected TCP connection.

mod address;
mod connection;
mod frame;
mod plan;
mod poll;
mod settings;
mod types;
mod write;

use std::collections::HashMap;
use std::net::SocketAddr;

use omh_sdk::{Driver, Error, Group, GroupData, Value};

use crate::address::TagSpec;
use crate::connection::{Connection, Policy};
use crate::plan::PlannedRead;
use crate::settings::Settings;

struct ModbusTcp {
    connection: Connection,
    groups: HashMap<String, GroupPlan>,
    skip_silent_slave: bool,
    write_multiple: bool,
}

/// One group's reads, and its tags by name for writes.
struct GroupPlan {
    reads: Vec<PlannedRead>,
    tags: HashMap<String, TagSpec>,
}

impl Driver for ModbusTcp {
    fn configure(endpoint: &str, settings: &str, groups: Vec<Group>) -> Result<Self, Error> {
        let settings = Settings::parse(settings)?;
        endpoint.parse::<SocketAddr>().map_err(|_| {
            Error::InvalidConfig(format!("endpoint `{endpoint}` is not an `ip:port` address"))
        })?;
        let groups = groups
            .into_iter()
            .map(|group| {
                let tags: Vec<TagSpec> = group
                    .tags
                    .iter()
                    .map(|tag| address::parse_tag(tag, settings.address_base))
                    .collect::<Result<_, _>>()?;
                let plan = GroupPlan {
                    reads: plan::plan_group(tags.clone(), settings.max_gap),
                    tags: tags
                        .into_iter()
                        .map(|tag| (tag.name.clone(), tag))
                        .collect(),
                };
                Ok((group.name, plan))
            })
            .collect::<Result<_, Error>>()?;
        let endpoints = std::iter::once(endpoint.to_string())
            .chain(settings.backup_endpoint.clone())
            .collect();
        let policy = Policy {
            timeout: settings.timeout(),
            retries: settings.retries,
            request_interval: settings.request_interval(),
        };
        Ok(Self {
            connection: Connection::new(endpoints, policy),
            groups,
            skip_silent_slave: settings.skip_silent_slave,
            write_multiple: settings.write_multiple,
        })
    }

    fn read_group(&mut self, group: &str) -> Result<GroupData, Error> {
        let plan = group_plan(&self.groups, group)?;
        Ok(poll::read_all(
            &mut self.connection,
            &plan.reads,
            self.skip_silent_slave,
        ))
    }

    fn write_tag(&mut self, group: &str, tag: &str, value: Value) -> Result<(), Error> {
        let spec = group_plan(&self.groups, group)?
            .tags
            .get(tag)
            .ok_or_else(|| Error::InvalidConfig(format!("group `{group}` has no tag `{tag}`")))?;
        write::write_tag(&mut self.connection, spec, &value, self.write_multiple)
    }
}

fn group_plan<'g>(
    groups: &'g HashMap<String, GroupPlan>,
    group: &str,
) -> Result<&'g GroupPlan, Error> {
    groups
        .get(group)
        .ok_or_else(|| Error::InvalidConfig(format!("unknown group `{group}`")))
}

omh_sdk::export_driver!(ModbusTcp);
omh_sdk::describe_settings!(
    "address_base         1 | 0    (default 1)     number of the first register in addresses: 1 makes 1!40001 offset 0
timeout_ms           integer  (default 1000)  bounds connecting and each request
retries              integer  (default 0)     further attempts, on a fresh connection, after a request fails
request_interval_ms  integer  (default 0)     least time between two requests, for devices that drop back-to-back ones
max_gap              integer  (default 16)    unused registers or bits one read may span to serve two tags
skip_silent_slave    bool     (default true)  once a slave times out, fail its other reads of this poll at once
write_multiple       bool     (default false) write with functions 15/16 only
backup_endpoint      set by the host from the device's backup_endpoint; not for settings
Tags: address SLAVE!ADDRESS[.BIT][#ENDIAN][.LEN[H|L|D|E]], type bit|bool|int16|uint16|int32|uint32|int64|uint64|float|double|string; see plugins/modbus-tcp/README.md"
);
