//! Read planning: done once at configure time, so a poll only replays it.
//!
//! Tags of a group are coalesced into as few requests as possible: tags on
//! the same slave and area whose bits or registers are at most `max_gap`
//! apart share one request, as long as it stays within the protocol's
//! per-read limit (125 registers, 2000 bits). Reading a few unused
//! registers is much cheaper than another round trip.

use crate::address::{Area, TagSpec};
use crate::frame::{MAX_READ_BITS, MAX_READ_REGISTERS};

/// One request of a plan and the tags it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedRead {
    pub slave: u8,
    pub area: Area,
    pub start: u16,
    pub count: u16,
    pub tags: Vec<TagSpec>,
}

impl PlannedRead {
    /// One past the last bit or register read, widened so `65535 + 1` fits.
    fn end(&self) -> u32 {
        u32::from(self.start) + u32::from(self.count)
    }

    /// The cells of `tag` within this read's cells (one per bit, or two
    /// per register).
    pub fn cells_of<'c>(&self, tag: &TagSpec, cells: &'c [u8]) -> &'c [u8] {
        let per_unit = if self.area.holds_bits() { 1 } else { 2 };
        let first = usize::from(tag.offset - self.start) * per_unit;
        &cells[first..first + usize::from(tag.layout.width()) * per_unit]
    }

    /// Extends this read to cover `tag` if that keeps it on one slave and
    /// area, within `max_gap` unused units and the per-read limit.
    fn try_absorb(&mut self, tag: TagSpec, max_gap: u16) -> Result<(), TagSpec> {
        let new_end = self.end().max(tag.end());
        let mergeable = tag.slave == self.slave
            && tag.area == self.area
            && u32::from(tag.offset) <= self.end() + u32::from(max_gap)
            && new_end - u32::from(self.start) <= u32::from(read_limit(self.area));
        if !mergeable {
            return Err(tag);
        }
        // Fits in u16: bounded by the read limit just above.
        self.count = (new_end - u32::from(self.start)) as u16;
        self.tags.push(tag);
        Ok(())
    }
}

fn read_limit(area: Area) -> u16 {
    if area.holds_bits() {
        MAX_READ_BITS
    } else {
        MAX_READ_REGISTERS
    }
}

/// Plans the reads for one group's tags.
pub fn plan_group(mut tags: Vec<TagSpec>, max_gap: u16) -> Vec<PlannedRead> {
    tags.sort_by_key(|tag| (tag.slave, tag.area, tag.offset));
    let mut reads: Vec<PlannedRead> = Vec::new();
    for tag in tags {
        let tag = match reads.last_mut() {
            Some(read) => match read.try_absorb(tag, max_gap) {
                Ok(()) => continue,
                Err(tag) => tag,
            },
            None => tag,
        };
        reads.push(PlannedRead {
            slave: tag.slave,
            area: tag.area,
            start: tag.offset,
            count: tag.layout.width(),
            tags: vec![tag],
        });
    }
    reads
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{BitStyle, ByteOrder, Layout, Number};

    fn tag(name: &str, slave: u8, area: Area, offset: u16) -> TagSpec {
        let layout = if area.holds_bits() {
            Layout::Bit(BitStyle::Bit)
        } else {
            Layout::Number(Number::Int16, ByteOrder::default())
        };
        TagSpec {
            name: name.to_string(),
            slave,
            area,
            offset,
            layout,
            writable: false,
        }
    }

    fn shape(reads: &[PlannedRead]) -> Vec<(u8, Area, u16, u16, Vec<&str>)> {
        reads
            .iter()
            .map(|read| {
                let names = read.tags.iter().map(|tag| tag.name.as_str()).collect();
                (read.slave, read.area, read.start, read.count, names)
            })
            .collect()
    }

    use Area::{Coil, DiscreteInput, HoldingRegister as Holding, InputRegister as Input};

    #[test]
    fn coalesces_contiguous_and_near_registers() {
        let tags = vec![
            tag("c", 1, Holding, 20),
            tag("a", 1, Holding, 0),
            tag("b", 1, Holding, 1),
        ];
        let reads = plan_group(tags, 19);
        assert_eq!(
            shape(&reads),
            vec![(1, Holding, 0, 21, vec!["a", "b", "c"])]
        );
    }

    #[test]
    fn wide_values_extend_the_read() {
        let mut double = tag("d", 1, Holding, 2);
        double.layout = Layout::Number(Number::Double, ByteOrder::default());
        let reads = plan_group(vec![tag("a", 1, Holding, 0), double], 1);
        assert_eq!(shape(&reads), vec![(1, Holding, 0, 6, vec!["a", "d"])]);
        let cells: Vec<u8> = (0..12).collect();
        assert_eq!(reads[0].cells_of(&reads[0].tags[1], &cells), &cells[4..12]);
    }

    #[test]
    fn splits_on_large_gaps() {
        let tags = vec![tag("a", 1, Holding, 0), tag("b", 1, Holding, 18)];
        let reads = plan_group(tags, 16);
        assert_eq!(
            shape(&reads),
            vec![
                (1, Holding, 0, 1, vec!["a"]),
                (1, Holding, 18, 1, vec!["b"])
            ]
        );
    }

    #[test]
    fn gap_limit_is_inclusive() {
        // Registers 1..=16 unused between the two tags: exactly max_gap.
        let reads = plan_group(vec![tag("a", 1, Holding, 0), tag("b", 1, Holding, 17)], 16);
        assert_eq!(shape(&reads), vec![(1, Holding, 0, 18, vec!["a", "b"])]);
    }

    #[test]
    fn never_mixes_slaves_or_areas() {
        let tags = vec![
            tag("a", 1, Holding, 0),
            tag("b", 2, Holding, 1),
            tag("c", 1, Input, 1),
            tag("d", 1, Coil, 1),
            tag("e", 1, DiscreteInput, 1),
        ];
        let reads = plan_group(tags, 16);
        assert_eq!(
            shape(&reads),
            vec![
                (1, Coil, 1, 1, vec!["d"]),
                (1, DiscreteInput, 1, 1, vec!["e"]),
                (1, Input, 1, 1, vec!["c"]),
                (1, Holding, 0, 1, vec!["a"]),
                (2, Holding, 1, 1, vec!["b"]),
            ]
        );
    }

    #[test]
    fn respects_the_per_read_limits() {
        let spans = |area| {
            let tags = (0..=4100).map(|offset| tag("t", 1, area, offset)).collect();
            plan_group(tags, 16)
                .iter()
                .map(|read| (read.start, read.count))
                .take(3)
                .collect::<Vec<_>>()
        };
        assert_eq!(spans(Holding), vec![(0, 125), (125, 125), (250, 125)]);
        assert_eq!(spans(Coil), vec![(0, 2000), (2000, 2000), (4000, 101)]);
    }

    #[test]
    fn duplicate_addresses_share_a_register() {
        let reads = plan_group(vec![tag("a", 1, Holding, 5), tag("b", 1, Holding, 5)], 0);
        assert_eq!(shape(&reads), vec![(1, Holding, 5, 1, vec!["a", "b"])]);
    }

    #[test]
    fn last_register_of_the_address_space() {
        let reads = plan_group(
            vec![tag("a", 1, Holding, 65534), tag("b", 1, Holding, 65535)],
            0,
        );
        assert_eq!(shape(&reads), vec![(1, Holding, 65534, 2, vec!["a", "b"])]);
    }
}
