//! Reads what the node says about kdump right now (sysfs and `/proc/iomem`), into [`NodeState`].
use std::{path::Path, time::SystemTime};

use crate::{
    model::{
        cpus::{CpuNotes, kernel_lists_possible_cpus},
        facts::KdumpFacts,
        iomem::Iomem,
    },
    sys::{
        capabilities::{self, Capability, Feature},
        crash_sysfs,
        procfs::Procfs,
        sysfs::Sysfs,
    },
};

/// A file that could not be read or parsed, named with its line: `/proc/iomem line 3: ...`.
pub fn read_iomem(procfs: &Procfs) -> anyhow::Result<Iomem> {
    let bytes = procfs.iomem()?;
    Iomem::parse_bytes(&bytes)
        .map_err(|e| anyhow::anyhow!("{} {e}", procfs.path("iomem").display()))
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

/// What the rescans know of the node. [`NodeState::refresh`] is its only writer.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeState {
    pub kernel_release: String,
    pub capabilities: Vec<Capability>,
    /// Why there is no kexec, when there is none (e.g. `CONFIG_KEXEC is not set`).
    pub no_kexec_reason: String,
    pub facts: KdumpFacts,
    /// The last `/proc/iomem` read: the RAM the loaded header should list.
    pub iomem: Option<Iomem>,
    /// The last read of the CPUs and their crash note buffers: the notes the header should list.
    pub cpus: Option<CpuNotes>,
    /// When the node was last read.
    pub refreshed_at: Option<SystemTime>,
    /// The kernel has `kexec_file_load` (`CONFIG_KEXEC_FILE`); `None` without a config to say.
    pub kexec_file_load: Option<bool>,
}

impl NodeState {
    /// Detects the kernel's capabilities and reads the node once.
    pub fn detect(procfs: &Procfs, sysfs: &Sysfs, boot: &Path) -> anyhow::Result<Self> {
        let config = procfs.kernel_config(boot);
        let mut node = Self::new(
            procfs.kernel_release().unwrap_or_else(|_| "unknown".into()),
            capabilities::detect(sysfs, config.as_ref()),
            capabilities::no_kexec_reason(config.as_ref()),
        );
        node.kexec_file_load = config.map(|c| c.is_enabled("CONFIG_KEXEC_FILE"));
        node.refresh(procfs, sysfs, true)?;
        Ok(node)
    }

    pub fn new(
        kernel_release: String,
        capabilities: Vec<Capability>,
        no_kexec_reason: String,
    ) -> Self {
        Self {
            kernel_release,
            capabilities,
            no_kexec_reason,
            facts: KdumpFacts::default(),
            iomem: None,
            cpus: None,
            refreshed_at: None,
            kexec_file_load: None,
        }
    }

    pub fn capability(&self, feature: Feature) -> Option<&Capability> {
        self.capabilities.iter().find(|c| c.feature == feature)
    }

    /// Re-reads the node. `read_locked`: also re-read the kexec-locked files (see [`facts`]);
    /// otherwise, and whenever they are busy, their last values are kept. On an error nothing
    /// changes.
    pub fn refresh(
        &mut self,
        procfs: &Procfs,
        sysfs: &Sysfs,
        read_locked: bool,
    ) -> anyhow::Result<()> {
        let iomem = read_iomem(procfs)?;
        let cpus = crash_sysfs::read_cpu_notes(
            &sysfs.path(""),
            kernel_lists_possible_cpus(&self.kernel_release),
        )?;
        let have_last = self.refreshed_at.is_some();
        self.facts = match facts(
            &iomem,
            sysfs,
            (have_last && !read_locked).then_some(&self.facts),
        ) {
            // kexec_crash_size answers EBUSY while a load holds the kexec lock: keep the last value.
            Err(e) if have_last => {
                tracing::debug!(error = %format!("{e:#}"), "kexec-locked sysfs files busy; keeping their last values");
                facts(&iomem, sysfs, Some(&self.facts))?
            }
            facts => facts?,
        };
        self.cpus = cpus;
        self.iomem = Some(iomem);
        self.refreshed_at = Some(SystemTime::now());
        Ok(())
    }
}
