//! Physical memory range arithmetic: the set algebra behind "what RAM should the dump hold".
//!
//! Two models, because the kernel needs both:
//! - [`RamRanges`]: a canonical byte set (sorted, disjoint, adjacent ranges merged) for
//!   comparing what a header covers with what RAM exists.
//! - [`CrashMem`]: the kernel's `struct crash_mem`, an ordered list with a fixed capacity on
//!   which `crash_exclude_mem_range` trims and splits ranges one by one. The header builder uses
//!   it so that it emits exactly the `PT_LOAD`s the kernel emits (adjacent ranges stay apart).
//!
//! Pure logic: no I/O.
use std::fmt;

use serde::Serialize;

/// A physical byte range with an inclusive end, as `/proc/iomem` and the kernel's `struct range`
/// store it (so a range ending at `u64::MAX` is representable).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct PhysRange {
    pub start: u64,
    /// Last byte of the range (inclusive).
    pub end: u64,
}

impl PhysRange {
    /// `None` when `end < start`.
    pub fn new(start: u64, end: u64) -> Option<Self> {
        (start <= end).then_some(Self { start, end })
    }

    /// The range of `size` bytes at `start`; `None` when `size` is 0 or it would pass `u64::MAX`.
    pub fn from_start_size(start: u64, size: u64) -> Option<Self> {
        let end = start.checked_add(size.checked_sub(1)?)?;
        Some(Self { start, end })
    }

    /// Size in bytes; saturates at `u64::MAX` for the one range (0..=u64::MAX) that has 2^64.
    pub fn size(&self) -> u64 {
        (self.end - self.start).saturating_add(1)
    }

    pub fn contains(&self, addr: u64) -> bool {
        self.start <= addr && addr <= self.end
    }

    pub fn overlaps(&self, other: &PhysRange) -> bool {
        self.start <= other.end && other.start <= self.end
    }

    /// `other` lies entirely within `self`.
    pub fn encloses(&self, other: &PhysRange) -> bool {
        self.start <= other.start && other.end <= self.end
    }
}

impl fmt::Display for PhysRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#014x}-{:#014x}", self.start, self.end)
    }
}

/// A set of physical bytes in canonical form: sorted, disjoint, adjacent ranges merged, so two
/// sets are equal exactly when they hold the same bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct RamRanges {
    ranges: Vec<PhysRange>,
}

impl RamRanges {
    pub fn new() -> Self {
        Self::default()
    }

    /// Normalizes any list of ranges (unsorted, overlapping, adjacent) into a set.
    pub fn from_ranges(ranges: impl IntoIterator<Item = PhysRange>) -> Self {
        let mut sorted: Vec<PhysRange> = ranges.into_iter().collect();
        sorted.sort_unstable();
        let mut out: Vec<PhysRange> = Vec::with_capacity(sorted.len());
        for r in sorted {
            push_merged(&mut out, r);
        }
        Self { ranges: out }
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = &PhysRange> + '_ {
        self.ranges.iter()
    }

