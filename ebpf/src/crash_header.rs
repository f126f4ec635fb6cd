//! The crash ELF header the kernel builds: `crash_prepare_elf64_headers(mem, need_kernel_map,
//! addr, sz)` runs for every `kexec_file_load` of a crash kernel and, on >= 6.6 kernels, for
//! every in-kernel hotplug rewrite. On return `*addr` holds the header and `*sz` its allocation.
//! fexit where the kernel has trampolines; otherwise a kprobe keeps `addr`/`sz` for the
//! kretprobe.
use aya_ebpf::{
    EbpfContext,
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_kernel},
    macros::{fexit, kprobe, kretprobe, map},
    maps::HashMap,
    programs::{FExitContext, ProbeContext, RetProbeContext},
};
use aya_log_ebpf::{info, warn};
use kdump_agent_common::{
    ELF64_PHNUM_OFFSET, EventKind, HEADER_MAX_BYTES, HeaderBuiltEvent, HeaderOrigin,
};

use crate::ring::{KERNEL, emit, emit_header, header, used_bytes};

/// `(addr, sz)` pointers of calls in flight, by thread, for the kretprobe.
#[map(name = "PREPARE_ARGS")]
static PREPARE_ARGS: HashMap<u64, [u64; 2]> = HashMap::with_max_entries(64, 0);

/// Emits the result and, on success, the header at `*addr` (used part only).
fn built<C: EbpfContext>(ctx: &C, result: i64, addr: u64, sz: u64) {
    // SAFETY: kernel pointers from the probed function's arguments, fault-checked.
    let (buf, allocated) = unsafe {
        (
            bpf_probe_read_kernel(addr as *const u64).unwrap_or(0),
            bpf_probe_read_kernel(sz as *const u64).unwrap_or(0),
        )
    };
    let ok = result == 0 && buf != 0;
    let used = if ok {
        // SAFETY: as above; the header starts at `buf`.
        let (phoff, phnum) = unsafe {
            (
                bpf_probe_read_kernel((buf + 32) as *const u64).unwrap_or(0),
                bpf_probe_read_kernel((buf + ELF64_PHNUM_OFFSET as u64) as *const u16).unwrap_or(0),
            )
        };
        used_bytes(phoff, phnum)
    } else {
        0
    };
    let event = HeaderBuiltEvent {
        header: header(EventKind::HeaderBuilt),
        capture: 0,
        result,
        allocated_bytes: allocated,
        used_bytes: used,
    };
    let capture = event.header.ktime_ns;
    emit(HeaderBuiltEvent { capture, ..event });
    if used > HEADER_MAX_BYTES as u64 {
        warn!(
            ctx,
            "crash header of {} bytes: only the first {} are captured", used, HEADER_MAX_BYTES
        );
    }
    if ok {
        info!(
            ctx,
            "kernel built a crash header: {} bytes used of {}", used, allocated
        );
        emit_header::<KERNEL>(HeaderOrigin::Kernel, capture, buf as *const u8, used);
    }
}

fn int_result(raw: u64) -> i64 {
    i64::from(raw as u32 as i32)
}

#[fexit]
pub fn crash_prepare_elf64_headers_fexit(ctx: FExitContext) -> u32 {
    let result = ctx.ret::<u64>().map_or(i64::MIN, int_result);
    // The verifier refuses direct context loads of a `void **` argument ("not a struct"), so
    // the argument slots are read through the helper.
    let args = ctx.as_ptr() as *const u64;
    // SAFETY: slots 2 and 3 of the trampoline's argument array; the helper fault-checks.
    let (addr, sz) = unsafe {
        (
            bpf_probe_read_kernel(args.add(2)).unwrap_or(0),
            bpf_probe_read_kernel(args.add(3)).unwrap_or(0),
        )
    };
    built(&ctx, result, addr, sz);
    0
}

#[kprobe]
pub fn crash_prepare_elf64_headers_kprobe(ctx: ProbeContext) -> u32 {
    if let (Some(addr), Some(sz)) = (ctx.arg::<u64>(2), ctx.arg::<u64>(3)) {
        let _ = PREPARE_ARGS.insert(bpf_get_current_pid_tgid(), [addr, sz], 0);
    }
    0
}

#[kretprobe]
pub fn crash_prepare_elf64_headers_kretprobe(ctx: RetProbeContext) -> u32 {
    let key = bpf_get_current_pid_tgid();
    // SAFETY: the value is copied out before the entry is removed.
    let Some(&[addr, sz]) = (unsafe { PREPARE_ARGS.get(key) }) else {
        return 0;
    };
    let _ = PREPARE_ARGS.remove(key);
    built(&ctx, int_result(ctx.ret::<u64>()), addr, sz);
    0
}
