//! Modbus TCP framing for "read holding/input registers" (functions 3, 4).
//!
//! Pure functions over bytes: no I/O, and no input makes them panic. An ADU
//! is the 7-byte MBAP header (transaction id, protocol id 0, length, unit
//! id) followed by the PDU (function code and data).

use crate::address::RegisterTable;

/// MBAP header bytes, up to and including the unit id.
pub const HEADER_LEN: usize = 7;

/// Most registers one read may ask for (Modbus application protocol 6.3).
pub const MAX_REGISTERS_PER_READ: u16 = 125;

/// Longest PDU the protocol allows; bounds what we accept from the peer.
const MAX_PDU_LEN: usize = 253;

/// Set on the function code of an exception response.
const EXCEPTION_FLAG: u8 = 0x80;

/// One "read registers" request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadRequest {
    pub transaction_id: u16,
    pub unit_id: u8,
    pub table: RegisterTable,
    pub start: u16,
    /// 1..=[`MAX_REGISTERS_PER_READ`]; the planner guarantees it.
    pub count: u16,
}

/// A well-formed answer to a [`ReadRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Registers(Vec<u16>),
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

fn function_code(table: RegisterTable) -> u8 {
    match table {
        RegisterTable::Holding => 0x03,
        RegisterTable::Input => 0x04,
    }
}

impl ReadRequest {
    /// The request ADU.
    pub fn encode(&self) -> [u8; 12] {
        let [transaction_high, transaction_low] = self.transaction_id.to_be_bytes();
        let [start_high, start_low] = self.start.to_be_bytes();
        let [count_high, count_low] = self.count.to_be_bytes();
        [
            transaction_high,
            transaction_low,
            0, // protocol id: Modbus
            0,
            0, // length: unit id + 5 PDU bytes
            6,
            self.unit_id,
            function_code(self.table),
            start_high,
            start_low,
            count_high,
            count_low,
        ]
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
pub fn decode_response(request: &ReadRequest, adu: &[u8]) -> Result<Reply, FrameError> {
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

    let expected_function = function_code(request.table);
    match *pdu {
        [function, ref data @ ..] if function == expected_function => {
            decode_registers(request, data).map(Reply::Registers)
        }
        [function, code] if function == expected_function | EXCEPTION_FLAG => {
            Ok(Reply::Exception(Exception(code)))
        }
        [function, ..] => Err(FrameError(format!(
            "function code {function:#04x} in reply to {expected_function:#04x}"
        ))),
        [] => Err(FrameError("empty PDU".to_string())),
    }
}

fn decode_registers(request: &ReadRequest, data: &[u8]) -> Result<Vec<u16>, FrameError> {
    let expected_bytes = usize::from(request.count) * 2;
    let Some((&byte_count, registers)) = data.split_first() else {
        return Err(FrameError("missing byte count".to_string()));
    };
    if usize::from(byte_count) != expected_bytes || registers.len() != expected_bytes {
        return Err(FrameError(format!(
            "byte count {byte_count} with {} data bytes, expected {expected_bytes} for {} registers",
            registers.len(),
            request.count
        )));
    }
    Ok(registers
        .chunks_exact(2)
        .map(|pair| u16::from_be_bytes([pair[0], pair[1]]))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQUEST: ReadRequest = ReadRequest {
        transaction_id: 0x1234,
        unit_id: 7,
        table: RegisterTable::Holding,
        start: 0x0010,
        count: 2,
    };

    /// A reply ADU to REQUEST with `pdu`, lengths filled in correctly.
    fn adu(pdu: &[u8]) -> Vec<u8> {
        let length = (pdu.len() + 1) as u16;
        let mut bytes = vec![0x12, 0x34, 0, 0];
        bytes.extend(length.to_be_bytes());
        bytes.push(7);
        bytes.extend(pdu);
        bytes
    }

    #[test]
    fn encodes_read_holding_registers() {
        assert_eq!(
            REQUEST.encode(),
            [0x12, 0x34, 0, 0, 0, 6, 7, 3, 0x00, 0x10, 0, 2]
        );
        let input = ReadRequest {
            table: RegisterTable::Input,
            ..REQUEST
        };
        assert_eq!(input.encode()[7], 4);
    }

    #[test]
    fn decodes_registers() {
        let reply = adu(&[3, 4, 0x00, 0x2A, 0xFF, 0xFF]);
        assert_eq!(
            decode_response(&REQUEST, &reply),
            Ok(Reply::Registers(vec![42, 0xFFFF]))
        );
        let header: &[u8; HEADER_LEN] = reply[..HEADER_LEN].try_into().unwrap();
        assert_eq!(remaining_len(header), Ok(reply.len() - HEADER_LEN));
    }

    #[test]
    fn decodes_exception() {
        let reply = decode_response(&REQUEST, &adu(&[0x83, 0x02])).unwrap();
        assert_eq!(reply, Reply::Exception(Exception(2)));
        assert_eq!(Exception(2).name(), "illegal data address");
    }

    #[test]
    fn rejects_mismatched_ids_and_function() {
        let mut wrong_transaction = adu(&[3, 4, 0, 1, 0, 2]);
        wrong_transaction[1] = 0x35;
        let mut wrong_unit = adu(&[3, 4, 0, 1, 0, 2]);
        wrong_unit[6] = 8;
        let mut wrong_protocol = adu(&[3, 4, 0, 1, 0, 2]);
        wrong_protocol[3] = 1;
        for reply in [
            wrong_transaction,
            wrong_unit,
            wrong_protocol,
            adu(&[4, 4, 0, 1, 0, 2]),
        ] {
            assert!(decode_response(&REQUEST, &reply).is_err(), "{reply:?}");
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
            assert!(decode_response(&REQUEST, &reply).is_err(), "{reply:?}");
        }
    }

    #[test]
    fn rejects_bad_headers() {
        assert!(remaining_len(&[0, 1, 0, 0, 0, 1, 7]).is_err()); // length 1: no function
        assert!(remaining_len(&[0, 1, 0, 0, 0, 255, 7]).is_err()); // beyond 254
        assert!(remaining_len(&[0, 1, 0, 0, 0xFF, 0xFF, 7]).is_err());
    }

    #[test]
    fn truncated_replies_are_errors() {
        let reply = adu(&[3, 4, 0, 1, 0, 2]);
        for len in 0..reply.len() {
            assert!(
                decode_response(&REQUEST, &reply[..len]).is_err(),
                "prefix {len}"
            );
        }
    }

    #[test]
    fn garbage_never_panics() {
        // Deterministic pseudo-random bytes (xorshift), all lengths up to 300.
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        for len in 0..300 {
            let garbage: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            let _ = decode_response(&REQUEST, &garbage);
            // Also behind a valid header, so the PDU checks see garbage too.
            let _ = decode_response(&REQUEST, &adu(&garbage));
            if let Some(header) = garbage.first_chunk::<HEADER_LEN>() {
                let _ = remaining_len(header);
            }
        }
    }
}
