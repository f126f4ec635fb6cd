//! The event ABI between the kdump-agent eBPF probes and the agent.
//!
//! Every record on the ring buffer starts with an [`EventHeader`]; `kind` says which
//! struct follows. All structs are `#[repr(C)]` with explicit padding so the layout is the
//! same on both sides and no uninitialised bytes cross the kernel boundary.
#![no_std]

/// Name of the ring buffer map in the eBPF object.
pub const EVENTS_MAP: &str = "EVENTS";

/// Name of the one-entry array counting records the ring buffer had no room for.
pub const LOST_MAP: &str = "LOST";

/// Ring buffer size in bytes (a power of two, a multiple of the page size).
pub const EVENTS_RING_BYTES: u32 = 1024 * 1024;

/// Bytes of a crash ELF header carried by one [`HeaderChunk`].
pub const HEADER_CHUNK_BYTES: usize = 4096;

/// Most chunks one header capture emits (a bounded loop for the verifier: 6.1's gives up on
/// 32): 64 KiB, room for the ELF header and 1,169 program headers.
pub const HEADER_MAX_CHUNKS: u32 = 16;

/// Most bytes of one captured header.
pub const HEADER_MAX_BYTES: usize = HEADER_CHUNK_BYTES * HEADER_MAX_CHUNKS as usize;

/// Most `kexec_load` segments the kernel accepts (`KEXEC_SEGMENT_MAX`).
pub const KEXEC_SEGMENT_MAX: u32 = 16;

/// `kexec_file_load` command line bytes carried (x86 `COMMAND_LINE_SIZE`).
pub const CMDLINE_BYTES: usize = 2048;

/// `TASK_COMM_LEN`.
pub const COMM_BYTES: usize = 16;

/// `KEXEC_ON_CRASH` (kexec_load flags) and `KEXEC_FILE_ON_CRASH` (kexec_file_load flags).
pub const KEXEC_ON_CRASH: u64 = 0x1;
pub const KEXEC_FILE_ON_CRASH: u64 = 0x2;

/// ELF64 sizes and the offsets the probes read (the agent parses the rest with goblin).
pub const ELF64_EHDR_BYTES: usize = 64;
pub const ELF64_PHDR_BYTES: usize = 56;
/// Offset of `e_phnum` (u16) in an ELF64 header.
pub const ELF64_PHNUM_OFFSET: usize = 56;
/// Offset of `e_type` (u16).
pub const ELF_TYPE_OFFSET: usize = 16;
/// `ET_CORE`.
pub const ET_CORE: u16 = 4;

/// What kind of record follows the header.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A memory hotplug function was entered or returned: [`MemoryEvent`].
    Memory = 1,
    /// `sys_enter_kexec_load`: [`KexecLoadEvent`].
    KexecLoadEnter = 2,
    /// `sys_enter_kexec_file_load`: [`KexecFileLoadEvent`].
    KexecFileLoadEnter = 3,
    /// `sys_exit_kexec_load` / `sys_exit_kexec_file_load`: [`KexecExitEvent`].
    KexecExit = 4,
    /// A piece of a captured crash ELF header: [`HeaderChunk`].
    HeaderChunk = 5,
    /// `crash_prepare_elf64_headers` returned: [`HeaderBuiltEvent`].
    HeaderBuilt = 6,
    /// `crash_handle_hotplug_event` or `arch_crash_handle_hotplug_event` was entered or
    /// returned: [`HotplugUpdateEvent`].
    HotplugUpdate = 7,
    /// `arch_kexec_unprotect_crashkres` or `arch_kexec_protect_crashkres` was entered:
    /// [`CrashProtectionEvent`].
    CrashProtection = 8,
}

impl EventKind {
    pub fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            1 => Self::Memory,
            2 => Self::KexecLoadEnter,
            3 => Self::KexecFileLoadEnter,
            4 => Self::KexecExit,
            5 => Self::HeaderChunk,
            6 => Self::HeaderBuilt,
            7 => Self::HotplugUpdate,
            8 => Self::CrashProtection,
            _ => return None,
        })
    }
}

/// Common prefix of every record.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventHeader {
    /// An [`EventKind`] value.
    pub kind: u32,
    /// CPU the probe ran on.
    pub cpu: u32,
    /// `bpf_ktime_get_ns()` when the probe fired (CLOCK_MONOTONIC, nanoseconds).
    pub ktime_ns: u64,
    /// `bpf_get_current_pid_tgid()`: thread id in the low 32 bits, process id in the high ones.
    /// Entry and exit records of one call share it.
    pub pid_tgid: u64,
}

