//! Memory hotplug: blocks going online/offline, memory added to or removed from the resource
//! tree. Entry records carry the range, exit records the result; the agent pairs them.
//! fentry/fexit where the kernel has trampolines, kprobe/kretprobe otherwise.
use aya_ebpf::{
    helpers::bpf_probe_read_kernel,
    macros::{fentry, fexit, kprobe, kretprobe},
    programs::{FEntryContext, FExitContext, ProbeContext, RetProbeContext},
};
use kdump_agent_common::{EventKind, MemoryEvent, MemoryOp, Phase};

use crate::ring::{emit, header};

fn record(op: MemoryOp, phase: Phase, start: u64, size: u64, result: i64) {
    emit(MemoryEvent {
        header: header(EventKind::Memory),
        op: op as u32,
        phase: phase as u32,
        start,
        size,
        result,
    });
}

/// `(start, size)` passed as the first two arguments: `online_pages(pfn, nr_pages, ..)`,
/// `offline_pages(start_pfn, nr_pages, ..)`, `remove_memory(start, size)` and kin.
fn first_two(arg: impl Fn(usize) -> Option<u64>) -> Option<(u64, u64)> {
    Some((arg(0)?, arg(1)?))
}

/// `add_memory_resource(int nid, struct resource *res, mhp_t flags)`: `res->start` and
/// `res->end` (inclusive) are the first two fields of `struct resource`.
fn resource(arg: impl Fn(usize) -> Option<u64>) -> Option<(u64, u64)> {
    let res = arg(1)? as *const u64;
    // SAFETY: the helper fault-checks the kernel pointer.
    let (start, end) = unsafe {
        (
            bpf_probe_read_kernel(res).ok()?,
            bpf_probe_read_kernel(res.add(1)).ok()?,
        )
    };
    Some((start, end.wrapping_sub(start).wrapping_add(1)))
}

fn entry(op: MemoryOp, args: Option<(u64, u64)>) {
    let (start, size) = args.unwrap_or((0, 0));
    record(op, Phase::Entry, start, size, 0);
}

/// An `int` return value (the upper half of the register is not part of it).
fn int_result(raw: u64) -> i64 {
    i64::from(raw as u32 as i32)
}

macro_rules! memory_probes {
    ($op:ident, $args:ident, returns_int = $returns:literal,
     $fentry:ident, $kprobe:ident, $fexit:ident, $kretprobe:ident) => {
        #[fentry]
        pub fn $fentry(ctx: FEntryContext) -> u32 {
            entry(MemoryOp::$op, $args(|n| Some(ctx.arg::<u64>(n))));
            0
        }

        #[kprobe]
        pub fn $kprobe(ctx: ProbeContext) -> u32 {
            entry(MemoryOp::$op, $args(|n| ctx.arg::<u64>(n)));
            0
        }

        #[fexit]
        pub fn $fexit(ctx: FExitContext) -> u32 {
            let result = if $returns {
                ctx.ret::<u64>().map_or(0, int_result)
            } else {
                0
            };
            record(MemoryOp::$op, Phase::Exit, 0, 0, result);
            0
        }

        #[kretprobe]
        pub fn $kretprobe(ctx: RetProbeContext) -> u32 {
            let result = if $returns {
                int_result(ctx.ret::<u64>())
            } else {
                0
            };
            record(MemoryOp::$op, Phase::Exit, 0, 0, result);
            0
        }
    };
}

memory_probes!(
    OnlinePages,
    first_two,
    returns_int = true,
    online_pages_fentry,
    online_pages_kprobe,
    online_pages_fexit,
    online_pages_kretprobe
);
memory_probes!(
    OfflinePages,
    first_two,
    returns_int = true,
    offline_pages_fentry,
    offline_pages_kprobe,
    offline_pages_fexit,
    offline_pages_kretprobe
);
memory_probes!(
    AddMemoryResource,
    resource,
    returns_int = true,
    add_memory_resource_fentry,
    add_memory_resource_kprobe,
    add_memory_resource_fexit,
    add_memory_resource_kretprobe
);
memory_probes!(
    RemoveMemory,
    first_two,
    returns_int = true,
    remove_memory_fentry,
    remove_memory_kprobe,
    remove_memory_fexit,
    remove_memory_kretprobe
);
// `void __remove_memory(u64 start, u64 size)`.
memory_probes!(
    DunderRemoveMemory,
    first_two,
    returns_int = false,
    dunder_remove_memory_fentry,
    dunder_remove_memory_kprobe,
    dunder_remove_memory_fexit,
    dunder_remove_memory_kretprobe
);
memory_probes!(
    OfflineAndRemoveMemory,
    first_two,
    returns_int = true,
    offline_and_remove_memory_fentry,
    offline_and_remove_memory_kprobe,
    offline_and_remove_memory_fexit,
    offline_and_remove_memory_kretprobe
);
