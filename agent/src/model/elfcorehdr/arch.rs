//! Per-architecture rules for the crash ELF header, in one place: which RAM each loader lists,
//! which RAM a correct header lists, how to tell the kernel-text `PT_LOAD` from the RAM ones,
//! and which kernel-text segment the capture kernel will mishandle. [`Arch::RUNNING`] judges
//! this machine's iomem; [`Arch::of_machine`] a header by its `e_machine`.
use serde::Serialize;

use crate::model::{
    elfcorehdr::{ElfCoreHeader, SegmentKind},
    iomem::{GART, Iomem, SYSTEM_RAM},
    ranges::{CapacityExceeded, CrashMem, PhysRange, RamRanges},
};

/// `__START_KERNEL_map`: the x86_64 kernel text mapping starts here; the direct map
/// (`PAGE_OFFSET`, randomized by KASLR) is always below it.
pub const X86_64_START_KERNEL_MAP: u64 = 0xffff_ffff_8000_0000;
/// x86_64 `PAGE_OFFSET` without KASLR (4-level paging).
pub const X86_64_DEFAULT_PAGE_OFFSET: u64 = 0xffff_8880_0000_0000;
/// `kexec_file_load` leaves out the low 1 MiB on x86_64 (`elf_header_exclude_ranges`: "it is
/// always reserved").
const X86_64_KERNEL_LOW_EXCLUDE: PhysRange = PhysRange {
    start: 0,
    end: 0xf_ffff,
};
/// The kernel sizes `crash_mem` as System RAM count + 3: crashk_res, crashk_low_res and the
/// low 1 MiB can each split one range (`fill_up_crash_elf_data`).
const X86_64_KERNEL_EXTRA_SLOTS: usize = 3;

/// arm64 `_PAGE_END(48)`: since 5.4 the linear map lies below it and the kernel image
/// (`KIMAGE_VADDR`) at or above it, for 48- and 52-bit VA kernels (Debian, RHEL, Ubuntu).
// Not verified on a real arm64 capture kernel yet; 39/42/47-bit VA kernels need other bounds.
pub const AARCH64_KERNEL_IMAGE_START: u64 = 0xffff_8000_0000_0000;
/// arm64 `PAGE_OFFSET` with 48-bit VA (`-(1 << VA_BITS)`).
pub const AARCH64_PAGE_OFFSET_48: u64 = 0xffff_0000_0000_0000;
/// arm64 `prepare_elf_headers` sizes `crash_mem` as memblock ranges + 2 (crashk_res and
/// crashk_low_res can each split one).
const AARCH64_KERNEL_EXTRA_SLOTS: usize = 2;

/// The machine whose header rules apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Arch {
    X86_64,
    Aarch64,
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
compile_error!(
    "the crash header rules exist for x86_64 and aarch64 only (model/elfcorehdr/arch.rs)"
);

impl Arch {
    /// The machine this agent was built for and runs on: the one whose iomem it reads.
    #[cfg(target_arch = "aarch64")]
    pub const RUNNING: Arch = Arch::Aarch64;
    #[cfg(not(target_arch = "aarch64"))]
    pub const RUNNING: Arch = Arch::X86_64;

    /// The rules for a header's `e_machine`; `None` for a machine without any.
    pub fn of_machine(e_machine: u16) -> Option<Arch> {
        match e_machine {
            goblin::elf::header::EM_X86_64 => Some(Arch::X86_64),
            goblin::elf::header::EM_AARCH64 => Some(Arch::Aarch64),
            _ => None,
        }
    }

    /// The `e_machine` of its headers.
    pub fn e_machine(self) -> u16 {
        match self {
            Arch::X86_64 => goblin::elf::header::EM_X86_64,
            Arch::Aarch64 => goblin::elf::header::EM_AARCH64,
        }
    }

