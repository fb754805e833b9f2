//! Tag addresses in Neuron's Modbus syntax:
//! `SLAVE!ADDRESS[.BIT][#ENDIAN][.LEN[H|L|D|E]]`, resolved together with the
//! tag's data type into where its value lives and how it is laid out.
//!
//! The leading digit of ADDRESS selects the area (0 coils, 1 discrete
//! inputs, 3 input registers, 4 holding registers) and the rest is the
//! register number, counted from the device's address base (1 unless the
//! `address_base` setting says 0): `1!40001` and `1!400001` are both slave
//! 1, holding register offset 0.

use omh_sdk::{Error, Tag};

use crate::frame::MAX_WRITE_REGISTERS;
use crate::types::{BitStyle, ByteOrder, Layout, Number, Packing};

/// The four Modbus data areas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Area {
    Coil,
    DiscreteInput,
    InputRegister,
    HoldingRegister,
}

impl Area {
    /// Bit areas are addressed (and planned) in bits, the others in registers.
    pub fn holds_bits(self) -> bool {
        matches!(self, Area::Coil | Area::DiscreteInput)
    }

    pub fn is_writable(self) -> bool {
        matches!(self, Area::Coil | Area::HoldingRegister)
    }

    pub fn name(self) -> &'static str {
        match self {
            Area::Coil => "coils",
            Area::DiscreteInput => "discrete inputs",
            Area::InputRegister => "input registers",
            Area::HoldingRegister => "holding registers",
        }
    }
}

/// A manifest tag resolved to where and how to read and write it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagSpec {
    pub name: String,
    pub slave: u8,
    pub area: Area,
    /// 0-based bit or register offset as sent on the wire.
    pub offset: u16,
    pub layout: Layout,
    pub writable: bool,
}

impl TagSpec {
    /// One past the last bit or register, widened so `65535 + 1` fits.
    pub fn end(&self) -> u32 {
        u32::from(self.offset) + u32::from(self.layout.width())
    }
}

/// Resolves a manifest tag, or explains (naming the tag and its address)
/// why this driver cannot serve it. `base` is the number of the first
/// register (1 or 0).
pub fn parse_tag(tag: &Tag, base: u16) -> Result<TagSpec, Error> {
    let invalid = |why: String| {
        Error::InvalidConfig(format!(
            "tag `{}` address `{}` type `{}`: {why}",
            tag.name, tag.address, tag.data_type
        ))
    };
    let (slave, rest) = tag
        .address
        .split_once('!')
        .ok_or_else(|| invalid("expected SLAVE!ADDRESS, e.g. 1!40001".into()))?;
    let slave = digits(slave)
        .and_then(|slave| slave.parse().ok())
        .ok_or_else(|| invalid("slave must be a number 0..=255".into()))?;
    let (rest, endian) = match rest.split_once('#') {
        Some((rest, endian)) => (rest, Some(endian)),
        None => (rest, None),
    };
    let (register, option) = match rest.split_once('.') {
        Some((register, option)) => (register, Some(option)),
        None => (rest, None),
    };
    let (area, offset) = parse_register(register, base).map_err(invalid)?;
    let layout = parse_layout(area, &tag.data_type, option, endian).map_err(invalid)?;
    let spec = TagSpec {
        name: tag.name.clone(),
        slave,
        area,
        offset,
        layout,
        writable: tag.writable,
    };
    if spec.end() > 65536 {
        return Err(invalid(format!(
            "its {} {} run past the end of the area",
            layout.width(),
            if area.holds_bits() {
                "bits"
            } else {
                "registers"
            }
        )));
    }
    if spec.writable && !area.is_writable() {
        return Err(invalid(format!(
            "writable = true, but {} are read-only",
            area.name()
        )));
    }
    Ok(spec)
}

/// `text` if it is non-empty ASCII digits (`str::parse` would also take a
/// leading `+`, which Neuron does not).
fn digits(text: &str) -> Option<&str> {
    (!text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit())).then_some(text)
}

fn parse_register(register: &str, base: u16) -> Result<(Area, u16), String> {
    let register = digits(register).ok_or("ADDRESS must be digits only, e.g. 40001")?;
    if register.len() != 5 && register.len() != 6 {
        return Err("ADDRESS must have 5 (40001) or 6 (400001) digits".into());
    }
    let (area, number) = register.split_at(1);
    let area = match area {
        "0" => Area::Coil,
        "1" => Area::DiscreteInput,
        "3" => Area::InputRegister,
        "4" => Area::HoldingRegister,
        _ => return Err("area digit must be 0, 1, 3 or 4".into()),
    };
    // At most 5 digits, so this cannot overflow u32.
    let number: u32 = number.parse().map_err(|_| "ADDRESS must be digits only")?;
    let first = u32::from(base);
    if !(first..=first + 65535).contains(&number) {
        return Err(format!(
            "register number must be {first}..={} (address_base is {base})",
            first + 65535
        ));
    }
    Ok((area, (number - first) as u16))
}

