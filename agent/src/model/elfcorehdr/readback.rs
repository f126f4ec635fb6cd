//! Finding the loaded elfcorehdr in the crash reservation through `/proc/kcore`: map physical
//! pages to kcore file offsets, pick the `ET_CORE` page heads, and decide between candidates.
//! Pure: the caller reads the bytes.
use goblin::{
    container::{Container, Ctx},
    elf::{
        header::{self, ELFCLASS64, ELFDATA2LSB, ELFMAG, ET_CORE, Header},
        program_header::{PT_LOAD, ProgramHeader},
    },
};
use scroll::Pread;

use super::{ElfCoreHeader, KernelText, MAX_HEADER_BYTES, Segment, SegmentKind};
use crate::model::ranges::PhysRange;

/// The reservation is scanned one page at a time: loaders place segments page-aligned.
pub const PAGE_SIZE: u64 = 4096;
/// How much of each page is read: an ELF64 header.
pub const PAGE_HEAD: usize = 64;

/// One `PT_LOAD` of `/proc/kcore` that has a physical address (the direct map, kernel text).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KcoreSegment {
    pub paddr: u64,
    pub size: u64,
    pub offset: u64,
}

/// The physical-to-file map of `/proc/kcore`, from its ELF program headers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KcoreMap {
    segments: Vec<KcoreSegment>,
    /// `p_vaddr - p_paddr` of the first direct-map `PT_LOAD`: the shift of every RAM
    /// address into the direct map (arm64: `PAGE_OFFSET - PHYS_OFFSET`).
    direct_map_offset: Option<u64>,
    /// The kernel-text `PT_LOAD` (`KCORE_TEXT`: `_text`, `__pa_symbol(_text)`, `_end - _text`).
    kernel_text: Option<KernelText>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KcoreError {
    #[error("not an ELF64 little-endian file (ident {0:02x?})")]
    NotElf64([u8; 6]),
    #[error("its ELF header says the program headers end at byte {0}, past {MAX_HEADER_BYTES}")]
    TooLarge(u128),
    #[error("{need} bytes of ELF and program headers needed, {len} read")]
    Truncated { need: u128, len: usize },
    #[error("malformed ELF header: {0}")]
    Malformed(String),
}

/// Bytes from the start of an ELF64 file to the end of its program headers, from its first
/// [`PAGE_HEAD`] bytes: how much to read before parsing it.
pub fn header_span(head: &[u8]) -> Result<usize, KcoreError> {
    let ident = head.get(..header::SIZEOF_IDENT).unwrap_or(head);
    let mut shown = [0; 6];
    for (s, b) in shown.iter_mut().zip(ident) {
        *s = *b;
    }
    if ident.len() < header::SIZEOF_IDENT
        || &ident[..header::SELFMAG] != ELFMAG
        || ident[header::EI_CLASS] != ELFCLASS64
        || ident[header::EI_DATA] != ELFDATA2LSB
    {
        return Err(KcoreError::NotElf64(shown));
    }
    let ehdr: Header = head
        .pread(0)
        .map_err(|e: goblin::error::Error| KcoreError::Malformed(e.to_string()))?;
    let end = u128::from(ehdr.e_phoff) + u128::from(ehdr.e_phnum) * u128::from(ehdr.e_phentsize);
    let end = end.max(PAGE_HEAD as u128);
    if end > MAX_HEADER_BYTES as u128 {
        return Err(KcoreError::TooLarge(end));
    }
    Ok(end as usize)
}

/// Whether a page starts with a 64-bit little-endian `ET_CORE` ELF header.
pub fn is_core_head(head: &[u8]) -> bool {
    head.len() >= 18
        && &head[..header::SELFMAG] == ELFMAG
        && head[header::EI_CLASS] == ELFCLASS64
        && head[header::EI_DATA] == ELFDATA2LSB
        && u16::from_le_bytes([head[16], head[17]]) == ET_CORE
}

