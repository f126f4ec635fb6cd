//! Expected RAM (what the header should list now) against loaded RAM (what it lists), and
//! the online CPUs' note buffers against the header's `PT_NOTE`s.
use serde::Serialize;

use crate::model::{cpus::CpuNote, ranges::RamRanges};

/// How a loaded header's RAM differs from the RAM it should list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HeaderDiff {
    /// RAM the header does not list: it will be missing from the dump.
    pub missing: RamRanges,
    /// Header ranges that are not RAM any more: reading them can hang the dump.
    pub excess: RamRanges,
    pub missing_bytes: u64,
    pub excess_bytes: u64,
    /// Online CPUs whose `crash_notes` buffer has no `PT_NOTE`: their registers are lost.
    pub missing_cpu_notes: Vec<u32>,
}

impl HeaderDiff {
    pub fn stale(&self) -> bool {
        !self.missing.is_empty() || !self.excess.is_empty() || !self.missing_cpu_notes.is_empty()
    }
}

/// The CPUs of `expected` whose note buffer is at none of `note_addrs` (the header's
/// `PT_NOTE` addresses), in CPU order.
pub fn missing_cpu_notes(
    expected: impl IntoIterator<Item = CpuNote>,
    note_addrs: &[u64],
) -> Vec<u32> {
    expected
        .into_iter()
        .filter(|n| !note_addrs.contains(&n.paddr))
        .map(|n| n.cpu)
        .collect()
}

pub fn diff(expected: &RamRanges, loaded: &RamRanges) -> HeaderDiff {
    let missing = expected.subtract(loaded);
    let excess = loaded.subtract(expected);
    HeaderDiff {
        missing_bytes: missing.total_bytes(),
        excess_bytes: excess.total_bytes(),
        missing,
        excess,
        missing_cpu_notes: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        elfcorehdr::{ElfCoreHeader, HeaderInputs, NoteRegion, arch, build},
        ranges::tests::set,
    };
    use proptest::prelude::*;

    fn cpu(cpu: u32) -> CpuNote {
        CpuNote {
            cpu,
            paddr: 0x3fa1_8000 + 0x4_0000 * u64::from(cpu),
            size: 0x150,
        }
    }

    /// The header of a loader that listed `listed`, read back as a parser sees it.
    fn header_listing(listed: &[CpuNote]) -> ElfCoreHeader {
        let notes: Vec<NoteRegion> = listed.iter().map(CpuNote::region).collect();
        let ram = [crate::model::ranges::PhysRange::new(0x100000, 0x3fffffff).unwrap()];
        let bytes = build(&HeaderInputs {
            arch: crate::model::elfcorehdr::Arch::X86_64,
            cpu_notes: &notes,
            vmcoreinfo: NoteRegion {
                paddr: 0x100_0000,
                size: 1024,
            },
            kernel_text: None,
            ram: &ram,
            page_offset: arch::X86_64_DEFAULT_PAGE_OFFSET,
        })
        .unwrap();
        ElfCoreHeader::parse(&bytes).unwrap()
    }

    #[test]
    fn a_cpu_added_after_the_load_has_no_note() {
        // Loaded with CPU 0 (6.1, kexec -s -p); CPU 1 hot-added and onlined since.
        let h = header_listing(&[cpu(0)]);
        assert_eq!(missing_cpu_notes([cpu(0), cpu(1)], &h.note_addrs()), [1]);
        let d = HeaderDiff {
            missing_cpu_notes: vec![1],
            ..diff(&h.ram_ranges(), &h.ram_ranges())
        };
        assert!(
            d.stale() && d.missing_bytes == 0,
            "a missing CPU note alone is stale"
        );
        // The vmcoreinfo note is never taken for a CPU's.
        let vmcoreinfo = CpuNote {
            cpu: 7,
            paddr: 0x100_0000,
            size: 0x150,
        };
        assert_eq!(
            missing_cpu_notes([vmcoreinfo], &h.note_addrs()),
            Vec::<u32>::new()
        );
    }

    proptest! {
        /// A header listing a subset of the online CPUs misses exactly the others.
        #[test]
        fn exactly_the_unlisted_cpus_are_missing(online in 1u32..64, listed_mask in any::<u64>()) {
            let all: Vec<CpuNote> = (0..online).map(cpu).collect();
            let listed: Vec<CpuNote> = all.iter().filter(|n| listed_mask >> n.cpu & 1 == 1).copied().collect();
            let h = header_listing(&listed);
            let want: Vec<u32> = all.iter().filter(|n| listed_mask >> n.cpu & 1 == 0).map(|n| n.cpu).collect();
            prop_assert_eq!(missing_cpu_notes(all, &h.note_addrs()), want);
        }
    }

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
