//! One poll of a group: replay its planned reads and turn the replies into
//! readings, or into per-tag errors in Neuron's `errors` object.

use omh_sdk::{Error, GroupData, Quality, Reading, TagError};

use crate::connection::Connection;
use crate::frame::{Pdu, Reply};
use crate::plan::PlannedRead;

/// Per-tag error codes beside the Modbus exception codes (1..=11), negative
/// so the two never collide.
pub mod codes {
    pub const UNREACHABLE: i32 = -1;
    pub const TIMEOUT: i32 = -2;
    pub const PROTOCOL: i32 = -3;
    pub const SLAVE_SKIPPED: i32 = -4;
}

/// Runs every read of a group. A failed read marks only its own tags bad.
/// With `skip_silent_slave`, a slave that timed out is not asked again in
/// this poll: each further request would only wait out another timeout.
pub fn read_all(
    connection: &mut Connection,
    reads: &[PlannedRead],
    skip_silent_slave: bool,
) -> GroupData {
    let mut data = GroupData {
        readings: Vec::new(),
        errors: Vec::new(),
    };
    let mut silent_slaves: Vec<u8> = Vec::new();
    for read in reads {
        if silent_slaves.contains(&read.slave) {
            let message = format!(
                "slave {} skipped: it did not answer earlier in this poll",
                read.slave
            );
            data.errors
                .extend(tag_errors(read, codes::SLAVE_SKIPPED, &message));
            continue;
        }
        let pdu = Pdu::Read {
            area: read.area,
            start: read.start,
            count: read.count,
        };
        match connection.exchange(read.slave, &pdu) {
            Ok(Reply::Read(cells)) => {
                let timestamp_ms = omh_sdk::now_ms();
                data.readings.extend(read.tags.iter().map(|tag| Reading {
                    tag: tag.name.clone(),
                    value: tag.layout.decode(read.cells_of(tag, &cells)),
                    quality: Quality::Good,
                    timestamp_ms,
                }));
            }
            Ok(Reply::Exception(exception)) => {
                let message = format!("modbus exception {}: {}", exception.0, exception.name());
                data.errors
                    .extend(tag_errors(read, i32::from(exception.0), &message));
            }
            Ok(Reply::Written) => {
                let message = "the device confirmed a write in reply to a read";
                data.errors
                    .extend(tag_errors(read, codes::PROTOCOL, message));
            }
            Err(error) => {
                if skip_silent_slave && matches!(error, Error::Timeout(_)) {
                    silent_slaves.push(read.slave);
                }
                data.errors
                    .extend(tag_errors(read, io_error_code(&error), error.message()));
            }
        }
    }
    data
}

fn tag_errors<'a>(
    read: &'a PlannedRead,
    code: i32,
    message: &'a str,
) -> impl Iterator<Item = TagError> + 'a {
    read.tags.iter().map(move |tag| TagError {
        tag: tag.name.clone(),
        code,
        message: message.to_string(),
    })
}

fn io_error_code(error: &Error) -> i32 {
    match error {
        Error::Timeout(_) => codes::TIMEOUT,
        Error::Protocol(_) => codes::PROTOCOL,
        _ => codes::UNREACHABLE,
    }
}