impl KcoreMap {
    /// Parses the ELF header and program headers at the start of `/proc/kcore` (the first
    /// [`header_span`] bytes). Segments without a physical address (`p_paddr` -1: vmalloc,
    /// modules, vmemmap) are left out.
    pub fn parse(bytes: &[u8]) -> Result<KcoreMap, KcoreError> {
        let need = header_span(bytes)?;
        if bytes.len() < need {
            return Err(KcoreError::Truncated {
                need: need as u128,
                len: bytes.len(),
            });
        }
        let ehdr: Header = bytes
            .pread(0)
            .map_err(|e: goblin::error::Error| KcoreError::Malformed(e.to_string()))?;
        if ehdr.e_phnum > 0
            && usize::from(ehdr.e_phentsize) != goblin::elf64::program_header::SIZEOF_PHDR
        {
            return Err(KcoreError::Malformed(format!(
                "e_phentsize {} is not 56",
                ehdr.e_phentsize
            )));
        }
        let phdrs = ProgramHeader::parse(
            bytes,
            ehdr.e_phoff as usize,
            usize::from(ehdr.e_phnum),
            Ctx::new(Container::Big, scroll::LE),
        )
        .map_err(|e| KcoreError::Malformed(e.to_string()))?;
        let with_paddr = || {
            phdrs
                .iter()
                .filter(|p| p.p_type == PT_LOAD && p.p_memsz > 0)
                .filter(|p| p.p_paddr.checked_add(p.p_memsz).is_some())
        };
        let segments = with_paddr()
            .map(|p| KcoreSegment {
                paddr: p.p_paddr,
                size: p.p_memsz,
                offset: p.p_offset,
            })
            .collect();
        let is_text = |p: &&ProgramHeader| super::arch::is_kernel_text(ehdr.e_machine, p.p_vaddr);
        let direct_map_offset = with_paddr()
            .find(|p| !is_text(p))
            .map(|p| p.p_vaddr.wrapping_sub(p.p_paddr));
        let kernel_text = with_paddr().find(is_text).map(|p| KernelText {
            vaddr: p.p_vaddr,
            paddr: p.p_paddr,
            size: p.p_memsz,
        });
        Ok(KcoreMap {
            segments,
            direct_map_offset,
            kernel_text,
        })
    }

    pub fn from_segments(segments: Vec<KcoreSegment>) -> KcoreMap {
        KcoreMap {
            segments,
            direct_map_offset: None,
            kernel_text: None,
        }
    }

    /// What a RAM address is shifted by in the direct map (`__va(0)`), when kcore shows it.
    pub fn direct_map_offset(&self) -> Option<u64> {
        self.direct_map_offset
    }

    /// Where the kernel image is mapped, when kcore shows it.
    pub fn kernel_text(&self) -> Option<KernelText> {
        self.kernel_text
    }

    pub fn segments(&self) -> &[KcoreSegment] {
        &self.segments
    }

    /// The file offset of `len` bytes at `paddr`, when one segment holds all of them.
    pub fn offset_of(&self, paddr: u64, len: u64) -> Option<u64> {
        let end = paddr.checked_add(len)?;
        self.segments
            .iter()
            .find(|s| s.paddr <= paddr && end <= s.paddr + s.size)
            .and_then(|s| s.offset.checked_add(paddr - s.paddr))
    }

    /// Every page of `reservation` with the kcore offset of its head, first page first.
    /// Errors with the first page no segment covers (arm64 unmaps the reservation).
    pub fn pages(&self, reservation: PhysRange) -> Result<Vec<PageAt>, Unmapped> {
        let first = reservation.start.next_multiple_of(PAGE_SIZE);
        let count = (reservation.end.saturating_add(1).saturating_sub(first)) / PAGE_SIZE;
        (0..count)
            .map(|i| {
                let paddr = first + i * PAGE_SIZE;
                self.offset_of(paddr, PAGE_HEAD as u64)
                    .map(|offset| PageAt { paddr, offset })
                    .ok_or(Unmapped {
                        reservation,
                        paddr,
                        covered: self.offset_of(first, PAGE_HEAD as u64).is_some(),
                    })
            })
            .collect()
    }
}

