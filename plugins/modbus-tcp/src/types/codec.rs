//! Values to and from the bytes of a tag's cells.
//!
//! A tag's cells are the bytes a read returned for it, in wire order: two
//! per register in register areas, one (0 or 1) per bit in bit areas. Pure
//! functions: no input makes them panic, which the property tests check.

use omh_sdk::Value;

use super::{BitStyle, ByteOrder, Layout, Number, Packing};

/// A value ready to go on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Encoded {
    /// A coil, or one bit of a register.
    Bit(bool),
    /// Whole registers, wire order, two bytes each.
    Registers(Vec<u8>),
}

impl Layout {
    /// Decodes the value from its cells: exactly `width()` bits or registers.
    pub fn decode(self, cells: &[u8]) -> Value {
        match self {
            Layout::Bit(style) => bit_value(style, cells.first().is_some_and(|&b| b != 0)),
            Layout::RegisterBit(style, bit) => {
                let register = u16::from_be_bytes([cells[0], cells[1]]);
                bit_value(style, register >> bit & 1 == 1)
            }
            Layout::Number(number, order) => decode_number(number, order, cells),
            Layout::Text { length, packing } => decode_text(length, packing, cells),
        }
    }

    /// Encodes `value` for this layout, or says why it does not fit.
    pub fn encode(self, value: &Value) -> Result<Encoded, String> {
        match self {
            Layout::Bit(_) | Layout::RegisterBit(..) => match value {
                Value::Boolean(on) => Ok(Encoded::Bit(*on)),
                Value::Int(0) => Ok(Encoded::Bit(false)),
                Value::Int(1) => Ok(Encoded::Bit(true)),
                other => Err(format!(
                    "{} does not fit a bit (expected true, false, 0 or 1)",
                    describe(other)
                )),
            },
            Layout::Number(number, order) => {
                encode_number(number, value).map(|bytes| Encoded::Registers(reorder(&bytes, order)))
            }
            Layout::Text { length, packing } => match value {
                Value::Text(text) => encode_text(length, packing, text).map(Encoded::Registers),
                other => Err(format!("{} is not a string", describe(other))),
            },
        }
    }
}

fn bit_value(style: BitStyle, on: bool) -> Value {
    match style {
        BitStyle::Bit => Value::Int(i64::from(on)),
        BitStyle::Bool => Value::Boolean(on),
    }
}

/// Applies `order` to wire-order register bytes, giving the value's
/// big-endian bytes (and, being an involution, back again).
fn reorder(bytes: &[u8], order: ByteOrder) -> Vec<u8> {
    let count = bytes.len() / 2;
    (0..count)
        .flat_map(|index| {
            let source = if order.reverse_registers {
                count - 1 - index
            } else {
                index
            };
            let (high, low) = (bytes[2 * source], bytes[2 * source + 1]);
            if order.swap_bytes {
                [low, high]
            } else {
                [high, low]
            }
        })
        .collect()
}

fn decode_number(number: Number, order: ByteOrder, cells: &[u8]) -> Value {
    let be = reorder(cells, order);
    let mut bytes = [0u8; 8];
    let width = be.len().min(8);
    bytes[..width].copy_from_slice(&be[..width]);
    let [b0, b1, b2, b3, ..] = bytes;
    match number {
        Number::Int16 => Value::Int(i16::from_be_bytes([b0, b1]).into()),
        Number::Uint16 => Value::Int(u16::from_be_bytes([b0, b1]).into()),
        Number::Int32 => Value::Int(i32::from_be_bytes([b0, b1, b2, b3]).into()),
        Number::Uint32 => Value::Int(u32::from_be_bytes([b0, b1, b2, b3]).into()),
        Number::Int64 => Value::Int(i64::from_be_bytes(bytes)),
        // Beyond i64 the WIT value has no integer: the nearest float.
        Number::Uint64 => {
            let value = u64::from_be_bytes(bytes);
            i64::try_from(value).map_or(Value::Float(value as f64), Value::Int)
        }
        Number::Float => Value::Float(shortest_f64(f32::from_be_bytes([b0, b1, b2, b3]))),
        Number::Double => Value::Float(f64::from_be_bytes(bytes)),
    }
}

