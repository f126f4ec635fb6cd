//! kexec loads, from the syscall tracepoints: who loaded what, with which flags, and how it
//! ended. A `kexec_load` for the crash kernel also copies the ELF core header kexec-tools built
//! (the segment whose user buffer starts with an `ET_CORE` ELF header): exactly what is loaded.
//!
//! Tracepoint record offsets (`events/syscalls/*/format`): 8 bytes of common fields,
//! `__syscall_nr` at 8, then each argument (or `ret`) in an 8-byte slot from 16.
use aya_ebpf::{
    helpers::{bpf_get_current_comm, bpf_probe_read_user, bpf_probe_read_user_str_bytes},
    macros::tracepoint,
    programs::TracePointContext,
};
use aya_log_ebpf::{info, warn};
use kdump_agent_common::{
    COMM_BYTES, ELF_TYPE_OFFSET, ELF64_PHNUM_OFFSET, ET_CORE, EventKind, HEADER_MAX_BYTES,
    HeaderOrigin, KEXEC_ON_CRASH, KEXEC_SEGMENT_MAX, KexecExitEvent, KexecFileLoadEvent,
    KexecLoadEvent, KexecSyscall,
};

use crate::ring::{EVENTS, USER, count_lost, emit, emit_header, header, used_bytes};

const ARG0: usize = 16;
const ARG_SLOT: usize = 8;
const RET: usize = 16;

fn arg(ctx: &TracePointContext, n: usize) -> u64 {
    // SAFETY: reads the tracepoint record, fault-checked by the helper.
    unsafe { ctx.read_at::<u64>(ARG0 + n * ARG_SLOT) }.unwrap_or(0)
}

fn comm() -> [u8; COMM_BYTES] {
    bpf_get_current_comm().unwrap_or([0; COMM_BYTES])
}

/// `struct kexec_segment` (include/uapi/linux/kexec.h).
#[repr(C)]
#[derive(Clone, Copy)]
struct KexecSegment {
    buf: u64,
    bufsz: u64,
    mem: u64,
    memsz: u64,
}

/// The first 64 bytes of an ELF64 header: enough for the identity, type, `e_phoff`, `e_phnum`.
#[repr(C)]
struct Elf64Head {
    bytes: [u8; 64],
}

/// Where the program headers of the crash ELF header in `seg` end, or 0 when `seg` does not
/// start with one. Plain integers rather than `Option`s of structs: 6.1's verifier refuses
/// reads of stack bytes nobody wrote, such as an enum's padding.
fn core_header_bytes(seg: &KexecSegment) -> u64 {
    if seg.bufsz < 64 {
        return 0;
    }
    // SAFETY: a user pointer, fault-checked by the helper.
    let Ok(head) = (unsafe { bpf_probe_read_user(seg.buf as *const Elf64Head) }) else {
        return 0;
    };
    let b = &head.bytes;
    let elf64 = b[0] == 0x7f && b[1] == b'E' && b[2] == b'L' && b[3] == b'F' && b[4] == 2;
    let e_type = u16::from_le_bytes([b[ELF_TYPE_OFFSET], b[ELF_TYPE_OFFSET + 1]]);
    if !elf64 || e_type != ET_CORE {
        return 0;
    }
    let phoff = u64::from_le_bytes([b[32], b[33], b[34], b[35], b[36], b[37], b[38], b[39]]);
    let phnum = u16::from_le_bytes([b[ELF64_PHNUM_OFFSET], b[ELF64_PHNUM_OFFSET + 1]]);
    let used = used_bytes(phoff, phnum);
    if used > seg.bufsz { seg.bufsz } else { used }
}

/// `kexec_load(entry, nr_segments, segments, flags)`.
#[tracepoint]
pub fn sys_enter_kexec_load(ctx: TracePointContext) -> u32 {
    let (entry, nr_segments, segments, flags) =
        (arg(&ctx, 0), arg(&ctx, 1), arg(&ctx, 2), arg(&ctx, 3));
    let mut index: i32 = -1;
    let mut seg = KexecSegment {
        buf: 0,
        bufsz: 0,
        mem: 0,
        memsz: 0,
    };
    let mut used = 0u64;
    if flags & KEXEC_ON_CRASH != 0 {
        for i in 0..KEXEC_SEGMENT_MAX {
            if u64::from(i) >= nr_segments {
                break;
            }
            let at = segments + u64::from(i) * size_of::<KexecSegment>() as u64;
            // SAFETY: a user pointer, fault-checked by the helper.
            let Ok(candidate) = (unsafe { bpf_probe_read_user(at as *const KexecSegment) }) else {
                break;
            };
            let bytes = core_header_bytes(&candidate);
            if bytes != 0 {
                index = i as i32;
                seg = candidate;
                used = bytes;
                break;
            }
        }
    }
    let event = KexecLoadEvent {
        header: header(EventKind::KexecLoadEnter),
        comm: comm(),
        entry,
        nr_segments,
        flags,
        header_segment: index,
        _pad: 0,
        header_mem: seg.mem,
        header_bufsz: seg.bufsz,
    };
    let capture = event.header.ktime_ns;
    emit(event);
    if used > HEADER_MAX_BYTES as u64 {
        warn!(
            &ctx,
            "kexec_load header of {} bytes: only the first {} are captured", used, HEADER_MAX_BYTES
        );
    }
    if used != 0 {
        info!(
            &ctx,
            "kexec_load crash header in segment {}: {} bytes", index, used
        );
        emit_header::<USER>(
            HeaderOrigin::UserSegment,
            capture,
            seg.buf as *const u8,
            used,
        );
    }
    0
}

/// `kexec_file_load(kernel_fd, initrd_fd, cmdline_len, cmdline, flags)`.
#[tracepoint]
pub fn sys_enter_kexec_file_load(ctx: TracePointContext) -> u32 {
    let Some(mut slot) = EVENTS.reserve::<KexecFileLoadEvent>(0) else {
        count_lost();
        return 0;
    };
    let e = slot.as_mut_ptr();
    let cmdline = arg(&ctx, 3) as *const u8;
    // SAFETY: `e` points at a reserved record of the right size; user reads are fault-checked.
    unsafe {
        (*e).header = header(EventKind::KexecFileLoadEnter);
        (*e).comm = comm();
        (*e).kernel_fd = arg(&ctx, 0) as i32;
        (*e).initrd_fd = arg(&ctx, 1) as i32;
        (*e).cmdline_len = arg(&ctx, 2);
        (*e).flags = arg(&ctx, 4);
        let buf = &mut (*e).cmdline;
        if bpf_probe_read_user_str_bytes(cmdline, buf).is_err() {
            buf[0] = 0;
        }
    }
    slot.submit(0);
    0
}

fn exit(ctx: &TracePointContext, syscall: KexecSyscall) -> u32 {
    // SAFETY: reads the tracepoint record, fault-checked by the helper.
    let result = unsafe { ctx.read_at::<i64>(RET) }.unwrap_or(i64::MIN);
    emit(KexecExitEvent {
        header: header(EventKind::KexecExit),
        syscall: syscall as u32,
        _pad: 0,
        result,
    });
    0
}

#[tracepoint]
pub fn sys_exit_kexec_load(ctx: TracePointContext) -> u32 {
    exit(&ctx, KexecSyscall::KexecLoad)
}

#[tracepoint]
pub fn sys_exit_kexec_file_load(ctx: TracePointContext) -> u32 {
    exit(&ctx, KexecSyscall::KexecFileLoad)
}