/// A page of the reservation and where its head is in `/proc/kcore`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageAt {
    pub paddr: u64,
    pub offset: u64,
}

/// Part of a reservation that `/proc/kcore` does not map.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "no PT_LOAD covers {paddr:#x} of the crash reservation {reservation}{}",
    if *covered { "" } else { " (the kernel unmapped the reservation after the load, as arm64's arch_kexec_protect_crashkres does)" }
)]
pub struct Unmapped {
    pub reservation: PhysRange,
    pub paddr: u64,
    /// Whether the reservation's first page is mapped (a partial map, not an unmapped one).
    pub covered: bool,
}

/// The bytes read at an `ET_CORE` page head: the header and its program headers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub paddr: u64,
    pub bytes: Vec<u8>,
}

/// A candidate that did not parse, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    pub paddr: u64,
    pub reason: String,
}

/// The header the kernel holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    pub paddr: u64,
    pub bytes: Vec<u8>,
    pub header: ElfCoreHeader,
    /// `ET_CORE` page heads seen, parsed or not.
    pub candidates: usize,
    /// Other addresses holding a header with the same RAM `PT_LOAD`s.
    pub duplicates: Vec<u64>,
    pub skipped: Vec<Skipped>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChooseError {
    #[error("no ELF core header (ET_CORE) in the crash reservation{}", skipped_note(.0))]
    NoHeader(Vec<Skipped>),
    #[error(
        "AMBIGUOUS: {} ELF core headers with different RAM PT_LOADs in the crash reservation, at {} \
         (bytes of an older load remain; none is picked)",
        .0.len(),
        .0.iter().map(|a| format!("{a:#x}")).collect::<Vec<_>>().join(", ")
    )]
    Ambiguous(Vec<u64>),
}

fn skipped_note(skipped: &[Skipped]) -> String {
    if skipped.is_empty() {
        return " (is a crash kernel loaded?)".into();
    }
    let each: Vec<String> = skipped
        .iter()
        .map(|s| format!("{:#x}: {}", s.paddr, s.reason))
        .collect();
    format!("; skipped {}", each.join("; "))
}

/// The RAM `PT_LOAD`s two headers are compared by (notes and kernel text move between loads).
fn ram_loads(header: &ElfCoreHeader) -> Vec<Segment> {
    header
        .segments
        .iter()
        .filter(|s| s.kind == SegmentKind::Ram)
        .map(|s| Segment { offset: 0, ..*s })
        .collect()
}

/// Parses every candidate and picks the header: several that agree on their RAM `PT_LOAD`s
/// are one (the first is kept), several that disagree are [`ChooseError::Ambiguous`].
pub fn choose(candidates: Vec<Candidate>) -> Result<Found, ChooseError> {
    let count = candidates.len();
    let mut skipped = Vec::new();
    let mut parsed: Vec<(Candidate, ElfCoreHeader)> = Vec::new();
    for c in candidates {
        match ElfCoreHeader::parse(&c.bytes) {
            Ok(h) if h.count(SegmentKind::Ram) == 0 => skipped.push(Skipped {
                paddr: c.paddr,
                reason: "no RAM PT_LOAD".into(),
            }),
            Ok(h) => parsed.push((c, h)),
            Err(e) => skipped.push(Skipped {
                paddr: c.paddr,
                reason: e.to_string(),
            }),
        }
    }
    let mut iter = parsed.into_iter();
    let Some((first, header)) = iter.next() else {
        return Err(ChooseError::NoHeader(skipped));
    };
    let ram = ram_loads(&header);
    let (same, other): (Vec<_>, Vec<_>) = iter.partition(|(_, h)| ram_loads(h) == ram);
    if !other.is_empty() {
        let mut all: Vec<u64> = std::iter::once(first.paddr)
            .chain(same.iter().chain(&other).map(|(c, _)| c.paddr))
            .collect();
        all.sort_unstable();
        return Err(ChooseError::Ambiguous(all));
    }
    Ok(Found {
        paddr: first.paddr,
        bytes: first.bytes,
        header,
        candidates: count,
        duplicates: same.into_iter().map(|(c, _)| c.paddr).collect(),
        skipped,
    })
}

