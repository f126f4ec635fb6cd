//! Turns the probes' records into [`Event`]s: pairs each function's entry with its exit (by
//! thread), reassembles chunked headers, and ties a captured header to the load or the
//! in-kernel update it belongs to. Pure: the few facts only a live system knows (which file an
//! fd is, whether a pid is the agent) come through [`Processes`].
use std::{
    collections::{BTreeMap, HashMap},
    path::PathBuf,
};

use kdump_agent_common::{
    HEADER_CHUNK_BYTES, HEADER_MAX_BYTES, HeaderOrigin, HotplugHandler, KEXEC_FILE_ON_CRASH,
    KEXEC_ON_CRASH, KexecSyscall, MemoryOp, Phase, Protection,
};

use crate::{
    model::{
        elfcorehdr::LoadPath,
        events::{
            CapturedHeader, Event, EventSource, FileLoad, HeaderSource, HotplugAction,
            KernelHeaderUpdate, KexecLoad, LoaderCommand, UnprotectedWindow,
        },
    },
    observe::records::{Origin, Record},
};

/// `KEXEC_FILE_UNLOAD`.
const KEXEC_FILE_UNLOAD: u64 = 0x1;

/// What only the running system can say about a process, asked while it is still running.
pub trait Processes {
    /// The file behind `fd` in process `pid`.
    fn fd_path(&self, pid: u32, fd: i32) -> Option<PathBuf>;
    /// The size in bytes of the file behind `fd` in process `pid`.
    fn fd_bytes(&self, pid: u32, fd: i32) -> Option<u64>;
    /// How process `pid` was started: its working directory and arguments.
    fn command(&self, pid: u32) -> Option<LoaderCommand>;
    /// `pid` is the agent or a loader the agent started.
    fn is_agent(&self, pid: u32) -> bool;
}

/// A syscall between its enter and exit records.
struct PendingLoad {
    syscall: LoadPath,
    pid: u32,
    comm: String,
    flags: u64,
    crash: bool,
    unload: bool,
    by_agent: bool,
    enter_ns: u64,
    header: Option<CapturedHeader>,
    files: Option<Box<FileLoad>>,
}

/// An `arch_crash_handle_hotplug_event` call between entry and exit.
struct PendingUpdate {
    enter_ns: u64,
    /// `crash_prepare_elf64_headers`'s result, once it returned.
    built: Option<i64>,
    header: Option<CapturedHeader>,
}

/// The chunks of one header received so far.
struct Capture {
    source: HeaderSource,
    total_bytes: u64,
    parts: BTreeMap<u32, Vec<u8>>,
    unreadable: bool,
}

impl Capture {
    fn expected_chunks(&self) -> usize {
        let captured = self.total_bytes.min(HEADER_MAX_BYTES as u64) as usize;
        captured.div_ceil(HEADER_CHUNK_BYTES)
    }

    fn finish(self) -> CapturedHeader {
        let contiguous = self.parts.keys().copied().eq(0..self.parts.len() as u32);
        let complete = !self.unreadable
            && contiguous
            && self.parts.len() == self.expected_chunks()
            && self.total_bytes <= HEADER_MAX_BYTES as u64;
        CapturedHeader {
            source: self.source,
            bytes: self.parts.into_values().flatten().collect(),
            complete,
            total_bytes: self.total_bytes,
        }
    }
}

pub struct Assembler<P> {
    processes: P,
    page_bytes: u64,
    /// Entry arguments by (thread, function): (start, size) in the function's unit.
    calls: HashMap<(u32, u32), (u64, u64)>,
    loads: HashMap<u32, PendingLoad>,
    updates: HashMap<u32, PendingUpdate>,
    /// `crash_handle_hotplug_event` calls by thread: whether it entered the arch handler yet.
    handlers: HashMap<u32, bool>,
    captures: HashMap<(u32, u64), Capture>,
    /// When a load or unload released the crash image that no load has replaced yet.
    unprotected_since: Option<u64>,
}

fn action(op: MemoryOp) -> HotplugAction {
    match op {
        MemoryOp::OnlinePages => HotplugAction::Online,
        MemoryOp::OfflinePages => HotplugAction::Offline,
        MemoryOp::AddMemoryResource => HotplugAction::Add,
        MemoryOp::RemoveMemory
        | MemoryOp::DunderRemoveMemory
        | MemoryOp::OfflineAndRemoveMemory => HotplugAction::Remove,
    }
}

