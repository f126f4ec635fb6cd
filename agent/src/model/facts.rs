//! What the kernel says about kexec and RAM, re-read on every rescan.
use serde::Serialize;

/// The kexec facts read from sysfs and `/proc/iomem` on every refresh.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct KdumpFacts {
    /// The kernel has kexec with crash support (`/sys/kernel/kexec_crash_loaded` exists).
    pub kexec: bool,
    /// A capture kernel is loaded.
    pub crash_loaded: bool,
    /// Bytes reserved for the capture kernel (`/sys/kernel/kexec_crash_size`).
    pub reserved_bytes: u64,
    /// `crash_hotplug`: `Some(true)` when the kernel updates the loaded header on hotplug.
    pub crash_hotplug: Option<bool>,
    /// System RAM in bytes, when `/proc/iomem` could be read with addresses.
    pub system_ram_bytes: Option<u64>,
}