#[cfg(test)]
mod tests {
    use goblin::elf64::{header::Header as H64, program_header::ProgramHeader as P64};
    use proptest::prelude::*;
    use scroll::Pwrite;

    use super::*;
    use crate::model::elfcorehdr::sample_header;

    /// A /proc/kcore head: a PT_NOTE, a vmalloc PT_LOAD (p_paddr -1), and direct-map loads.
    fn kcore(loads: &[(u64, u64, u64)]) -> Vec<u8> {
        let phnum = loads.len() + 2;
        let mut b = vec![0u8; 64 + phnum * 56];
        let mut e_ident = [0u8; 16];
        e_ident[..4].copy_from_slice(ELFMAG);
        e_ident[4] = ELFCLASS64;
        e_ident[5] = ELFDATA2LSB;
        let h = H64 {
            e_ident,
            e_type: ET_CORE,
            e_machine: header::EM_X86_64,
            e_phoff: 64,
            e_phentsize: 56,
            e_phnum: phnum as u16,
            ..H64::default()
        };
        b.pwrite_with(h, 0, scroll::LE).unwrap();
        let note = P64 {
            p_type: goblin::elf::program_header::PT_NOTE,
            ..P64::default()
        };
        b.pwrite_with(note, 64, scroll::LE).unwrap();
        let vmalloc = P64 {
            p_type: PT_LOAD,
            p_paddr: u64::MAX,
            p_memsz: 1 << 40,
            p_offset: 0x1000,
            ..P64::default()
        };
        b.pwrite_with(vmalloc, 64 + 56, scroll::LE).unwrap();
        for (i, &(paddr, size, offset)) in loads.iter().enumerate() {
            let p = P64 {
                p_type: PT_LOAD,
                p_paddr: paddr,
                p_memsz: size,
                p_filesz: size,
                p_offset: offset,
                ..P64::default()
            };
            b.pwrite_with(p, 64 + (i + 2) * 56, scroll::LE).unwrap();
        }
        b
    }

    fn r(start: u64, end: u64) -> PhysRange {
        PhysRange::new(start, end).unwrap()
    }

    #[test]
    fn kcore_map_tells_the_kernel_text_from_the_direct_map() {
        // arm64: the image above _PAGE_END(48), RAM in the linear map shifted by
        // PAGE_OFFSET - PHYS_OFFSET (here PHYS_OFFSET 0x4000_0000, randomised by 0x1234_0000).
        let mut b = kcore(&[
            (0x4020_0000, 0x250_0000, 0x1_0000),
            (0x4000_0000, 0x4000_0000, 0x2_0000),
        ]);
        b[18..20].copy_from_slice(&header::EM_AARCH64.to_le_bytes());
        let vaddr = |b: &mut Vec<u8>, i: usize, v: u64| {
            b[64 + (i + 2) * 56 + 16..][..8].copy_from_slice(&v.to_le_bytes())
        };
        vaddr(&mut b, 0, 0xffff_8000_8000_0000);
        let offset = 0xffff_0000_0000_0000u64 - 0x4000_0000 + 0x1234_0000;
        vaddr(&mut b, 1, offset.wrapping_add(0x4000_0000));
        let map = KcoreMap::parse(&b).unwrap();
        assert_eq!(map.direct_map_offset(), Some(offset));
        assert_eq!(
            map.kernel_text(),
            Some(KernelText {
                vaddr: 0xffff_8000_8000_0000,
                paddr: 0x4020_0000,
                size: 0x250_0000,
            })
        );
    }

