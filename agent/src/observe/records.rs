//! Ring buffer records decoded into typed values. The only place that knows the byte layout
//! of the probes' records (`kdump-agent-common`); everything after it sees [`Record`]s.
use kdump_agent_common::{
    CMDLINE_BYTES, COMM_BYTES, CrashProtectionEvent, EventHeader, EventKind, HEADER_CHUNK_BYTES,
    HeaderBuiltEvent, HeaderChunk, HeaderOrigin, HotplugHandler, HotplugUpdateEvent,
    KexecExitEvent, KexecFileLoadEvent, KexecLoadEvent, KexecSyscall, MemoryEvent, MemoryOp, Phase,
    Protection,
};

/// Who fired a probe, and when.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Origin {
    /// CLOCK_MONOTONIC nanoseconds.
    pub ktime_ns: u64,
    pub cpu: u32,
    /// Thread id (entry and exit of one call share it).
    pub tid: u32,
    /// Process id.
    pub pid: u32,
}

impl From<&EventHeader> for Origin {
    fn from(h: &EventHeader) -> Self {
        Self {
            ktime_ns: h.ktime_ns,
            cpu: h.cpu,
            tid: h.pid_tgid as u32,
            pid: (h.pid_tgid >> 32) as u32,
        }
    }
}

/// One decoded ring buffer record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    MemoryEntry {
        at: Origin,
        op: MemoryOp,
        /// Page frames or bytes, per [`MemoryOp::counts_pages`].
        start: u64,
        size: u64,
    },
    MemoryExit {
        at: Origin,
        op: MemoryOp,
        result: i64,
    },
    KexecLoadEnter {
        at: Origin,
        comm: String,
        nr_segments: u64,
        flags: u64,
        /// The segment holding the crash ELF header: (index, physical destination, buffer bytes).
        header_segment: Option<(u32, u64, u64)>,
    },
    KexecFileLoadEnter {
        at: Origin,
        comm: String,
        kernel_fd: i32,
        initrd_fd: i32,
        flags: u64,
        cmdline: String,
    },
    KexecExit {
        at: Origin,
        syscall: KexecSyscall,
        result: i64,
    },
    HeaderChunk {
        at: Origin,
        capture: u64,
        origin: HeaderOrigin,
        seq: u32,
        total_bytes: u32,
        /// Empty when the probe could not read this part.
        data: Vec<u8>,
    },
    HeaderBuilt {
        at: Origin,
        capture: u64,
        result: i64,
        allocated_bytes: u64,
        used_bytes: u64,
    },
    HotplugUpdate {
        at: Origin,
        handler: HotplugHandler,
        phase: Phase,
    },
    CrashProtection {
        at: Origin,
        protection: Protection,
    },
}

