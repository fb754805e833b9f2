//! One tag write: the value encoded by the tag's type and byte order, sent
//! with the function that fits (5 for a coil, 6 for one register, 16 for
//! several, 15/16 only with `write_multiple`), and confirmed by the device.

use omh_sdk::{Error, Value};

use crate::address::TagSpec;
use crate::connection::Connection;
use crate::frame::{Pdu, Reply};
use crate::types::Layout;
use crate::types::codec::Encoded;

pub fn write_tag(
    connection: &mut Connection,
    tag: &TagSpec,
    value: &Value,
    write_multiple: bool,
) -> Result<(), Error> {
    if !tag.writable {
        return Err(Error::Unsupported(format!(
            "tag `{}` is read-only (writable = false)",
            tag.name
        )));
    }
    let encoded = tag
        .layout
        .encode(value)
        .map_err(|why| Error::Unsupported(format!("tag `{}`: {why}", tag.name)))?;
    let address = tag.offset;
    let pdu = match (encoded, tag.layout) {
        (Encoded::Bit(on), Layout::RegisterBit(_, bit)) => {
            let register = read_register(connection, tag)?;
            let register = if on {
                register | 1 << bit
            } else {
                register & !(1 << bit)
            };
            register_pdu(address, register.to_be_bytes().to_vec(), write_multiple)
        }
        (Encoded::Bit(on), _) if write_multiple => Pdu::WriteCoils {
            address,
            bits: vec![on],
        },
        (Encoded::Bit(on), _) => Pdu::WriteCoil { address, on },
        (Encoded::Registers(bytes), _) => register_pdu(address, bytes, write_multiple),
    };
    match connection.exchange(tag.slave, &pdu)? {
        Reply::Written => Ok(()),
        other => Err(unexpected(tag, other)),
    }
}

fn register_pdu(address: u16, bytes: Vec<u8>, write_multiple: bool) -> Pdu {
    match *bytes.as_slice() {
        [high, low] if !write_multiple => Pdu::WriteRegister {
            address,
            value: [high, low],
        },
        _ => Pdu::WriteRegisters { address, bytes },
    }
}

/// The current value of the register holding a bit tag, so the write
/// changes only that bit. Not atomic: a change the device makes to the
/// other bits between the read and the write is overwritten.
fn read_register(connection: &mut Connection, tag: &TagSpec) -> Result<u16, Error> {
    let read = Pdu::Read {
        area: tag.area,
        start: tag.offset,
        count: 1,
    };
    match connection.exchange(tag.slave, &read)? {
        Reply::Read(cells) => Ok(u16::from_be_bytes([cells[0], cells[1]])),
        other => Err(unexpected(tag, other)),
    }
}

fn unexpected(tag: &TagSpec, reply: Reply) -> Error {
    match reply {
        Reply::Exception(exception) => Error::Other(format!(
            "writing tag `{}`: modbus exception {}: {}",
            tag.name,
            exception.0,
            exception.name()
        )),
        other => Error::Protocol(format!(
            "writing tag `{}`: unexpected reply {other:?}",
            tag.name
        )),
    }
}
