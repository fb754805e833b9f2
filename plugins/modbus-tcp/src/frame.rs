//! Modbus TCP framing: requests for functions 1-6, 15 and 16, and the
//! checks that a response answers exactly the request sent.
//!
//! Pure functions over bytes: no I/O, and no input makes them panic (the
//! property tests feed them arbitrary and truncated frames). An ADU is the
//! 7-byte MBAP header (transaction id, protocol id 0, length, unit id)
//! followed by the PDU (function code and data).

use crate::address::Area;

/// MBAP header bytes, up to and including the unit id.
pub const HEADER_LEN: usize = 7;

/// Most registers one read may ask for (Modbus application protocol 6.3).
pub const MAX_READ_REGISTERS: u16 = 125;
/// Most coils or discrete inputs one read may ask for (6.1, 6.2).
pub const MAX_READ_BITS: u16 = 2000;
/// Most registers one "write multiple registers" may carry (6.12).
pub const MAX_WRITE_REGISTERS: u16 = 123;

/// Longest PDU the protocol allows; bounds what we accept from the peer.
const MAX_PDU_LEN: usize = 253;

/// Set on the function code of an exception response.
const EXCEPTION_FLAG: u8 = 0x80;

/// What a request asks the device to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pdu {
    /// Functions 1-4 by area. `count` is within the area's read limit.
    Read { area: Area, start: u16, count: u16 },
    /// Function 5.
    WriteCoil { address: u16, on: bool },
    /// Function 6; the register's two bytes in wire order.
    WriteRegister { address: u16, value: [u8; 2] },
    /// Function 15.
    WriteCoils { address: u16, bits: Vec<bool> },
    /// Function 16; 1..=[`MAX_WRITE_REGISTERS`] registers in wire order.
    WriteRegisters { address: u16, bytes: Vec<u8> },
}

impl Pdu {
    pub fn function(&self) -> u8 {
        match self {
            Pdu::Read { area, .. } => match area {
                Area::Coil => 0x01,
                Area::DiscreteInput => 0x02,
                Area::HoldingRegister => 0x03,
                Area::InputRegister => 0x04,
            },
            Pdu::WriteCoil { .. } => 0x05,
            Pdu::WriteRegister { .. } => 0x06,
            Pdu::WriteCoils { .. } => 0x0F,
            Pdu::WriteRegisters { .. } => 0x10,
        }
    }

    fn encode_into(&self, out: &mut Vec<u8>) {
        out.push(self.function());
        match self {
            Pdu::Read { start, count, .. } => {
                out.extend(start.to_be_bytes());
                out.extend(count.to_be_bytes());
            }
            Pdu::WriteCoil { address, on } => {
                out.extend(address.to_be_bytes());
                out.extend(if *on { [0xFF, 0x00] } else { [0x00, 0x00] });
            }
            Pdu::WriteRegister { address, value } => {
                out.extend(address.to_be_bytes());
                out.extend(value);
            }
            Pdu::WriteCoils { address, bits } => {
                out.extend(address.to_be_bytes());
                out.extend((bits.len() as u16).to_be_bytes());
                out.push(bits.len().div_ceil(8) as u8);
                out.extend(bits.chunks(8).map(|byte| {
                    byte.iter()
                        .enumerate()
                        .fold(0u8, |packed, (bit, &on)| packed | u8::from(on) << bit)
                }));
            }
            Pdu::WriteRegisters { address, bytes } => {
                out.extend(address.to_be_bytes());
                out.extend(((bytes.len() / 2) as u16).to_be_bytes());
                out.push(bytes.len() as u8);
                out.extend(bytes);
            }
        }
    }
}

/// One request ADU's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    pub transaction_id: u16,
    pub unit_id: u8,
    pub pdu: &'a Pdu,
}

/// A well-formed answer to a [`Request`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// The cells read: two bytes per register in wire order, or one byte
    /// (0 or 1) per bit, so a tag's cells are a plain slice either way.
    Read(Vec<u8>),
    /// The device confirmed a write.
    Written,
    Exception(Exception),
}

/// A Modbus exception code the device answered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exception(pub u8);

impl Exception {
    /// The name the Modbus specification gives the code.
    pub fn name(self) -> &'static str {
        match self.0 {
            0x01 => "illegal function",
            0x02 => "illegal data address",
            0x03 => "illegal data value",
            0x04 => "server device failure",
            0x05 => "acknowledge",
            0x06 => "server device busy",
            0x08 => "memory parity error",
            0x0A => "gateway path unavailable",
            0x0B => "gateway target device failed to respond",
            _ => "unknown exception",
        }
    }
}

/// Bytes that are not a valid answer to the request; the stream can no
/// longer be trusted to be in sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError(pub String);

