//! Tag addresses in Neuron's Modbus syntax: `SLAVE!ADDRESS`.
//!
//! The leading digit of ADDRESS selects the data area (0 coil, 1 discrete
//! input, 3 input register, 4 holding register) and the rest is the 1-based
//! register number: `1!40001` and `1!400001` are both slave 1, holding
//! register offset 0. The 5-digit form reaches registers 1..=9999, the
//! 6-digit form 1..=65536.

use omh_sdk::{Error, Tag, Value};

/// The register areas this driver reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RegisterTable {
    Input,
    Holding,
}

/// How a tag's registers become a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataType {
    Int16,
    Uint16,
}

impl DataType {
    /// Registers one value occupies.
    pub fn register_count(self) -> u16 {
        match self {
            DataType::Int16 | DataType::Uint16 => 1,
        }
    }

    /// Decodes a value from exactly [`Self::register_count`] registers.
    pub fn decode(self, registers: &[u16]) -> Value {
        match self {
            DataType::Int16 => Value::Int(i64::from(registers[0] as i16)),
            DataType::Uint16 => Value::Int(i64::from(registers[0])),
        }
    }
}

/// A manifest tag resolved to where and how to read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterTag {
    pub name: String,
    pub slave: u8,
    pub table: RegisterTable,
    /// 0-based register offset as sent on the wire.
    pub offset: u16,
    pub data_type: DataType,
}

/// Resolves a manifest tag, or explains (naming the tag and its address)
/// why this driver cannot read it.
pub fn parse_tag(tag: &Tag) -> Result<RegisterTag, Error> {
    let invalid = |why: &str| {
        Error::InvalidConfig(format!(
            "tag `{}` address `{}`: {why}",
            tag.name, tag.address
        ))
    };

    let (slave, register) = tag
        .address
        .split_once('!')
        .ok_or_else(|| invalid("expected SLAVE!ADDRESS, e.g. 1!40001"))?;
    let slave = parse_slave(slave).ok_or_else(|| invalid("slave must be a number 0..=255"))?;
    let (table, offset) = parse_register(register).map_err(&invalid)?;
    let data_type = parse_data_type(&tag.data_type).ok_or_else(|| {
        invalid(&format!(
            "data type `{}` is not supported (supported: int16, uint16)",
            tag.data_type
        ))
    })?;
    Ok(RegisterTag {
        name: tag.name.clone(),
        slave,
        table,
        offset,
        data_type,
    })
}

fn parse_slave(slave: &str) -> Option<u8> {
    // `u8::from_str` also takes a leading `+`, which Neuron does not.
    if slave.bytes().all(|byte| byte.is_ascii_digit()) {
        slave.parse().ok()
    } else {
        None
    }
}

fn parse_register(register: &str) -> Result<(RegisterTable, u16), &'static str> {
    if !register.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err("ADDRESS must be digits only, e.g. 40001");
    }
    if register.len() != 5 && register.len() != 6 {
        return Err("ADDRESS must have 5 (40001) or 6 (400001) digits");
    }
    let (area, number) = register.split_at(1);
    let table = match area {
        "3" => RegisterTable::Input,
        "4" => RegisterTable::Holding,
        "0" | "1" => return Err("coils and discrete inputs are not supported yet"),
        _ => return Err("area digit must be 0, 1, 3 or 4"),
    };
    // At most 5 digits, so this cannot overflow u32.
    let number: u32 = number.parse().map_err(|_| "ADDRESS must be digits only")?;
    if !(1..=65536).contains(&number) {
        return Err("register number must be 1..=65536 (register numbers are 1-based)");
    }
    Ok((table, (number - 1) as u16))
}

fn parse_data_type(name: &str) -> Option<DataType> {
    match name.to_ascii_lowercase().as_str() {
        "" | "int16" => Some(DataType::Int16),
        "uint16" => Some(DataType::Uint16),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(address: &str, data_type: &str) -> Tag {
        Tag {
            name: "temperature".to_string(),
            address: address.to_string(),
            data_type: data_type.to_string(),
            writable: false,
        }
    }

    fn parsed(address: &str) -> (u8, RegisterTable, u16) {
        let tag = parse_tag(&tag(address, "")).unwrap();
        (tag.slave, tag.table, tag.offset)
    }

    fn rejection(address: &str, data_type: &str) -> String {
        match parse_tag(&tag(address, data_type)) {
            Err(Error::InvalidConfig(message)) => message,
            other => panic!("expected invalid-config for {address}, got {other:?}"),
        }
    }

    #[test]
    fn five_and_six_digit_forms() {
        assert_eq!(parsed("1!40001"), (1, RegisterTable::Holding, 0));
        assert_eq!(parsed("1!400001"), (1, RegisterTable::Holding, 0));
        assert_eq!(parsed("2!30010"), (2, RegisterTable::Input, 9));
        assert_eq!(parsed("255!49999"), (255, RegisterTable::Holding, 9998));
        assert_eq!(parsed("0!465536"), (0, RegisterTable::Holding, 65535));
    }

    #[test]
    fn data_type_defaults_to_int16() {
        assert_eq!(
            parse_tag(&tag("1!40001", "")).unwrap().data_type,
            DataType::Int16
        );
        assert_eq!(
            parse_tag(&tag("1!40001", "UINT16")).unwrap().data_type,
            DataType::Uint16
        );
    }

    #[test]
    fn decodes_signed_and_unsigned() {
        assert_eq!(DataType::Int16.decode(&[0xFFFF]), Value::Int(-1));
        assert_eq!(DataType::Uint16.decode(&[0xFFFF]), Value::Int(65535));
    }

    #[test]
    fn rejections_name_tag_and_address() {
        let message = rejection("1!00001", "");
        assert!(
            message.contains("`temperature`") && message.contains("`1!00001`"),
            "{message}"
        );
        assert!(message.contains("not supported"), "{message}");
    }

    #[test]
    fn rejects_malformed_addresses() {
        for address in [
            "40001",
            "x!40001",
            "256!40001",
            "-1!40001",
            "1!4001",
            "1!4000001",
            "1!40000",
            "1!465537",
            "1!20001",
            "1!40001.2",
            "1!4000a",
            "1!",
            "!40001",
            "1!+4001",
            "+1!40001",
        ] {
            rejection(address, "");
        }
    }

    #[test]
    fn rejects_unsupported_data_types() {
        let message = rejection("1!40001", "float");
        assert!(message.contains("`float`"), "{message}");
    }
}
