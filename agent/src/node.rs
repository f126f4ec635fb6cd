//! Reads what the node says about kdump right now (sysfs and `/proc/iomem`), into [`KdumpFacts`].
use crate::{iomem::Iomem, procfs::Procfs, state::KdumpFacts, sysfs::Sysfs};

/// A file that could not be read or parsed, named with its line: `/proc/iomem line 3: ...`.
pub fn read_iomem(procfs: &Procfs) -> anyhow::Result<Iomem> {
    let bytes = procfs.iomem()?;
    Iomem::parse_bytes(&bytes)
        .map_err(|e| anyhow::anyhow!("{} {e}", procfs.path("iomem").display()))
}

pub fn read_facts(procfs: &Procfs, sysfs: &Sysfs) -> anyhow::Result<KdumpFacts> {
    let iomem = read_iomem(procfs)?;
    let loaded = sysfs.kexec_crash_loaded()?;
    // Without kexec there is no kexec_crash_size; /proc/iomem still shows a crashkernel= reservation.
    let reserved_in_iomem: u64 = iomem.crash_reservations().iter().map(|r| r.size()).sum();
    Ok(KdumpFacts {
        kexec: loaded.is_some(),
        crash_loaded: loaded.unwrap_or(false),
        reserved_bytes: sysfs.kexec_crash_size()?.unwrap_or(reserved_in_iomem),
        crash_hotplug: sysfs.crash_hotplug()?,
        system_ram_bytes: Some(iomem.system_ram().total_bytes()),
    })
}