impl Record {
    pub fn origin(&self) -> &Origin {
        match self {
            Record::MemoryEntry { at, .. }
            | Record::MemoryExit { at, .. }
            | Record::KexecLoadEnter { at, .. }
            | Record::KexecFileLoadEnter { at, .. }
            | Record::KexecExit { at, .. }
            | Record::HeaderChunk { at, .. }
            | Record::HeaderBuilt { at, .. }
            | Record::HotplugUpdate { at, .. }
            | Record::CrashProtection { at, .. } => at,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("{len}-byte record is shorter than the {need} bytes of a {what}")]
    Short {
        what: &'static str,
        len: usize,
        need: usize,
    },
    #[error("unknown record kind {0} (agent and probes from different builds?)")]
    Kind(u32),
    #[error("{what} {value} out of range")]
    Field { what: &'static str, value: u64 },
}

/// Copies a `#[repr(C)]` record out of `bytes` after checking its length.
fn read<T: Copy>(bytes: &[u8], what: &'static str) -> Result<T, DecodeError> {
    if bytes.len() < size_of::<T>() {
        return Err(DecodeError::Short {
            what,
            len: bytes.len(),
            need: size_of::<T>(),
        });
    }
    // SAFETY: length checked; every `T` read here is plain integers and byte arrays, for
    // which any bit pattern is valid; `read_unaligned` needs no alignment.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// Text up to the first NUL.
fn c_text(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

fn field<T>(value: Option<T>, what: &'static str, raw: u32) -> Result<T, DecodeError> {
    value.ok_or(DecodeError::Field {
        what,
        value: u64::from(raw),
    })
}

pub fn decode(bytes: &[u8]) -> Result<Record, DecodeError> {
    let h: EventHeader = read(bytes, "record header")?;
    let at = Origin::from(&h);
    let kind = field(EventKind::from_u32(h.kind), "kind", h.kind)
        .map_err(|_| DecodeError::Kind(h.kind))?;
    Ok(match kind {
        EventKind::Memory => {
            let e: MemoryEvent = read(bytes, "memory record")?;
            let op = field(MemoryOp::from_u32(e.op), "memory op", e.op)?;
            match field(Phase::from_u32(e.phase), "phase", e.phase)? {
                Phase::Entry => Record::MemoryEntry {
                    at,
                    op,
                    start: e.start,
                    size: e.size,
                },
                Phase::Exit => Record::MemoryExit {
                    at,
                    op,
                    result: e.result,
                },
            }
        }
        EventKind::KexecLoadEnter => {
            let e: KexecLoadEvent = read(bytes, "kexec_load record")?;
            Record::KexecLoadEnter {
                at,
                comm: c_text(&e.comm[..COMM_BYTES]),
                nr_segments: e.nr_segments,
                flags: e.flags,
                header_segment: u32::try_from(e.header_segment)
                    .ok()
                    .map(|i| (i, e.header_mem, e.header_bufsz)),
            }
        }
        EventKind::KexecFileLoadEnter => {
            let e: KexecFileLoadEvent = read(bytes, "kexec_file_load record")?;
            Record::KexecFileLoadEnter {
                at,
                comm: c_text(&e.comm),
                kernel_fd: e.kernel_fd,
                initrd_fd: e.initrd_fd,
                flags: e.flags,
                cmdline: c_text(&e.cmdline[..CMDLINE_BYTES]),
            }
        }
        EventKind::KexecExit => {
            let e: KexecExitEvent = read(bytes, "kexec exit record")?;
            Record::KexecExit {
                at,
                syscall: field(KexecSyscall::from_u32(e.syscall), "syscall", e.syscall)?,
                result: e.result,
            }
        }
        EventKind::HeaderChunk => {
            let e: HeaderChunk = read(bytes, "header chunk")?;
            let len = e.len as usize;
            if len > HEADER_CHUNK_BYTES {
                return Err(DecodeError::Field {
                    what: "header chunk length",
                    value: u64::from(e.len),
                });
            }
            Record::HeaderChunk {
                at,
                capture: e.capture,
                origin: field(HeaderOrigin::from_u32(e.origin), "header origin", e.origin)?,
                seq: e.seq,
                total_bytes: e.total_bytes,
                data: e.data[..len].to_vec(),
            }
        }
        EventKind::HeaderBuilt => {
            let e: HeaderBuiltEvent = read(bytes, "header built record")?;
            Record::HeaderBuilt {
                at,
                capture: e.capture,
                result: e.result,
                allocated_bytes: e.allocated_bytes,
                used_bytes: e.used_bytes,
            }
        }
        EventKind::HotplugUpdate => {
            let e: HotplugUpdateEvent = read(bytes, "hotplug update record")?;
            Record::HotplugUpdate {
                at,
                handler: field(HotplugHandler::from_u32(e.handler), "handler", e.handler)?,
                phase: field(Phase::from_u32(e.phase), "phase", e.phase)?,
            }
        }
        EventKind::CrashProtection => {
            let e: CrashProtectionEvent = read(bytes, "crash protection record")?;
            Record::CrashProtection {
                at,
                protection: field(
                    Protection::from_u32(e.protection),
                    "protection",
                    e.protection,
                )?,
            }
        }
    })
}

/// Test and benchmark helpers: the bytes a probe would write.
#[cfg(test)]
pub mod encode {
    use super::*;

    pub fn bytes_of<T: Copy>(value: &T) -> Vec<u8> {
        // SAFETY: reading the bytes of a plain #[repr(C)] value without padding.
        unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), size_of::<T>()) }
            .to_vec()
    }

    pub fn header(kind: EventKind, ktime_ns: u64, pid: u32, tid: u32) -> EventHeader {
        EventHeader {
            kind: kind as u32,
            cpu: 0,
            ktime_ns,
            pid_tgid: (u64::from(pid) << 32) | u64::from(tid),
        }
    }

    /// The chunk records a probe emits for `header` bytes.
    pub fn chunks(
        origin: HeaderOrigin,
        capture: u64,
        ktime_ns: u64,
        pid: u32,
        header_bytes: &[u8],
    ) -> Vec<Vec<u8>> {
        header_bytes
            .chunks(HEADER_CHUNK_BYTES)
            .enumerate()
            .map(|(seq, part)| {
                let mut data = [0u8; HEADER_CHUNK_BYTES];
                data[..part.len()].copy_from_slice(part);
                bytes_of(&HeaderChunk {
                    header: header(EventKind::HeaderChunk, ktime_ns, pid, pid),
                    capture,
                    origin: origin as u32,
                    seq: seq as u32,
                    total_bytes: header_bytes.len() as u32,
                    len: part.len() as u32,
                    data,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::{encode::*, *};

    #[test]
    fn memory_entry_and_exit() {
        let entry = MemoryEvent {
            header: header(EventKind::Memory, 5, 7, 9),
            op: MemoryOp::OnlinePages as u32,
            phase: Phase::Entry as u32,
            start: 0x48000,
            size: 0x8000,
            result: 0,
        };
        assert_eq!(
            decode(&bytes_of(&entry)),
            Ok(Record::MemoryEntry {
                at: Origin {
                    ktime_ns: 5,
                    cpu: 0,
                    tid: 9,
                    pid: 7
                },
                op: MemoryOp::OnlinePages,
                start: 0x48000,
                size: 0x8000
            })
        );
        let exit = MemoryEvent {
            phase: Phase::Exit as u32,
            result: -16,
            ..entry
        };
        assert!(matches!(
            decode(&bytes_of(&exit)),
            Ok(Record::MemoryExit { result: -16, .. })
        ));
    }

    #[test]
    fn kexec_file_load_text_stops_at_nul() {
        let mut cmdline = [0u8; CMDLINE_BYTES];
        cmdline[..11].copy_from_slice(b"console=tty");
        let mut comm = [0u8; COMM_BYTES];
        comm[..5].copy_from_slice(b"kexec");
        let e = KexecFileLoadEvent {
            header: header(EventKind::KexecFileLoadEnter, 1, 2, 2),
            comm,
            kernel_fd: 3,
            initrd_fd: 4,
            cmdline_len: 12,
            flags: 2,
            cmdline,
        };
        let Ok(Record::KexecFileLoadEnter {
            comm,
            cmdline,
            kernel_fd,
            initrd_fd,
            ..
        }) = decode(&bytes_of(&e))
        else {
            panic!("not decoded")
        };
        assert_eq!(
            (comm.as_str(), cmdline.as_str(), kernel_fd, initrd_fd),
            ("kexec", "console=tty", 3, 4)
        );
    }

    #[test]
    fn no_header_segment_is_none() {
        let e = KexecLoadEvent {
            header: header(EventKind::KexecLoadEnter, 1, 2, 2),
            comm: [0; COMM_BYTES],
            entry: 0,
            nr_segments: 4,
            flags: 1,
            header_segment: -1,
            _pad: 0,
            header_mem: 0,
            header_bufsz: 0,
        };
        assert!(matches!(
            decode(&bytes_of(&e)),
            Ok(Record::KexecLoadEnter {
                header_segment: None,
                ..
            })
        ));
        let found = KexecLoadEvent {
            header_segment: 3,
            header_mem: 0x7f00_0000,
            header_bufsz: 4096,
            ..e
        };
        assert!(matches!(
            decode(&bytes_of(&found)),
            Ok(Record::KexecLoadEnter {
                header_segment: Some((3, 0x7f00_0000, 4096)),
                ..
            })
        ));
    }

    #[test]
    fn chunks_carry_only_their_valid_bytes() {
        let header_bytes: Vec<u8> = (0..HEADER_CHUNK_BYTES as u32 + 900)
            .map(|i| i as u8)
            .collect();
        let records = chunks(HeaderOrigin::Kernel, 42, 1, 3, &header_bytes);
        assert_eq!(records.len(), 2);
        let Ok(Record::HeaderChunk { data, seq, .. }) = decode(&records[1]) else {
            panic!("not a chunk")
        };
        assert_eq!(seq, 1);
        assert_eq!(data, header_bytes[HEADER_CHUNK_BYTES..]);
    }

    #[test]
    fn malformed_records_are_errors_not_panics() {
        let ok = bytes_of(&HotplugUpdateEvent {
            header: header(EventKind::HotplugUpdate, 1, 1, 1),
            phase: 0,
            handler: 1,
        });
        assert!(matches!(
            decode(&ok),
            Ok(Record::HotplugUpdate {
                handler: HotplugHandler::Generic,
                phase: Phase::Entry,
                ..
            })
        ));
        assert!(matches!(
            decode(&ok[..10]),
            Err(DecodeError::Short { need: 24, .. })
        ));
        assert!(matches!(
            decode(&ok[..30]),
            Err(DecodeError::Short { need: 32, .. })
        ));
        let mut bad = ok.clone();
        bad[0] = 99;
        assert_eq!(decode(&bad), Err(DecodeError::Kind(99)));
        let mut phase = ok.clone();
        phase[24] = 7;
        assert!(matches!(decode(&phase), Err(DecodeError::Field { .. })));
        let mut handler = ok;
        handler[28] = 2;
        assert!(matches!(decode(&handler), Err(DecodeError::Field { .. })));
        let mut chunk = chunks(HeaderOrigin::Kernel, 1, 1, 1, &[1, 2, 3]).remove(0);
        chunk[44..48].copy_from_slice(&(HEADER_CHUNK_BYTES as u32 + 1).to_le_bytes());
        assert!(matches!(decode(&chunk), Err(DecodeError::Field { .. })));
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_decode_or_fail_cleanly(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2200)) {
            let _ = decode(&bytes);
        }
    }
}
