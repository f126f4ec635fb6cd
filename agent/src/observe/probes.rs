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
        probe::{Attach, ProbeReport},
    },
    observe::{
        assemble::{Assembler, Processes},
        probe_table::{PROBES, Program, ProgramKind, Target},
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

pub use crate::observe::probe_table::WINDOW_PROBES;

/// How often the dropped-record counter is read.
const LOST_POLL: Duration = Duration::from_secs(1);

/// The loaded object with at least one probe attached.
pub struct Attached {
    ebpf: Ebpf,
}

fn report(probe: &str, how: Attach, reason: impl Into<String>) -> ProbeReport {
    ProbeReport {
        probe: probe.to_string(),
        how,
        reason: reason.into(),
    }
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
        PROBES
            .iter()
            .map(|p| report(&p.name(), Attach::NotAttached, reason.clone()))
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
    for probe in PROBES {
        reports.push(match probe.target {
            Target::SyscallTracepoint(tracepoint) => match attach_tracepoint(&mut ebpf, tracepoint)
            {
                Ok(()) => report(&probe.name(), Attach::Tracepoint, ""),
                Err(why) => report(&probe.name(), Attach::NotAttached, why),
            },
            Target::Function { name, .. } => attach_function(
                &mut ebpf,
                name,
                probe.programs(),
                symbols.as_ref(),
                &btf,
                &missing,
            ),
        });
    }
    let any = reports.iter().any(|r| r.how.is_attached());
    (any.then_some(Attached { ebpf }), reports)
}

/// Attaches kernel function `function` through its trampolines, else through its kprobes.
fn attach_function(
    ebpf: &mut Ebpf,
    function: &str,
    programs: Vec<Program>,
    symbols: Option<&HashSet<String>>,
    btf: &Result<Btf, String>,
    missing: &dyn Fn(Feature) -> Option<String>,
) -> ProbeReport {
    if symbols.is_some_and(|s| !s.contains(function)) {
        return report(
            function,
            Attach::NotAttached,
            "not in this kernel (/proc/kallsyms has no such function)",
        );
    }
    let (trampolines, kprobes): (Vec<Program>, Vec<Program>) =
        programs.into_iter().partition(|p| p.kind.is_trampoline());
    let tracing = match (missing(Feature::Fentry), btf) {
        (Some(why), _) => Err(why),
        (None, Err(why)) => Err(why.clone()),
        (None, Ok(btf)) => attach_trampolines(ebpf, function, &trampolines, btf),
    };
    let Err(tracing_why) = tracing else {
        return report(function, Attach::Fentry, "");
    };
    let kprobe = match missing(Feature::Kprobes) {
        Some(why) => Err(why),
        None => attach_kprobes(ebpf, function, &kprobes),
    };
    match kprobe {
        Ok(()) => report(function, Attach::Kprobe, format!("fentry: {tracing_why}")),
        Err(kprobe_why) => report(
            function,
            Attach::NotAttached,
            format!("fentry: {tracing_why}; kprobe: {kprobe_why}"),
        ),
    }
}

/// Loads and attaches the fentry and fexit `programs` of `function`; on any failure unloads
/// those already attached, so a function is watched one whole way or not at all.
fn attach_trampolines(
    ebpf: &mut Ebpf,
    function: &str,
    programs: &[Program],
    btf: &Btf,
) -> Result<(), String> {
    let mut done: Vec<&str> = Vec::new();
    let mut result = Ok(());
    for Program { name, kind } in programs {
        let attached = if *kind == ProgramKind::Fentry {
            program::<FEntry>(ebpf, name).and_then(|p| {
                p.load(function, btf).map_err(|e| describe(&e))?;
                p.attach().map(drop).map_err(|e| e.to_string())
            })
        } else {
            program::<FExit>(ebpf, name).and_then(|p| {
                p.load(function, btf).map_err(|e| describe(&e))?;
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
    if result.is_err() {
        for name in done {
            unload(ebpf, name);
        }
    }
    result
}

/// The kprobe and kretprobe `programs` of `function`, all or none, as for trampolines.
fn attach_kprobes(ebpf: &mut Ebpf, function: &str, programs: &[Program]) -> Result<(), String> {
    let mut done: Vec<&str> = Vec::new();
    for Program { name, .. } in programs {
        let attached = program::<KProbe>(ebpf, name).and_then(|p| {
            p.load().map_err(|e| describe(&e))?;
            p.attach(function, 0).map(drop).map_err(|e| e.to_string())
        });
        if let Err(e) = attached {
            for name in done {
                unload(ebpf, name);
            }
            return Err(format!("{name}: {e}"));
        }
        done.push(name);
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use std::{collections::BTreeMap, io::Write as _};

    use aya_obj::{Object, ProgramSection};

    use super::*;

    fn kind(section: &ProgramSection) -> Option<ProgramKind> {
        Some(match section {
            ProgramSection::FEntry { .. } => ProgramKind::Fentry,
            ProgramSection::FExit { .. } => ProgramKind::Fexit,
            ProgramSection::KProbe => ProgramKind::Kprobe,
            ProgramSection::KRetProbe => ProgramKind::Kretprobe,
            ProgramSection::TracePoint => ProgramKind::Tracepoint,
            _ => return None,
        })
    }

    /// The table names each program the way `ebpf/` spells it: every program the table derives
    /// is in the embedded object with that kind, and the object has no program the table
    /// leaves unattached. Parsing needs no privileges.
    #[test]
    fn the_table_names_exactly_the_programs_of_the_object() {
        if PROBES_OBJECT.is_empty() {
            // Straight to stderr: libtest captures `println!` of passing tests.
            let _ = writeln!(
                std::io::stderr(),
                "SKIP: this build carries no probes (AYA_BUILD_SKIP=1 or built without the probes feature)"
            );
            return;
        }
        let object = Object::parse(PROBES_OBJECT).expect("the embedded probe object parses");
        let mut in_object: BTreeMap<&str, Option<ProgramKind>> = object
            .programs
            .iter()
            .map(|(name, p)| (name.as_str(), kind(&p.section)))
            .collect();
        let mut wrong = Vec::new();
        for probe in PROBES {
            for Program { name, kind } in probe.programs() {
                match in_object.remove(name.as_str()) {
                    None => wrong.push(format!(
                        "{name} ({kind} of {}) is missing from the object",
                        probe.name()
                    )),
                    Some(found) if found != Some(kind) => wrong.push(format!(
                        "{name} is a {} in the object, the table says {kind}",
                        found.map_or("other program".into(), |k| k.to_string())
                    )),
                    Some(_) => {}
                }
            }
        }
        wrong.extend(
            in_object
                .keys()
                .map(|name| format!("{name} is in the object but in no row of the table")),
        );
        assert!(
            wrong.is_empty(),
            "probe table and eBPF object disagree:\n  {}",
            wrong.join("\n  ")
        );
    }
}
