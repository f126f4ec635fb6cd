//! Typed events: what the probes, the uevent listener and the rescans tell the agent.
//!
//! Sources decode their raw records into these; nothing downstream sees raw offsets.
use std::{fmt, path::PathBuf};

use crate::model::elfcorehdr::LoadPath;

/// What happened to a range of memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HotplugAction {
    /// A block came online (`online_pages`, uevent `online`).
    Online,
    /// A block went offline (`offline_pages`, uevent `offline`).
    Offline,
    /// Memory was added to the resource tree (`add_memory_resource`, uevent `add`).
    Add,
    /// Memory was removed (`remove_memory`, uevent `remove`).
    Remove,
}

impl HotplugAction {
    pub const ALL: [Self; 4] = [Self::Online, Self::Offline, Self::Add, Self::Remove];

    /// The `action` label value of `kdump_memory_hotplug_events_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Online => "online",
            Self::Offline => "offline",
            Self::Add => "add",
            Self::Remove => "remove",
        }
    }
}

impl fmt::Display for HotplugAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which mechanism delivered the agent's events (`kdump_agent_event_source{source}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventSource {
    /// eBPF probes on the kernel's hotplug and kexec paths.
    Ebpf,
    /// `NETLINK_KOBJECT_UEVENT` messages of the `memory` subsystem.
    Uevent,
    /// Periodic `/proc/iomem` rescans only.
    Poll,
}

impl EventSource {
    pub const ALL: [Self; 3] = [Self::Ebpf, Self::Uevent, Self::Poll];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ebpf => "ebpf",
            Self::Uevent => "uevent",
            Self::Poll => "poll",
        }
    }
}

impl fmt::Display for EventSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One thing the agent learned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A memory block or range changed state.
    Memory {
        action: HotplugAction,
        /// Physical address of the first byte, when the source knows it.
        phys_start: Option<u64>,
        /// Size in bytes, when the source knows it.
        bytes: Option<u64>,
        source: EventSource,
        /// CLOCK_MONOTONIC nanoseconds when the kernel saw it (probes only).
        ktime_ns: Option<u64>,
    },
    /// A CPU was added, removed, onlined or offlined (uevents of the `cpu` subsystem): the
    /// header must have a note for every online CPU.
    Cpu { action: HotplugAction, cpu: u32 },
    /// A periodic rescan found `/proc/iomem` (or the online CPUs) different from the last one.
    IomemChanged,
    /// The kernel refused a hotplug operation (probes only): nothing changed.
    MemoryFailed {
        action: HotplugAction,
        phys_start: Option<u64>,
        bytes: Option<u64>,
        /// The function's negative errno.
        result: i64,
    },
    /// A crash kernel was loaded or unloaded (probes only).
    KexecLoad(KexecLoad),
    /// The kernel rewrote the loaded crash header after a hotplug event (probes only).
    KernelHeaderUpdate(KernelHeaderUpdate),
    /// The kernel's crash hotplug handler returned without rewriting the header (probes only):
    /// with an image that accepts updates loaded, the kexec lock was busy and the update was
    /// skipped ("kexec_trylock() failed"); otherwise the image takes no updates.
    KernelUpdateSkipped {
        ktime_ns: u64,
        /// Another crash load held the lock: the image it puts in place may miss the change.
        during_load: bool,
    },
    /// Another process entered a crash load (probes only): the kernel has freed (or is about
    /// to free) the loaded image, and the new one is not in place until the load returns.
    KexecLoadStarted { pid: u32, comm: String },
    /// A load put a crash image in place after the node had none (probes only).
    UnprotectedWindow(UnprotectedWindow),
    /// Records were dropped (ring buffer full, socket overrun): the agent must resync.
    Lost { count: u64, source: EventSource },
}

impl Event {
    /// The agent's own load, or the window it closed: news of what the agent did, not of a
    /// change in RAM.
    pub fn is_own(&self) -> bool {
        match self {
            Self::KexecLoad(load) => load.by_agent,
            Self::UnprotectedWindow(window) => window.by_agent,
            _ => false,
        }
    }
}

/// Where a captured crash ELF header came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderSource {
    /// The `kexec_load` segment kexec-tools built in user space.
    KexecLoadSegment,
    /// `crash_prepare_elf64_headers` in the kernel (kexec_file_load or a hotplug rewrite).
    Kernel,
}