impl Request<'_> {
    /// The request ADU.
    pub fn encode(&self) -> Vec<u8> {
        let mut adu = Vec::with_capacity(HEADER_LEN + 6);
        adu.extend(self.transaction_id.to_be_bytes());
        adu.extend([0, 0, 0, 0]); // protocol id (Modbus), length (below)
        adu.push(self.unit_id);
        self.pdu.encode_into(&mut adu);
        // The length counts the unit id and the PDU.
        let length = (adu.len() - HEADER_LEN + 1) as u16;
        adu[4..6].copy_from_slice(&length.to_be_bytes());
        adu
    }
}

/// How many bytes follow a received MBAP header, from its length field.
pub fn remaining_len(header: &[u8; HEADER_LEN]) -> Result<usize, FrameError> {
    let protocol = u16::from_be_bytes([header[2], header[3]]);
    if protocol != 0 {
        return Err(FrameError(format!(
            "protocol id {protocol}, expected 0 (Modbus)"
        )));
    }
    // The length counts the unit id, which is already part of the header.
    let length = usize::from(u16::from_be_bytes([header[4], header[5]]));
    if !(2..=MAX_PDU_LEN + 1).contains(&length) {
        return Err(FrameError(format!(
            "MBAP length {length} out of range 2..=254"
        )));
    }
    Ok(length - 1)
}

/// Decodes the complete response ADU to `request`.
pub fn decode_response(request: &Request, adu: &[u8]) -> Result<Reply, FrameError> {
    let Some((header, pdu)) = adu.split_first_chunk::<HEADER_LEN>() else {
        return Err(FrameError(format!(
            "{} bytes is shorter than an MBAP header",
            adu.len()
        )));
    };
    let announced = remaining_len(header)?;
    if announced != pdu.len() {
        return Err(FrameError(format!(
            "MBAP length says {announced} PDU bytes, got {}",
            pdu.len()
        )));
    }
    let transaction_id = u16::from_be_bytes([header[0], header[1]]);
    if transaction_id != request.transaction_id {
        return Err(FrameError(format!(
            "transaction id {transaction_id}, expected {}",
            request.transaction_id
        )));
    }
    if header[6] != request.unit_id {
        return Err(FrameError(format!(
            "unit id {}, expected {}",
            header[6], request.unit_id
        )));
    }

    let expected_function = request.pdu.function();
    match *pdu {
        [function, ref data @ ..] if function == expected_function => match request.pdu {
            Pdu::Read { area, count, .. } => decode_read(*area, *count, data).map(Reply::Read),
            write => check_write_echo(write, data).map(|()| Reply::Written),
        },
        [function, code] if function == expected_function | EXCEPTION_FLAG => {
            Ok(Reply::Exception(Exception(code)))
        }
        [function, ..] => Err(FrameError(format!(
            "function code {function:#04x} in reply to {expected_function:#04x}"
        ))),
        [] => Err(FrameError("empty PDU".to_string())),
    }
}

fn decode_read(area: Area, count: u16, data: &[u8]) -> Result<Vec<u8>, FrameError> {
    let expected_bytes = if area.holds_bits() {
        usize::from(count).div_ceil(8)
    } else {
        usize::from(count) * 2
    };
    let Some((&byte_count, payload)) = data.split_first() else {
        return Err(FrameError("missing byte count".to_string()));
    };
    if usize::from(byte_count) != expected_bytes || payload.len() != expected_bytes {
        return Err(FrameError(format!(
            "byte count {byte_count} with {} data bytes, expected {expected_bytes} for {count} {}",
            payload.len(),
            area.name()
        )));
    }
    if !area.holds_bits() {
        return Ok(payload.to_vec());
    }
    // Bits are packed LSB first; one cell per bit.
    Ok((0..usize::from(count))
        .map(|bit| payload[bit / 8] >> (bit % 8) & 1)
        .collect())
}