fn parse_layout(
    area: Area,
    data_type: &str,
    option: Option<&str>,
    endian: Option<&str>,
) -> Result<Layout, String> {
    let data_type = data_type.to_ascii_lowercase();
    let data_type = match data_type.as_str() {
        "" if area.holds_bits() || option.is_some() => "bit",
        "" => "int16",
        named => named,
    };
    let no_endian = |what: &str| match endian {
        Some(_) => Err(format!("a byte order (#...) does not apply to {what}")),
        None => Ok(()),
    };
    let style = match data_type {
        "bit" => Some(BitStyle::Bit),
        "bool" => Some(BitStyle::Bool),
        _ => None,
    };
    if area.holds_bits() {
        let style = style.ok_or(format!(
            "{} hold single bits: use type bit or bool",
            area.name()
        ))?;
        no_endian("bits")?;
        return match option {
            None => Ok(Layout::Bit(style)),
            Some(_) => Err(format!("{} take no .BIT or .LEN suffix", area.name())),
        };
    }
    if let Some(style) = style {
        no_endian("bits")?;
        let bit = option
            .and_then(digits)
            .and_then(|bit| bit.parse().ok())
            .filter(|&bit| bit <= 15)
            .ok_or("a bit of a register needs .BIT with BIT 0..=15, e.g. 1!40001.3")?;
        return Ok(Layout::RegisterBit(style, bit));
    }
    if data_type == "string" {
        no_endian("strings")?;
        return parse_text(option.ok_or("a string needs .LEN, e.g. 1!40001.10H")?);
    }
    let number = Number::ALL
        .into_iter()
        .find(|number| number.name() == data_type)
        .ok_or(
            "unknown data type (supported: bit, bool, int16, uint16, int32, uint32, \
             int64, uint64, float, double, string)",
        )?;
    if option.is_some() {
        return Err(format!(
            "{} takes no .BIT or .LEN suffix (use type bit for a bit of a register)",
            number.name()
        ));
    }
    let order = match endian {
        None => ByteOrder::default(),
        Some(suffix) => ByteOrder::parse(suffix, number.registers()).ok_or_else(|| {
            let valid = if number.registers() == 1 {
                "#L or #B"
            } else {
                "#LL, #LB, #BL or #BB"
            };
            format!(
                "byte order #{suffix} does not apply to {}: use {valid}",
                number.name()
            )
        })?,
    };
    Ok(Layout::Number(number, order))
}

