//! The crash ELF core header (elfcorehdr): parse the one a loader built, build the one
//! `kexec_file_load` would build, and diff their RAM. Pure logic: no I/O.
//!
//! The header is an ELF `ET_CORE` file with no contents of its own: one `PT_NOTE` per CPU and
//! one for vmcoreinfo, a `PT_LOAD` for the kernel text mapping (x86_64, arm64), and one
//! `PT_LOAD` per System RAM range that the capture kernel will serve as `/proc/vmcore`.
pub mod arch;
mod build;
mod diff;
mod parse;
pub mod readback;

use serde::Serialize;

pub use arch::{Arch, HeaderDefect, LoadPath, crash_memory_ranges, expected_ram, header_defects};
pub use build::{HeaderInputs, KernelText, NoteRegion, build};
pub use diff::{HeaderDiff, diff, missing_cpu_notes};
pub use parse::{ElfNote, NT_PRSTATUS, parse_notes};

use crate::model::ranges::{PhysRange, RamRanges};

/// The most bytes a crash header can span: an ELF64 header and 65,534 program headers
/// (0xffff means extended numbering, which crash headers never use).
pub const MAX_HEADER_BYTES: usize = 64 + 0xfffe * 56;

/// What a program header describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SegmentKind {
    /// CPU register notes or vmcoreinfo (`/proc/vmcore` merges them into one).
    Note,
    /// The kernel image through its own mapping: the same bytes as some RAM, not extra RAM.
    KernelText,
    /// System RAM through the direct map.
    Ram,
    /// Any other `p_type`, kept so nothing in the file goes unreported.
    Other(u32),
}

/// One program header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Segment {
    pub kind: SegmentKind,
    pub offset: u64,
    pub vaddr: u64,
    pub paddr: u64,
    pub filesz: u64,
    pub memsz: u64,
}

impl Segment {
    /// Physical bytes it covers; `None` when `memsz` is 0 or it runs past 2^64 (only a
    /// defective kernel-text segment parses so: `arch::header_defects`).
    pub fn phys_range(&self) -> Option<PhysRange> {
        PhysRange::from_start_size(self.paddr, self.memsz)
    }
}

/// A parsed crash ELF header.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ElfCoreHeader {
    /// 32 or 64.
    pub class_bits: u8,
    pub machine: u16,
    pub segments: Vec<Segment>,
}

impl ElfCoreHeader {
    pub fn parse(bytes: &[u8]) -> Result<ElfCoreHeader, HeaderError> {
        parse::parse(bytes)
    }

    /// The RAM the header tells the capture kernel to dump (kernel text excluded).
    pub fn ram_ranges(&self) -> RamRanges {
        self.segments
            .iter()
            .filter(|s| s.kind == SegmentKind::Ram)
            .filter_map(Segment::phys_range)
            .collect()
    }

    /// The physical addresses of its `PT_NOTE`s: CPU notes and vmcoreinfo.
    pub fn note_addrs(&self) -> Vec<u64> {
        self.segments
            .iter()
            .filter(|s| s.kind == SegmentKind::Note)
            .map(|s| s.paddr)
            .collect()
    }

    /// The bytes of its note segment in `file` (the capture kernel's `/proc/vmcore`, whose
    /// one merged `PT_NOTE` has its content in the file); `None` when there is none or `file`
    /// is too short.
    pub fn note_bytes<'a>(&self, file: &'a [u8]) -> Option<&'a [u8]> {
        let note = self.segments.iter().find(|s| s.kind == SegmentKind::Note)?;
        let start = usize::try_from(note.offset).ok()?;
        file.get(start..start.checked_add(usize::try_from(note.filesz).ok()?)?)
    }

    pub fn count(&self, kind: SegmentKind) -> usize {
        self.segments.iter().filter(|s| s.kind == kind).count()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("{len} bytes is too short for an ELF header (need {need})")]
    TooShort { len: usize, need: usize },
    #[error("not an ELF file (magic {magic:02x?})")]
    BadMagic { magic: [u8; 4] },
    #[error("unsupported ELF class {0} (expected 1 = 32-bit or 2 = 64-bit)")]
    Class(u8),
    #[error("big-endian or unknown data encoding {0} (crash headers are little-endian)")]
    Endian(u8),
    #[error("e_type {0} is not ET_CORE (4): not a crash ELF header")]
    NotCore(u16),
    #[error("e_phentsize {found} does not match the {bits}-bit program header size {expected}")]
    PhEntSize {
        found: u16,
        expected: usize,
        bits: u8,
    },
    #[error("e_phnum 0xffff (extended numbering) is not used by crash headers")]
    ExtendedNumbering,
    #[error(
        "{phnum} program headers at offset {phoff} need {need} bytes but the input has {len} \
         (truncated?)"
    )]
    Truncated {
        phnum: u16,
        phoff: u64,
        need: u128,
        len: usize,
    },
    #[error("program header {index}: p_paddr {paddr:#x} + p_memsz {memsz:#x} passes 2^64")]
    SegmentOverflow {
        index: usize,
        paddr: u64,
        memsz: u64,
    },
    #[error("malformed ELF: {0}")]
    Malformed(String),
    #[error("{0} program headers do not fit in e_phnum (max 65534)")]
    TooManyProgramHeaders(usize),
}

