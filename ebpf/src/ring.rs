//! The one ring buffer all probes write to, the count of records it had no room for, and the
//! chunked copy of a crash ELF header into it.
use core::ffi::c_void;

use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_smp_processor_id, bpf_ktime_get_ns,
        generated::{bpf_probe_read_kernel, bpf_probe_read_user},
    },
    macros::map,
    maps::{PerCpuArray, RingBuf},
};
use kdump_agent_common::{
    ELF64_PHDR_BYTES, EVENTS_RING_BYTES, EventHeader, EventKind, HEADER_CHUNK_BYTES,
    HEADER_MAX_BYTES, HEADER_MAX_CHUNKS, HeaderChunk, HeaderOrigin,
};

#[map(name = "EVENTS")]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_RING_BYTES, 0);

/// Records dropped because the ring was full, per CPU (no atomics needed); the agent sums them
/// and resyncs when the sum grows.
#[map(name = "LOST")]
pub static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

pub fn header(kind: EventKind) -> EventHeader {
    // SAFETY: these helpers are always safe to call from tracing programs.
    unsafe {
        EventHeader {
            kind: kind as u32,
            cpu: bpf_get_smp_processor_id(),
            ktime_ns: bpf_ktime_get_ns(),
            pid_tgid: bpf_get_current_pid_tgid(),
        }
    }
}

pub fn count_lost() {
    if let Some(lost) = LOST.get_ptr_mut(0) {
        // SAFETY: this CPU's slot; a BPF program is not preempted on its CPU.
        unsafe { *lost += 1 };
    }
}

/// Writes one record, or counts it as lost when the ring is full.
pub fn emit<T: 'static>(event: T) {
    match EVENTS.reserve::<T>(0) {
        Some(mut slot) => {
            slot.write(event);
            slot.submit(0);
        }
        None => count_lost(),
    }
}

/// Which address space a header is copied from (a const parameter: each copy loop is
/// verified with one helper, no runtime branch per chunk).
pub const USER: bool = true;
pub const KERNEL: bool = false;

/// Used bytes of an ELF64 header at `e_phoff`/`e_phnum`: where the last program header ends.
pub fn used_bytes(phoff: u64, phnum: u16) -> u64 {
    phoff.saturating_add(u64::from(phnum) * ELF64_PHDR_BYTES as u64)
}

/// Copies the first `total` bytes at `src` into `HeaderChunk` records (at most
/// `HEADER_MAX_BYTES`; the records say `total` so the agent knows when it got less). A chunk the
/// helper could not read goes out with `len` 0 so the agent drops the capture.
#[inline(always)]
pub fn emit_header<const FROM_USER: bool>(
    origin: HeaderOrigin,
    capture: u64,
    src: *const u8,
    total: u64,
) {
    let captured = if total > HEADER_MAX_BYTES as u64 {
        HEADER_MAX_BYTES as u64
    } else {
        total
    };
    let total_bytes = if total > u64::from(u32::MAX) {
        u32::MAX
    } else {
        total as u32
    };
    for seq in 0..HEADER_MAX_CHUNKS {
        let offset = u64::from(seq) * HEADER_CHUNK_BYTES as u64;
        if offset >= captured {
            break;
        }
        let mut len = captured - offset;
        if len > HEADER_CHUNK_BYTES as u64 {
            len = HEADER_CHUNK_BYTES as u64;
        }
        // 6.1's verifier loses the bounds above ("R2 min value is negative"): restate them with
        // a mask it understands (1..=HEADER_CHUNK_BYTES, a power of two), kept by black_box
        // from being folded away.
        let len =
            (core::hint::black_box(len).wrapping_sub(1) & (HEADER_CHUNK_BYTES as u64 - 1)) + 1;
        let Some(mut slot) = EVENTS.reserve::<HeaderChunk>(0) else {
            count_lost();
            return;
        };
        let chunk = slot.as_mut_ptr();
        // SAFETY: `chunk` points at a reserved record of the right size; `len` is at most the
        // size of `data`; the read helpers fault-check `src`.
        unsafe {
            let dst = (*chunk).data.as_mut_ptr().cast::<c_void>();
            let from = src.add(offset as usize).cast::<c_void>();
            let read = if FROM_USER {
                bpf_probe_read_user(dst, len as u32, from)
            } else {
                bpf_probe_read_kernel(dst, len as u32, from)
            };
            (*chunk).header = header(EventKind::HeaderChunk);
            (*chunk).capture = capture;
            (*chunk).origin = origin as u32;
            (*chunk).seq = seq;
            (*chunk).total_bytes = total_bytes;
            // Branch-free: a per-chunk branch doubles the states 6.1's verifier walks.
            (*chunk).len = (len as u32) & ((read == 0) as u32).wrapping_neg();
        }
        slot.submit(0);
    }
}
