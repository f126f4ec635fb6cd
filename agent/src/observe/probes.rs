//! Loads the embedded eBPF probes, attaches each one the best way this kernel allows
//! (fentry/fexit, else kprobe/kretprobe; tracepoints for the syscalls), skips those whose
//! kernel symbol is missing, and feeds the ring buffer through [`records`] and [`assemble`]
//! into [`Event`]s.
use std::{collections::HashSet, path::PathBuf, time::Duration};

use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{MapData, PerCpuArray, RingBuf},
    programs::{FEntry, FExit, KProbe, ProgramError, TracePoint},
};
use kdump_agent_common::{EVENTS_MAP, LOST_MAP};
use tokio::{io::unix::AsyncFd, sync::mpsc};

use crate::{
    model::{
        events::{Event, EventSource, LoaderCommand},
        probe::ProbeReport,
    },
    observe::{
        assemble::{Assembler, Processes},
        records,
    },
    sys::{
        capabilities::{Capability, Feature},
        procfs::Procfs,
    },
};

/// Built by agent/build.rs; empty when it ran with AYA_BUILD_SKIP=1.
static PROBES_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/kdump-agent-probes"));

/// A kernel function and its programs: trampoline ones (fentry/fexit, reported as `fentry`)
/// and the kprobe/kretprobe pair that replaces them (reported as `kprobe`). All programs of
/// one way attach, or none does.
struct FunctionProbe {
    function: &'static str,
    fentry: Option<&'static str>,
    fexit: Option<&'static str>,
    kprobe: Option<&'static str>,
    kretprobe: Option<&'static str>,
}

const fn both(
    function: &'static str,
    fentry: &'static str,
    fexit: &'static str,
    kprobe: &'static str,
    kretprobe: &'static str,
) -> FunctionProbe {
    FunctionProbe {
        function,
        fentry: Some(fentry),
        fexit: Some(fexit),
        kprobe: Some(kprobe),
        kretprobe: Some(kretprobe),
    }
}

/// A function whose entry alone is the fact (no arguments worth keeping, nothing returned).
const fn entry_only(
    function: &'static str,
    fentry: &'static str,
    kprobe: &'static str,
) -> FunctionProbe {
    FunctionProbe {
        function,
        fentry: Some(fentry),
        fexit: None,
        kprobe: Some(kprobe),
        kretprobe: None,
    }
}

const FUNCTIONS: &[FunctionProbe] = &[
    both(
        "online_pages",
        "online_pages_fentry",
        "online_pages_fexit",
        "online_pages_kprobe",
        "online_pages_kretprobe",
    ),
    both(
        "offline_pages",
        "offline_pages_fentry",
        "offline_pages_fexit",
        "offline_pages_kprobe",
        "offline_pages_kretprobe",
    ),
    both(
        "add_memory_resource",
        "add_memory_resource_fentry",
        "add_memory_resource_fexit",
        "add_memory_resource_kprobe",
        "add_memory_resource_kretprobe",
    ),
    both(
        "remove_memory",
        "remove_memory_fentry",
        "remove_memory_fexit",
        "remove_memory_kprobe",
        "remove_memory_kretprobe",
    ),
    both(
        "__remove_memory",
        "dunder_remove_memory_fentry",
        "dunder_remove_memory_fexit",
        "dunder_remove_memory_kprobe",
        "dunder_remove_memory_kretprobe",
    ),
    both(
        "offline_and_remove_memory",
        "offline_and_remove_memory_fentry",
        "offline_and_remove_memory_fexit",
        "offline_and_remove_memory_kprobe",
        "offline_and_remove_memory_kretprobe",
    ),
    // fexit alone sees the arguments and the result; the kprobe keeps them for the kretprobe.
    FunctionProbe {
        function: "crash_prepare_elf64_headers",
        fentry: None,
        fexit: Some("crash_prepare_elf64_headers_fexit"),
        kprobe: Some("crash_prepare_elf64_headers_kprobe"),
        kretprobe: Some("crash_prepare_elf64_headers_kretprobe"),
    },
    both(
        "arch_crash_handle_hotplug_event",
        "arch_crash_handle_hotplug_event_fentry",
        "arch_crash_handle_hotplug_event_fexit",
        "arch_crash_handle_hotplug_event_kprobe",
        "arch_crash_handle_hotplug_event_kretprobe",
    ),
    entry_only(
        "arch_kexec_unprotect_crashkres",
        "arch_kexec_unprotect_crashkres_fentry",
        "arch_kexec_unprotect_crashkres_kprobe",
    ),
    entry_only(
        "arch_kexec_protect_crashkres",
        "arch_kexec_protect_crashkres_fentry",
        "arch_kexec_protect_crashkres_kprobe",
    ),
];