    pub fn as_slice(&self) -> &[PhysRange] {
        &self.ranges
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Number of maximal ranges in the set.
    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    /// Bytes in the set (saturating; only a set spanning all 2^64 addresses saturates).
    pub fn total_bytes(&self) -> u64 {
        self.ranges
            .iter()
            .fold(0u64, |sum, r| sum.saturating_add(r.size()))
    }

    pub fn contains(&self, addr: u64) -> bool {
        let i = self.ranges.partition_point(|r| r.end < addr);
        self.ranges.get(i).is_some_and(|r| r.contains(addr))
    }

    pub fn union(&self, other: &RamRanges) -> RamRanges {
        let mut out = Vec::with_capacity(self.ranges.len() + other.ranges.len());
        let (mut a, mut b) = (
            self.ranges.iter().peekable(),
            other.ranges.iter().peekable(),
        );
        loop {
            let next = match (a.peek(), b.peek()) {
                (Some(x), Some(y)) if x.start <= y.start => a.next(),
                (Some(_), Some(_)) => b.next(),
                (Some(_), None) => a.next(),
                (None, Some(_)) => b.next(),
                (None, None) => break,
            };
            push_merged(&mut out, *next.expect("peeked"));
        }
        RamRanges { ranges: out }
    }

    pub fn intersection(&self, other: &RamRanges) -> RamRanges {
        let mut out = Vec::new();
        let (mut i, mut j) = (0, 0);
        while i < self.ranges.len() && j < other.ranges.len() {
            let (x, y) = (self.ranges[i], other.ranges[j]);
            let start = x.start.max(y.start);
            let end = x.end.min(y.end);
            if start <= end {
                out.push(PhysRange { start, end });
            }
            if x.end < y.end {
                i += 1;
            } else {
                j += 1;
            }
        }
        RamRanges { ranges: out }
    }

    /// The bytes of `self` that are not in `other`.
    pub fn subtract(&self, other: &RamRanges) -> RamRanges {
        let mut out = Vec::with_capacity(self.ranges.len());
        let mut j = 0;
        for &r in &self.ranges {
            // Remainder of `r` not yet cut; `None` once it is used up.
            let mut rest = Some(r);
            while j < other.ranges.len() && other.ranges[j].end < r.start {
                j += 1;
            }
            let mut k = j;
            while let (Some(cur), Some(cut)) = (rest, other.ranges.get(k)) {
                if cut.start > cur.end {
                    break;
                }
                if cut.start > cur.start {
                    out.push(PhysRange {
                        start: cur.start,
                        end: cut.start - 1,
                    });
                }
                rest = (cut.end < cur.end).then(|| PhysRange {
                    start: cut.end + 1,
                    end: cur.end,
                });
                k += 1;
            }
            out.extend(rest);
        }
        RamRanges { ranges: out }
    }

    /// Removes one range (the set form of the kernel's `crash_exclude_mem_range`).
    pub fn exclude(&self, range: PhysRange) -> RamRanges {
        self.subtract(&RamRanges {
            ranges: vec![range],
        })
    }
}

impl FromIterator<PhysRange> for RamRanges {
    fn from_iter<I: IntoIterator<Item = PhysRange>>(iter: I) -> Self {
        Self::from_ranges(iter)
    }
}

/// Appends `r` (whose start is >= every start in `out`) merging overlap and adjacency.
fn push_merged(out: &mut Vec<PhysRange>, r: PhysRange) {
    if let Some(last) = out.last_mut()
        && r.start <= last.end.saturating_add(1)
    {
        last.end = last.end.max(r.end);
        return;
    }
    out.push(r);
}

/// `crash_exclude_mem_range` needed a split but the list was full (the kernel's -ENOMEM).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("excluding {range} splits a memory range but all {capacity} slots are in use")]
pub struct CapacityExceeded {
    pub range: PhysRange,
    pub capacity: usize,
}

/// The kernel's `struct crash_mem`: RAM ranges in ascending order with room for
/// `max_nr_ranges` entries. Unlike [`RamRanges`] it keeps adjacent ranges apart, because the
/// kernel emits one `PT_LOAD` per entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CrashMem {
    ranges: Vec<PhysRange>,
    max_nr_ranges: usize,
}

impl CrashMem {
    /// `ranges` as `walk_system_ram_res` reports them (ascending, disjoint).
    pub fn new(ranges: Vec<PhysRange>, max_nr_ranges: usize) -> Self {
        Self {
            ranges,
            max_nr_ranges,
        }
    }

    pub fn ranges(&self) -> &[PhysRange] {
        &self.ranges
    }

    pub fn max_nr_ranges(&self) -> usize {
        self.max_nr_ranges
    }

    /// `crash_exclude_mem_range(mem, range.start, range.end)`: trims every range the exclusion
    /// touches, drops the ones it covers, and splits the one it falls strictly inside, which
    /// needs a free slot. On error the list is unchanged (an exclusion strictly inside one range
    /// cannot touch any other, so nothing was trimmed before the failing split).
    pub fn exclude(&mut self, range: PhysRange) -> Result<(), CapacityExceeded> {
        let mut i = 0;
        while i < self.ranges.len() {
            let PhysRange { start, end } = self.ranges[i];
            if range.start > end {
                i += 1;
                continue;
            }
            // Ascending order: nothing further can overlap.
            if range.end < start {
                break;
            }
            let p_start = range.start.max(start);
            let p_end = range.end.min(end);
            if p_start == start && p_end == end {
                self.ranges.remove(i);
                continue;
            }
            if p_start > start && p_end < end {
                if self.ranges.len() >= self.max_nr_ranges {
                    return Err(CapacityExceeded {
                        range,
                        capacity: self.max_nr_ranges,
                    });
                }
                self.ranges[i].end = p_start - 1;
                self.ranges.insert(
                    i + 1,
                    PhysRange {
                        start: p_end + 1,
                        end,
                    },
                );
                i += 2;
                continue;
            }
            if p_start != start {
                self.ranges[i].end = p_start - 1;
            } else {
                self.ranges[i].start = p_end + 1;
            }
            i += 1;
        }
        Ok(())
    }