impl<P: Processes> Assembler<P> {
    pub fn new(processes: P, page_bytes: u64) -> Self {
        Self {
            processes,
            page_bytes,
            calls: HashMap::new(),
            loads: HashMap::new(),
            updates: HashMap::new(),
            handlers: HashMap::new(),
            captures: HashMap::new(),
            unprotected_since: None,
        }
    }

    /// Calls still open (entered, not returned): stays small unless exits are being lost.
    #[cfg(test)]
    fn open_calls(&self) -> usize {
        self.calls.len()
            + self.loads.len()
            + self.updates.len()
            + self.handlers.len()
            + self.captures.len()
    }

    /// Forgets everything half-seen (after lost records nothing pending can be trusted).
    pub fn reset(&mut self) {
        self.calls.clear();
        self.loads.clear();
        self.updates.clear();
        self.handlers.clear();
        self.captures.clear();
        self.unprotected_since = None;
    }

    /// The event this record completes, if any.
    pub fn push(&mut self, record: Record) -> Option<Event> {
        match record {
            Record::MemoryEntry {
                at,
                op,
                start,
                size,
            } => {
                self.memory_entry(at, op, start, size);
                None
            }
            Record::MemoryExit { at, op, result } => Some(self.memory_exit(at, op, result)),
            Record::KexecLoadEnter {
                at,
                comm,
                nr_segments,
                flags,
                ..
            } => self.kexec_load_enter(at, comm, nr_segments, flags),
            Record::KexecFileLoadEnter {
                at,
                comm,
                kernel_fd,
                initrd_fd,
                flags,
                cmdline,
            } => self.kexec_file_load_enter(at, comm, kernel_fd, initrd_fd, flags, cmdline),
            Record::KexecExit {
                at,
                syscall,
                result,
            } => self.kexec_exit(at, syscall, result),
            Record::HeaderBuilt { at, result, .. } => {
                self.header_built(at, result);
                None
            }
            Record::HeaderChunk {
                at,
                capture,
                origin,
                seq,
                total_bytes,
                data,
            } => {
                self.header_chunk(at, capture, origin, seq, total_bytes, data);
                None
            }
            Record::HotplugUpdate {
                at,
                handler: HotplugHandler::Arch,
                phase,
            } => self.hotplug_update(at, phase),
            Record::HotplugUpdate {
                at,
                handler: HotplugHandler::Generic,
                phase,
            } => self.hotplug_handler(at, phase),
            Record::CrashProtection { at, protection } => self.crash_protection(at, protection),
        }
    }

    /// A memory hotplug function entered: its arguments wait for its exit.
    fn memory_entry(&mut self, at: Origin, op: MemoryOp, start: u64, size: u64) {
        self.calls.insert((at.tid, op as u32), (start, size));
    }

    /// A memory hotplug function returned: the change, or its failure, with the entry's range.
    fn memory_exit(&mut self, at: Origin, op: MemoryOp, result: i64) -> Event {
        let args = self.calls.remove(&(at.tid, op as u32));
        let unit = if op.counts_pages() {
            self.page_bytes
        } else {
            1
        };
        let phys_start = args.map(|(s, _)| s.saturating_mul(unit));
        let bytes = args.map(|(_, n)| n.saturating_mul(unit));
        let action = action(op);
        if result == 0 {
            Event::Memory {
                action,
                phys_start,
                bytes,
                source: EventSource::Ebpf,
                ktime_ns: Some(at.ktime_ns),
            }
        } else {
            Event::MemoryFailed {
                action,
                phys_start,
                bytes,
                result,
            }
        }
    }

    fn kexec_load_enter(
        &mut self,
        at: Origin,
        comm: String,
        nr_segments: u64,
        flags: u64,
    ) -> Option<Event> {
        self.load_entered(
            at,
            PendingLoad {
                syscall: LoadPath::KexecLoad,
                pid: at.pid,
                comm,
                flags,
                crash: flags & KEXEC_ON_CRASH != 0,
                unload: nr_segments == 0,
                by_agent: self.processes.is_agent(at.pid),
                enter_ns: at.ktime_ns,
                header: None,
                files: None,
            },
        )
    }

    /// Another process's crash load is news at once: the old image is gone until it returns.
    fn load_entered(&mut self, at: Origin, load: PendingLoad) -> Option<Event> {
        let started =
            (load.crash && !load.unload && !load.by_agent).then(|| Event::KexecLoadStarted {
                pid: load.pid,
                comm: load.comm.clone(),
            });
        self.loads.insert(at.tid, load);
        started
    }

