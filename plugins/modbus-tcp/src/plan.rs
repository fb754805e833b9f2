//! Read planning: done once at configure time, so a poll only replays it.
//!
//! Tags of a group are coalesced into as few requests as possible: tags on
//! the same slave and register table whose registers are at most `max_gap`
//! apart share one request, as long as it stays within
//! [`MAX_REGISTERS_PER_READ`]. Reading a few unused registers is much
//! cheaper than another round trip.

use crate::address::{RegisterTable, RegisterTag};
use crate::frame::MAX_REGISTERS_PER_READ;

/// One request of a plan and the tags it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedRead {
    pub slave: u8,
    pub table: RegisterTable,
    pub start: u16,
    pub count: u16,
    pub tags: Vec<RegisterTag>,
}

impl PlannedRead {
    /// One past the last register read, widened so `65535 + 1` fits.
    fn end(&self) -> u32 {
        u32::from(self.start) + u32::from(self.count)
    }

    /// Extends this read to cover `tag` if that keeps it on one slave and
    /// table, within `max_gap` unused registers and the per-read limit.
    fn try_absorb(&mut self, tag: RegisterTag, max_gap: u16) -> Result<(), RegisterTag> {
        let tag_end = u32::from(tag.offset) + u32::from(tag.data_type.register_count());
        let new_end = self.end().max(tag_end);
        let mergeable = tag.slave == self.slave
            && tag.table == self.table
            && u32::from(tag.offset) <= self.end() + u32::from(max_gap)
            && new_end - u32::from(self.start) <= u32::from(MAX_REGISTERS_PER_READ);
        if !mergeable {
            return Err(tag);
        }
        // Fits in u16: bounded by MAX_REGISTERS_PER_READ just above.
        self.count = (new_end - u32::from(self.start)) as u16;
        self.tags.push(tag);
        Ok(())
    }
}

/// Plans the reads for one group's tags.
pub fn plan_group(mut tags: Vec<RegisterTag>, max_gap: u16) -> Vec<PlannedRead> {
    tags.sort_by_key(|tag| (tag.slave, tag.table, tag.offset));
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
            table: tag.table,
            start: tag.offset,
            count: tag.data_type.register_count(),
            tags: vec![tag],
        });
    }
    reads
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::DataType;

    fn tag(name: &str, slave: u8, table: RegisterTable, offset: u16) -> RegisterTag {
        RegisterTag {
            name: name.to_string(),
            slave,
            table,
            offset,
            data_type: DataType::Int16,
        }
    }

    fn shape(reads: &[PlannedRead]) -> Vec<(u8, RegisterTable, u16, u16, Vec<&str>)> {
        reads
            .iter()
            .map(|read| {
                let names = read.tags.iter().map(|tag| tag.name.as_str()).collect();
                (read.slave, read.table, read.start, read.count, names)
            })
            .collect()
    }

    use RegisterTable::{Holding, Input};

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
    fn never_mixes_slaves_or_tables() {
        let tags = vec![
            tag("a", 1, Holding, 0),
            tag("b", 2, Holding, 1),
            tag("c", 1, Input, 1),
        ];
        let reads = plan_group(tags, 16);
        assert_eq!(
            shape(&reads),
            vec![
                (1, Input, 1, 1, vec!["c"]),
                (1, Holding, 0, 1, vec!["a"]),
                (2, Holding, 1, 1, vec!["b"]),
            ]
        );
    }

    #[test]
    fn respects_the_per_read_limit() {
        let tags = (0..=300)
            .map(|offset| tag("t", 1, Holding, offset))
            .collect();
        let reads = plan_group(tags, 16);
        let spans: Vec<_> = reads.iter().map(|read| (read.start, read.count)).collect();
        assert_eq!(spans, vec![(0, 125), (125, 125), (250, 51)]);
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