/// The two probes that time the window without a crash image; without both, the agent falls
/// back to the duration of its own load syscalls (an upper bound).
pub const WINDOW_PROBES: [&str; 2] = [
    "arch_kexec_unprotect_crashkres",
    "arch_kexec_protect_crashkres",
];

/// `syscalls/<name>` tracepoints; the program has the tracepoint's name.
const SYSCALL_TRACEPOINTS: &[&str] = &[
    "sys_enter_kexec_load",
    "sys_exit_kexec_load",
    "sys_enter_kexec_file_load",
    "sys_exit_kexec_file_load",
];

/// How often the dropped-record counter is read.
const LOST_POLL: Duration = Duration::from_secs(1);

/// The loaded object with at least one probe attached.
pub struct Attached {
    ebpf: Ebpf,
}

fn report(probe: &str, how: &str, reason: impl Into<String>) -> ProbeReport {
    ProbeReport {
        probe: probe.to_string(),
        how: how.into(),
        reason: reason.into(),
    }
}

/// Every probe name, as reported.
fn probe_names() -> impl Iterator<Item = String> {
    FUNCTIONS
        .iter()
        .map(|f| f.function.to_string())
        .chain(SYSCALL_TRACEPOINTS.iter().map(|t| format!("syscalls/{t}")))
}

/// Function names in `/proc/kallsyms` (static and global text symbols).
fn kernel_functions() -> Option<HashSet<String>> {
    let text = std::fs::read_to_string("/proc/kallsyms").ok()?;
    Some(
        text.lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                let (_addr, kind, name) = (f.next()?, f.next()?, f.next()?);
                matches!(kind, "T" | "t").then(|| name.to_string())
            })
            .collect(),
    )
}

/// A failed program load, with the verifier's last words when it refused it.
fn describe(e: &ProgramError) -> String {
    match e {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            // The last lines before the statistics say why.
            let log = verifier_log.to_string();
            let reason: Vec<&str> = log
                .lines()
                .filter(|l| !l.trim().is_empty())
                .filter(|l| !l.starts_with("verification time") && !l.starts_with("processed "))
                .collect();
            let tail = &reason[reason.len().saturating_sub(3)..];
            format!("verifier refused it ({io_error}): {}", tail.join(" / "))
        }
        other => other.to_string(),
    }
}

/// Attaches every probe it can. Returns the object when at least one is attached, and a report per probe.
pub fn attach(caps: &[Capability]) -> (Option<Attached>, Vec<ProbeReport>) {
    let missing = |f: Feature| {
        caps.iter()
            .find(|c| c.feature == f)
            .filter(|c| !c.available)
            .map(|c| c.detail.clone())
    };
    let none_attached = |reason: String| {
        probe_names()
            .map(|p| report(&p, "none", reason.clone()))
            .collect()
    };
    if PROBES_OBJECT.is_empty() {
        return (
            None,
            none_attached(
                "this build carries no probes (built without the probes feature or with AYA_BUILD_SKIP=1)".into(),
            ),
        );
    }
    for needed in [Feature::Bpf, Feature::RingBuf] {
        if let Some(why) = missing(needed) {
            return (None, none_attached(format!("{}: {why}", needed.label())));
        }
    }
    let mut ebpf = match EbpfLoader::new().load(PROBES_OBJECT) {
        Ok(ebpf) => ebpf,
        Err(e) => {
            return (
                None,
                none_attached(format!("loading the probe object failed: {e}")),
            );
        }
    };
    let btf = Btf::from_sys_fs().map_err(|e| format!("kernel BTF unreadable: {e}"));
    let symbols = kernel_functions();
    let mut reports = Vec::new();
    for spec in FUNCTIONS {
        if let Some(symbols) = &symbols
            && !symbols.contains(spec.function)
        {
            reports.push(report(
                spec.function,
                "none",
                "not in this kernel (/proc/kallsyms has no such function)",
            ));
            continue;
        }
        let tracing = match (missing(Feature::Fentry), &btf) {
            (Some(why), _) => Err(why),
            (None, Err(why)) => Err(why.clone()),
            (None, Ok(btf)) => attach_trampolines(&mut ebpf, spec, btf),
        };
        let r = match tracing {
            Ok(how) => report(spec.function, how, ""),
            Err(tracing_why) => {
                let kprobe = match missing(Feature::Kprobes) {
                    Some(why) => Err(why),
                    None => attach_kprobes(&mut ebpf, spec),
                };
                match kprobe {
                    Ok(how) => report(spec.function, how, format!("fentry: {tracing_why}")),
                    Err(kprobe_why) => report(
                        spec.function,
                        "none",
                        format!("fentry: {tracing_why}; kprobe: {kprobe_why}"),
                    ),
                }
            }
        };
        reports.push(r);
    }
    for name in SYSCALL_TRACEPOINTS {
        let probe = format!("syscalls/{name}");
        reports.push(match attach_tracepoint(&mut ebpf, name) {
            Ok(()) => report(&probe, "tracepoint", ""),
            Err(why) => report(&probe, "none", why),
        });
    }
    let any = reports.iter().any(|r| r.how != "none");
    (any.then_some(Attached { ebpf }), reports)
}

