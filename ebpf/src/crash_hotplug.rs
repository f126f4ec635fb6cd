//! In-kernel header rewrites (>= 6.6, `CONFIG_CRASH_HOTPLUG`). `crash_handle_hotplug_event`
//! runs for each hotplug event; when it gets the kexec lock (a trylock) and the loaded image
//! accepts updates, it calls `arch_crash_handle_hotplug_event`, which rebuilds the header through
//! `crash_prepare_elf64_headers` (captured by `crash_header`). Entry and exit of both bracket the
//! rewrite, so the agent can tie the captured header to it and see a handler that returned
//! without one (the kernel skipped the update). Both return `void`.
use aya_ebpf::{
    macros::{fentry, fexit, kprobe, kretprobe},
    programs::{FEntryContext, FExitContext, ProbeContext, RetProbeContext},
};
use kdump_agent_common::{EventKind, HotplugHandler, HotplugUpdateEvent, Phase};

use crate::ring::{emit, header};

fn record(handler: HotplugHandler, phase: Phase) -> u32 {
    emit(HotplugUpdateEvent {
        header: header(EventKind::HotplugUpdate),
        phase: phase as u32,
        handler: handler as u32,
    });
    0
}

#[fentry]
pub fn arch_crash_handle_hotplug_event_fentry(_ctx: FEntryContext) -> u32 {
    record(HotplugHandler::Arch, Phase::Entry)
}

#[kprobe]
pub fn arch_crash_handle_hotplug_event_kprobe(_ctx: ProbeContext) -> u32 {
    record(HotplugHandler::Arch, Phase::Entry)
}

#[fexit]
pub fn arch_crash_handle_hotplug_event_fexit(_ctx: FExitContext) -> u32 {
    record(HotplugHandler::Arch, Phase::Exit)
}

#[kretprobe]
pub fn arch_crash_handle_hotplug_event_kretprobe(_ctx: RetProbeContext) -> u32 {
    record(HotplugHandler::Arch, Phase::Exit)
}

#[fentry]
pub fn crash_handle_hotplug_event_fentry(_ctx: FEntryContext) -> u32 {
    record(HotplugHandler::Generic, Phase::Entry)
}

#[kprobe]
pub fn crash_handle_hotplug_event_kprobe(_ctx: ProbeContext) -> u32 {
    record(HotplugHandler::Generic, Phase::Entry)
}

#[fexit]
pub fn crash_handle_hotplug_event_fexit(_ctx: FExitContext) -> u32 {
    record(HotplugHandler::Generic, Phase::Exit)
}

#[kretprobe]
pub fn crash_handle_hotplug_event_kretprobe(_ctx: RetProbeContext) -> u32 {
    record(HotplugHandler::Generic, Phase::Exit)
}