    /// Asks the running loader which files its fds are, while it still has them open.
    fn kexec_file_load_enter(
        &mut self,
        at: Origin,
        comm: String,
        kernel_fd: i32,
        initrd_fd: i32,
        flags: u64,
        cmdline: String,
    ) -> Option<Event> {
        let unload = flags & KEXEC_FILE_UNLOAD != 0;
        let files = (!unload).then(|| {
            Box::new(FileLoad {
                kernel: self.processes.fd_path(at.pid, kernel_fd),
                kernel_bytes: self.processes.fd_bytes(at.pid, kernel_fd),
                loader: self.processes.command(at.pid),
                initrd: (initrd_fd >= 0)
                    .then(|| self.processes.fd_path(at.pid, initrd_fd))
                    .flatten(),
                kernel_fd,
                initrd_fd,
                cmdline,
            })
        });
        self.load_entered(
            at,
            PendingLoad {
                syscall: LoadPath::KexecFileLoad,
                pid: at.pid,
                comm,
                flags,
                crash: flags & KEXEC_FILE_ON_CRASH != 0,
                unload,
                by_agent: self.processes.is_agent(at.pid),
                enter_ns: at.ktime_ns,
                header: None,
                files,
            },
        )
    }

    /// A kexec syscall returned: a crash load or unload, with the header captured during it.
    fn kexec_exit(&mut self, at: Origin, syscall: KexecSyscall, result: i64) -> Option<Event> {
        let leftover = self.take_unfinished(at.tid);
        let pending = self.loads.remove(&at.tid)?;
        let expected = match syscall {
            KexecSyscall::KexecLoad => LoadPath::KexecLoad,
            KexecSyscall::KexecFileLoad => LoadPath::KexecFileLoad,
        };
        if pending.syscall != expected || !pending.crash {
            return None;
        }
        Some(Event::KexecLoad(KexecLoad {
            syscall: pending.syscall,
            pid: pending.pid,
            comm: pending.comm,
            flags: pending.flags,
            unload: pending.unload,
            by_agent: pending.by_agent,
            result,
            duration_ns: at.ktime_ns.checked_sub(pending.enter_ns),
            header: pending.header.or(leftover),
            files: pending.files,
            ktime_ns: at.ktime_ns,
        }))
    }

    fn header_built(&mut self, at: Origin, result: i64) {
        if let Some(update) = self.updates.get_mut(&at.tid) {
            update.built = Some(result);
        }
    }

    /// One chunk of capture `capture` (of `total_bytes`); the last one finishes the header.
    fn header_chunk(
        &mut self,
        at: Origin,
        capture: u64,
        origin: HeaderOrigin,
        seq: u32,
        total_bytes: u32,
        data: Vec<u8>,
    ) {
        let key = (at.tid, capture);
        let c = self.captures.entry(key).or_insert_with(|| Capture {
            source: match origin {
                HeaderOrigin::UserSegment => HeaderSource::KexecLoadSegment,
                HeaderOrigin::Kernel => HeaderSource::Kernel,
            },
            total_bytes: u64::from(total_bytes),
            parts: BTreeMap::new(),
            unreadable: false,
        });
        c.unreadable |= data.is_empty();
        c.parts.insert(seq, data);
        if c.parts.len() >= c.expected_chunks() {
            let header = self.captures.remove(&key).map(Capture::finish);
            self.attach(at.tid, header);
        }
    }

    /// `crash_handle_hotplug_event`: returning without entering the arch handler means the
    /// kernel did not try to rewrite the header for this event.
    fn hotplug_handler(&mut self, at: Origin, phase: Phase) -> Option<Event> {
        match phase {
            Phase::Entry => {
                self.handlers.insert(at.tid, false);
                None
            }
            Phase::Exit => match self.handlers.remove(&at.tid) {
                Some(false) => Some(Event::KernelUpdateSkipped {
                    ktime_ns: at.ktime_ns,
                    during_load: self.loads.values().any(|l| l.crash && !l.unload),
                }),
                Some(true) | None => None,
            },
        }
    }

