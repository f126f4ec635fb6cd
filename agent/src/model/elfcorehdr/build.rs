//! Building the header the kernel's `crash_prepare_elf64_headers` builds, field for field, from
//! goblin's ELF64 types, for the machine it is for (x86_64, arm64).
use goblin::{
    elf::{
        header::{
            EI_CLASS, EI_DATA, EI_OSABI, EI_VERSION, ELFCLASS64, ELFDATA2LSB, ELFMAG,
            ELFOSABI_NONE, ET_CORE, EV_CURRENT,
        },
        program_header::{PF_R, PF_W, PF_X, PT_LOAD, PT_NOTE},
    },
    elf64::{
        header::{Header, SIZEOF_EHDR},
        program_header::{ProgramHeader, SIZEOF_PHDR},
    },
};
use scroll::{LE, Pwrite};

use super::{Arch, HeaderError};
use crate::model::ranges::PhysRange;

/// `ELF_CORE_HEADER_ALIGN`: the kernel pads the header buffer to a page.
const ELF_CORE_HEADER_ALIGN: usize = 4096;

/// A note buffer in the first kernel: a CPU's `crash_notes` or the vmcoreinfo note.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NoteRegion {
    pub paddr: u64,
    pub size: u64,
}

/// The kernel image mapping: `_text` (virtual), `__pa_symbol(_text)`, `_end - _text`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelText {
    pub vaddr: u64,
    pub paddr: u64,
    pub size: u64,
}

/// Everything `crash_prepare_elf64_headers` reads from the running kernel.
#[derive(Clone, Copy, Debug)]
pub struct HeaderInputs<'a> {
    /// One per possible CPU, in CPU order.
    pub cpu_notes: &'a [NoteRegion],
    pub vmcoreinfo: NoteRegion,
    /// `None` on architectures without a separate kernel mapping.
    pub kernel_text: Option<KernelText>,
    /// The `crash_mem` ranges after the exclusions ([`super::crash_memory_ranges`]).
    pub ram: &'a [PhysRange],
    /// `__va(0)`: what each RAM range's physical address is shifted by for its `p_vaddr`
    /// (x86_64 `PAGE_OFFSET`; arm64 `PAGE_OFFSET - PHYS_OFFSET`, wrapping).
    pub page_offset: u64,
    /// The machine whose capture kernel reads it (`e_machine`).
    pub arch: Arch,
}

/// The header bytes, padded to a page as the kernel pads them.
pub fn build(inputs: &HeaderInputs<'_>) -> Result<Vec<u8>, HeaderError> {
    // The kernel always reserves the kernel-map slot, used or not.
    let nr_phdr = inputs.cpu_notes.len() + 1 + 1 + inputs.ram.len();
    let mut phdrs = Vec::with_capacity(nr_phdr);
    let note = |n: &NoteRegion| ProgramHeader {
        p_type: PT_NOTE,
        p_offset: n.paddr,
        p_paddr: n.paddr,
        p_filesz: n.size,
        p_memsz: n.size,
        ..ProgramHeader::default()
    };
    phdrs.extend(inputs.cpu_notes.iter().map(note));
    phdrs.push(note(&inputs.vmcoreinfo));
    if let Some(text) = inputs.kernel_text {
        phdrs.push(ProgramHeader {
            p_type: PT_LOAD,
            p_flags: PF_R | PF_W | PF_X,
            p_vaddr: text.vaddr,
            p_offset: text.paddr,
            p_paddr: text.paddr,
            p_filesz: text.size,
            p_memsz: text.size,
            ..ProgramHeader::default()
        });
    }
    phdrs.extend(inputs.ram.iter().map(|r| ProgramHeader {
        p_type: PT_LOAD,
        p_flags: PF_R | PF_W | PF_X,
        p_offset: r.start,
        p_paddr: r.start,
        p_vaddr: inputs.page_offset.wrapping_add(r.start),
        p_filesz: r.size(),
        p_memsz: r.size(),
        p_align: 0,
    }));
    let e_phnum = u16::try_from(phdrs.len())
        .ok()
        .filter(|&n| n < u16::MAX)
        .ok_or(HeaderError::TooManyProgramHeaders(phdrs.len()))?;

    let mut e_ident = [0u8; 16];
    e_ident[..4].copy_from_slice(ELFMAG);
    e_ident[EI_CLASS] = ELFCLASS64;
    e_ident[EI_DATA] = ELFDATA2LSB;
    e_ident[EI_VERSION] = EV_CURRENT;
    e_ident[EI_OSABI] = ELFOSABI_NONE;
    let ehdr = Header {
        e_ident,
        e_type: ET_CORE,
        e_machine: inputs.arch.e_machine(),
        e_version: u32::from(EV_CURRENT),
        e_phoff: SIZEOF_EHDR as u64,
        e_ehsize: SIZEOF_EHDR as u16,
        e_phentsize: SIZEOF_PHDR as u16,
        e_phnum,
        ..Header::default()
    };

    let len = (SIZEOF_EHDR + nr_phdr * SIZEOF_PHDR).next_multiple_of(ELF_CORE_HEADER_ALIGN);
    let mut buf = vec![0u8; len];
    let mut offset = 0;
    buf.gwrite_with(ehdr, &mut offset, LE).map_err(write_err)?;
    for ph in phdrs {
        buf.gwrite_with(ph, &mut offset, LE).map_err(write_err)?;
    }
    Ok(buf)
}

