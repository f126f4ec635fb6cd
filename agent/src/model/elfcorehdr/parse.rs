//! Reading a crash ELF header: an elfcorehdr as loaded, or the head of `/proc/vmcore` (the
//! capture kernel rewrites `p_offset`s and merges the notes, but keeps `p_paddr`/`p_memsz`).
use goblin::{
    container::{Container, Ctx},
    elf::{
        header::{self, ELFCLASS32, ELFCLASS64, ELFDATA2LSB, ELFMAG, ET_CORE, Header},
        program_header::{PT_LOAD, PT_NOTE, ProgramHeader},
    },
    elf32, elf64,
};
use scroll::Pread;

use super::{ElfCoreHeader, HeaderError, Segment, SegmentKind, arch};

pub(super) fn parse(bytes: &[u8]) -> Result<ElfCoreHeader, HeaderError> {
    let ident = bytes
        .get(..header::SIZEOF_IDENT)
        .ok_or(HeaderError::TooShort {
            len: bytes.len(),
            need: header::SIZEOF_IDENT,
        })?;
    if &ident[..header::SELFMAG] != ELFMAG {
        let mut magic = [0; 4];
        magic.copy_from_slice(&ident[..4]);
        return Err(HeaderError::BadMagic { magic });
    }
    let (container, ehdr_size, phdr_size, bits) = match ident[header::EI_CLASS] {
        ELFCLASS32 => (
            Container::Little,
            elf32::header::SIZEOF_EHDR,
            elf32::program_header::SIZEOF_PHDR,
            32,
        ),
        ELFCLASS64 => (
            Container::Big,
            elf64::header::SIZEOF_EHDR,
            elf64::program_header::SIZEOF_PHDR,
            64,
        ),
        other => return Err(HeaderError::Class(other)),
    };
    if ident[header::EI_DATA] != ELFDATA2LSB {
        return Err(HeaderError::Endian(ident[header::EI_DATA]));
    }
    if bytes.len() < ehdr_size {
        return Err(HeaderError::TooShort {
            len: bytes.len(),
            need: ehdr_size,
        });
    }
    let ehdr: Header = bytes
        .pread(0)
        .map_err(|e: goblin::error::Error| HeaderError::Malformed(e.to_string()))?;
    if ehdr.e_type != ET_CORE {
        return Err(HeaderError::NotCore(ehdr.e_type));
    }
    if ehdr.e_phnum == u16::MAX {
        return Err(HeaderError::ExtendedNumbering);
    }
    if ehdr.e_phnum > 0 && usize::from(ehdr.e_phentsize) != phdr_size {
        return Err(HeaderError::PhEntSize {
            found: ehdr.e_phentsize,
            expected: phdr_size,
            bits,
        });
    }
    // Bound the table by the input before goblin allocates for it.
    let need = u128::from(ehdr.e_phoff) + u128::from(ehdr.e_phnum) * phdr_size as u128;
    if need > bytes.len() as u128 {
        return Err(HeaderError::Truncated {
            phnum: ehdr.e_phnum,
            phoff: ehdr.e_phoff,
            need,
            len: bytes.len(),
        });
    }
    let phdrs = ProgramHeader::parse(
        bytes,
        ehdr.e_phoff as usize,
        usize::from(ehdr.e_phnum),
        Ctx::new(container, scroll::LE),
    )
    .map_err(|e| HeaderError::Malformed(e.to_string()))?;

    let mut segments = Vec::with_capacity(phdrs.len());
    for (index, ph) in phdrs.iter().enumerate() {
        let kind = match ph.p_type {
            PT_NOTE => SegmentKind::Note,
            PT_LOAD if arch::is_kernel_text(ehdr.e_machine, ph.p_vaddr) => SegmentKind::KernelText,
            PT_LOAD => SegmentKind::Ram,
            other => SegmentKind::Other(other),
        };
        // A wrapping kernel-text segment is a known loader bug the capture kernel survives
        // (`arch::header_defects` flags it); wrapping RAM or notes make the header meaningless.
        if kind != SegmentKind::KernelText && ph.p_paddr.checked_add(ph.p_memsz).is_none() {
            return Err(HeaderError::SegmentOverflow {
                index,
                paddr: ph.p_paddr,
                memsz: ph.p_memsz,
            });
        }
        segments.push(Segment {
            kind,
            offset: ph.p_offset,
            vaddr: ph.p_vaddr,
            paddr: ph.p_paddr,
            filesz: ph.p_filesz,
            memsz: ph.p_memsz,
        });
    }
    Ok(ElfCoreHeader {
        class_bits: bits,
        machine: ehdr.e_machine,
        segments,
    })
}