/// The f64 that prints like the f32 (1.1, not 1.100000023841858), which is
/// what the device's user typed in.
fn shortest_f64(value: f32) -> f64 {
    value.to_string().parse().unwrap_or(f64::from(value))
}

/// The value's big-endian bytes, or why it does not fit `number`.
fn encode_number(number: Number, value: &Value) -> Result<Vec<u8>, String> {
    let out_of_range = || format!("{} is out of range for {}", describe(value), number.name());
    Ok(match number {
        Number::Float | Number::Double => {
            let float = match value {
                Value::Float(float) => *float,
                Value::Int(int) => *int as f64,
                other => return Err(format!("{} is not a number", describe(other))),
            };
            if number == Number::Double {
                float.to_be_bytes().to_vec()
            } else if float.is_finite() && float.abs() > f64::from(f32::MAX) {
                return Err(out_of_range());
            } else {
                (float as f32).to_be_bytes().to_vec()
            }
        }
        _ => {
            let int = integer(value)?;
            let fits = |bytes: Option<Vec<u8>>| bytes.ok_or_else(out_of_range);
            match number {
                Number::Int16 => fits(i16::try_from(int).ok().map(|v| v.to_be_bytes().to_vec()))?,
                Number::Uint16 => fits(u16::try_from(int).ok().map(|v| v.to_be_bytes().to_vec()))?,
                Number::Int32 => fits(i32::try_from(int).ok().map(|v| v.to_be_bytes().to_vec()))?,
                Number::Uint32 => fits(u32::try_from(int).ok().map(|v| v.to_be_bytes().to_vec()))?,
                Number::Int64 => fits(i64::try_from(int).ok().map(|v| v.to_be_bytes().to_vec()))?,
                _ => fits(u64::try_from(int).ok().map(|v| v.to_be_bytes().to_vec()))?,
            }
        }
    })
}

/// An integer from an int, or from a float with no fractional part (JSON
/// writers often send `5.0`).
fn integer(value: &Value) -> Result<i128, String> {
    match value {
        Value::Int(int) => Ok(i128::from(*int)),
        Value::Float(float) if float.fract() == 0.0 && float.abs() < 1.9e19 => Ok(*float as i128),
        other => Err(format!("{} is not an integer", describe(other))),
    }
}

fn decode_text(length: u16, packing: Packing, cells: &[u8]) -> Value {
    let bytes: Vec<u8> = cells
        .chunks_exact(2)
        .flat_map(|pair| {
            let (high, low) = (pair[0], pair[1]);
            match packing {
                Packing::H => vec![high, low],
                Packing::L => vec![low, high],
                Packing::D => vec![low],
                Packing::E => vec![high],
            }
        })
        .take(usize::from(length))
        .take_while(|&byte| byte != 0)
        .collect();
    Value::Text(String::from_utf8_lossy(&bytes).into_owned())
}

fn encode_text(length: u16, packing: Packing, text: &str) -> Result<Vec<u8>, String> {
    let bytes = text.as_bytes();
    if bytes.len() > usize::from(length) {
        return Err(format!(
            "\"{text}\" is {} bytes, the tag holds at most {length}",
            bytes.len()
        ));
    }
    let mut padded = bytes.to_vec();
    padded.resize(usize::from(length), 0);
    Ok(match packing {
        Packing::H | Packing::L => {
            padded.resize(usize::from(packing.registers(length)) * 2, 0);
            let swap = packing == Packing::L;
            reorder(&padded, ByteOrder::new(false, swap))
        }
        Packing::D => padded.iter().flat_map(|&byte| [0, byte]).collect(),
        Packing::E => padded.iter().flat_map(|&byte| [byte, 0]).collect(),
    })
}