    /// The RAM ranges, one per `PT_LOAD`, that `load` would put in the header for this iomem,
    /// in the loader's own order and with its own splits.
    ///
    /// x86_64:
    /// - kexec_file_load: System RAM (`walk_system_ram_res`) minus the low 1 MiB, `crashk_res`
    ///   and `crashk_low_res` (`elf_header_exclude_ranges`), with the kernel's slot count.
    /// - kexec_load: every `System RAM*` line minus each `Crash kernel` and any `GART`
    ///   (kexec-tools `get_crash_memory_ranges`); the first 640 KiB keep their physical address
    ///   (only their file offset moves to the backup region), so nothing else is removed.
    ///
    /// arm64: both leave driver-managed RAM (`System RAM (virtio_mem)`, `(kmem)`) out.
    /// - kexec_file_load: memblock (`for_each_mem_range` skips `MEMBLOCK_NOMAP` and
    ///   `MEMBLOCK_DRIVER_MANAGED`, which iomem shows as `reserved` and `System RAM (...)`)
    ///   minus `crashk_res` then `crashk_low_res` (`prepare_elf_headers`).
    /// - kexec_load: the lines named exactly `System RAM` at any depth minus each line named
    ///   exactly `Crash kernel` (kexec-tools `iomem_range_callback` compares with the newline).
    pub fn crash_memory_ranges(
        self,
        iomem: &Iomem,
        load: LoadPath,
    ) -> Result<CrashMem, CapacityExceeded> {
        let mut reservations = iomem.crash_reservations();
        match (self, load) {
            (Arch::X86_64, LoadPath::KexecFileLoad) => {
                let ram = iomem.system_ram_resources();
                let mut mem = CrashMem::new(ram.clone(), ram.len() + X86_64_KERNEL_EXTRA_SLOTS);
                mem.exclude(X86_64_KERNEL_LOW_EXCLUDE)?;
                // crashk_res (the high one when there are two) goes first, as in the kernel.
                reservations.reverse();
                for r in reservations {
                    mem.exclude(r)?;
                }
                Ok(mem)
            }
            (Arch::X86_64, LoadPath::KexecLoad) => {
                let mut mem = CrashMem::new(iomem.system_ram_resources(), usize::MAX);
                reservations.extend(iomem.named(GART).map(|r| r.range));
                for r in reservations {
                    mem.exclude(r)?;
                }
                Ok(mem)
            }
            (Arch::Aarch64, LoadPath::KexecFileLoad) => {
                let ram: Vec<PhysRange> = iomem.named(SYSTEM_RAM).map(|r| r.range).collect();
                let mut mem = CrashMem::new(ram.clone(), ram.len() + AARCH64_KERNEL_EXTRA_SLOTS);
                reservations.reverse();
                for r in reservations {
                    mem.exclude(r)?;
                }
                Ok(mem)
            }
            (Arch::Aarch64, LoadPath::KexecLoad) => {
                let ram: Vec<PhysRange> = iomem.named(SYSTEM_RAM).map(|r| r.range).collect();
                let mut mem = CrashMem::new(ram, usize::MAX);
                for r in reservations {
                    mem.exclude(r)?;
                }
                Ok(mem)
            }
        }
    }

    /// The RAM a correct header built by `load` lists for this iomem, as a byte set.
    ///
    /// On x86_64 that is what the loader lists. On arm64 neither loader lists driver-managed
    /// RAM, so a correct header is all System RAM at every depth minus the crash
    /// reservation(s): judging by the loader's list would call a dump that misses virtio-mem
    /// RAM fresh.
    // arm64: the capture kernel's handling of unplugged parts of a virtio-mem block is not
    // verified yet (the lab's arm64 fixtures will show it).
    pub fn expected_ram(
        self,
        iomem: &Iomem,
        load: LoadPath,
    ) -> Result<RamRanges, CapacityExceeded> {
        match self {
            Arch::X86_64 => self
                .crash_memory_ranges(iomem, load)
                .map(|m| m.to_ram_ranges()),
            Arch::Aarch64 => {
                let ram = iomem.system_ram();
                Ok(iomem
                    .crash_reservations()
                    .into_iter()
                    .fold(ram, |ram, r| ram.exclude(r)))
            }
        }
    }

