//! The crash kernel's reserved memory opened and closed around every change of the loaded
//! crash image (x86: `kexec_mark_crashkres`). Between an unprotect inside a load or unload and
//! the protect that ends the next load, the kernel has no crash image: the agent measures that
//! window from these two timestamps. Neither function takes arguments or returns anything.
use aya_ebpf::{
    macros::{fentry, kprobe},
    programs::{FEntryContext, ProbeContext},
};
use kdump_agent_common::{CrashProtectionEvent, EventKind, Protection};

use crate::ring::{emit, header};

fn record(protection: Protection) -> u32 {
    emit(CrashProtectionEvent {
        header: header(EventKind::CrashProtection),
        protection: protection as u32,
        _pad: 0,
    });
    0
}

#[fentry]
pub fn arch_kexec_unprotect_crashkres_fentry(_ctx: FEntryContext) -> u32 {
    record(Protection::Unprotect)
}

#[kprobe]
pub fn arch_kexec_unprotect_crashkres_kprobe(_ctx: ProbeContext) -> u32 {
    record(Protection::Unprotect)
}

#[fentry]
pub fn arch_kexec_protect_crashkres_fentry(_ctx: FEntryContext) -> u32 {
    record(Protection::Protect)
}

#[kprobe]
pub fn arch_kexec_protect_crashkres_kprobe(_ctx: ProbeContext) -> u32 {
    record(Protection::Protect)
}