/// The used bytes of a crash ELF header as a probe copied them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CapturedHeader {
    pub source: HeaderSource,
    pub bytes: Vec<u8>,
    /// All used bytes were copied (false: larger than a capture, or a part was unreadable).
    pub complete: bool,
    /// Used bytes of the whole header.
    pub total_bytes: u64,
}

/// A `kexec_load` or `kexec_file_load` of a crash kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KexecLoad {
    pub syscall: LoadPath,
    pub pid: u32,
    pub comm: String,
    pub flags: u64,
    /// An unload (`kexec -p -u`) rather than a load.
    pub unload: bool,
    /// The agent (or a loader it started) made this call.
    pub by_agent: bool,
    /// 0 or a negative errno.
    pub result: i64,
    /// Enter to exit of the syscall, nanoseconds (unknown when the agent missed the entry).
    pub duration_ns: Option<u64>,
    /// The header that was loaded, when a probe copied it.
    pub header: Option<CapturedHeader>,
    /// The files and command line of a `kexec_file_load`.
    pub files: Option<Box<FileLoad>>,
    /// CLOCK_MONOTONIC nanoseconds of the syscall's return.
    pub ktime_ns: u64,
}

impl KexecLoad {
    pub fn succeeded(&self) -> bool {
        self.result == 0
    }

    /// Test fixture: `kexec -s -p vmlinuz-6.12 --initrd=...` run in /boot by pid 4242, its
    /// kernel (8,000,000 bytes) and initrd descriptors resolved to `kernel` and `initrd`.
    #[cfg(test)]
    pub fn distro_file_load(kernel: Option<PathBuf>, initrd: Option<PathBuf>) -> Self {
        Self {
            syscall: LoadPath::KexecFileLoad,
            pid: 4242,
            comm: "kexec".into(),
            flags: 2,
            unload: false,
            by_agent: false,
            result: 0,
            duration_ns: Some(1),
            header: None,
            files: Some(Box::new(FileLoad {
                kernel_fd: 3,
                initrd_fd: if initrd.is_some() { 4 } else { -1 },
                cmdline: "console=ttyS0 irqpoll\0".into(),
                kernel,
                initrd,
                kernel_bytes: Some(8_000_000),
                loader: Some(LoaderCommand {
                    cwd: "/boot".into(),
                    argv: [
                        "kexec",
                        "-s",
                        "-p",
                        "vmlinuz-6.12",
                        "--initrd=/boot/initrd.img-kdump",
                        "--append=irqpoll",
                    ]
                    .map(String::from)
                    .to_vec(),
                }),
            })),
            ktime_ns: 2,
        }
    }
}

/// What a `kexec_file_load` was given, so the same files can be loaded again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileLoad {
    pub kernel_fd: i32,
    /// -1 without an initrd.
    pub initrd_fd: i32,
    pub cmdline: String,
    /// `/proc/<pid>/fd/<fd>` resolved while the loader was still running.
    pub kernel: Option<PathBuf>,
    pub initrd: Option<PathBuf>,
    /// Size of the kernel descriptor's file (kexec-tools >= 2.0.28 passes a memfd copy).
    pub kernel_bytes: Option<u64>,
    /// The loader's command, read while it was still running.
    pub loader: Option<LoaderCommand>,
}

/// A process's working directory and arguments (`/proc/<pid>/cwd`, `/proc/<pid>/cmdline`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoaderCommand {
    pub cwd: PathBuf,
    pub argv: Vec<String>,
}

/// One `arch_crash_handle_hotplug_event` call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelHeaderUpdate {
    /// The header the kernel built; `None` when it failed to build one (it then keeps the old).
    pub header: Option<CapturedHeader>,
    /// 0, or the negative errno of `crash_prepare_elf64_headers`.
    pub result: i64,
    pub duration_ns: Option<u64>,
    pub ktime_ns: u64,
}

impl KernelHeaderUpdate {
    pub fn succeeded(&self) -> bool {
        self.result == 0 && self.header.is_some()
    }
}

/// The time between the kernel releasing a loaded crash image (at the start of a load or an
/// unload) and the next load putting one in place: a panic in it is not captured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnprotectedWindow {
    pub duration_ns: u64,
    /// The load that closed the window.
    pub pid: u32,
    pub comm: String,
    pub by_agent: bool,
    /// CLOCK_MONOTONIC nanoseconds when the new image was in place.
    pub ktime_ns: u64,
}

impl UnprotectedWindow {
    pub fn seconds(&self) -> f64 {
        self.duration_ns as f64 / 1e9
    }
}
