//! What a tag holds and how it sits in the device's bits or registers: the
//! data type from the manifest's `type`, plus the byte order (`#LL`...) or
//! string packing (`.10H`) from its address. Built once at configure time;
//! [`codec`] turns it into values and back.

pub mod codec;

/// Numbers stored in whole registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Number {
    Int16,
    Uint16,
    Int32,
    Uint32,
    Int64,
    Uint64,
    Float,
    Double,
}

impl Number {
    pub const ALL: [Number; 8] = [
        Number::Int16,
        Number::Uint16,
        Number::Int32,
        Number::Uint32,
        Number::Int64,
        Number::Uint64,
        Number::Float,
        Number::Double,
    ];

    pub fn registers(self) -> u16 {
        match self {
            Number::Int16 | Number::Uint16 => 1,
            Number::Int32 | Number::Uint32 | Number::Float => 2,
            Number::Int64 | Number::Uint64 | Number::Double => 4,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Number::Int16 => "int16",
            Number::Uint16 => "uint16",
            Number::Int32 => "int32",
            Number::Uint32 => "uint32",
            Number::Int64 => "int64",
            Number::Uint64 => "uint64",
            Number::Float => "float",
            Number::Double => "double",
        }
    }
}

/// Neuron's byte orders, as two independent swaps of the big-endian
/// (Modbus standard, `#L`/`#LL`) layout. Both swaps are their own inverse,
/// so the same transformation decodes and encodes.
///
/// | suffix | 16-bit | 32-bit  | 64-bit      | reverse registers | swap bytes |
/// |--------|--------|---------|-------------|-------------------|------------|
/// | `#L`   | 1,2    |         |             | no                | no         |
/// | `#B`   | 2,1    |         |             | no                | yes        |
/// | `#LL`  |        | 1,2,3,4 | 12,34,56,78 | no                | no         |
/// | `#LB`  |        | 2,1,4,3 | 21,43,65,87 | no                | yes        |
/// | `#BL`  |        | 3,4,1,2 | 78,56,34,12 | yes               | no         |
/// | `#BB`  |        | 4,3,2,1 | 87,65,43,21 | yes               | yes        |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ByteOrder {
    /// The last register comes first on the wire.
    pub reverse_registers: bool,
    /// The low byte of each register comes first on the wire.
    pub swap_bytes: bool,
}

impl ByteOrder {
    /// Every suffix with the number of registers it applies to (1 for the
    /// 16-bit forms, more for the 32- and 64-bit ones).
    pub const SUFFIXES: [(&'static str, bool, ByteOrder); 6] = [
        ("L", false, ByteOrder::new(false, false)),
        ("B", false, ByteOrder::new(false, true)),
        ("LL", true, ByteOrder::new(false, false)),
        ("LB", true, ByteOrder::new(false, true)),
        ("BL", true, ByteOrder::new(true, false)),
        ("BB", true, ByteOrder::new(true, true)),
    ];

    pub const fn new(reverse_registers: bool, swap_bytes: bool) -> Self {
        Self {
            reverse_registers,
            swap_bytes,
        }
    }

    /// The byte order a suffix (without `#`) names, if it applies to a
    /// value of `registers` registers.
    pub fn parse(suffix: &str, registers: u16) -> Option<ByteOrder> {
        ByteOrder::SUFFIXES
            .iter()
            .find(|(name, wide, _)| *name == suffix && *wide == (registers > 1))
            .map(|&(_, _, order)| order)
    }
}

/// How a STRING's bytes are packed into registers (`.LEN` suffix letter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packing {
    /// Two bytes per register, high byte first (the default).
    H,
    /// Two bytes per register, low byte first.
    L,
    /// One byte per register, in the low byte.
    D,
    /// One byte per register, in the high byte.
    E,
}

impl Packing {
    pub fn parse(letter: &str) -> Option<Packing> {
        Some(match letter {
            "" | "H" => Packing::H,
            "L" => Packing::L,
            "D" => Packing::D,
            "E" => Packing::E,
            _ => return None,
        })
    }

    /// Registers a string of `length` bytes occupies.
    pub fn registers(self, length: u16) -> u16 {
        match self {
            Packing::H | Packing::L => length.div_ceil(2),
            Packing::D | Packing::E => length,
        }
    }
}

/// How the value is published: BIT as 0/1, BOOL as true/false (Neuron's
/// convention for the two type names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BitStyle {
    Bit,
    Bool,
}

/// A tag's value layout, fully resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// A coil or discrete input.
    Bit(BitStyle),
    /// Bit 0 (least significant) ..= 15 of one register: `1!40001.3`.
    RegisterBit(BitStyle, u8),
    Number(Number, ByteOrder),
    /// `length` bytes; NUL bytes end the text early.
    Text {
        length: u16,
        packing: Packing,
    },
}

impl Layout {
    /// Bits (coil areas) or registers (register areas) the value spans.
    pub fn width(self) -> u16 {
        match self {
            Layout::Bit(_) | Layout::RegisterBit(..) => 1,
            Layout::Number(number, _) => number.registers(),
            Layout::Text { length, packing } => packing.registers(length),
        }
    }
}