    #[test]
    fn kcore_map_keeps_the_physical_loads() {
        let b = kcore(&[(0x10_0000, 0x7ff0_0000, 0x8000_0000_0000)]);
        assert_eq!(header_span(&b[..64]), Ok(b.len()));
        let map = KcoreMap::parse(&b).unwrap();
        assert_eq!(
            map.segments(),
            &[KcoreSegment {
                paddr: 0x10_0000,
                size: 0x7ff0_0000,
                offset: 0x8000_0000_0000
            }]
        );
        assert!(matches!(
            KcoreMap::parse(&b[..b.len() - 1]),
            Err(KcoreError::Truncated { .. })
        ));
        assert!(matches!(
            KcoreMap::parse(b"\x7fELF\x01\x01"),
            Err(KcoreError::NotElf64(_))
        ));
    }

    #[test]
    fn pages_cover_the_reservation_first_page_first() {
        let map = KcoreMap::from_segments(vec![KcoreSegment {
            paddr: 0x1000_0000,
            size: 0x1000_0000,
            offset: 0x10_0000,
        }]);
        let pages = map.pages(r(0x1800_0000, 0x1800_2fff)).unwrap();
        assert_eq!(
            pages,
            vec![
                PageAt {
                    paddr: 0x1800_0000,
                    offset: 0x810_0000
                },
                PageAt {
                    paddr: 0x1800_1000,
                    offset: 0x810_1000
                },
                PageAt {
                    paddr: 0x1800_2000,
                    offset: 0x810_2000
                },
            ]
        );
    }

    #[test]
    fn an_unmapped_reservation_says_so() {
        let map = KcoreMap::from_segments(vec![KcoreSegment {
            paddr: 0,
            size: 0x1000_0000,
            offset: 0,
        }]);
        let e = map.pages(r(0x2000_0000, 0x2fff_ffff)).unwrap_err();
        assert!(!e.covered);
        assert!(e.to_string().contains("arm64"), "{e}");
        let e = map.pages(r(0x0fff_0000, 0x1000_ffff)).unwrap_err();
        assert_eq!((e.paddr, e.covered), (0x1000_0000, true));
        assert!(!e.to_string().contains("arm64"), "{e}");
    }