/// Entry or return of a probed function.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Entry = 0,
    Exit = 1,
}

impl Phase {
    pub fn from_u32(v: u32) -> Option<Self> {
        match v {
            0 => Some(Self::Entry),
            1 => Some(Self::Exit),
            _ => None,
        }
    }
}

/// The probed memory hotplug function; it decides the unit of [`MemoryEvent::start`]/`size`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryOp {
    /// `online_pages(pfn, nr_pages, ...)`: page frames.
    OnlinePages = 1,
    /// `offline_pages(start_pfn, nr_pages, ...)`: page frames.
    OfflinePages = 2,
    /// `add_memory_resource(nid, res, flags)`: bytes (`res->start`, `res->end - res->start + 1`).
    AddMemoryResource = 3,
    /// `remove_memory(start, size)`: bytes.
    RemoveMemory = 4,
    /// `__remove_memory(start, size)`: bytes (ACPI DIMM removal).
    DunderRemoveMemory = 5,
    /// `offline_and_remove_memory(start, size)`: bytes (virtio-mem).
    OfflineAndRemoveMemory = 6,
}

impl MemoryOp {
    pub fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            1 => Self::OnlinePages,
            2 => Self::OfflinePages,
            3 => Self::AddMemoryResource,
            4 => Self::RemoveMemory,
            5 => Self::DunderRemoveMemory,
            6 => Self::OfflineAndRemoveMemory,
            _ => return None,
        })
    }

    /// `start`/`size` count page frames rather than bytes.
    pub fn counts_pages(self) -> bool {
        matches!(self, Self::OnlinePages | Self::OfflinePages)
    }
}

/// A memory hotplug function entered (arguments) or returned (result). The exit record of a
/// function carries no arguments: the agent pairs it with the entry by `pid_tgid`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryEvent {
    pub header: EventHeader,
    /// A [`MemoryOp`] value.
    pub op: u32,
    /// A [`Phase`] value.
    pub phase: u32,
    /// First page frame or byte (entry only).
    pub start: u64,
    /// Page frames or bytes (entry only).
    pub size: u64,
    /// The function's return value (exit only; 0 for `void` functions).
    pub result: i64,
}

/// `kexec_load(entry, nr_segments, segments, flags)` entered.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KexecLoadEvent {
    pub header: EventHeader,
    pub comm: [u8; COMM_BYTES],
    pub entry: u64,
    pub nr_segments: u64,
    pub flags: u64,
    /// Index of the segment holding an ELF `ET_CORE` header, or -1 (none, or not a crash load).
    pub header_segment: i32,
    pub _pad: u32,
    /// That segment's physical destination (`mem`) and buffer size (`bufsz`).
    pub header_mem: u64,
    pub header_bufsz: u64,
}

/// `kexec_file_load(kernel_fd, initrd_fd, cmdline_len, cmdline, flags)` entered.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KexecFileLoadEvent {
    pub header: EventHeader,
    pub comm: [u8; COMM_BYTES],
    pub kernel_fd: i32,
    pub initrd_fd: i32,
    pub cmdline_len: u64,
    pub flags: u64,
    /// NUL-terminated (or all bytes used).
    pub cmdline: [u8; CMDLINE_BYTES],
}

/// Which syscall a [`KexecExitEvent`] ends.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KexecSyscall {
    KexecLoad = 1,
    KexecFileLoad = 2,
}

impl KexecSyscall {
    pub fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(Self::KexecLoad),
            2 => Some(Self::KexecFileLoad),
            _ => None,
        }
    }
}

/// A kexec syscall returned.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KexecExitEvent {
    pub header: EventHeader,
    /// A [`KexecSyscall`] value.
    pub syscall: u32,
    pub _pad: u32,
    /// 0 or a negative errno.
    pub result: i64,
}

/// Where a captured header came from.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderOrigin {
    /// The user buffer of a `kexec_load` segment (kexec-tools built it).
    UserSegment = 1,
    /// The buffer `crash_prepare_elf64_headers` built in the kernel.
    Kernel = 2,
}

impl HeaderOrigin {
    pub fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(Self::UserSegment),
            2 => Some(Self::Kernel),
            _ => None,
        }
    }
}

/// `HEADER_CHUNK_BYTES` of a header (fewer in the last chunk). A capture is the set of chunks
/// sharing `capture` (the capturing probe's ktime) and `pid_tgid`; chunk `seq` holds bytes
/// `seq * HEADER_CHUNK_BYTES ..`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeaderChunk {
    pub header: EventHeader,
    pub capture: u64,
    /// A [`HeaderOrigin`] value.
    pub origin: u32,
    pub seq: u32,
    /// Used bytes of the whole header (ELF header + `e_phnum` program headers); more than
    /// `HEADER_MAX_BYTES` means the capture is truncated.
    pub total_bytes: u32,
    /// Valid bytes in `data`.
    pub len: u32,
    pub data: [u8; HEADER_CHUNK_BYTES],
}