/// `NT_PRSTATUS`: a CPU's registers, one note per CPU that saved them at the crash.
pub const NT_PRSTATUS: u32 = 1;

/// One ELF note: who wrote it, its type, the size of its descriptor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ElfNote {
    pub name: String,
    pub n_type: u32,
    pub desc_bytes: u32,
}

/// The notes of a note segment, in order. An all-zero note header ends the list (the kernel
/// ends each CPU's buffer with one); a note running past the end is an error.
pub fn parse_notes(bytes: &[u8]) -> Result<Vec<ElfNote>, HeaderError> {
    let word = |at: usize| -> Option<u32> {
        Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
    };
    let align4 = |n: u32| (n as usize).next_multiple_of(4);
    let mut notes = Vec::new();
    let mut at = 0;
    while at + 12 <= bytes.len() {
        let (namesz, descsz, n_type) = match (word(at), word(at + 4), word(at + 8)) {
            (Some(a), Some(b), Some(c)) => (a, b, c),
            _ => break,
        };
        if (namesz, descsz, n_type) == (0, 0, 0) {
            break;
        }
        let name_at = at + 12;
        let end = name_at
            .checked_add(align4(namesz))
            .and_then(|e| e.checked_add(align4(descsz)))
            .filter(|&e| e <= bytes.len())
            .ok_or_else(|| {
                HeaderError::Malformed(format!(
                    "note at offset {at} (namesz {namesz}, descsz {descsz}) runs past the {} bytes of its segment",
                    bytes.len()
                ))
            })?;
        let name = &bytes[name_at..name_at + namesz as usize];
        notes.push(ElfNote {
            name: String::from_utf8_lossy(name.strip_suffix(&[0]).unwrap_or(name)).into_owned(),
            n_type,
            desc_bytes: descsz,
        });
        at = end;
    }
    Ok(notes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{elfcorehdr::sample_header, ranges::PhysRange};

    fn sample() -> Vec<u8> {
        sample_header(&[PhysRange::new(0x100000, 0x3fffffff).unwrap()])
    }

    fn set_u16(b: &mut [u8], at: usize, v: u16) {
        b[at..at + 2].copy_from_slice(&v.to_le_bytes());
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let full = sample();
        let table_end = 64 + 3 * 56;
        for len in 0..table_end {
            assert!(parse(&full[..len]).is_err(), "len {len}");
        }
        assert!(parse(&full[..table_end]).is_ok());
    }

    #[test]
    fn hostile_headers_are_rejected() {
        let good = sample();
        let mut b = good.clone();
        set_u16(&mut b, 60 - 4, u16::MAX - 1); // e_phnum: 65534 headers in 4 KiB
        assert!(matches!(parse(&b), Err(HeaderError::Truncated { .. })));
        let mut b = good.clone();
        set_u16(&mut b, 56, u16::MAX);
        assert_eq!(parse(&b), Err(HeaderError::ExtendedNumbering));
        let mut b = good.clone();
        b[32..40].copy_from_slice(&u64::MAX.to_le_bytes()); // e_phoff
        assert!(matches!(parse(&b), Err(HeaderError::Truncated { .. })));
        let mut b = good.clone();
        set_u16(&mut b, 54, 32); // e_phentsize
        assert!(matches!(parse(&b), Err(HeaderError::PhEntSize { .. })));
        let mut b = good.clone();
        set_u16(&mut b, 16, 2); // ET_EXEC
        assert_eq!(parse(&b), Err(HeaderError::NotCore(2)));
        let mut b = good.clone();
        b[5] = 2;
        assert_eq!(parse(&b), Err(HeaderError::Endian(2)));
        let mut b = good.clone();
        b[4] = 9;
        assert_eq!(parse(&b), Err(HeaderError::Class(9)));
        assert!(matches!(
            parse(b"\x7fELZ............"),
            Err(HeaderError::BadMagic { .. })
        ));
        let mut b = good;
        let ram_memsz = 64 + 2 * 56 + 40;
        b[ram_memsz..ram_memsz + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(
            parse(&b),
            Err(HeaderError::SegmentOverflow { index: 2, .. })
        ));
    }

    #[test]
    fn a_kernel_text_segment_past_2_64_is_kept_not_refused() {
        // The kernel-text PT_LOAD arm64 kexec-tools 2.0.29 wrote on 6.1 (lab, 2026-12-01).
        let mut b = sample();
        set_u16(&mut b, 18, header::EM_AARCH64);
        let text = 64 + 2 * 56;
        for (at, v) in [
            (16, 0xffff_a0c6_08c1_0000_u64),
            (24, 0x228c_3000_0000),
            (40, 0xffff_dd74_1221_0000),
        ] {
            b[text + at..text + at + 8].copy_from_slice(&v.to_le_bytes());
        }
        let h = parse(&b).unwrap();
        assert_eq!(h.segments[2].kind, SegmentKind::KernelText);
        assert_eq!(h.segments[2].phys_range(), None);
        assert!(h.ram_ranges().is_empty());
    }

    /// A note as the kernel writes it (`append_elf_note`): header, name, descriptor, each
    /// padded to 4 bytes.
    pub(crate) fn note(name: &str, n_type: u32, desc: usize) -> Vec<u8> {
        let mut b = Vec::new();
        let namesz = name.len() as u32 + 1;
        b.extend_from_slice(&namesz.to_le_bytes());
        b.extend_from_slice(&(desc as u32).to_le_bytes());
        b.extend_from_slice(&n_type.to_le_bytes());
        b.extend_from_slice(name.as_bytes());
        b.push(0);
        b.resize(b.len().next_multiple_of(4), 0);
        b.resize(b.len() + desc.next_multiple_of(4), 0xab);
        b
    }

    #[test]
    fn notes_walk_to_the_terminator_and_truncation_is_an_error() {
        // Two CPUs' prstatus (336 bytes each on x86_64) and vmcoreinfo, as /proc/vmcore merges them.
        let mut b = note("CORE", NT_PRSTATUS, 336);
        b.extend(note("CORE", NT_PRSTATUS, 336));
        b.extend(note("VMCOREINFO", 0, 1021));
        let notes = parse_notes(&b).unwrap();
        assert_eq!(notes.len(), 3);
        assert_eq!(notes[1].name, "CORE");
        assert_eq!(notes[2].name, "VMCOREINFO");
        assert_eq!(notes.iter().filter(|n| n.n_type == NT_PRSTATUS).count(), 2);
        let mut ended = note("CORE", NT_PRSTATUS, 336);
        ended.extend([0; 12]);
        ended.extend(note("CORE", NT_PRSTATUS, 336));
        assert_eq!(
            parse_notes(&ended).unwrap().len(),
            1,
            "an empty header ends the list"
        );
        for len in [13, 20, b.len() - 1] {
            assert!(parse_notes(&b[..len]).is_err(), "len {len}");
        }
        assert_eq!(parse_notes(&[]).unwrap(), []);
    }

    proptest::proptest! {
        /// Any bytes walk to an answer or an error, never a panic.
        #[test]
        fn any_bytes_walk_without_panic(b in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600)) {
            let _ = parse_notes(&b);
        }

        /// Notes written the kernel's way walk back to the same names, types and sizes.
        #[test]
        fn written_notes_walk_back(list in proptest::collection::vec(("[A-Z]{1,12}", 1u32..8, 0usize..700), 0..8)) {
            let bytes: Vec<u8> = list.iter().flat_map(|(n, t, d)| note(n, *t, *d)).collect();
            let walked: Vec<(String, u32, usize)> = parse_notes(&bytes)
                .unwrap()
                .into_iter()
                .map(|n| (n.name, n.n_type, n.desc_bytes as usize))
                .collect();
            proptest::prop_assert_eq!(walked, list);
        }
    }

    #[test]
    fn elf32_headers_parse() {
        use goblin::elf32::{header::Header as H32, program_header::ProgramHeader as P32};
        use scroll::Pwrite;
        let mut b = vec![0u8; 52 + 32];
        let mut e_ident = [0u8; 16];
        e_ident[..4].copy_from_slice(ELFMAG);
        e_ident[4] = ELFCLASS32;
        e_ident[5] = ELFDATA2LSB;
        let h = H32 {
            e_ident,
            e_type: ET_CORE,
            e_machine: goblin::elf::header::EM_386,
            e_phoff: 52,
            e_phentsize: 32,
            e_phnum: 1,
            ..H32::default()
        };
        b.pwrite_with(h, 0, scroll::LE).unwrap();
        let p = P32 {
            p_type: PT_LOAD,
            p_paddr: 0x1000,
            p_memsz: 0x9f000,
            ..P32::default()
        };
        b.pwrite_with(p, 52, scroll::LE).unwrap();
        let parsed = parse(&b).unwrap();
        assert_eq!(parsed.class_bits, 32);
        assert_eq!(parsed.ram_ranges().total_bytes(), 0x9f000);
    }
}