    /// The byte set this list covers.
    pub fn to_ram_ranges(&self) -> RamRanges {
        RamRanges::from_ranges(self.ranges.iter().copied())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    fn r(start: u64, end: u64) -> PhysRange {
        PhysRange::new(start, end).unwrap()
    }

    /// A set from inclusive `(start, end)` pairs; shared by the tests of every range user.
    pub(crate) fn set(v: &[(u64, u64)]) -> RamRanges {
        v.iter().map(|&(s, e)| r(s, e)).collect()
    }

    #[test]
    fn normalizes_unsorted_overlapping_and_adjacent() {
        let s = set(&[(100, 199), (0, 9), (10, 19), (150, 300), (400, 400)]);
        assert_eq!(s.as_slice(), &[r(0, 19), r(100, 300), r(400, 400)]);
        assert_eq!(s.total_bytes(), 20 + 201 + 1);
    }

    #[test]
    fn range_sizes_and_edges() {
        assert_eq!(r(0, u64::MAX).size(), u64::MAX);
        assert_eq!(PhysRange::from_start_size(0x1000, 0), None);
        assert_eq!(PhysRange::from_start_size(u64::MAX, 2), None);
        assert_eq!(
            PhysRange::from_start_size(0x1000, 0x1000),
            Some(r(0x1000, 0x1fff))
        );
        assert_eq!(PhysRange::new(2, 1), None);
        // Merging at the top of the address space must not overflow.
        assert_eq!(
            set(&[(u64::MAX - 1, u64::MAX), (0, u64::MAX)]).as_slice(),
            &[r(0, u64::MAX)]
        );
    }

    #[test]
    fn subtract_splits_trims_and_drops() {
        let ram = set(&[(0, 99), (200, 299), (400, 499)]);
        let cut = set(&[(50, 59), (250, 450)]);
        assert_eq!(
            ram.subtract(&cut).as_slice(),
            &[r(0, 49), r(60, 99), r(200, 249), r(451, 499)]
        );
        assert_eq!(ram.exclude(r(0, u64::MAX)), RamRanges::new());
    }

    #[test]
    fn crash_mem_exclusion_matches_the_kernel_cases() {
        // Split in the middle, trim a head, trim a tail, drop a whole range.
        let mut mem = CrashMem::new(vec![r(0x1000, 0x9ffff), r(0x100000, 0xbfffffff)], 5);
        mem.exclude(r(0, 0xfffff)).unwrap();
        assert_eq!(mem.ranges(), &[r(0x100000, 0xbfffffff)]);
        mem.exclude(r(0x3000000, 0x12fffffff)).unwrap();
        assert_eq!(mem.ranges(), &[r(0x100000, 0x2ffffff)]);
        mem.exclude(r(0x200000, 0x2fffff)).unwrap();
        assert_eq!(
            mem.ranges(),
            &[r(0x100000, 0x1fffff), r(0x300000, 0x2ffffff)]
        );
    }

    #[test]
    fn crash_mem_split_without_a_free_slot_is_enomem_and_changes_nothing() {
        // The thread's capacity case: max_nr_ranges == nr_ranges and a split is needed.
        let before = vec![r(1, 1000), r(1001, 2000)];
        let mut mem = CrashMem::new(before.clone(), 2);
        let err = mem.exclude(r(100, 200)).unwrap_err();
        assert_eq!(err.capacity, 2);
        assert_eq!(mem.ranges(), before.as_slice());
        // With one free slot the first split works and the second fails instead of
        // writing past the array (the out-of-bounds bug the kernel fixed).
        let mut mem = CrashMem::new(before, 3);
        mem.exclude(r(100, 200)).unwrap();
        assert!(mem.exclude(r(300, 400)).is_err());
        assert_eq!(mem.ranges(), &[r(1, 99), r(201, 1000), r(1001, 2000)]);
        // Trimming never needs a slot.
        let mut mem = CrashMem::new(vec![r(0, 9)], 1);
        mem.exclude(r(0, 4)).unwrap();
        assert_eq!(mem.ranges(), &[r(5, 9)]);
    }

    #[test]
    fn crash_mem_keeps_adjacent_ranges_apart() {
        let mem = CrashMem::new(vec![r(0, 9), r(10, 19)], 2);
        assert_eq!(mem.ranges().len(), 2);
        assert_eq!(mem.to_ram_ranges().as_slice(), &[r(0, 19)]);
    }

    fn arb_ranges(max_addr: u64) -> impl Strategy<Value = Vec<PhysRange>> {
        prop::collection::vec((0..max_addr, 0..max_addr / 4), 0..12).prop_map(move |v| {
            v.into_iter()
                .map(|(s, len)| r(s, s.saturating_add(len).min(max_addr)))
                .collect()
        })
    }

    fn is_canonical(s: &RamRanges) -> bool {
        s.as_slice()
            .windows(2)
            .all(|w| w[0].end < w[1].start && w[1].start - w[0].end > 1)
            && s.iter().all(|r| r.start <= r.end)
    }

    proptest! {
        #[test]
        fn set_algebra_invariants(a in arb_ranges(4096), b in arb_ranges(4096), probes in prop::collection::vec(0u64..4200, 32)) {
            let (sa, sb) = (RamRanges::from_ranges(a.clone()), RamRanges::from_ranges(b.clone()));
            let (u, i, d) = (sa.union(&sb), sa.intersection(&sb), sa.subtract(&sb));
            for s in [&sa, &sb, &u, &i, &d] {
                prop_assert!(is_canonical(s));
            }
            prop_assert_eq!(u.total_bytes() + i.total_bytes(), sa.total_bytes() + sb.total_bytes());
            prop_assert_eq!(d.total_bytes() + i.total_bytes(), sa.total_bytes());
            prop_assert!(d.intersection(&sb).is_empty());
            prop_assert_eq!(d.union(&i), sa.clone());
            prop_assert_eq!(sa.union(&sb), sb.union(&sa));
            prop_assert_eq!(sa.intersection(&sb), sb.intersection(&sa));
            for p in probes {
                let in_a = a.iter().any(|r| r.contains(p));
                let in_b = b.iter().any(|r| r.contains(p));
                prop_assert_eq!(sa.contains(p), in_a);
                prop_assert_eq!(u.contains(p), in_a || in_b);
                prop_assert_eq!(i.contains(p), in_a && in_b);
                prop_assert_eq!(d.contains(p), in_a && !in_b);
            }
        }

        #[test]
        fn crash_mem_exclusion_is_set_subtraction(ram in arb_ranges(1 << 20), cuts in arb_ranges(1 << 20)) {
            // crash_mem starts from disjoint ascending ranges, as walk_system_ram_res gives.
            let start: Vec<PhysRange> = RamRanges::from_ranges(ram).iter().copied().collect();
            let cap = start.len() + cuts.len();
            let mut mem = CrashMem::new(start.clone(), cap);
            let mut expected = RamRanges::from_ranges(start);
            for c in cuts {
                let before = mem.ranges().len();
                mem.exclude(c).unwrap();
                prop_assert!(mem.ranges().len() <= before + 1);
                prop_assert!(mem.ranges().windows(2).all(|w| w[0].end < w[1].start));
                expected = expected.exclude(c);
            }
            prop_assert_eq!(mem.to_ram_ranges(), expected);
        }

        #[test]
        fn crash_mem_only_fails_when_a_split_needs_a_slot(ram in arb_ranges(1 << 16), cut in (0u64..1 << 16, 0u64..1 << 14)) {
            let start: Vec<PhysRange> = RamRanges::from_ranges(ram).iter().copied().collect();
            let cut = r(cut.0, cut.0 + cut.1);
            let splits = start.iter().any(|x| cut.start > x.start && cut.end < x.end);
            let mut mem = CrashMem::new(start.clone(), start.len());
            match mem.exclude(cut) {
                Ok(()) => prop_assert!(!splits),
                Err(_) => {
                    prop_assert!(splits);
                    prop_assert_eq!(mem.ranges(), start.as_slice());
                }
            }
        }
    }
}