/// Test fixture: the header `build` makes for `ram`, one CPU note and vmcoreinfo, as a
/// loader would load it.
#[cfg(test)]
pub fn sample_header(ram: &[crate::model::ranges::PhysRange]) -> Vec<u8> {
    build(&HeaderInputs {
        arch: Arch::X86_64,
        cpu_notes: &[NoteRegion {
            paddr: 0x3fa1_8000,
            size: 0x150,
        }],
        vmcoreinfo: NoteRegion {
            paddr: 0x100_0000,
            size: 1024,
        },
        kernel_text: None,
        ram,
        page_offset: arch::X86_64_DEFAULT_PAGE_OFFSET,
    })
    .expect("a header of one CPU and a few ranges fits")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::iomem::Iomem;

    const IOMEM: &str = "\
00000000-00000fff : Reserved
00001000-0009fbff : System RAM
0009fc00-000fffff : Reserved
00100000-7ffdffff : System RAM
  01000000-01ffffff : Kernel code
  6f000000-7effffff : Crash kernel
100000000-17fffffff : System RAM
180000000-1bfffffff : virtio0
  180000000-19fffffff : System RAM (virtio_mem)
";

    #[test]
    fn the_largest_header_fits_in_max_header_bytes() {
        let ram: Vec<PhysRange> = (0..0xfffe - 2)
            .map(|i| PhysRange::from_start_size(i * 0x2000, 0x1000).unwrap())
            .collect();
        let bytes = build(&HeaderInputs {
            arch: Arch::X86_64,
            cpu_notes: &[],
            vmcoreinfo: NoteRegion { paddr: 0, size: 1 },
            kernel_text: Some(KernelText {
                vaddr: arch::X86_64_START_KERNEL_MAP,
                paddr: 0,
                size: 1,
            }),
            ram: &ram,
            page_offset: arch::X86_64_DEFAULT_PAGE_OFFSET,
        })
        .unwrap();
        let header = ElfCoreHeader::parse(&bytes[..MAX_HEADER_BYTES]).unwrap();
        assert_eq!(header.segments.len(), 0xfffe);
        assert!(ElfCoreHeader::parse(&bytes[..MAX_HEADER_BYTES - 1]).is_err());
    }

    /// A header freshly built for the current RAM diffs to zero whichever loader built it.
    #[test]
    fn fresh_headers_from_either_loader_diff_to_zero() {
        let iomem = Iomem::parse(IOMEM).unwrap();
        for load in [LoadPath::KexecFileLoad, LoadPath::KexecLoad] {
            let mem = crash_memory_ranges(&iomem, load).unwrap();
            let bytes = build(&HeaderInputs {
                arch: Arch::X86_64,
                cpu_notes: &[NoteRegion {
                    paddr: 0x7000_0000,
                    size: 336,
                }],
                vmcoreinfo: NoteRegion {
                    paddr: 0x7100_0000,
                    size: 0x1024,
                },
                kernel_text: Some(KernelText {
                    vaddr: 0xffff_ffff_8100_0000,
                    paddr: 0x100_0000,
                    size: 0x100_0000,
                }),
                ram: mem.ranges(),
                page_offset: arch::X86_64_DEFAULT_PAGE_OFFSET,
            })
            .unwrap();
            let loaded = ElfCoreHeader::parse(&bytes).unwrap().ram_ranges();
            let inferred = LoadPath::infer(&loaded);
            assert_eq!(inferred, load);
            let d = diff(&expected_ram(&iomem, inferred).unwrap(), &loaded);
            assert!(!d.stale(), "{load:?}: {d:?}");
            // The kernel-text PT_LOAD maps RAM that is also listed; it must not count twice.
            assert_eq!(loaded.total_bytes(), mem.to_ram_ranges().total_bytes());
        }
    }
}