fn parse_text(option: &str) -> Result<Layout, String> {
    let split = option
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(option.len());
    let (length, letter) = option.split_at(split);
    let packing =
        Packing::parse(letter).ok_or(format!("string packing `{letter}` is not H, L, D or E"))?;
    let length: u16 = digits(length)
        .and_then(|length| length.parse().ok())
        .filter(|&length| length > 0)
        .ok_or("a string needs a length of at least 1 byte, e.g. .10")?;
    if packing.registers(length) > MAX_WRITE_REGISTERS {
        return Err(format!(
            "a string may take at most {MAX_WRITE_REGISTERS} registers (one write request)"
        ));
    }
    Ok(Layout::Text { length, packing })
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

    fn parsed(address: &str, data_type: &str) -> (u8, Area, u16, Layout) {
        let spec = parse_tag(&tag(address, data_type), 1).unwrap();
        (spec.slave, spec.area, spec.offset, spec.layout)
    }

    fn rejection(address: &str, data_type: &str) -> String {
        match parse_tag(&tag(address, data_type), 1) {
            Err(Error::InvalidConfig(message)) => message,
            other => panic!("expected invalid-config for {address} {data_type}, got {other:?}"),
        }
    }

    const PLAIN: ByteOrder = ByteOrder::new(false, false);
    use Area::*;

    #[test]
    fn areas_and_five_and_six_digit_forms() {
        let int16 = Layout::Number(Number::Int16, PLAIN);
        assert_eq!(parsed("1!40001", ""), (1, HoldingRegister, 0, int16));
        assert_eq!(parsed("1!400001", ""), (1, HoldingRegister, 0, int16));
        assert_eq!(parsed("2!30010", ""), (2, InputRegister, 9, int16));
        assert_eq!(parsed("255!49999", ""), (255, HoldingRegister, 9998, int16));
        assert_eq!(parsed("0!465536", ""), (0, HoldingRegister, 65535, int16));
        let bit = Layout::Bit(BitStyle::Bit);
        assert_eq!(parsed("1!00001", ""), (1, Coil, 0, bit));
        assert_eq!(parsed("1!100005", "BIT"), (1, DiscreteInput, 4, bit));
        assert_eq!(
            parsed("1!00002", "bool"),
            (1, Coil, 1, Layout::Bit(BitStyle::Bool))
        );
    }

    #[test]
    fn address_base_zero() {
        let spec = parse_tag(&tag("1!40000", ""), 0).unwrap();
        assert_eq!(spec.offset, 0);
        let spec = parse_tag(&tag("1!465535", ""), 0).unwrap();
        assert_eq!(spec.offset, 65535);
        assert!(parse_tag(&tag("1!465536", ""), 0).is_err());
    }

    #[test]
    fn bits_of_registers() {
        assert_eq!(
            parsed("1!40001.3", "").3,
            Layout::RegisterBit(BitStyle::Bit, 3)
        );
        assert_eq!(
            parsed("1!300004.15", "bool").3,
            Layout::RegisterBit(BitStyle::Bool, 15)
        );
        rejection("1!40001.16", "bit");
        rejection("1!40001", "bit");
        rejection("1!40001.3#B", "bit");
    }

    #[test]
    fn byte_orders_by_width() {
        let order = |address, data_type| match parsed(address, data_type).3 {
            Layout::Number(_, order) => order,
            other => panic!("{other:?}"),
        };
        assert_eq!(order("1!40001#B", "uint16"), ByteOrder::new(false, true));
        assert_eq!(order("1!40001#L", "int16"), PLAIN);
        assert_eq!(order("1!40001", "float"), PLAIN);
        assert_eq!(order("1!40001#BB", "int32"), ByteOrder::new(true, true));
        assert_eq!(order("1!40001#BL", "double"), ByteOrder::new(true, false));
        assert_eq!(order("1!40001#LB", "uint64"), ByteOrder::new(false, true));
        let message = rejection("1!40001#LL", "int16");
        assert!(message.contains("#L or #B"), "{message}");
        let message = rejection("1!40001#B", "float");
        assert!(message.contains("#LL, #LB, #BL or #BB"), "{message}");
        rejection("1!40001#XX", "int32");
        rejection("1!40001#", "int32");
    }

    #[test]
    fn strings() {
        let text = |address| parsed(address, "string").3;
        assert_eq!(
            text("1!40001.10"),
            Layout::Text {
                length: 10,
                packing: Packing::H
            }
        );
        assert_eq!(
            text("1!300001.10L"),
            Layout::Text {
                length: 10,
                packing: Packing::L
            }
        );
        assert_eq!(
            text("1!40001.3D"),
            Layout::Text {
                length: 3,
                packing: Packing::D
            }
        );
        assert_eq!(text("1!40001.3E").width(), 3);
        assert_eq!(text("1!40001.3H").width(), 2);
        assert_eq!(text("1!40001.246").width(), 123);
        for address in [
            "1!40001",
            "1!40001.0",
            "1!40001.10X",
            "1!40001.H",
            "1!40001.247",
            "1!40001.124D",
            "1!40001.10#LL",
        ] {
            rejection(address, "string");
        }
    }

    #[test]
    fn rejections_name_tag_address_and_reason() {
        let message = rejection("1!00001", "int16");
        assert!(
            message.contains("`temperature`") && message.contains("`1!00001`"),
            "{message}"
        );
        assert!(message.contains("bit or bool"), "{message}");
        let message = rejection("1!40001", "float128");
        assert!(message.contains("unknown data type"), "{message}");
    }

    #[test]
    fn read_only_areas_cannot_be_writable() {
        for address in ["1!10001", "1!30001"] {
            let mut writable = tag(address, "");
            writable.writable = true;
            let Err(Error::InvalidConfig(message)) = parse_tag(&writable, 1) else {
                panic!("{address} accepted as writable");
            };
            assert!(message.contains("read-only"), "{message}");
        }
    }

    #[test]
    fn values_must_end_inside_the_area() {
        rejection("1!465536", "int32");
        parsed("1!465535", "int32");
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
            "1!4000a",
            "1!",
            "!40001",
            "1!+4001",
            "+1!40001",
            "1!00001.1",
            "1!00001#B",
            "1!40001.x",
        ] {
            rejection(address, "");
        }
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        /// Pieces of Neuron's address grammar, so generated addresses get
        /// past the first checks as often as not.
        fn address() -> impl Strategy<Value = String> {
            let piece = prop_oneof![
                Just("!".to_string()),
                Just("#".to_string()),
                Just(".".to_string()),
                "[0-9]{1,7}",
                "(B|L|BB|BL|LB|LL|H|D|E)",
                "\\PC{0,2}",
            ];
            proptest::collection::vec(piece, 0..8).prop_map(|pieces| pieces.concat())
        }

        fn data_type() -> impl Strategy<Value = String> {
            prop_oneof![
                proptest::sample::select(vec![
                    "", "bit", "bool", "int16", "uint16", "int32", "uint32", "int64", "uint64",
                    "float", "double", "string",
                ])
                .prop_map(String::from),
                "\\PC{0,8}",
            ]
        }

        proptest! {
            /// Every address is a spec or an error naming the tag, never a panic,
            /// and an accepted one stays inside the 16-bit address space.
            #[test]
            fn any_address_is_parsed_or_refused(
                address in address(),
                data_type in data_type(),
                base in 0u16..2,
                writable in any::<bool>(),
            ) {
                let tag = Tag { name: "t".into(), address, data_type, writable };
                match parse_tag(&tag, base) {
                    Ok(spec) => prop_assert!(spec.end() <= 65536),
                    Err(Error::InvalidConfig(message)) => prop_assert!(message.contains("tag `t`")),
                    Err(other) => prop_assert!(false, "unexpected error kind {other:?}"),
                }
            }
        }
    }
}
