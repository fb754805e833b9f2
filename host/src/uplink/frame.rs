//! An uplink buffer record: the bus message's topic and payload together,
//! `u16 BE topic length | topic | payload`. The buffer itself stores opaque
//! payloads (sinks need no topic), so the framing lives here.

use bytes::{BufMut, Bytes, BytesMut};

/// A record for the buffer; MQTT topics are at most 65,535 bytes.
pub fn encode(topic: Bytes, payload: Bytes) -> Bytes {
    let len = u16::try_from(topic.len()).expect("an MQTT topic fits in 64 KiB");
    let mut record = BytesMut::with_capacity(2 + topic.len() + payload.len());
    record.put_u16(len);
    record.put_slice(&topic);
    record.put_slice(&payload);
    record.freeze()
}

/// (topic, payload) of a record written by [`encode`].
pub fn decode(record: &Bytes) -> Result<(String, Bytes), &'static str> {
    let (len, rest) = record
        .split_first_chunk::<2>()
        .ok_or("record shorter than its topic length")?;
    let len = usize::from(u16::from_be_bytes(*len));
    if rest.len() < len {
        return Err("record shorter than its topic");
    }
    let topic = std::str::from_utf8(&rest[..len]).map_err(|_| "topic is not UTF-8")?;
    Ok((topic.to_string(), record.slice(2 + len..)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_topic_and_payload() {
        for (topic, payload) in [
            ("/neuron/omh/line/g", &b"{\"values\":{}}"[..]),
            ("a", b""),
            ("", b"x"),
        ] {
            let record = encode(Bytes::from(topic), Bytes::copy_from_slice(payload));
            let (t, p) = decode(&record).unwrap();
            assert_eq!((t.as_str(), &p[..]), (topic, payload));
        }
    }

    #[test]
    fn rejects_records_cut_short() {
        let record = encode(Bytes::from("plant/line"), Bytes::from("42"));
        for cut in 0..12 {
            assert!(decode(&record.slice(..cut)).is_err(), "cut at {cut}");
        }
    }
}
