//! Reads what the node says about kdump right now (sysfs and procfs), into [`KdumpFacts`].
use crate::{procfs::Procfs, state::KdumpFacts, sysfs::ReadError, sysfs::Sysfs};

pub fn read_facts(_procfs: &Procfs, sysfs: &Sysfs) -> Result<KdumpFacts, ReadError> {
    let loaded = sysfs.kexec_crash_loaded()?;
    Ok(KdumpFacts {
        kexec: loaded.is_some(),
        crash_loaded: loaded.unwrap_or(false),
        reserved_bytes: sysfs.kexec_crash_size()?.unwrap_or(0),
        crash_hotplug: sysfs.crash_hotplug()?,
        system_ram_bytes: None,
    })
}