    /// `arch_crash_handle_hotplug_event`: its exit is the in-kernel rewrite, when it rebuilt.
    fn hotplug_update(&mut self, at: Origin, phase: Phase) -> Option<Event> {
        match phase {
            Phase::Entry => {
                if let Some(entered) = self.handlers.get_mut(&at.tid) {
                    *entered = true;
                }
                self.updates.insert(
                    at.tid,
                    PendingUpdate {
                        enter_ns: at.ktime_ns,
                        built: None,
                        header: None,
                    },
                );
                None
            }
            Phase::Exit => {
                let leftover = self.take_unfinished(at.tid);
                let update = self.updates.remove(&at.tid)?;
                // No rebuild (the kernel skips CPU events for images that list every
                // possible CPU): not a rewrite.
                let result = update.built?;
                Some(Event::KernelHeaderUpdate(KernelHeaderUpdate {
                    header: update.header.or(leftover).filter(|_| result == 0),
                    result,
                    duration_ns: at.ktime_ns.checked_sub(update.enter_ns),
                    ktime_ns: at.ktime_ns,
                }))
            }
        }
    }

    /// Only inside a kexec syscall: an in-kernel header rewrite also unprotects and protects,
    /// but keeps the image loaded throughout.
    fn crash_protection(&mut self, at: Origin, protection: Protection) -> Option<Event> {
        let load = self.loads.get(&at.tid).filter(|l| l.crash)?;
        match protection {
            Protection::Unprotect => {
                self.unprotected_since.get_or_insert(at.ktime_ns);
                None
            }
            Protection::Protect => {
                let since = self.unprotected_since.take()?;
                Some(Event::UnprotectedWindow(UnprotectedWindow {
                    duration_ns: at.ktime_ns.saturating_sub(since),
                    pid: load.pid,
                    comm: load.comm.clone(),
                    by_agent: load.by_agent,
                    ktime_ns: at.ktime_ns,
                }))
            }
        }
    }

    /// Gives a finished header to the load or update running on `tid`.
    fn attach(&mut self, tid: u32, header: Option<CapturedHeader>) {
        if let Some(update) = self.updates.get_mut(&tid) {
            update.header = header;
        } else if let Some(load) = self.loads.get_mut(&tid) {
            load.header = header;
        }
    }

    /// A header of `tid` some of whose chunks never came (lost): returned incomplete.
    fn take_unfinished(&mut self, tid: u32) -> Option<CapturedHeader> {
        let key = self.captures.keys().copied().find(|(t, _)| *t == tid)?;
        self.captures.remove(&key).map(Capture::finish)
    }
}

#[cfg(test)]
mod tests {
    use kdump_agent_common::{
        COMM_BYTES, EventKind, HotplugUpdateEvent, KexecExitEvent, KexecLoadEvent, MemoryEvent,
    };

    use super::*;
    use crate::observe::records::{decode, encode::*};

    struct Fake;
    impl Processes for Fake {
        fn fd_path(&self, pid: u32, fd: i32) -> Option<PathBuf> {
            Some(format!("/proc/{pid}/fd/{fd}").into())
        }
        fn fd_bytes(&self, _pid: u32, fd: i32) -> Option<u64> {
            Some(fd as u64 * 1000)
        }
        fn command(&self, _pid: u32) -> Option<LoaderCommand> {
            Some(LoaderCommand {
                cwd: "/".into(),
                argv: vec!["kexec".into(), "-s".into(), "-p".into(), "vmlinuz".into()],
            })
        }
        fn is_agent(&self, pid: u32) -> bool {
            pid == 1
        }
    }

    fn push_every(a: &mut Assembler<Fake>, records: &[Vec<u8>]) -> Vec<Event> {
        records
            .iter()
            .filter_map(|r| a.push(decode(r).unwrap()))
            .collect()
    }

    /// The events but the starts of other loaders' loads (tested on their own).
    fn push_all(a: &mut Assembler<Fake>, records: &[Vec<u8>]) -> Vec<Event> {
        let mut events = push_every(a, records);
        events.retain(|e| !matches!(e, Event::KexecLoadStarted { .. }));
        events
    }

    fn memory(op: MemoryOp, phase: Phase, tid: u32, start: u64, size: u64, result: i64) -> Vec<u8> {
        bytes_of(&MemoryEvent {
            header: header(EventKind::Memory, 100, tid, tid),
            op: op as u32,
            phase: phase as u32,
            start,
            size,
            result,
        })
    }