fn describe(value: &Value) -> String {
    match value {
        Value::Boolean(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Text(t) => format!("\"{t}\""),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const PACKINGS: [Packing; 4] = [Packing::H, Packing::L, Packing::D, Packing::E];

    /// Every order that applies to `number`.
    fn orders(number: Number) -> Vec<ByteOrder> {
        ByteOrder::SUFFIXES
            .iter()
            .filter(|(_, wide, _)| *wide == (number.registers() > 1))
            .map(|&(_, _, order)| order)
            .collect()
    }

    fn registers(encoded: Encoded) -> Vec<u8> {
        match encoded {
            Encoded::Registers(bytes) => bytes,
            Encoded::Bit(_) => panic!("a number encodes to registers"),
        }
    }

    /// The examples of Neuron's byte-order table, 0x01020304 as 1,2,3,4.
    #[test]
    fn neuron_byte_order_table() {
        let value = Value::Int(0x0102_0304);
        let wire = |suffix| {
            let order = ByteOrder::parse(suffix, 2).unwrap();
            registers(
                Layout::Number(Number::Uint32, order)
                    .encode(&value)
                    .unwrap(),
            )
        };
        assert_eq!(wire("LL"), [1, 2, 3, 4]);
        assert_eq!(wire("LB"), [2, 1, 4, 3]);
        assert_eq!(wire("BL"), [3, 4, 1, 2]);
        assert_eq!(wire("BB"), [4, 3, 2, 1]);
        let value = Value::Int(0x0102_0304_0506_0708);
        let wire = |suffix| {
            let order = ByteOrder::parse(suffix, 4).unwrap();
            registers(Layout::Number(Number::Int64, order).encode(&value).unwrap())
        };
        assert_eq!(wire("LL"), [1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(wire("LB"), [2, 1, 4, 3, 6, 5, 8, 7]);
        assert_eq!(wire("BL"), [7, 8, 5, 6, 3, 4, 1, 2]);
        assert_eq!(wire("BB"), [8, 7, 6, 5, 4, 3, 2, 1]);
        let int16 = |suffix| {
            let order = ByteOrder::parse(suffix, 1).unwrap();
            registers(
                Layout::Number(Number::Int16, order)
                    .encode(&Value::Int(0x0102))
                    .unwrap(),
            )
        };
        assert_eq!(int16("L"), [1, 2]);
        assert_eq!(int16("B"), [2, 1]);
    }

    #[test]
    fn decodes_signedness_floats_and_huge_unsigned() {
        let plain = ByteOrder::default();
        let decode = |number, cells: &[u8]| Layout::Number(number, plain).decode(cells);
        assert_eq!(decode(Number::Int16, &[0xFF, 0xFF]), Value::Int(-1));
        assert_eq!(decode(Number::Uint16, &[0xFF, 0xFF]), Value::Int(65535));
        assert_eq!(decode(Number::Int32, &[0xFF; 4]), Value::Int(-1));
        assert_eq!(decode(Number::Uint32, &[0xFF; 4]), Value::Int(0xFFFF_FFFF));
        assert_eq!(
            decode(Number::Float, &1.1f32.to_be_bytes()),
            Value::Float(1.1)
        );
        assert_eq!(
            decode(Number::Uint64, &[0xFF; 8]),
            Value::Float(u64::MAX as f64)
        );
    }

    #[test]
    fn bits_and_register_bits() {
        assert_eq!(Layout::Bit(BitStyle::Bit).decode(&[1]), Value::Int(1));
        assert_eq!(
            Layout::Bit(BitStyle::Bool).decode(&[0]),
            Value::Boolean(false)
        );
        let bit3 = Layout::RegisterBit(BitStyle::Bit, 3);
        assert_eq!(bit3.decode(&[0x00, 0x08]), Value::Int(1));
        assert_eq!(bit3.decode(&[0xFF, 0xF7]), Value::Int(0));
        assert_eq!(
            Layout::RegisterBit(BitStyle::Bool, 15).decode(&[0x80, 0]),
            Value::Boolean(true)
        );
        assert_eq!(bit3.encode(&Value::Int(1)), Ok(Encoded::Bit(true)));
        assert!(bit3.encode(&Value::Int(2)).is_err());
        assert!(bit3.encode(&Value::Text("on".into())).is_err());
    }

    #[test]
    fn string_packings() {
        let packed = |packing| {
            let layout = Layout::Text { length: 3, packing };
            registers(layout.encode(&Value::Text("abc".into())).unwrap())
        };
        assert_eq!(packed(Packing::H), b"abc\0");
        assert_eq!(packed(Packing::L), b"ba\0c");
        assert_eq!(packed(Packing::D), b"\0a\0b\0c");
        assert_eq!(packed(Packing::E), b"a\0b\0c\0");
        let text = Layout::Text {
            length: 4,
            packing: Packing::H,
        };
        assert_eq!(text.decode(b"ab\0\0"), Value::Text("ab".into()));
        assert!(text.encode(&Value::Text("abcde".into())).is_err());
    }

    #[test]
    fn rejects_values_that_do_not_fit() {
        let plain = ByteOrder::default();
        let encode = |number, value| Layout::Number(number, plain).encode(&value);
        assert!(encode(Number::Int16, Value::Int(40_000)).is_err());
        assert!(encode(Number::Uint16, Value::Int(-1)).is_err());
        assert!(encode(Number::Uint32, Value::Float(1.5)).is_err());
        assert!(encode(Number::Float, Value::Float(1e39)).is_err());
        assert!(encode(Number::Int32, Value::Boolean(true)).is_err());
        assert!(encode(Number::Double, Value::Text("1".into())).is_err());
        assert_eq!(
            encode(Number::Uint16, Value::Float(5.0)),
            Ok(Encoded::Registers(vec![0, 5]))
        );
    }

    /// A value of `number`'s range, as the driver would publish it.
    fn any_value(number: Number) -> BoxedStrategy<Value> {
        match number {
            Number::Int16 => any::<i16>().prop_map(|v| Value::Int(v.into())).boxed(),
            Number::Uint16 => any::<u16>().prop_map(|v| Value::Int(v.into())).boxed(),
            Number::Int32 => any::<i32>().prop_map(|v| Value::Int(v.into())).boxed(),
            Number::Uint32 => any::<u32>().prop_map(|v| Value::Int(v.into())).boxed(),
            Number::Int64 => any::<i64>().prop_map(Value::Int).boxed(),
            Number::Uint64 => (0..=i64::MAX).prop_map(Value::Int).boxed(),
            Number::Float => any::<f32>()
                .prop_filter("NaN never equals itself", |v| !v.is_nan())
                .prop_map(|v| Value::Float(shortest_f64(v)))
                .boxed(),
            Number::Double => any::<f64>()
                .prop_filter("NaN never equals itself", |v| !v.is_nan())
                .prop_map(Value::Float)
                .boxed(),
        }
    }

    fn any_number_layout() -> impl Strategy<Value = (Layout, Value)> {
        proptest::sample::select(Number::ALL.to_vec()).prop_flat_map(|number| {
            (proptest::sample::select(orders(number)), any_value(number))
                .prop_map(move |(order, value)| (Layout::Number(number, order), value))
        })
    }

    proptest! {
        #[test]
        fn every_number_and_byte_order_round_trips((layout, value) in any_number_layout()) {
            let bytes = registers(layout.encode(&value).unwrap());
            prop_assert_eq!(bytes.len(), usize::from(layout.width()) * 2);
            prop_assert_eq!(layout.decode(&bytes), value);
        }

        #[test]
        fn every_string_packing_round_trips(
            text in "[^\u{0}]{0,12}",
            extra in 0u16..4,
            packing in proptest::sample::select(PACKINGS.to_vec()),
        ) {
            let length = u16::try_from(text.len()).unwrap() + extra;
            let layout = Layout::Text { length, packing };
            let bytes = registers(layout.encode(&Value::Text(text.clone())).unwrap());
            prop_assert_eq!(bytes.len(), usize::from(layout.width()) * 2);
            prop_assert_eq!(layout.decode(&bytes), Value::Text(text));
        }

        #[test]
        fn decoding_any_cells_never_panics(cells in proptest::collection::vec(any::<u8>(), 0..16)) {
            for number in Number::ALL {
                for order in orders(number) {
                    let layout = Layout::Number(number, order);
                    let width = usize::from(layout.width()) * 2;
                    if cells.len() >= width {
                        layout.decode(&cells[..width]);
                    }
                }
            }
            for packing in PACKINGS {
                Layout::Text { length: 8, packing }.decode(&cells);
            }
        }
    }
}
