//! Expected RAM (what the header should list now) against loaded RAM (what it lists).
use serde::Serialize;

use crate::model::ranges::RamRanges;

/// How a loaded header's RAM differs from the RAM it should list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HeaderDiff {
    /// RAM the header does not list: it will be missing from the dump.
    pub missing: RamRanges,
    /// Header ranges that are not RAM any more: reading them can hang the dump.
    pub excess: RamRanges,
    pub missing_bytes: u64,
    pub excess_bytes: u64,
}

impl HeaderDiff {
    pub fn stale(&self) -> bool {
        !self.missing.is_empty() || !self.excess.is_empty()
    }
}

pub fn diff(expected: &RamRanges, loaded: &RamRanges) -> HeaderDiff {
    let missing = expected.subtract(loaded);
    let excess = loaded.subtract(expected);
    HeaderDiff {
        missing_bytes: missing.total_bytes(),
        excess_bytes: excess.total_bytes(),
        missing,
        excess,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ranges::tests::set;

    #[test]
    fn fresh_header_diffs_to_zero() {
        let ram = set(&[(0x100000, 0x7fffffff)]);
        let d = diff(&ram, &ram);
        assert!(!d.stale());
        assert_eq!((d.missing_bytes, d.excess_bytes), (0, 0));
    }

    #[test]
    fn hot_added_dimm_is_missing_and_removed_one_is_excess() {
        let loaded = set(&[(0x100000, 0x7fffffff), (0x1_0000_0000, 0x1_3fff_ffff)]);
        let expected = set(&[(0x100000, 0x7fffffff), (0x1_4000_0000, 0x1_5fff_ffff)]);
        let d = diff(&expected, &loaded);
        assert!(d.stale());
        assert_eq!(d.missing_bytes, 512 << 20);
        assert_eq!(d.excess_bytes, 1 << 30);
        assert_eq!(d.missing, set(&[(0x1_4000_0000, 0x1_5fff_ffff)]));
    }
}