/// Writing into a buffer sized above cannot run short; map the typed errors anyway.
fn write_err(e: impl std::fmt::Display) -> HeaderError {
    HeaderError::Malformed(e.to_string())
}

#[cfg(test)]
mod tests {
    use goblin::elf::header::{EM_AARCH64, EM_X86_64};

    use super::*;
    use crate::model::elfcorehdr::{ElfCoreHeader, SegmentKind, arch::X86_64_DEFAULT_PAGE_OFFSET};

    fn inputs<'a>(notes: &'a [NoteRegion], ram: &'a [PhysRange]) -> HeaderInputs<'a> {
        HeaderInputs {
            arch: Arch::X86_64,
            cpu_notes: notes,
            vmcoreinfo: NoteRegion {
                paddr: 0x1_00c6_6000,
                size: 1024,
            },
            kernel_text: Some(KernelText {
                vaddr: 0xffff_ffff_8100_0000,
                paddr: 0x100_0000,
                size: 0x2c5_8000,
            }),
            ram,
            page_offset: X86_64_DEFAULT_PAGE_OFFSET,
        }
    }

    #[test]
    fn layout_matches_crash_prepare_elf64_headers() {
        let notes = [
            NoteRegion {
                paddr: 0x1_3fa1_8000,
                size: 0x150,
            },
            NoteRegion {
                paddr: 0x1_3fa5_8000,
                size: 0x150,
            },
        ];
        let ram = [
            PhysRange::new(0x100000, 0x6effffff).unwrap(),
            PhysRange::new(0x7f000000, 0x7ffdffff).unwrap(),
        ];
        let bytes = build(&inputs(&notes, &ram)).unwrap();
        assert_eq!(bytes.len(), 4096);
        let h = ElfCoreHeader::parse(&bytes).unwrap();
        assert_eq!(h.class_bits, 64);
        assert_eq!(h.machine, EM_X86_64);
        assert_eq!(h.segments.len(), 2 + 1 + 1 + 2);
        assert_eq!(h.count(SegmentKind::Note), 3);
        assert_eq!(h.segments[0].offset, 0x1_3fa1_8000);
        assert_eq!(h.segments[3].kind, SegmentKind::KernelText);
        assert_eq!(h.segments[4].kind, SegmentKind::Ram);
        assert_eq!(h.segments[4].vaddr, X86_64_DEFAULT_PAGE_OFFSET + 0x100000);
        assert_eq!(h.segments[4].memsz, 0x6ef00000);
        assert_eq!(h.ram_ranges().as_slice(), &ram);
        // e_phentsize, p_flags and p_align straight from the bytes.
        assert_eq!(u16::from_le_bytes([bytes[54], bytes[55]]), 56);
        let ram_phdr = 64 + 4 * 56;
        assert_eq!(bytes[ram_phdr + 4], 7);
    }

    #[test]
    fn size_rounds_up_with_the_unused_kernel_map_slot() {
        // 64 + 63 * 56 = 3592 -> one page; 64 + 72 * 56 = 4096 exactly.
        let notes = vec![NoteRegion { paddr: 0, size: 1 }; 70];
        let bytes = build(&HeaderInputs {
            arch: Arch::X86_64,
            kernel_text: None,
            ..inputs(&notes, &[])
        })
        .unwrap();
        assert_eq!(bytes.len(), 4096);
        let notes = vec![NoteRegion { paddr: 0, size: 1 }; 71];
        assert_eq!(build(&inputs(&notes, &[])).unwrap().len(), 8192);
    }

    #[test]
    fn e_machine_is_the_target_machine() {
        let ram = [PhysRange::new(0x4000_0000, 0x7fff_ffff).unwrap()];
        for (arch, machine) in [(Arch::X86_64, EM_X86_64), (Arch::Aarch64, EM_AARCH64)] {
            let bytes = build(&HeaderInputs {
                arch,
                ..inputs(&[], &ram)
            })
            .unwrap();
            let h = ElfCoreHeader::parse(&bytes).unwrap();
            assert_eq!(h.machine, machine);
            assert_eq!(Arch::of_machine(h.machine), Some(arch));
        }
    }

    #[test]
    fn too_many_program_headers_is_an_error() {
        let ram = vec![PhysRange::new(0, 0).unwrap(); 65_534];
        assert!(matches!(
            build(&inputs(&[], &ram)),
            Err(HeaderError::TooManyProgramHeaders(65_536))
        ));
    }
}
