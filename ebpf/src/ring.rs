//! The one ring buffer all probes write to, and the count of records it had no room for.
use aya_ebpf::{
    helpers::{bpf_get_smp_processor_id, bpf_ktime_get_ns},
    macros::map,
    maps::{PerCpuArray, RingBuf},
};
use kdump_agent_common::{EVENTS_RING_BYTES, EventHeader, EventKind};

#[map(name = "EVENTS")]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_RING_BYTES, 0);

/// Records dropped because the ring was full, per CPU (no atomics needed); the agent sums them
/// and resyncs when the sum grows.
#[map(name = "LOST")]
pub static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

pub fn header(kind: EventKind) -> EventHeader {
    // SAFETY: both helpers are always safe to call from tracing programs.
    unsafe {
        EventHeader {
            kind: kind as u32,
            cpu: bpf_get_smp_processor_id(),
            ktime_ns: bpf_ktime_get_ns(),
        }
    }
}

/// Writes one record, or counts it as lost when the ring is full.
pub fn emit<T: 'static>(event: T) {
    match EVENTS.reserve::<T>(0) {
        Some(mut slot) => {
            slot.write(event);
            slot.submit(0);
        }
        None => {
            if let Some(lost) = LOST.get_ptr_mut(0) {
                // SAFETY: this CPU's slot; a BPF program is not preempted on its CPU.
                unsafe { *lost += 1 };
            }
        }
    }
}