    #[test]
    fn online_pages_pairs_entry_and_exit_per_thread() {
        let mut a = Assembler::new(Fake, 4096);
        let events = push_all(
            &mut a,
            &[
                memory(MemoryOp::OnlinePages, Phase::Entry, 7, 0x40000, 0x8000, 0),
                memory(MemoryOp::OnlinePages, Phase::Entry, 8, 0x48000, 0x8000, 0),
                memory(MemoryOp::OnlinePages, Phase::Exit, 8, 0, 0, 0),
                memory(MemoryOp::OnlinePages, Phase::Exit, 7, 0, 0, -16),
            ],
        );
        assert_eq!(
            events,
            [
                Event::Memory {
                    action: HotplugAction::Online,
                    phys_start: Some(0x4800_0000),
                    bytes: Some(128 << 20),
                    source: EventSource::Ebpf,
                    ktime_ns: Some(100),
                },
                Event::MemoryFailed {
                    action: HotplugAction::Online,
                    phys_start: Some(0x4000_0000),
                    bytes: Some(128 << 20),
                    result: -16,
                },
            ]
        );
        assert_eq!(a.open_calls(), 0);
    }

    #[test]
    fn byte_ranges_are_not_scaled_and_removes_map_to_remove() {
        let mut a = Assembler::new(Fake, 4096);
        for op in [
            MemoryOp::RemoveMemory,
            MemoryOp::DunderRemoveMemory,
            MemoryOp::OfflineAndRemoveMemory,
        ] {
            let events = push_all(
                &mut a,
                &[
                    memory(op, Phase::Entry, 1, 1 << 32, 1 << 29, 0),
                    memory(op, Phase::Exit, 1, 0, 0, 0),
                ],
            );
            assert!(matches!(
                events[..],
                [Event::Memory {
                    action: HotplugAction::Remove,
                    phys_start: Some(0x1_0000_0000),
                    bytes: Some(0x2000_0000),
                    ..
                }]
            ));
        }
    }

    #[test]
    fn an_exit_without_its_entry_has_no_range() {
        let mut a = Assembler::new(Fake, 4096);
        let events = push_all(
            &mut a,
            &[memory(MemoryOp::AddMemoryResource, Phase::Exit, 1, 0, 0, 0)],
        );
        assert!(matches!(
            events[..],
            [Event::Memory {
                action: HotplugAction::Add,
                phys_start: None,
                bytes: None,
                ..
            }]
        ));
    }

    fn kexec_load(tid: u32, flags: u64, ktime: u64) -> Vec<u8> {
        bytes_of(&KexecLoadEvent {
            header: header(EventKind::KexecLoadEnter, ktime, tid, tid),
            comm: *b"kexec\0\0\0\0\0\0\0\0\0\0\0",
            entry: 0,
            nr_segments: 5,
            flags,
            header_segment: 2,
            _pad: 0,
            header_mem: 0x7f00_0000,
            header_bufsz: 4096,
        })
    }

    fn exit(tid: u32, syscall: KexecSyscall, result: i64, ktime: u64) -> Vec<u8> {
        bytes_of(&KexecExitEvent {
            header: header(EventKind::KexecExit, ktime, tid, tid),
            syscall: syscall as u32,
            _pad: 0,
            result,
        })
    }