    /// The RAM a correct header lists that `load` leaves out for this iomem: what no reload
    /// through that loader can bring into the dump.
    pub fn omitted_by(self, iomem: &Iomem, load: LoadPath) -> Result<RamRanges, CapacityExceeded> {
        let listed = self.crash_memory_ranges(iomem, load)?.to_ram_ranges();
        Ok(self.expected_ram(iomem, load)?.subtract(&listed))
    }

    /// Whether a `PT_LOAD` maps kernel text rather than RAM through the linear/direct map.
    pub fn is_kernel_text(self, p_vaddr: u64) -> bool {
        match self {
            Arch::X86_64 => p_vaddr >= X86_64_START_KERNEL_MAP,
            Arch::Aarch64 => p_vaddr >= AARCH64_KERNEL_IMAGE_START,
        }
    }

    /// The load path whose header lists `loaded`.
    ///
    /// x86_64: only kexec-tools lists RAM below 1 MiB (the kernel excludes it). arm64: both
    /// list the same iomem lines, so RAM cannot tell them apart; kexec_load is the only path
    /// on Debian's arm64 kernels (no `CONFIG_KEXEC_FILE`).
    pub fn infer_load_path(self, loaded: &RamRanges) -> LoadPath {
        match self {
            Arch::X86_64 => {
                let low = RamRanges::from_ranges([X86_64_KERNEL_LOW_EXCLUDE]);
                if loaded.intersection(&low).is_empty() {
                    LoadPath::KexecFileLoad
                } else {
                    LoadPath::KexecLoad
                }
            }
            Arch::Aarch64 => LoadPath::KexecLoad,
        }
    }
}

/// Who built the header, which decides what RAM it lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoadPath {
    /// The kernel builds it (`crash_load_segments` -> `prepare_elf_headers`).
    KexecFileLoad,
    /// kexec-tools builds it in user space (`load_crashdump_segments`).
    KexecLoad,
}

impl LoadPath {
    pub fn as_str(self) -> &'static str {
        match self {
            LoadPath::KexecFileLoad => "kexec_file_load",
            LoadPath::KexecLoad => "kexec_load",
        }
    }

    /// The load path whose header, on this machine, lists `loaded`.
    pub fn infer(loaded: &RamRanges) -> LoadPath {
        Arch::RUNNING.infer_load_path(loaded)
    }
}

impl std::str::FromStr for LoadPath {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "kexec_file_load" => Ok(LoadPath::KexecFileLoad),
            "kexec_load" => Ok(LoadPath::KexecLoad),
            other => Err(format!(
                "unknown load path {other:?}: expected kexec_file_load or kexec_load"
            )),
        }
    }
}

/// What `load` would put in this machine's header for its iomem ([`Arch::crash_memory_ranges`]).
pub fn crash_memory_ranges(iomem: &Iomem, load: LoadPath) -> Result<CrashMem, CapacityExceeded> {
    Arch::RUNNING.crash_memory_ranges(iomem, load)
}

/// The RAM a correct header of this machine lists ([`Arch::expected_ram`]).
pub fn expected_ram(iomem: &Iomem, load: LoadPath) -> Result<RamRanges, CapacityExceeded> {
    Arch::RUNNING.expected_ram(iomem, load)
}

/// Whether a `PT_LOAD` of a header for `e_machine` maps kernel text; no machine without rules
/// has any.
pub fn is_kernel_text(e_machine: u16, p_vaddr: u64) -> bool {
    Arch::of_machine(e_machine).is_some_and(|a| a.is_kernel_text(p_vaddr))
}

