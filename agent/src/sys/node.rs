//! Reads what the node says about kdump right now (sysfs and `/proc/iomem`), into [`KdumpFacts`].
use crate::{
    model::{facts::KdumpFacts, iomem::Iomem},
    sys::{procfs::Procfs, sysfs::Sysfs},
};

/// A file that could not be read or parsed, named with its line: `/proc/iomem line 3: ...`.
pub fn read_iomem(procfs: &Procfs) -> anyhow::Result<Iomem> {
    let bytes = procfs.iomem()?;
    Iomem::parse_bytes(&bytes)
        .map_err(|e| anyhow::anyhow!("{} {e}", procfs.path("iomem").display()))
}

pub fn read_facts(procfs: &Procfs, sysfs: &Sysfs) -> anyhow::Result<KdumpFacts> {
    facts(&read_iomem(procfs)?, sysfs, None)
}

/// The facts, with `/proc/iomem` already read. `kexec_crash_size` and `crash_hotplug` are read
/// under the kernel's kexec lock, and a >= 6.6 kernel skips its in-kernel header update when
/// that lock is busy ("kexec_trylock() failed, elfcorehdr may be inaccurate"): during hotplug
/// pass the last facts as `locked_from` to reuse those two values instead of racing the kernel.
pub fn facts(
    iomem: &Iomem,
    sysfs: &Sysfs,
    locked_from: Option<&KdumpFacts>,
) -> anyhow::Result<KdumpFacts> {
    let loaded = sysfs.kexec_crash_loaded()?;
    // Without kexec there is no kexec_crash_size; /proc/iomem still shows a crashkernel= reservation.
    let reserved_in_iomem: u64 = iomem.crash_reservations().iter().map(|r| r.size()).sum();
    Ok(KdumpFacts {
        kexec: loaded.is_some(),
        crash_loaded: loaded.unwrap_or(false),
        reserved_bytes: match locked_from {
            Some(last) => last.reserved_bytes,
            None => sysfs.kexec_crash_size()?.unwrap_or(reserved_in_iomem),
        },
        crash_hotplug: match locked_from {
            Some(last) => last.crash_hotplug,
            None => sysfs.crash_hotplug()?,
        },
        system_ram_bytes: Some(iomem.system_ram().total_bytes()),
    })
}
