//! The one ring buffer all probes write to.
use aya_ebpf::{
    helpers::bpf_get_smp_processor_id, helpers::bpf_ktime_get_ns, macros::map, maps::RingBuf,
};
use kdump_agent_common::{EVENTS_RING_BYTES, EventHeader, EventKind};

#[map(name = "EVENTS")]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_RING_BYTES, 0);

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

/// Writes one record; a full ring drops it and the agent counts the loss.
pub fn emit<T: 'static>(event: T) -> bool {
    match EVENTS.reserve::<T>(0) {
        Some(mut slot) => {
            slot.write(event);
            slot.submit(0);
            true
        }
        None => false,
    }
}
