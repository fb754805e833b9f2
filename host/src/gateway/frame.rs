//! Just enough MQTT framing for the gateway: split a byte stream into
//! packets without decoding them, and read the few fields the gateway acts
//! on. Full decoding (CONNECT, SUBSCRIBE, SUBACK) is left to rumqttd's own
//! codec, so both sides of the gateway agree on the wire format.

use bytes::{Buf, Bytes, BytesMut};
use rumqttd::protocol::{self, Packet, Protocol, v4, v5};

/// The MQTT revision a client speaks, from its CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V311,
    V5,
}

impl Version {
    pub fn read(self, frame: Bytes, max_size: usize) -> Result<Packet, protocol::Error> {
        let mut buffer = BytesMut::from(&frame[..]);
        match self {
            Version::V311 => v4::V4.read_mut(&mut buffer, max_size),
            Version::V5 => v5::V5.read_mut(&mut buffer, max_size),
        }
    }

    pub fn write(self, packet: Packet, out: &mut BytesMut) -> Result<usize, protocol::Error> {
        match self {
            Version::V311 => v4::V4.write(packet, out),
            Version::V5 => v5::V5.write(packet, out),
        }
    }
}

pub const CONNECT: u8 = 1;
pub const PUBLISH: u8 = 3;
pub const SUBSCRIBE: u8 = 8;
pub const SUBACK: u8 = 9;

/// Whether a client may send a packet of this type after its CONNECT.
/// The others (CONNACK, SUBACK, UNSUBACK, PINGRESP, reserved 0) are a
/// protocol error, and must never reach rumqttd: its MQTT 5 decoder hits
/// `unreachable!()` on some of them, and a panicked connection leaves a
/// broken will entry behind (see connection.rs).
pub fn client_may_send(packet_type: u8) -> bool {
    matches!(packet_type, 3..=8 | 10 | 12 | 14 | 15)
}

/// Takes the next whole packet off the front of `buffer`, or `None` if more
/// bytes are needed. A packet longer than `max_size` is an error, raised as
/// soon as its header is read (before its body is buffered).
pub fn next(buffer: &mut BytesMut, max_size: usize) -> Result<Option<Bytes>, protocol::Error> {
    // The fixed header is the same in 3.1.1 and 5.
    match v4::check(buffer.iter(), max_size) {
        Ok(header) => Ok(Some(buffer.split_to(header.frame_length()).freeze())),
        Err(protocol::Error::InsufficientBytes(_)) => Ok(None),
        Err(error) => Err(error),
    }
}

pub fn packet_type(frame: &[u8]) -> u8 {
    frame[0] >> 4
}

/// Where the variable header starts: after the type byte and the 1-4 bytes
/// of remaining length (each but the last has its top bit set).
fn body_start(frame: &[u8]) -> usize {
    1 + frame[1..]
        .iter()
        .position(|byte| byte & 0x80 == 0)
        .map_or(frame.len(), |i| i + 1)
}

/// The protocol level byte of a CONNECT (4 for 3.1.1, 5 for 5, 3 for 3.1).
pub fn connect_level(frame: &[u8]) -> Option<u8> {
    let mut body = frame.get(body_start(frame)..)?;
    if body.remaining() < 2 {
        return None;
    }
    let name_len = usize::from(body.get_u16());
    body.get(name_len).copied()
}

/// What the gateway needs of a PUBLISH: its topic (empty when an MQTT 5
/// client sends only a topic alias), QoS and packet id.
pub struct PublishHeader<'a> {
    pub topic: &'a str,
    pub qos: u8,
    pub pkid: u16,
    /// MQTT 5 only: whether the property length after the packet id is
    /// non-zero (only then can the PUBLISH carry a topic alias).
    pub has_properties: bool,
}

