//! Per-architecture rules for the crash ELF header, in one place: which RAM the loader lists,
//! and how to tell the kernel-text `PT_LOAD` from the RAM ones. x86_64 is encoded; of arm64
//! only the kernel-text rule so far (its loader's RAM list and exclusions belong here too).
use serde::Serialize;

use crate::model::{
    iomem::{GART, Iomem},
    ranges::{CapacityExceeded, CrashMem, PhysRange, RamRanges},
};

/// `__START_KERNEL_map`: the x86_64 kernel text mapping starts here; the direct map
/// (`PAGE_OFFSET`, randomized by KASLR) is always below it.
pub const X86_64_START_KERNEL_MAP: u64 = 0xffff_ffff_8000_0000;
/// x86_64 `PAGE_OFFSET` without KASLR (4-level paging).
pub const X86_64_DEFAULT_PAGE_OFFSET: u64 = 0xffff_8880_0000_0000;
/// arm64 `PAGE_END` for the smallest VA size it runs with (48 bits): the linear map lies below
/// it, the kernel image (`KIMAGE_VADDR`, past the modules area) above it.
pub const AARCH64_PAGE_END: u64 = 0xffff_8000_0000_0000;
/// `kexec_file_load` leaves out the low 1 MiB on x86_64 (`elf_header_exclude_ranges`: "it is
/// always reserved").
const X86_64_KERNEL_LOW_EXCLUDE: PhysRange = PhysRange {
    start: 0,
    end: 0xf_ffff,
};
/// The kernel sizes `crash_mem` as System RAM count + 3: crashk_res, crashk_low_res and the
/// low 1 MiB can each split one range (`fill_up_crash_elf_data`).
const X86_64_KERNEL_EXTRA_SLOTS: usize = 3;

/// Who built the header, which decides what RAM it lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
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

    /// The load path whose header lists `loaded`: only kexec-tools lists RAM below 1 MiB (the
    /// kernel excludes it), so a header covering any of it was built by kexec_load.
    pub fn infer(loaded: &RamRanges) -> LoadPath {
        let low = RamRanges::from_ranges([X86_64_KERNEL_LOW_EXCLUDE]);
        if loaded.intersection(&low).is_empty() {
            LoadPath::KexecFileLoad
        } else {
            LoadPath::KexecLoad
        }
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

/// The RAM ranges, one per `PT_LOAD`, that `load` would put in the header for this iomem on
/// x86_64, in the loader's own order and with its own splits.
///
/// - kexec_file_load: System RAM (`walk_system_ram_res`) minus the low 1 MiB, `crashk_res` and
///   `crashk_low_res` (`elf_header_exclude_ranges`), with the kernel's slot count.
/// - kexec_load: every `System RAM*` line minus each `Crash kernel` and any `GART`
///   (kexec-tools `get_crash_memory_ranges`); the first 640 KiB keep their physical address
///   (only their file offset moves to the backup region), so nothing else is removed.
pub fn crash_memory_ranges(iomem: &Iomem, load: LoadPath) -> Result<CrashMem, CapacityExceeded> {
    let ram = iomem.system_ram_resources();
    let mut reservations = iomem.crash_reservations();
    match load {
        LoadPath::KexecFileLoad => {
            let mut mem = CrashMem::new(ram.clone(), ram.len() + X86_64_KERNEL_EXTRA_SLOTS);
            mem.exclude(X86_64_KERNEL_LOW_EXCLUDE)?;
            // crashk_res (the high one when there are two) goes first, as in the kernel.
            reservations.reverse();
            for r in reservations {
                mem.exclude(r)?;
            }
            Ok(mem)
        }
        LoadPath::KexecLoad => {
            let mut mem = CrashMem::new(ram.clone(), usize::MAX);
            reservations.extend(iomem.named(GART).map(|r| r.range));
            for r in reservations {
                mem.exclude(r)?;
            }
            Ok(mem)
        }
    }
}

/// The RAM a correct header built by `load` lists for this iomem, as a byte set.
pub fn expected_ram(iomem: &Iomem, load: LoadPath) -> Result<RamRanges, CapacityExceeded> {
    crash_memory_ranges(iomem, load).map(|m| m.to_ram_ranges())
}

/// Whether a `PT_LOAD` maps kernel text rather than RAM through the direct map.
pub fn is_kernel_text(e_machine: u16, p_vaddr: u64) -> bool {
    match e_machine {
        goblin::elf::header::EM_X86_64 => p_vaddr >= X86_64_START_KERNEL_MAP,
        goblin::elf::header::EM_AARCH64 => p_vaddr >= AARCH64_PAGE_END,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn r(start: u64, end: u64) -> PhysRange {
        PhysRange::new(start, end).unwrap()
    }

    #[test]
    fn kexec_file_load_drops_low_mib_and_both_reservations() {
        let io = Iomem::parse(IOMEM).unwrap();
        let mem = crash_memory_ranges(&io, LoadPath::KexecFileLoad).unwrap();
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
        let mem = crash_memory_ranges(&io, LoadPath::KexecLoad).unwrap();
        assert_eq!(mem.ranges()[0], r(0x1000, 0x9fbff));
        assert_eq!(mem.ranges().len(), 5);
    }

    #[test]
    fn load_path_inference_from_low_ram() {
        let io = Iomem::parse(IOMEM).unwrap();
        for load in [LoadPath::KexecFileLoad, LoadPath::KexecLoad] {
            assert_eq!(LoadPath::infer(&expected_ram(&io, load).unwrap()), load);
        }
    }

    #[test]
    fn kernel_text_is_recognized_by_mapping() {
        use goblin::elf::header::{EM_AARCH64, EM_X86_64};
        assert!(is_kernel_text(EM_X86_64, 0xffff_ffff_8100_0000));
        assert!(!is_kernel_text(
            EM_X86_64,
            X86_64_DEFAULT_PAGE_OFFSET + 0x100000
        ));
        // arm64: the kernel image (6.1's kimage at 0xffff800008000000) above PAGE_END, the
        // linear map below it, 48-bit (0xffff000000000000) or 52-bit (0xfff0000000000000).
        assert!(is_kernel_text(EM_AARCH64, 0xffff_8000_0800_0000));
        assert!(!is_kernel_text(EM_AARCH64, 0xffff_0000_4000_0000));
        assert!(!is_kernel_text(EM_AARCH64, 0xfff0_0000_4000_0000));
        assert!(!is_kernel_text(0, 0xffff_ffff_8100_0000));
    }
}