/// A header the capture kernel will mishandle although it parses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "defect", rename_all = "snake_case")]
pub enum HeaderDefect {
    /// `/proc/vmcore`'s size is the sum of every `p_memsz` (`get_vmcore_size`): it wraps.
    #[error(
        "the kernel-text PT_LOAD (p_paddr {paddr:#x}, p_memsz {memsz:#x}) runs past 2^64: the capture kernel's /proc/vmcore size will be impossible"
    )]
    KernelTextWraps { paddr: u64, memsz: u64 },
    /// The kernel image is in RAM the header lists; elsewhere the dump tools read garbage.
    #[error(
        "the kernel-text PT_LOAD (p_paddr {paddr:#x}, p_memsz {memsz:#x}) is not inside the RAM the header lists"
    )]
    KernelTextOutsideRam { paddr: u64, memsz: u64 },
}

/// What in `header` the capture kernel will mishandle (kexec-tools 2.0.25's arm64 text
/// segment, for one); empty for a sound header.
pub fn header_defects(header: &ElfCoreHeader) -> Vec<HeaderDefect> {
    let ram = header.ram_ranges();
    header
        .segments
        .iter()
        .filter(|s| s.kind == SegmentKind::KernelText && s.memsz > 0)
        .filter_map(|s| {
            let (paddr, memsz) = (s.paddr, s.memsz);
            match s.phys_range() {
                None => Some(HeaderDefect::KernelTextWraps { paddr, memsz }),
                Some(text) if !RamRanges::from_ranges([text]).subtract(&ram).is_empty() => {
                    Some(HeaderDefect::KernelTextOutsideRam { paddr, memsz })
                }
                Some(_) => None,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use goblin::elf::header::{EM_AARCH64, EM_RISCV, EM_X86_64};
    use proptest::prelude::*;

    use super::*;
    use crate::model::elfcorehdr::{HeaderInputs, KernelText, NoteRegion, build};

    const IOMEM: &str = "\
00000000-00000fff : Reserved
00001000-0009fbff : System RAM
0009fc00-000fffff : Reserved
00100000-7ffdffff : System RAM
  01000000-01ffffff : Kernel code
  6f000000-7effffff : Crash kernel
7ffe0000-7fffffff : Reserved
100000000-17fffffff : System RAM
  170000000-177ffffff : Crash kernel
";

    /// An arm64 virt guest after a virtio-mem grow, shaped as LAB.md §8 records it: the
    /// device's RAM nested under it, a `reserved` (NOMAP) hole, the crash reservation.
    const ARM64_IOMEM: &str = "\
09000000-09000fff : pl011@9000000
40000000-4fffffff : System RAM
  40210000-41d1ffff : Kernel code
  41d20000-4221ffff : Kernel data
50000000-5000ffff : reserved
50010000-7fffffff : System RAM
  60000000-6fffffff : Crash kernel
80000000-bfffffff : virtio1
  80000000-9fffffff : System RAM (virtio_mem)
";

    fn r(start: u64, end: u64) -> PhysRange {
        PhysRange::new(start, end).unwrap()
    }

    fn arm64_iomem() -> Iomem {
        Iomem::parse(ARM64_IOMEM).unwrap()
    }

    #[test]
    fn kexec_file_load_drops_low_mib_and_both_reservations() {
        let io = Iomem::parse(IOMEM).unwrap();
        let mem = Arch::X86_64
            .crash_memory_ranges(&io, LoadPath::KexecFileLoad)
            .unwrap();
        assert_eq!(
            mem.ranges(),
            &[
                r(0x100000, 0x6effffff),
                r(0x7f000000, 0x7ffdffff),
                r(0x1_0000_0000, 0x1_6fff_ffff),
                r(0x1_7800_0000, 0x1_7fff_ffff),
            ]
        );
        assert_eq!(mem.max_nr_ranges(), 3 + 3);
    }

    #[test]
    fn kexec_load_keeps_low_ram() {
        let io = Iomem::parse(IOMEM).unwrap();
        let mem = Arch::X86_64
            .crash_memory_ranges(&io, LoadPath::KexecLoad)
            .unwrap();
        assert_eq!(mem.ranges()[0], r(0x1000, 0x9fbff));
        assert_eq!(mem.ranges().len(), 5);
    }

    #[test]
    fn load_path_inference_from_low_ram() {
        let io = Iomem::parse(IOMEM).unwrap();
        for load in [LoadPath::KexecFileLoad, LoadPath::KexecLoad] {
            let ram = Arch::X86_64.expected_ram(&io, load).unwrap();
            assert_eq!(Arch::X86_64.infer_load_path(&ram), load);
        }
    }

    #[test]
    fn the_running_machine_and_header_machines_pick_their_rules() {
        assert_eq!(Arch::of_machine(EM_X86_64), Some(Arch::X86_64));
        assert_eq!(Arch::of_machine(EM_AARCH64), Some(Arch::Aarch64));
        assert_eq!(Arch::of_machine(EM_RISCV), None);
        assert_eq!(
            Arch::RUNNING,
            if cfg!(target_arch = "aarch64") {
                Arch::Aarch64
            } else {
                Arch::X86_64
            }
        );
    }

    #[test]
    fn kernel_text_is_recognized_by_mapping() {
        assert!(is_kernel_text(EM_X86_64, 0xffff_ffff_8100_0000));
        assert!(!is_kernel_text(
            EM_X86_64,
            X86_64_DEFAULT_PAGE_OFFSET + 0x100000
        ));
        // arm64 6.1 (48-bit VA): `_text` at KIMAGE_VADDR + KASLR, RAM in the linear map.
        assert!(is_kernel_text(EM_AARCH64, 0xffff_8000_0801_0000));
        assert!(!is_kernel_text(
            EM_AARCH64,
            AARCH64_PAGE_OFFSET_48 + 0x4000_0000
        ));
        // 52-bit VA: the linear map starts at -(1 << 52), still below the image.
        assert!(!is_kernel_text(EM_AARCH64, 0xfff0_0000_4000_0000));
        assert!(!is_kernel_text(EM_RISCV, 0xffff_ffff_8100_0000));
    }

    /// Both loaders list the lines named exactly `System RAM`, at every depth, minus the
    /// reservation: `System RAM (virtio_mem)` is not `System RAM\n` (kexec-tools) and is
    /// `MEMBLOCK_DRIVER_MANAGED` (kexec_file_load, which sizes `crash_mem` like
    /// `prepare_elf_headers`); RAM cannot tell the two apart.
    #[test]
    fn arm64_loaders_list_plain_system_ram_at_every_depth_minus_the_reservations() {
        for (load, slots) in [
            (LoadPath::KexecLoad, usize::MAX),
            (LoadPath::KexecFileLoad, 2 + 2),
        ] {
            let mem = Arch::Aarch64
                .crash_memory_ranges(&arm64_iomem(), load)
                .unwrap();
            assert_eq!(
                mem.ranges(),
                &[
                    r(0x4000_0000, 0x4fff_ffff),
                    r(0x5001_0000, 0x5fff_ffff),
                    r(0x7000_0000, 0x7fff_ffff),
                ],
                "{load:?}"
            );
            assert_eq!(mem.max_nr_ranges(), slots, "{load:?}");
            assert_eq!(
                Arch::Aarch64.infer_load_path(&mem.to_ram_ranges()),
                LoadPath::KexecLoad
            );
        }
    }

    #[test]
    fn arm64_both_loaders_leave_out_driver_managed_ram_and_a_correct_header_does_not() {
        let io = arm64_iomem();
        let virtio_mem = RamRanges::from_ranges([r(0x8000_0000, 0x9fff_ffff)]);
        for load in [LoadPath::KexecFileLoad, LoadPath::KexecLoad] {
            let listed = Arch::Aarch64
                .crash_memory_ranges(&io, load)
                .unwrap()
                .to_ram_ranges();
            assert!(listed.intersection(&virtio_mem).is_empty(), "{load:?}");
            let expected = Arch::Aarch64.expected_ram(&io, load).unwrap();
            assert_eq!(expected.intersection(&virtio_mem), virtio_mem);
            // Minus the reservation and the NOMAP hole, nothing else.
            assert_eq!(
                expected,
                RamRanges::from_ranges([
                    r(0x4000_0000, 0x4fff_ffff),
                    r(0x5001_0000, 0x5fff_ffff),
                    r(0x7000_0000, 0x9fff_ffff),
                ])
            );
            assert_eq!(Arch::Aarch64.omitted_by(&io, load).unwrap(), virtio_mem);
        }
        // On x86_64 a loader that lists driver-managed RAM omits nothing.
        let x86 = Iomem::parse(IOMEM).unwrap();
        assert!(
            Arch::X86_64
                .omitted_by(&x86, LoadPath::KexecFileLoad)
                .unwrap()
                .is_empty()
        );
    }

    /// An arm64 header as a loader writes it: notes, the kernel text, `ram`.
    fn arm64_header(text: KernelText, ram: &[PhysRange]) -> ElfCoreHeader {
        let mut bytes = build(&HeaderInputs {
            arch: Arch::X86_64,
            cpu_notes: &[NoteRegion {
                paddr: 0x4fa1_8000,
                size: 0x1d8,
            }],
            vmcoreinfo: NoteRegion {
                paddr: 0x4100_0000,
                size: 0x1000,
            },
            kernel_text: Some(text),
            ram,
            page_offset: AARCH64_PAGE_OFFSET_48,
        })
        .unwrap();
        // e_machine: the builder writes x86_64's.
        bytes[18..20].copy_from_slice(&EM_AARCH64.to_le_bytes());
        ElfCoreHeader::parse(&bytes).unwrap()
    }

    /// arm64 6.1's `_text` without KASLR: KIMAGE_VADDR, `_PAGE_END(48)` + the 128 MiB module area.
    const ARM64_TEXT_VADDR: u64 = 0xffff_8000_0800_0000;

    #[test]
    fn kexec_tools_2_0_25s_arm64_text_segment_parses_and_is_flagged() {
        let ram = [r(0x4000_0000, 0x5fff_ffff), r(0x7000_0000, 0x7fff_ffff)];
        // LAB.md §8: what Debian 12's kexec-tools 2.0.25 wrote on 6.1 (its p_vaddr is not
        // recorded there; `_text`'s is assumed, as kexec-tools reads it from kallsyms).
        let bad = arm64_header(
            KernelText {
                vaddr: ARM64_TEXT_VADDR,
                paddr: 0x4671_2d20_0000,
                size: 0xffff_b98f_1501_0000,
            },
            &ram,
        );
        assert_eq!(bad.machine, EM_AARCH64);
        assert_eq!(bad.count(SegmentKind::KernelText), 1);
        assert_eq!(bad.ram_ranges(), RamRanges::from_ranges(ram));
        assert_eq!(
            header_defects(&bad),
            [HeaderDefect::KernelTextWraps {
                paddr: 0x4671_2d20_0000,
                memsz: 0xffff_b98f_1501_0000
            }]
        );
        let sound = arm64_header(
            KernelText {
                vaddr: ARM64_TEXT_VADDR,
                paddr: 0x4020_0000,
                size: 0x0202_0000,
            },
            &ram,
        );
        assert_eq!(header_defects(&sound), []);
        let elsewhere = arm64_header(
            KernelText {
                vaddr: ARM64_TEXT_VADDR,
                paddr: 0x6000_0000,
                size: 0x100_0000,
            },
            &ram,
        );
        assert!(matches!(
            header_defects(&elsewhere)[..],
            [HeaderDefect::KernelTextOutsideRam { .. }]
        ));
    }

    #[test]
    fn wrapping_ram_still_fails_to_parse() {
        let mut bytes = build(&HeaderInputs {
            arch: Arch::X86_64,
            cpu_notes: &[],
            vmcoreinfo: NoteRegion { paddr: 0, size: 1 },
            kernel_text: None,
            ram: &[r(0x4000_0000, 0x4fff_ffff)],
            page_offset: AARCH64_PAGE_OFFSET_48,
        })
        .unwrap();
        bytes[18..20].copy_from_slice(&EM_AARCH64.to_le_bytes());
        // The RAM PT_LOAD is the second program header: its p_memsz at 64 + 56 + 40.
        bytes[64 + 56 + 40..64 + 56 + 48].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(
            ElfCoreHeader::parse(&bytes),
            Err(crate::model::elfcorehdr::HeaderError::SegmentOverflow { index: 1, .. })
        ));
    }

    /// An arm64 iomem: `n` plain System RAM banks with `virtio` device RAM nested after them
    /// and a crash reservation inside one bank.
    fn arm64_iomem_of(
        banks: &[(u64, u64)],
        virtio: &[(u64, u64)],
        crash: (usize, u64, u64),
    ) -> String {
        let mut text = String::new();
        let mut at = 0x4000_0000u64;
        for (i, (gap, size)) in banks.iter().enumerate() {
            at += gap * 0x1_0000;
            let end = at + size * 0x1_0000 - 1;
            text.push_str(&format!("{at:08x}-{end:08x} : System RAM\n"));
            if i == crash.0 % banks.len() {
                let s = at + (crash.1 % size) * 0x1_0000;
                let e = (s + crash.2 * 0x1_0000 - 1).min(end);
                text.push_str(&format!("  {s:08x}-{e:08x} : Crash kernel\n"));
            }
            at = end + 1;
        }
        for (gap, size) in virtio {
            at += gap * 0x1_0000;
            let end = at + size * 0x1000_0000 - 1;
            text.push_str(&format!("{at:08x}-{end:08x} : virtio\n"));
            text.push_str(&format!("  {at:08x}-{end:08x} : System RAM (virtio_mem)\n"));
            at = end + 1;
        }
        text
    }

    proptest! {
        /// Whatever the layout: a correct arm64 header is each loader's list plus exactly the
        /// driver-managed RAM, and never covers a reservation.
        #[test]
        fn arm64_expected_is_the_loaders_list_plus_driver_managed_ram(
            banks in proptest::collection::vec((1u64..64, 1u64..4096), 1..6),
            virtio in proptest::collection::vec((0u64..4, 1u64..4), 0..3),
            crash in (0usize..6, 0u64..4096, 1u64..2048),
        ) {
            let io = Iomem::parse(&arm64_iomem_of(&banks, &virtio, crash)).unwrap();
            let driver_managed = RamRanges::from_ranges(
                io.resources().iter()
                    .filter(|x| io.name(x) == "System RAM (virtio_mem)")
                    .map(|x| x.range),
            );
            let reserved = RamRanges::from_ranges(io.crash_reservations());
            for load in [LoadPath::KexecFileLoad, LoadPath::KexecLoad] {
                let listed = Arch::Aarch64.crash_memory_ranges(&io, load).unwrap().to_ram_ranges();
                let expected = Arch::Aarch64.expected_ram(&io, load).unwrap();
                prop_assert_eq!(listed.union(&driver_managed), expected.clone());
                prop_assert!(expected.intersection(&reserved).is_empty());
                prop_assert_eq!(Arch::Aarch64.omitted_by(&io, load).unwrap(), driver_managed.clone());
                prop_assert_eq!(
                    expected.total_bytes() + reserved.total_bytes(),
                    io.system_ram().total_bytes()
                );
            }
        }

        /// Any kernel-text segment that wraps is flagged, whatever else the header holds.
        #[test]
        fn a_wrapping_text_segment_is_always_flagged(paddr in 1u64.., memsz in 1u64..) {
            prop_assume!(paddr.checked_add(memsz).is_none());
            let h = arm64_header(
                KernelText { vaddr: ARM64_TEXT_VADDR, paddr, size: memsz },
                &[r(0x4000_0000, 0x7fff_ffff)],
            );
            prop_assert_eq!(header_defects(&h), [HeaderDefect::KernelTextWraps { paddr, memsz }]);
        }
    }
}