/// `crash_prepare_elf64_headers(mem, need_kernel_map, addr, sz)` returned; on success its
/// header follows as chunks with the same `capture`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeaderBuiltEvent {
    pub header: EventHeader,
    pub capture: u64,
    /// 0 or a negative errno.
    pub result: i64,
    /// `*sz`: bytes allocated for the header (room for hotplug growth).
    pub allocated_bytes: u64,
    /// ELF header + `e_phnum` program headers.
    pub used_bytes: u64,
}

/// A hotplug handler of the kernel's crash code entered or returned (both return nothing).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HotplugUpdateEvent {
    pub header: EventHeader,
    /// A [`Phase`] value.
    pub phase: u32,
    /// A [`HotplugHandler`] value.
    pub handler: u32,
}

/// Which of the kernel's two crash hotplug handlers a [`HotplugUpdateEvent`] is about.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HotplugHandler {
    /// `arch_crash_handle_hotplug_event`: the rewrite itself.
    Arch = 0,
    /// `crash_handle_hotplug_event`: runs for every hotplug event and calls the arch handler
    /// only when it got the kexec lock and the image accepts updates.
    Generic = 1,
}

impl HotplugHandler {
    pub fn from_u32(v: u32) -> Option<Self> {
        match v {
            0 => Some(Self::Arch),
            1 => Some(Self::Generic),
            _ => None,
        }
    }
}

/// The kernel opened (`Unprotect`) or closed (`Protect`) the crash kernel's reserved memory.
/// A load unprotects it just before freeing the loaded image and protects it once the new
/// image is in place; an unload unprotects it and leaves it so.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protection {
    Unprotect = 0,
    Protect = 1,
}

impl Protection {
    pub fn from_u32(v: u32) -> Option<Self> {
        match v {
            0 => Some(Self::Unprotect),
            1 => Some(Self::Protect),
            _ => None,
        }
    }
}

/// `arch_kexec_unprotect_crashkres()` or `arch_kexec_protect_crashkres()` entered (both take
/// no arguments and return nothing).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CrashProtectionEvent {
    pub header: EventHeader,
    /// A [`Protection`] value.
    pub protection: u32,
    pub _pad: u32,
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn layouts_have_no_implicit_padding() {
        let h = size_of::<EventHeader>();
        assert_eq!(h, 4 + 4 + 8 + 8);
        assert_eq!(size_of::<MemoryEvent>(), h + 4 + 4 + 8 + 8 + 8);
        assert_eq!(size_of::<KexecLoadEvent>(), h + 16 + 8 * 3 + 4 + 4 + 8 + 8);
        assert_eq!(
            size_of::<KexecFileLoadEvent>(),
            h + 16 + 4 + 4 + 8 + 8 + CMDLINE_BYTES
        );
        assert_eq!(size_of::<KexecExitEvent>(), h + 4 + 4 + 8);
        assert_eq!(size_of::<HeaderChunk>(), h + 8 + 4 * 4 + HEADER_CHUNK_BYTES);
        assert_eq!(size_of::<HeaderBuiltEvent>(), h + 8 * 4);
        assert_eq!(size_of::<HotplugUpdateEvent>(), h + 8);
        assert_eq!(size_of::<CrashProtectionEvent>(), h + 8);
    }

    #[test]
    fn kinds_round_trip() {
        for v in 1..=8 {
            assert_eq!(EventKind::from_u32(v).map(|k| k as u32), Some(v));
        }
        assert_eq!(EventKind::from_u32(0), None);
        assert_eq!(EventKind::from_u32(9), None);
        for v in 1..=6 {
            assert_eq!(MemoryOp::from_u32(v).map(|k| k as u32), Some(v));
        }
        assert_eq!(MemoryOp::from_u32(7), None);
        assert_eq!(Phase::from_u32(2), None);
        assert_eq!(Protection::from_u32(2), None);
        assert_eq!(KexecSyscall::from_u32(3), None);
        assert_eq!(HeaderOrigin::from_u32(0), None);
    }

    #[test]
    fn header_capture_fits_the_ring() {
        // The whole capture must fit in the ring several times over, or bursts always lose it.
        assert!(HEADER_MAX_BYTES * 4 <= EVENTS_RING_BYTES as usize);
    }
}