    #[test]
    fn core_heads_and_spans() {
        let h = sample_header(&[r(0x10_0000, 0x3fff_ffff)]);
        assert!(is_core_head(&h[..PAGE_HEAD]));
        assert_eq!(header_span(&h[..PAGE_HEAD]), Ok(64 + 3 * 56));
        let mut exec = h.clone();
        exec[16] = 2;
        assert!(!is_core_head(&exec[..PAGE_HEAD]));
        assert!(!is_core_head(&[0u8; PAGE_HEAD]));
        assert!(!is_core_head(&h[..17]));
        let mut huge = h;
        huge[56..58].copy_from_slice(&u16::MAX.to_le_bytes());
        huge[32..40].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(
            header_span(&huge[..PAGE_HEAD]),
            Err(KcoreError::TooLarge(_))
        ));
    }

    #[test]
    fn one_candidate_is_the_header() {
        let ram = [r(0x10_0000, 0x3fff_ffff)];
        let bytes = sample_header(&ram);
        let found = choose(vec![Candidate {
            paddr: 0x3000_0000,
            bytes: bytes.clone(),
        }])
        .unwrap();
        assert_eq!(found.paddr, 0x3000_0000);
        assert_eq!(found.bytes, bytes);
        assert_eq!(found.header.ram_ranges().total_bytes(), 0x3ff0_0000);
        assert_eq!((found.candidates, found.duplicates.len()), (1, 0));
    }

    #[test]
    fn no_candidate_or_only_garbage_is_no_header() {
        let e = choose(vec![]).unwrap_err();
        assert_eq!(e, ChooseError::NoHeader(vec![]));
        assert!(e.to_string().contains("is a crash kernel loaded?"));
        let bytes = sample_header(&[r(0x10_0000, 0x3fff_ffff)]);
        let e = choose(vec![Candidate {
            paddr: 0x3000_0000,
            bytes: bytes[..100].to_vec(),
        }])
        .unwrap_err();
        let ChooseError::NoHeader(skipped) = &e else {
            panic!("{e:?}")
        };
        assert_eq!(skipped[0].paddr, 0x3000_0000);
        assert!(e.to_string().contains("0x30000000: "), "{e}");
    }

    #[test]
    fn garbage_is_skipped_next_to_a_good_header() {
        let good = sample_header(&[r(0x10_0000, 0x3fff_ffff)]);
        let mut bad = good.clone();
        bad[54] = 32; // e_phentsize
        let found = choose(vec![
            Candidate {
                paddr: 0x3000_0000,
                bytes: bad,
            },
            Candidate {
                paddr: 0x3fff_0000,
                bytes: good,
            },
        ])
        .unwrap();
        assert_eq!(found.paddr, 0x3fff_0000);
        assert_eq!(found.candidates, 2);
        assert_eq!(found.skipped.len(), 1);
    }

    #[test]
    fn identical_duplicates_are_one_header() {
        let bytes = sample_header(&[r(0x10_0000, 0x3fff_ffff)]);
        let found = choose(vec![
            Candidate {
                paddr: 0x3000_0000,
                bytes: bytes.clone(),
            },
            Candidate {
                paddr: 0x3f00_0000,
                bytes,
            },
        ])
        .unwrap();
        assert_eq!(found.paddr, 0x3000_0000);
        assert_eq!(found.duplicates, vec![0x3f00_0000]);
    }

    #[test]
    fn headers_that_differ_in_ram_are_ambiguous() {
        let old = sample_header(&[r(0x1000, 0x9ffff), r(0x10_0000, 0x3fff_ffff)]);
        let new = sample_header(&[r(0x10_0000, 0x3fff_ffff)]);
        let e = choose(vec![
            Candidate {
                paddr: 0x3000_0000,
                bytes: new,
            },
            Candidate {
                paddr: 0x3ff0_0000,
                bytes: old,
            },
        ])
        .unwrap_err();
        assert_eq!(e, ChooseError::Ambiguous(vec![0x3000_0000, 0x3ff0_0000]));
        assert!(e.to_string().contains("0x30000000, 0x3ff00000"), "{e}");
    }

    proptest! {
        /// Every page of a reservation inside a segment maps to the segment's offset plus its
        /// distance from the segment start; a reservation that leaves the segment is unmapped.
        #[test]
        fn offsets_follow_the_segment(
            seg_page in 0u64..1 << 30,
            seg_pages in 1u64..1 << 20,
            offset in 0u64..1 << 50,
            start_page in 0u64..1 << 21,
            pages in 1u64..64,
        ) {
            let seg = KcoreSegment { paddr: seg_page * PAGE_SIZE, size: seg_pages * PAGE_SIZE, offset };
            let map = KcoreMap::from_segments(vec![seg]);
            let res = r(start_page * PAGE_SIZE, (start_page + pages) * PAGE_SIZE - 1);
            let inside = seg_page <= start_page && start_page + pages <= seg_page + seg_pages;
            match map.pages(res) {
                Ok(got) => {
                    prop_assert!(inside);
                    prop_assert_eq!(got.len() as u64, pages);
                    for (i, p) in got.iter().enumerate() {
                        prop_assert_eq!(p.paddr, res.start + i as u64 * PAGE_SIZE);
                        prop_assert_eq!(p.offset, offset + (p.paddr - seg.paddr));
                    }
                }
                Err(e) => {
                    prop_assert!(!inside);
                    prop_assert!(res.contains(e.paddr));
                    prop_assert!(map.offset_of(e.paddr, PAGE_HEAD as u64).is_none());
                }
            }
        }

        /// A byte range maps only when one segment holds all of it.
        #[test]
        fn offset_of_needs_the_whole_range(
            paddr in 0u64..1 << 34,
            size in 1u64..1 << 32,
            at in 0u64..1 << 35,
            len in 0u64..1 << 16,
        ) {
            let map = KcoreMap::from_segments(vec![KcoreSegment { paddr, size, offset: 7 }]);
            let inside = paddr <= at && at + len <= paddr + size;
            prop_assert_eq!(map.offset_of(at, len), inside.then(|| 7 + at - paddr));
        }
    }
}