/// Loads and attaches the fentry and fexit programs of `spec`; on any failure unloads those
/// already attached, so a function is watched one whole way or not at all.
fn attach_trampolines(
    ebpf: &mut Ebpf,
    spec: &FunctionProbe,
    btf: &Btf,
) -> Result<&'static str, String> {
    let mut done: Vec<&str> = Vec::new();
    let mut result = Ok(());
    for (name, entry) in [(spec.fentry, true), (spec.fexit, false)] {
        let Some(name) = name else { continue };
        let attached = if entry {
            program::<FEntry>(ebpf, name).and_then(|p| {
                p.load(spec.function, btf).map_err(|e| describe(&e))?;
                p.attach().map(drop).map_err(|e| e.to_string())
            })
        } else {
            program::<FExit>(ebpf, name).and_then(|p| {
                p.load(spec.function, btf).map_err(|e| describe(&e))?;
                p.attach().map(drop).map_err(|e| e.to_string())
            })
        };
        match attached {
            Ok(()) => done.push(name),
            Err(e) => {
                result = Err(format!("{name}: {e}"));
                break;
            }
        }
    }
    match result {
        Ok(()) => Ok("fentry"),
        Err(e) => {
            for name in done {
                unload(ebpf, name);
            }
            Err(e)
        }
    }
}

fn attach_kprobes(ebpf: &mut Ebpf, spec: &FunctionProbe) -> Result<&'static str, String> {
    let mut done: Vec<&str> = Vec::new();
    for name in [spec.kprobe, spec.kretprobe].into_iter().flatten() {
        let attached = program::<KProbe>(ebpf, name).and_then(|p| {
            p.load().map_err(|e| describe(&e))?;
            p.attach(spec.function, 0)
                .map(drop)
                .map_err(|e| e.to_string())
        });
        if let Err(e) = attached {
            for name in done {
                unload(ebpf, name);
            }
            return Err(format!("{name}: {e}"));
        }
        done.push(name);
    }
    Ok("kprobe")
}

fn attach_tracepoint(ebpf: &mut Ebpf, name: &str) -> Result<(), String> {
    let p = program::<TracePoint>(ebpf, name)?;
    p.load().map_err(|e| describe(&e))?;
    p.attach("syscalls", name)
        .map(drop)
        .map_err(|e| e.to_string())
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T, String>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or_else(|| format!("program {name} missing from the object"))?
        .try_into()
        .map_err(|e: ProgramError| e.to_string())
}

fn unload(ebpf: &mut Ebpf, name: &str) {
    let result = match ebpf.program_mut(name) {
        Some(aya::programs::Program::FEntry(p)) => p.unload(),
        Some(aya::programs::Program::FExit(p)) => p.unload(),
        Some(aya::programs::Program::KProbe(p)) => p.unload(),
        _ => Ok(()),
    };
    if let Err(e) = result {
        tracing::warn!(program = name, error = %e, "unloading a half-attached probe failed");
    }
}

/// The live system behind [`Processes`]: `<procfs>/<pid>`. The probes report pids of the
/// initial pid namespace, so `procfs` must be the host's (`--procfs`), and the agent's own pid
/// is the one that procfs gives it. The paths read from it are the loader's (the host's).
struct LiveProcesses {
    procfs: Procfs,
    agent_pid: u32,
}

impl LiveProcesses {
    fn new(procfs: Procfs) -> Self {
        // `self` in a procfs is the reader's pid in that procfs' pid namespace.
        let agent_pid = std::fs::read_link(procfs.path("self"))
            .ok()
            .and_then(|p| p.to_str()?.parse().ok())
            .unwrap_or_else(std::process::id);
        Self { procfs, agent_pid }
    }

    fn file(&self, pid: u32, name: &str) -> PathBuf {
        self.procfs.path(&format!("{pid}/{name}"))
    }
}