pub fn publish_header(frame: &[u8]) -> Option<PublishHeader<'_>> {
    let qos = (frame[0] >> 1) & 0b11;
    let body = frame.get(body_start(frame)..)?;
    let topic_len = usize::from(u16::from_be_bytes(body.get(..2)?.try_into().ok()?));
    let topic = std::str::from_utf8(body.get(2..2 + topic_len)?).ok()?;
    let after_topic = 2 + topic_len;
    let (pkid, properties_at) = if qos > 0 {
        let pkid = body.get(after_topic..after_topic + 2)?;
        (u16::from_be_bytes(pkid.try_into().ok()?), after_topic + 2)
    } else {
        (0, after_topic)
    };
    Some(PublishHeader {
        topic,
        qos,
        pkid,
        has_properties: body.get(properties_at).is_some_and(|&length| length != 0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(version: Version, packet: Packet) -> BytesMut {
        let mut out = BytesMut::new();
        version.write(packet, &mut out).unwrap();
        out
    }

    #[test]
    fn splits_a_stream_into_packets_and_waits_for_partial_ones() {
        // PUBLISH, QoS 1, topic "a/b", packet id 7, payload "x".
        let one = BytesMut::from(&[0x32, 8, 0, 3, b'a', b'/', b'b', 0, 7, b'x'][..]);
        let mut stream = BytesMut::new();
        stream.extend_from_slice(&one);
        stream.extend_from_slice(&one[..3]);
        let frame = next(&mut stream, 1024).unwrap().unwrap();
        assert_eq!(frame, one.freeze());
        assert_eq!(next(&mut stream, 1024).unwrap(), None);
        assert_eq!(stream.len(), 3);
        let header = publish_header(&frame).unwrap();
        assert_eq!((header.topic, header.qos, header.pkid), ("a/b", 1, 7));
    }

    #[test]
    fn refuses_an_oversized_packet_from_its_header() {
        // PUBLISH announcing 100 MB of body.
        let mut stream = BytesMut::from(&[0x30, 0x80, 0x80, 0x80, 0x30][..]);
        assert!(next(&mut stream, 1 << 20).is_err());
    }

    /// Every function the gateway runs on a client's bytes, including
    /// rumqttd's decoder (a panic there would end only that connection's
    /// task, but should not happen at all).
    fn take_apart(buffer: &mut BytesMut, max: usize) {
        while let Ok(Some(frame)) = next(buffer, max) {
            let kind = packet_type(&frame);
            let _ = connect_level(&frame);
            let _ = publish_header(&frame);
            // What the gateway decodes: CONNECT, and PUBLISH and SUBSCRIBE
            // among the packets a client may send.
            if kind == CONNECT || (client_may_send(kind) && matches!(kind, PUBLISH | SUBSCRIBE)) {
                for version in [Version::V311, Version::V5] {
                    let _ = version.read(frame.clone(), max);
                }
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_are_refused_without_panicking(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600),
            max in 0usize..1024,
        ) {
            take_apart(&mut BytesMut::from(&bytes[..]), max);
        }

        /// Well-framed packets with arbitrary bodies get past the framing
        /// into the decoders.
        #[test]
        fn arbitrary_bodies_are_refused_without_panicking(
            first in proptest::num::u8::ANY,
            body in proptest::collection::vec(proptest::num::u8::ANY, 0..300),
        ) {
            let mut buffer = BytesMut::from(&[first][..]);
            v4::write_remaining_length(&mut buffer, body.len()).unwrap();
            buffer.extend_from_slice(&body);
            take_apart(&mut buffer, 1024);
        }
    }

    #[test]
    fn reads_the_protocol_level_of_a_connect() {
        for (version, level) in [(Version::V311, 4), (Version::V5, 5)] {
            let connect = rumqttd::protocol::Connect {
                keep_alive: 10,
                client_id: "c".into(),
                clean_session: true,
            };
            let frame = encoded(version, Packet::Connect(connect, None, None, None, None));
            assert_eq!(packet_type(&frame), CONNECT);
            assert_eq!(connect_level(&frame), Some(level));
        }
    }
}