/// Writes are confirmed by echoing the address and the value (5, 6) or
/// the quantity (15, 16): the four bytes after the function code.
fn check_write_echo(write: &Pdu, data: &[u8]) -> Result<(), FrameError> {
    let mut sent = Vec::new();
    write.encode_into(&mut sent);
    if data == &sent[1..5] {
        Ok(())
    } else {
        Err(FrameError(format!(
            "write confirmation {data:02x?}, expected {:02x?}",
            &sent[1..5]
        )))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const HOLDING: Pdu = Pdu::Read {
        area: Area::HoldingRegister,
        start: 0x0010,
        count: 2,
    };

    fn request(pdu: &Pdu) -> Request<'_> {
        Request {
            transaction_id: 0x1234,
            unit_id: 7,
            pdu,
        }
    }

    /// A reply ADU to `request(..)` with `pdu`, lengths filled in correctly.
    fn adu(pdu: &[u8]) -> Vec<u8> {
        let length = (pdu.len() + 1) as u16;
        let mut bytes = vec![0x12, 0x34, 0, 0];
        bytes.extend(length.to_be_bytes());
        bytes.push(7);
        bytes.extend(pdu);
        bytes
    }

    #[test]
    fn encodes_every_function() {
        let encoded = |pdu: Pdu| request(&pdu).encode()[6..].to_vec();
        assert_eq!(
            request(&HOLDING).encode(),
            [0x12, 0x34, 0, 0, 0, 6, 7, 3, 0x00, 0x10, 0, 2]
        );
        let read = |area| {
            encoded(Pdu::Read {
                area,
                start: 1,
                count: 9,
            })[1]
        };
        assert_eq!(
            [
                Area::Coil,
                Area::DiscreteInput,
                Area::HoldingRegister,
                Area::InputRegister
            ]
            .map(read),
            [1, 2, 3, 4]
        );
        assert_eq!(
            encoded(Pdu::WriteCoil {
                address: 3,
                on: true
            }),
            [7, 5, 0, 3, 0xFF, 0]
        );
        assert_eq!(
            encoded(Pdu::WriteRegister {
                address: 3,
                value: [0xAB, 0xCD]
            }),
            [7, 6, 0, 3, 0xAB, 0xCD]
        );
        let mut bits = vec![false; 10];
        bits[0] = true;
        bits[9] = true;
        assert_eq!(
            encoded(Pdu::WriteCoils { address: 3, bits }),
            [7, 15, 0, 3, 0, 10, 2, 0b0000_0001, 0b0000_0010]
        );
        let written = request(&Pdu::WriteRegisters {
            address: 3,
            bytes: vec![1, 2, 3, 4],
        })
        .encode();
        assert_eq!(written[..6], [0x12, 0x34, 0, 0, 0, 11]);
        assert_eq!(written[6..], [7, 16, 0, 3, 0, 2, 4, 1, 2, 3, 4]);
    }

    #[test]
    fn decodes_registers_and_bits() {
        let reply = adu(&[3, 4, 0x00, 0x2A, 0xFF, 0xFF]);
        assert_eq!(
            decode_response(&request(&HOLDING), &reply),
            Ok(Reply::Read(vec![0, 0x2A, 0xFF, 0xFF]))
        );
        let header: &[u8; HEADER_LEN] = reply[..HEADER_LEN].try_into().unwrap();
        assert_eq!(remaining_len(header), Ok(reply.len() - HEADER_LEN));

        let coils = Pdu::Read {
            area: Area::Coil,
            start: 0,
            count: 10,
        };
        assert_eq!(
            decode_response(&request(&coils), &adu(&[1, 2, 0b1000_0101, 0b10])),
            Ok(Reply::Read(vec![1, 0, 1, 0, 0, 0, 0, 1, 0, 1]))
        );
    }

    #[test]
    fn decodes_exception() {
        let reply = decode_response(&request(&HOLDING), &adu(&[0x83, 0x02])).unwrap();
        assert_eq!(reply, Reply::Exception(Exception(2)));
        assert_eq!(Exception(2).name(), "illegal data address");
    }

    #[test]
    fn write_confirmations_must_echo_the_request() {
        let single = Pdu::WriteRegister {
            address: 3,
            value: [0, 9],
        };
        assert_eq!(
            decode_response(&request(&single), &adu(&[6, 0, 3, 0, 9])),
            Ok(Reply::Written)
        );
        assert!(decode_response(&request(&single), &adu(&[6, 0, 3, 0, 8])).is_err());
        let multiple = Pdu::WriteRegisters {
            address: 3,
            bytes: vec![0; 4],
        };
        assert_eq!(
            decode_response(&request(&multiple), &adu(&[16, 0, 3, 0, 2])),
            Ok(Reply::Written)
        );
        assert!(decode_response(&request(&multiple), &adu(&[16, 0, 3, 0, 1])).is_err());
        assert!(decode_response(&request(&multiple), &adu(&[16, 0, 3, 0, 2, 0])).is_err());
    }

    #[test]
    fn rejects_mismatched_ids_and_function() {
        let reply = adu(&[3, 4, 0, 1, 0, 2]);
        let changed = |index: usize, byte: u8| {
            let mut reply = reply.clone();
            reply[index] = byte;
            reply
        };
        for reply in [
            changed(1, 0x35), // transaction id
            changed(6, 8),    // unit id
            changed(3, 1),    // protocol id
            changed(7, 4),    // function
            changed(7, 0x84), // exception to another function
        ] {
            assert!(
                decode_response(&request(&HOLDING), &reply).is_err(),
                "{reply:?}"
            );
        }
    }

    #[test]
    fn rejects_wrong_lengths() {
        let mut long_length_field = adu(&[3, 4, 0, 1, 0, 2]);
        long_length_field[5] += 1;
        for reply in [
            adu(&[3, 2, 0, 1]),          // fewer registers than asked
            adu(&[3, 4, 0, 1, 0]),       // byte count larger than data
            adu(&[3, 4, 0, 1, 0, 2, 9]), // trailing byte
            adu(&[0x83]),                // exception without code
            adu(&[0x83, 2, 0]),          // exception with extra byte
            adu(&[]),                    // no PDU
            long_length_field,
        ] {
            assert!(
                decode_response(&request(&HOLDING), &reply).is_err(),
                "{reply:?}"
            );
        }
    }

    #[test]
    fn rejects_bad_headers() {
        assert!(remaining_len(&[0, 1, 0, 0, 0, 1, 7]).is_err()); // length 1: no function
        assert!(remaining_len(&[0, 1, 0, 0, 0, 255, 7]).is_err()); // beyond 254
        assert!(remaining_len(&[0, 1, 0, 0, 0xFF, 0xFF, 7]).is_err());
    }

    fn any_pdu() -> impl Strategy<Value = Pdu> {
        let area = proptest::sample::select(vec![
            Area::Coil,
            Area::DiscreteInput,
            Area::InputRegister,
            Area::HoldingRegister,
        ]);
        prop_oneof![
            (area, any::<u16>(), 1u16..=125).prop_map(|(area, start, count)| Pdu::Read {
                area,
                start,
                count
            }),
            (any::<u16>(), any::<bool>()).prop_map(|(address, on)| Pdu::WriteCoil { address, on }),
            (any::<u16>(), any::<[u8; 2]>())
                .prop_map(|(address, value)| Pdu::WriteRegister { address, value }),
            (
                any::<u16>(),
                proptest::collection::vec(any::<bool>(), 1..40)
            )
                .prop_map(|(address, bits)| Pdu::WriteCoils { address, bits }),
            (
                any::<u16>(),
                proptest::collection::vec(any::<[u8; 2]>(), 1..=123)
            )
                .prop_map(|(address, registers)| Pdu::WriteRegisters {
                    address,
                    bytes: registers.concat()
                }),
        ]
    }

    /// What a correct server answers to `pdu`, with `cells` as the data read.
    fn correct_reply(pdu: &Pdu, cells: &[u8]) -> Vec<u8> {
        let mut sent = Vec::new();
        pdu.encode_into(&mut sent);
        match pdu {
            Pdu::Read { area, .. } if area.holds_bits() => {
                let packed: Vec<u8> = cells
                    .chunks(8)
                    .map(|byte| byte.iter().enumerate().fold(0, |p, (i, &b)| p | b << i))
                    .collect();
                [&[sent[0], packed.len() as u8][..], &packed].concat()
            }
            Pdu::Read { .. } => [&[sent[0], cells.len() as u8][..], cells].concat(),
            _ => sent[..5].to_vec(),
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(pdu in any_pdu(), bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let request = request(&pdu);
            let _ = decode_response(&request, &bytes);
            // Also behind a valid header, so the PDU checks see garbage too.
            let _ = decode_response(&request, &adu(&bytes));
            if let Some(header) = bytes.first_chunk::<HEADER_LEN>() {
                let _ = remaining_len(header);
            }
        }

        #[test]
        fn correct_replies_decode_and_every_corruption_is_caught(
            pdu in any_pdu(),
            seed in any::<u64>(),
            corrupt_at in any::<proptest::sample::Index>(),
            xor in 1u8..,
        ) {
            let cells: Vec<u8> = match &pdu {
                Pdu::Read { area, count, .. } if area.holds_bits() => {
                    (0..*count).map(|i| (seed >> (i % 64) & 1) as u8).collect()
                }
                Pdu::Read { count, .. } => (0..*count * 2).map(|i| (seed >> (i % 57)) as u8).collect(),
                _ => Vec::new(),
            };
            let reply = adu(&correct_reply(&pdu, &cells));
            let request = request(&pdu);
            let expected = match pdu {
                Pdu::Read { .. } => Reply::Read(cells),
                _ => Reply::Written,
            };
            prop_assert_eq!(decode_response(&request, &reply), Ok(expected));
            // Truncated frames are errors, never panics.
            for len in 0..reply.len() {
                prop_assert!(decode_response(&request, &reply[..len]).is_err());
            }
            // Any changed header byte, function code, count or echo is caught
            // (data bytes of a read are anybody's values).
            let checked = match pdu {
                Pdu::Read { .. } => HEADER_LEN + 2,
                _ => reply.len(),
            };
            let index = corrupt_at.index(checked);
            let mut corrupted = reply.clone();
            corrupted[index] ^= xor;
            prop_assert!(decode_response(&request, &corrupted).is_err(), "byte {} ^ {}", index, xor);
        }
    }
}
