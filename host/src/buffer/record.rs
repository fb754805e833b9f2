//! The on-disk record of the store-and-forward buffer:
//!
//! ```text
//! u32 LE payload length | u32 LE CRC-32 of (seq ‖ payload) | u64 LE seq | payload
//! ```
//!
//! The CRC covers the sequence number too, so a record torn by a crash
//! mid-write, or bytes rotted on disk, are recognised and never replayed.

use bytes::Bytes;
use std::io::{self, Read};

pub const HEADER_LEN: usize = 16;
/// Far above any MQTT payload the broker accepts; a larger length field is
/// corruption, not a record.
const MAX_PAYLOAD: u32 = 256 << 20;

pub fn encode(seq: u64, payload: &[u8], out: &mut Vec<u8>) {
    let len = u32::try_from(payload.len()).expect("payload larger than 4 GiB");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&checksum(seq, payload).to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(payload);
}

#[derive(Debug, PartialEq)]
pub enum Decoded {
    Record {
        seq: u64,
        payload: Bytes,
    },
    /// Clean end of the file.
    End,
    /// A partial or corrupt record: everything from here on is unusable.
    Torn(&'static str),
}

pub fn decode(input: &mut impl Read) -> io::Result<Decoded> {
    let mut header = [0u8; HEADER_LEN];
    match read_full(input, &mut header)? {
        0 => return Ok(Decoded::End),
        n if n < HEADER_LEN => return Ok(Decoded::Torn("truncated header")),
        _ => {}
    }
    let len = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes"));
    let crc = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
    let seq = u64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));
    if len > MAX_PAYLOAD {
        return Ok(Decoded::Torn("impossible length"));
    }
    let mut payload = vec![0u8; len as usize];
    if read_full(input, &mut payload)? < payload.len() {
        return Ok(Decoded::Torn("truncated payload"));
    }
    if checksum(seq, &payload) != crc {
        return Ok(Decoded::Torn("checksum mismatch"));
    }
    Ok(Decoded::Record {
        seq,
        payload: payload.into(),
    })
}

fn checksum(seq: u64, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&seq.to_le_bytes());
    hasher.update(payload);
    hasher.finalize()
}

/// Like `read_exact`, but says how much it got instead of failing at EOF.
fn read_full(input: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(records: &[(u64, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (seq, payload) in records {
            encode(*seq, payload, &mut out);
        }
        out
    }

    #[test]
    fn round_trips_records_then_ends() {
        let bytes = encoded(&[(1, b"first"), (2, b""), (3, b"third")]);
        let mut input = bytes.as_slice();
        for (seq, payload) in [(1, "first"), (2, ""), (3, "third")] {
            assert_eq!(
                decode(&mut input).unwrap(),
                Decoded::Record {
                    seq,
                    payload: Bytes::from(payload)
                }
            );
        }
        assert_eq!(decode(&mut input).unwrap(), Decoded::End);
    }

    #[test]
    fn every_truncation_and_every_flipped_bit_is_torn() {
        let bytes = encoded(&[(7, b"{\"values\":{}}")]);
        for cut in 1..bytes.len() {
            let result = decode(&mut &bytes[..cut]).unwrap();
            assert!(
                matches!(result, Decoded::Torn(_)),
                "cut at {cut}: {result:?}"
            );
        }
        for bit in 0..bytes.len() * 8 {
            let mut damaged = bytes.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            let result = decode(&mut damaged.as_slice()).unwrap();
            assert!(matches!(result, Decoded::Torn(_)), "bit {bit}: {result:?}");
        }
    }
}
