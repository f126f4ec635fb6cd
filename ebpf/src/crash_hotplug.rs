//! In-kernel header rewrites (>= 6.6, `CONFIG_CRASH_HOTPLUG`): `arch_crash_handle_hotplug_event`
//! runs under the kexec lock for each hotplug event and rebuilds the header through
//! `crash_prepare_elf64_headers` (captured by `crash_header`). Entry and exit bracket the rewrite
//! so the agent can tie the captured header to it. The function returns `void`.
use aya_ebpf::{
    macros::{fentry, fexit, kprobe, kretprobe},
    programs::{FEntryContext, FExitContext, ProbeContext, RetProbeContext},
};
use kdump_agent_common::{EventKind, HotplugUpdateEvent, Phase};

use crate::ring::{emit, header};

fn record(phase: Phase) -> u32 {
    emit(HotplugUpdateEvent {
        header: header(EventKind::HotplugUpdate),
        phase: phase as u32,
        _pad: 0,
    });
    0
}

#[fentry]
pub fn arch_crash_handle_hotplug_event_fentry(_ctx: FEntryContext) -> u32 {
    record(Phase::Entry)
}

#[kprobe]
pub fn arch_crash_handle_hotplug_event_kprobe(_ctx: ProbeContext) -> u32 {
    record(Phase::Entry)
}

#[fexit]
pub fn arch_crash_handle_hotplug_event_fexit(_ctx: FExitContext) -> u32 {
    record(Phase::Exit)
}

#[kretprobe]
pub fn arch_crash_handle_hotplug_event_kretprobe(_ctx: RetProbeContext) -> u32 {
    record(Phase::Exit)
}