    /// A header bigger than one chunk, as the probe would copy it.
    fn header_bytes(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7) as u8).collect()
    }

    #[test]
    fn kexec_load_with_a_multi_chunk_header() {
        let mut a = Assembler::new(Fake, 4096);
        let h = header_bytes(5000);
        let mut records = vec![kexec_load(42, KEXEC_ON_CRASH, 1_000)];
        records.extend(chunks(HeaderOrigin::UserSegment, 1_000, 1_001, 42, &h));
        records.push(exit(42, KexecSyscall::KexecLoad, 0, 31_000));
        let events = push_all(&mut a, &records);
        let [Event::KexecLoad(load)] = &events[..] else {
            panic!("{events:?}")
        };
        assert_eq!(load.syscall, LoadPath::KexecLoad);
        assert_eq!((load.pid, load.comm.as_str()), (42, "kexec"));
        assert_eq!(load.duration_ns, Some(30_000));
        assert!(!load.unload && !load.by_agent && load.succeeded());
        let header = load.header.as_ref().unwrap();
        assert!(header.complete);
        assert_eq!(header.bytes, h);
        assert_eq!(header.source, HeaderSource::KexecLoadSegment);
        assert_eq!(a.open_calls(), 0);
    }

    #[test]
    fn a_lost_chunk_leaves_the_header_incomplete() {
        let mut a = Assembler::new(Fake, 4096);
        let h = header_bytes(5000);
        let mut parts = chunks(HeaderOrigin::UserSegment, 1, 1, 9, &h);
        parts.remove(1);
        let mut records = vec![kexec_load(9, KEXEC_ON_CRASH, 1)];
        records.extend(parts);
        records.push(exit(9, KexecSyscall::KexecLoad, 0, 2));
        let events = push_all(&mut a, &records);
        let [Event::KexecLoad(load)] = &events[..] else {
            panic!("{events:?}")
        };
        assert!(!load.header.as_ref().unwrap().complete);
        assert_eq!(a.open_calls(), 0);
    }

    #[test]
    fn a_header_larger_than_a_capture_is_incomplete() {
        let mut a = Assembler::new(Fake, 4096);
        let h = header_bytes(HEADER_MAX_BYTES + 100);
        let mut parts = chunks(HeaderOrigin::UserSegment, 1, 1, 9, &h);
        parts.pop();
        let mut records = vec![kexec_load(9, KEXEC_ON_CRASH, 1)];
        records.extend(parts);
        records.push(exit(9, KexecSyscall::KexecLoad, 0, 2));
        let events = push_all(&mut a, &records);
        let [Event::KexecLoad(load)] = &events[..] else {
            panic!("{events:?}")
        };
        let header = load.header.as_ref().unwrap();
        assert!(!header.complete);
        assert_eq!(header.bytes.len(), HEADER_MAX_BYTES);
    }

    #[test]
    fn non_crash_loads_are_not_events_and_failures_are() {
        let mut a = Assembler::new(Fake, 4096);
        assert!(
            push_all(
                &mut a,
                &[kexec_load(3, 0, 1), exit(3, KexecSyscall::KexecLoad, 0, 2)]
            )
            .is_empty()
        );
        let events = push_all(
            &mut a,
            &[
                kexec_load(1, KEXEC_ON_CRASH, 1),
                exit(1, KexecSyscall::KexecLoad, -22, 2),
            ],
        );
        let [Event::KexecLoad(load)] = &events[..] else {
            panic!("{events:?}")
        };
        assert!(load.by_agent && !load.succeeded());
    }

    #[test]
    fn another_loaders_crash_load_is_news_at_its_entry_and_its_skips_say_so() {
        let mut a = Assembler::new(Fake, 4096);
        let events = push_every(
            &mut a,
            &[
                file_load(5, KEXEC_FILE_ON_CRASH),
                handler(HotplugHandler::Generic, 6, Phase::Entry, 20),
                handler(HotplugHandler::Generic, 6, Phase::Exit, 21),
                exit(5, KexecSyscall::KexecFileLoad, 0, 30),
                // The agent's own load (pid 1) and an unload are not announced.
                kexec_load(1, KEXEC_ON_CRASH, 1),
                exit(1, KexecSyscall::KexecLoad, 0, 40),
                file_load(5, KEXEC_FILE_ON_CRASH | KEXEC_FILE_UNLOAD),
                exit(5, KexecSyscall::KexecFileLoad, 0, 50),
            ],
        );
        assert!(
            matches!(
                &events[..],
                [
                    Event::KexecLoadStarted { pid: 5, .. },
                    Event::KernelUpdateSkipped {
                        ktime_ns: 21,
                        during_load: true
                    },
                    Event::KexecLoad(_),
                    Event::KexecLoad(_),
                    Event::KexecLoad(_),
                ]
            ),
            "{events:?}"
        );
    }

    fn file_load(tid: u32, flags: u64) -> Vec<u8> {
        let mut cmdline = [0u8; kdump_agent_common::CMDLINE_BYTES];
        cmdline[..6].copy_from_slice(b"irqpol");
        bytes_of(&kdump_agent_common::KexecFileLoadEvent {
            header: header(EventKind::KexecFileLoadEnter, 10, tid, tid),
            comm: [0; COMM_BYTES],
            kernel_fd: 3,
            initrd_fd: 4,
            cmdline_len: 7,
            flags,
            cmdline,
        })
    }

    fn built(tid: u32, capture: u64, result: i64) -> Vec<u8> {
        bytes_of(&kdump_agent_common::HeaderBuiltEvent {
            header: header(EventKind::HeaderBuilt, capture, tid, tid),
            capture,
            result,
            allocated_bytes: 1 << 20,
            used_bytes: 0,
        })
    }

    #[test]
    fn kexec_file_load_captures_the_kernel_header_and_the_files() {
        let mut a = Assembler::new(Fake, 4096);
        let h = header_bytes(1200);
        let mut records = vec![file_load(5, KEXEC_FILE_ON_CRASH), built(5, 20, 0)];
        records.extend(chunks(HeaderOrigin::Kernel, 20, 21, 5, &h));
        records.push(exit(5, KexecSyscall::KexecFileLoad, 0, 50));
        let events = push_all(&mut a, &records);
        let [Event::KexecLoad(load)] = &events[..] else {
            panic!("{events:?}")
        };
        assert_eq!(load.syscall, LoadPath::KexecFileLoad);
        assert_eq!(load.header.as_ref().unwrap().bytes, h);
        assert_eq!(load.header.as_ref().unwrap().source, HeaderSource::Kernel);
        let files = load.files.as_ref().unwrap();
        assert_eq!(files.cmdline, "irqpol");
        assert_eq!(files.kernel, Some("/proc/5/fd/3".into()));
        assert_eq!(files.initrd, Some("/proc/5/fd/4".into()));
        assert_eq!(files.kernel_bytes, Some(3000));
        assert_eq!(files.loader.as_ref().unwrap().argv[3], "vmlinuz");
        let unload = push_all(
            &mut a,
            &[
                file_load(5, KEXEC_FILE_ON_CRASH | KEXEC_FILE_UNLOAD),
                exit(5, KexecSyscall::KexecFileLoad, 0, 60),
            ],
        );
        assert!(matches!(
            &unload[..],
            [Event::KexecLoad(KexecLoad {
                unload: true,
                files: None,
                ..
            })]
        ));
    }

    fn update(tid: u32, phase: Phase, ktime: u64) -> Vec<u8> {
        handler(HotplugHandler::Arch, tid, phase, ktime)
    }

    fn handler(handler: HotplugHandler, tid: u32, phase: Phase, ktime: u64) -> Vec<u8> {
        bytes_of(&HotplugUpdateEvent {
            header: header(EventKind::HotplugUpdate, ktime, tid, tid),
            phase: phase as u32,
            handler: handler as u32,
        })
    }

    #[test]
    fn a_generic_handler_that_never_enters_the_arch_one_is_a_skipped_update() {
        use HotplugHandler::Generic;
        let mut a = Assembler::new(Fake, 4096);
        let h = header_bytes(800);
        // A rewrite: generic, arch, build, exit, exit. Then a skip (lock busy), on another thread.
        let mut records = vec![
            handler(Generic, 7, Phase::Entry, 1),
            update(7, Phase::Entry, 2),
            built(7, 3, 0),
        ];
        records.extend(chunks(HeaderOrigin::Kernel, 3, 4, 7, &h));
        records.extend([
            update(7, Phase::Exit, 5),
            handler(Generic, 7, Phase::Exit, 6),
            handler(Generic, 8, Phase::Entry, 10),
            handler(Generic, 8, Phase::Exit, 11),
            // An exit whose entry was lost says nothing.
            handler(Generic, 9, Phase::Exit, 12),
        ]);
        let events = push_all(&mut a, &records);
        assert!(
            matches!(
                &events[..],
                [
                    Event::KernelHeaderUpdate(_),
                    Event::KernelUpdateSkipped {
                        ktime_ns: 11,
                        during_load: false
                    }
                ]
            ),
            "{events:?}"
        );
        assert_eq!(a.open_calls(), 0);
    }

    #[test]
    fn in_kernel_updates_carry_their_header_or_their_failure() {
        let mut a = Assembler::new(Fake, 4096);
        let h = header_bytes(800);
        let mut records = vec![update(77, Phase::Entry, 1), built(77, 2, 0)];
        records.extend(chunks(HeaderOrigin::Kernel, 2, 3, 77, &h));
        records.push(update(77, Phase::Exit, 9));
        records.extend([
            update(77, Phase::Entry, 10),
            built(77, 11, -12),
            update(77, Phase::Exit, 12),
        ]);
        // A CPU event: no rebuild, no update.
        records.extend([update(77, Phase::Entry, 20), update(77, Phase::Exit, 21)]);
        let events = push_all(&mut a, &records);
        assert_eq!(events.len(), 2, "{events:?}");
        let Event::KernelHeaderUpdate(ok) = &events[0] else {
            panic!()
        };
        assert!(ok.succeeded());
        assert_eq!(ok.header.as_ref().unwrap().bytes, h);
        assert_eq!(ok.duration_ns, Some(8));
        let Event::KernelHeaderUpdate(failed) = &events[1] else {
            panic!()
        };
        assert!(!failed.succeeded());
        assert_eq!(failed.result, -12);
        assert_eq!(a.open_calls(), 0);
    }

    fn protection(tid: u32, protection: Protection, ktime: u64) -> Vec<u8> {
        bytes_of(&kdump_agent_common::CrashProtectionEvent {
            header: header(EventKind::CrashProtection, ktime, tid, tid),
            protection: protection as u32,
            _pad: 0,
        })
    }

    fn windows(events: &[Event]) -> Vec<(u64, u32, bool)> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::UnprotectedWindow(w) => Some((w.duration_ns, w.pid, w.by_agent)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_replacing_load_is_one_window_from_unprotect_to_protect() {
        let mut a = Assembler::new(Fake, 4096);
        let events = push_all(
            &mut a,
            &[
                file_load(1, KEXEC_FILE_ON_CRASH),
                protection(1, Protection::Unprotect, 100),
                protection(1, Protection::Protect, 900),
                exit(1, KexecSyscall::KexecFileLoad, 0, 950),
            ],
        );
        assert_eq!(windows(&events), [(800, 1, true)]);
        assert_eq!(a.open_calls(), 0);
    }

    #[test]
    fn an_unload_then_a_load_is_one_window_across_both_syscalls() {
        let mut a = Assembler::new(Fake, 4096);
        let unload = bytes_of(&KexecLoadEvent {
            header: header(EventKind::KexecLoadEnter, 1_000, 30, 30),
            comm: [0; COMM_BYTES],
            entry: 0,
            nr_segments: 0,
            flags: KEXEC_ON_CRASH,
            header_segment: -1,
            _pad: 0,
            header_mem: 0,
            header_bufsz: 0,
        });
        let events = push_all(
            &mut a,
            &[
                unload,
                protection(30, Protection::Unprotect, 1_010),
                exit(30, KexecSyscall::KexecLoad, 0, 1_020),
                // The new load had nothing to unprotect: only its protect.
                file_load(31, KEXEC_FILE_ON_CRASH),
                protection(31, Protection::Protect, 5_010),
                exit(31, KexecSyscall::KexecFileLoad, 0, 5_020),
            ],
        );
        assert_eq!(windows(&events), [(4_000, 31, false)]);
    }

    #[test]
    fn a_failed_load_keeps_the_window_open_until_the_rollback_loads() {
        let mut a = Assembler::new(Fake, 4096);
        let events = push_all(
            &mut a,
            &[
                file_load(1, KEXEC_FILE_ON_CRASH),
                protection(1, Protection::Unprotect, 100),
                exit(1, KexecSyscall::KexecFileLoad, -99, 300),
                file_load(1, KEXEC_FILE_ON_CRASH),
                protection(1, Protection::Protect, 700),
                exit(1, KexecSyscall::KexecFileLoad, 0, 710),
            ],
        );
        assert_eq!(windows(&events), [(600, 1, true)]);
    }

    #[test]
    fn in_kernel_rewrites_and_first_loads_open_no_window() {
        let mut a = Assembler::new(Fake, 4096);
        let events = push_all(
            &mut a,
            &[
                // 6.6+: the hotplug handler unprotects and protects around its rewrite.
                update(77, Phase::Entry, 1),
                protection(77, Protection::Unprotect, 2),
                protection(77, Protection::Protect, 3),
                update(77, Phase::Exit, 4),
                // A first load: nothing was loaded, so nothing to unprotect.
                file_load(5, KEXEC_FILE_ON_CRASH),
                protection(5, Protection::Protect, 50),
                exit(5, KexecSyscall::KexecFileLoad, 0, 51),
            ],
        );
        assert_eq!(windows(&events), []);
    }

    #[test]
    fn lost_records_forget_an_open_window() {
        let mut a = Assembler::new(Fake, 4096);
        push_all(
            &mut a,
            &[
                file_load(1, KEXEC_FILE_ON_CRASH),
                protection(1, Protection::Unprotect, 100),
            ],
        );
        a.reset();
        let events = push_all(
            &mut a,
            &[
                file_load(1, KEXEC_FILE_ON_CRASH),
                protection(1, Protection::Protect, 700),
                exit(1, KexecSyscall::KexecFileLoad, 0, 710),
            ],
        );
        assert_eq!(windows(&events), []);
    }
}