impl Processes for LiveProcesses {
    fn fd_path(&self, pid: u32, fd: i32) -> Option<PathBuf> {
        std::fs::read_link(self.file(pid, &format!("fd/{fd}"))).ok()
    }

    fn fd_bytes(&self, pid: u32, fd: i32) -> Option<u64> {
        std::fs::metadata(self.file(pid, &format!("fd/{fd}")))
            .ok()
            .map(|m| m.len())
    }

    fn command(&self, pid: u32) -> Option<LoaderCommand> {
        let raw = std::fs::read(self.file(pid, "cmdline")).ok()?;
        Some(LoaderCommand {
            cwd: std::fs::read_link(self.file(pid, "cwd")).ok()?,
            argv: raw
                .split(|&b| b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect(),
        })
    }

    fn is_agent(&self, pid: u32) -> bool {
        // `/proc/<pid>/stat`: "pid (comm) state ppid ..."; comm may contain spaces.
        let parent = || -> Option<u32> {
            let stat = std::fs::read_to_string(self.file(pid, "stat")).ok()?;
            stat.rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        };
        pid == self.agent_pid || parent() == Some(self.agent_pid)
    }
}

impl Attached {
    /// Forwards ring buffer records as events, and dropped-record counts as [`Event::Lost`].
    pub fn spawn_reader(
        mut self,
        procfs: Procfs,
        tx: mpsc::Sender<Event>,
    ) -> anyhow::Result<tokio::task::JoinHandle<()>> {
        let ring = RingBuf::try_from(
            self.ebpf
                .take_map(EVENTS_MAP)
                .ok_or_else(|| anyhow::anyhow!("no {EVENTS_MAP} map"))?,
        )?;
        let lost: PerCpuArray<MapData, u64> = PerCpuArray::try_from(
            self.ebpf
                .take_map(LOST_MAP)
                .ok_or_else(|| anyhow::anyhow!("no {LOST_MAP} map"))?,
        )?;
        // SAFETY: the ring buffer owns its fd and is moved into the AsyncFd, which outlives the registration.
        let mut ring = unsafe { AsyncFd::register(ring) }.map_err(std::io::Error::from)?;
        // The probes' aya-log diagnostics, as `log` records that tracing-subscriber picks up.
        let mut diagnostics = match aya_log::EbpfLogger::init(&mut self.ebpf) {
            // SAFETY: as for the ring buffer: the logger owns its fd and moves into the AsyncFd.
            Ok(logger) => Some(unsafe { AsyncFd::register(logger) }.map_err(std::io::Error::from)?),
            Err(e) => {
                tracing::warn!(error = %e, "probe diagnostics (aya-log) unavailable");
                None
            }
        };
        // SAFETY: sysconf has no preconditions.
        let page_bytes =
            u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        let mut assembler = Assembler::new(LiveProcesses::new(procfs), page_bytes);
        Ok(tokio::spawn(async move {
            let _programs = self.ebpf; // keeps the programs attached while the reader runs
            let mut lost_seen = 0u64;
            let mut tick = tokio::time::interval(LOST_POLL);
            loop {
                tokio::select! {
                    guard = ring.readable_mut() => {
                        let Ok(mut guard) = guard else { return };
                        let rb = guard.get_inner_mut();
                        while let Some(record) = rb.next() {
                            let event = match records::decode(&record) {
                                Ok(r) => {
                                    tracing::trace!(record = ?r, "probe record");
                                    assembler.push(r)
                                }
                                Err(e) => {
                                    tracing::warn!(error = %e, "undecodable probe record dropped");
                                    None
                                }
                            };
                            if let Some(event) = event
                                && tx.send(event).await.is_err()
                            {
                                return;
                            }
                        }
                        guard.clear_ready();
                    }
                    guard = async { diagnostics.as_mut().expect("guarded by is_some").readable_mut().await }, if diagnostics.is_some() => {
                        let Ok(mut guard) = guard else { return };
                        guard.get_inner_mut().flush();
                        guard.clear_ready();
                    }
                    _ = tick.tick() => {
                        let now = lost.get(&0, 0).map_or(lost_seen, |per_cpu| per_cpu.iter().sum());
                        if now > lost_seen {
                            // A lost exit or chunk would leave its call open for ever.
                            assembler.reset();
                            if tx.send(Event::Lost { count: now - lost_seen, source: EventSource::Ebpf }).await.is_err() {
                                return;
                            }
                            lost_seen = now;
                        }
                    }
                }
            }
        }))
    }
}
