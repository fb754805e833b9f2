//! What is on its way upstream: the bounded window of buffer records
//! published and not yet acknowledged, and which packet id carries which.
//!
//! The buffer is acked only up to the last record before the oldest one
//! still unacknowledged, so a crash or an outage never loses a record, and
//! what is replayed is always a suffix of what was sent, in order.

use bytes::Bytes;
use std::collections::{HashMap, VecDeque};

/// A publish's content, tracked from request to PUBACK.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Tag {
    /// A buffer record, by sequence number.
    Record(u64),
    /// The host's status message.
    Status,
}

struct Entry {
    seq: u64,
    record: Bytes,
    delivered: bool,
}

/// Records read from the buffer and not yet delivered, oldest first.
pub struct Window {
    entries: VecDeque<Entry>,
    capacity: usize,
}

impl Window {
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: VecDeque::with_capacity(capacity),
            capacity,
        }
    }

    /// How many more records may be sent before the oldest is delivered.
    pub fn room(&self) -> usize {
        self.capacity - self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn push(&mut self, seq: u64, record: Bytes) {
        debug_assert!(self.room() > 0, "window overfilled");
        self.entries.push_back(Entry {
            seq,
            record,
            delivered: false,
        });
    }

    /// Marks `seq` delivered. Returns the last sequence number of the
    /// records now delivered without a gap, and how many they are, when
    /// that moved.
    pub fn delivered(&mut self, seq: u64) -> Option<(u64, u64)> {
        if let Some(entry) = self.entries.iter_mut().find(|e| e.seq == seq) {
            entry.delivered = true;
        }
        let mut done = None;
        while self.entries.front().is_some_and(|e| e.delivered) {
            let entry = self.entries.pop_front().expect("front exists");
            done = Some((entry.seq, done.map_or(1, |(_, n)| n + 1)));
        }
        done
    }

    /// Every record of the window, to send again on a new connection: with
    /// a clean session, whatever was not acknowledged is resent in order.
    pub fn resend(&mut self) -> impl Iterator<Item = (u64, &Bytes)> {
        self.entries.iter_mut().map(|e| {
            e.delivered = false;
            (e.seq, &e.record)
        })
    }
}

/// One connection's packets: publishes handed to the client, in order,
/// until it reports the packet id it gave each, then until their PUBACK.
#[derive(Default)]
pub struct Inflight {
    requested: VecDeque<Tag>,
    by_pkid: HashMap<u16, Tag>,
}

impl Inflight {
    /// A publish was handed to the client.
    pub fn requested(&mut self, tag: Tag) {
        self.requested.push_back(tag);
    }

    /// The client wrote the next publish with `pkid` (0 for QoS 0, which is
    /// done once written: returned then).
    pub fn written(&mut self, pkid: u16) -> Option<Tag> {
        let tag = self.requested.pop_front()?;
        if pkid == 0 {
            return Some(tag);
        }
        self.by_pkid.insert(pkid, tag);
        None
    }

    /// The broker acknowledged `pkid`.
    pub fn acked(&mut self, pkid: u16) -> Option<Tag> {
        self.by_pkid.remove(&pkid)
    }

    /// Everything handed to the client is written and acknowledged.
    pub fn settled(&self) -> bool {
        self.requested.is_empty() && self.by_pkid.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window_of(seqs: std::ops::RangeInclusive<u64>) -> Window {
        let mut window = Window::new(4);
        for seq in seqs {
            window.push(seq, Bytes::new());
        }
        window
    }

    #[test]
    fn acks_only_up_to_the_oldest_undelivered_record() {
        let mut window = window_of(1..=4);
        assert_eq!(window.room(), 0);
        assert_eq!(window.delivered(2), None);
        assert_eq!(window.delivered(3), None);
        assert_eq!(window.delivered(1), Some((3, 3)));
        assert_eq!(window.room(), 3);
        assert_eq!(window.delivered(4), Some((4, 1)));
        assert!(window.is_empty());
    }

    #[test]
    fn a_new_connection_resends_everything_undelivered_in_order() {
        let mut window = window_of(5..=8);
        window.delivered(5);
        window.delivered(7);
        let resent: Vec<u64> = window.resend().map(|(seq, _)| seq).collect();
        assert_eq!(resent, [6, 7, 8]);
        // 7's earlier acknowledgement belonged to the old connection.
        assert_eq!(window.delivered(6), Some((6, 1)));
    }

    #[test]
    fn packet_ids_map_back_to_records() {
        let mut inflight = Inflight::default();
        inflight.requested(Tag::Status);
        inflight.requested(Tag::Record(10));
        inflight.requested(Tag::Record(11));
        assert_eq!(inflight.written(1), None);
        assert_eq!(inflight.written(2), None);
        assert_eq!(inflight.written(0), Some(Tag::Record(11)));
        assert_eq!(inflight.acked(2), Some(Tag::Record(10)));
        assert_eq!(inflight.acked(1), Some(Tag::Status));
        assert_eq!(inflight.acked(1), None);
        assert!(inflight.settled());
    }
}
