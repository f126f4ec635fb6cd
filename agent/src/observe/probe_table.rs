//! The probe table: every kernel function and tracepoint the agent watches, the eBPF programs
//! that attach to it, which kernels have it, and what the agent loses without it. Pure data,
//! compiled with or without the `probes` feature (the lab reads it too).
//!
//! Program names follow one rule, [`Probe::programs`]: `<stem>_<kind>` for a kernel function
//! (`stem` is the function's name, a leading `__` spelled `dunder_`; `kind` is `fentry`,
//! `fexit`, `kprobe` or `kretprobe`), the tracepoint's own name for a syscall tracepoint. aya's
//! program macros take the name from the Rust function they annotate, so the names in `ebpf/`
//! cannot be shared constants; the test in `observe::probes` parses the embedded object and
//! fails on any name this rule gives that the object lacks (and on any program the table
//! does not name).
use std::fmt;

/// What a probe is attached to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// A kernel function: trampolines (fentry/fexit) where the kernel allows, else kprobes.
    Function { name: &'static str, shape: Shape },
    /// `syscalls/<name>`.
    SyscallTracepoint(&'static str),
}

/// Which programs watch a kernel function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// Entry (arguments) and exit (result): fentry + fexit, or kprobe + kretprobe.
    Call,
    /// The entry alone is the fact: fentry, or kprobe.
    Entry,
    /// The arguments are needed at exit: fexit alone sees both; the kprobe keeps them for the
    /// kretprobe.
    ExitWithArguments,
}

/// One eBPF program's kind, as aya loads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgramKind {
    Fentry,
    Fexit,
    Kprobe,
    Kretprobe,
    Tracepoint,
}

impl ProgramKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            ProgramKind::Fentry => "fentry",
            ProgramKind::Fexit => "fexit",
            ProgramKind::Kprobe => "kprobe",
            ProgramKind::Kretprobe => "kretprobe",
            ProgramKind::Tracepoint => "tracepoint",
        }
    }

    /// fentry/fexit: attached through BTF trampolines.
    pub const fn is_trampoline(self) -> bool {
        matches!(self, ProgramKind::Fentry | ProgramKind::Fexit)
    }
}

impl fmt::Display for ProgramKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Shape {
    /// Trampolines first (the preferred way), entry before exit.
    const fn kinds(self) -> &'static [ProgramKind] {
        use ProgramKind::*;
        match self {
            Shape::Call => &[Fentry, Fexit, Kprobe, Kretprobe],
            Shape::Entry => &[Fentry, Kprobe],
            Shape::ExitWithArguments => &[Fexit, Kprobe, Kretprobe],
        }
    }
}

/// A program of the embedded object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Program {
    pub name: String,
    pub kind: ProgramKind,
}

/// Which kernels have a probe's function or tracepoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kernels {
    /// `CONFIG_*` options it needs (all of them).
    pub config: &'static [&'static str],
    /// The first release that has it, when not every supported kernel (5.8+) does.
    pub since: Option<(u32, u32)>,
    /// The architectures that have it (`uname -m`), when not every one does.
    pub arches: Option<&'static [&'static str]>,
}

impl Kernels {
    /// Whether kernel `release` (`uname -r`) on `arch`, with `config` saying which options it
    /// was built with (`=y` or `=m`), has it.
    pub fn has(&self, release: &str, arch: &str, config: impl Fn(&str) -> bool) -> bool {
        self.since
            .is_none_or(|since| version(release).is_some_and(|v| v >= since))
            && self.arches.is_none_or(|a| a.contains(&arch))
            && self.config.iter().all(|c| config(c))
    }
}

/// `(major, minor)` of a `uname -r` such as `6.12.117+deb13-amd64`.
pub fn version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// One row of the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Probe {
    pub target: Target,
    pub kernels: Kernels,
    /// Absent, by design, from some kernels the agent supports (those [`Probe::kernels`]
    /// excludes), so its absence there is no fault. The others are in every kernel with kexec,
    /// crash dumps and memory hotplug.
    pub optional: bool,
    /// What the agent loses when it is not attached.
    pub without: &'static str,
}

impl Probe {
    /// The name the agent reports it under: the function, or `syscalls/<tracepoint>`.
    pub fn name(&self) -> String {
        match self.target {
            Target::Function { name, .. } => name.to_string(),
            Target::SyscallTracepoint(name) => format!("syscalls/{name}"),
        }
    }

    /// Its programs, by the naming rule of this module, trampolines first.
    pub fn programs(&self) -> Vec<Program> {
        match self.target {
            Target::Function { name, shape } => {
                let stem = name
                    .strip_prefix("__")
                    .map_or_else(|| name.to_string(), |rest| format!("dunder_{rest}"));
                shape
                    .kinds()
                    .iter()
                    .map(|&kind| Program {
                        name: format!("{stem}_{kind}"),
                        kind,
                    })
                    .collect()
            }
            Target::SyscallTracepoint(name) => vec![Program {
                name: name.to_string(),
                kind: ProgramKind::Tracepoint,
            }],
        }
    }
}

/// The table row reported as `name`.
pub fn find(name: &str) -> Option<&'static Probe> {
    PROBES.iter().find(|p| p.name() == name)
}

const UNPROTECT: &str = "arch_kexec_unprotect_crashkres";
const PROTECT: &str = "arch_kexec_protect_crashkres";

/// The two probes that time the window without a crash image; without both, the agent falls
/// back to the duration of its own load syscalls (an upper bound).
pub const WINDOW_PROBES: [&str; 2] = [UNPROTECT, PROTECT];

const fn function(
    name: &'static str,
    shape: Shape,
    config: &'static [&'static str],
    without: &'static str,
) -> Probe {
    Probe {
        target: Target::Function { name, shape },
        kernels: Kernels {
            config,
            since: None,
            arches: None,
        },
        optional: false,
        without,
    }
}

const fn syscall(
    name: &'static str,
    config: &'static [&'static str],
    without: &'static str,
) -> Probe {
    Probe {
        target: Target::SyscallTracepoint(name),
        kernels: Kernels {
            config,
            since: None,
            arches: None,
        },
        optional: false,
        without,
    }
}

/// `probe`, absent by design from some supported kernels: those its `kernels` exclude.
const fn optional(probe: Probe) -> Probe {
    Probe {
        optional: true,
        ..probe
    }
}

/// A syscall's tracepoints need the syscall and syscall tracing.
const KEXEC_LOAD: &[&str] = &["CONFIG_KEXEC", "CONFIG_FTRACE_SYSCALLS"];
const KEXEC_FILE_LOAD: &[&str] = &["CONFIG_KEXEC_FILE", "CONFIG_FTRACE_SYSCALLS"];

const ONLINE_GONE: &str = "blocks going online or offline are seen only through `memory` \
                           uevents and rescans, without the range the probe reads";
const REMOVE_GONE: &str = "removed memory is seen only through uevents and rescans of /proc/iomem";

/// A handler of the kernel's in-place header rewrites (>= 6.6, `CONFIG_CRASH_HOTPLUG`).
const fn crash_hotplug(name: &'static str, without: &'static str) -> Probe {
    Probe {
        target: Target::Function {
            name,
            shape: Shape::Call,
        },
        kernels: Kernels {
            config: &["CONFIG_CRASH_HOTPLUG"],
            since: Some((6, 6)),
            arches: None,
        },
        optional: true,
        without,
    }
}

/// Every probe, in the order they are attached and reported. Checked against the lab's
/// kernels' kallsyms and BTF (6.1, 6.12, 7.2): each function has the same name and prototype in
/// all three (the rewrite only from 6.6); none is gone or renamed up to 7.2.
pub static PROBES: &[Probe] = &[
    function(
        "online_pages",
        Shape::Call,
        &["CONFIG_MEMORY_HOTPLUG"],
        ONLINE_GONE,
    ),
    function(
        "offline_pages",
        Shape::Call,
        &["CONFIG_MEMORY_HOTREMOVE"],
        ONLINE_GONE,
    ),
    // Under add_memory (ACPI DIMMs) and add_memory_driver_managed (virtio-mem, one call per
    // block: agent-virtio-mem-6.1 counts them). Subblocks virtio-mem plugs or unplugs inside a
    // block it already added pass no probe, and change neither /proc/iomem nor any header.
    function(
        "add_memory_resource",
        Shape::Call,
        &["CONFIG_MEMORY_HOTPLUG"],
        "memory added to the resource tree (before it is onlined) is seen only by rescans",
    ),
    // The three ways memory leaves: remove_memory (drivers), __remove_memory (ACPI),
    // offline_and_remove_memory (virtio-mem, 5.8+).
    function(
        "remove_memory",
        Shape::Call,
        &["CONFIG_MEMORY_HOTREMOVE"],
        REMOVE_GONE,
    ),
    function(
        "__remove_memory",
        Shape::Call,
        &["CONFIG_MEMORY_HOTREMOVE"],
        REMOVE_GONE,
    ),
    function(
        "offline_and_remove_memory",
        Shape::Call,
        &["CONFIG_MEMORY_HOTREMOVE"],
        REMOVE_GONE,
    ),
    // Runs for every kexec_file_load of a crash kernel and, from 6.6, every in-kernel rewrite.
    // kernel/kexec_file.c (CONFIG_KEXEC_FILE) before 6.6, kernel/crash_core.c since (7.2
    // included, same prototype): the two options are what both need.
    // Debian's arm64 kernels have no CONFIG_KEXEC_FILE: only kexec_load, whose header the
    // syscall tracepoint captures.
    optional(function(
        "crash_prepare_elf64_headers",
        Shape::ExitWithArguments,
        &["CONFIG_KEXEC_FILE", "CONFIG_CRASH_DUMP"],
        "the header the kernel builds for kexec_file_load and rewrites on hotplug is not \
         captured: the loaded header is inferred, not verified",
    )),
    // Older kernels never rewrite the header: nothing to watch there.
    crash_hotplug(
        "arch_crash_handle_hotplug_event",
        "in-kernel header rewrites are not seen as they happen nor their header \
         captured: the agent goes by `crash_hotplug` in sysfs",
    ),
    // Static in kernel/crash_core.c; its call of the arch handler is how a skip is seen.
    crash_hotplug(
        "crash_handle_hotplug_event",
        "an in-kernel update the kernel skips (kexec lock busy) is seen only as a stale \
         header once it is read back, and not named",
    ),
    // x86-64 and s390 implement them; of the lab's arm64 kernels 6.1 has them (its crash
    // reservation reads back empty), 6.12 not (read back there).
    Probe {
        target: Target::Function {
            name: UNPROTECT,
            shape: Shape::Entry,
        },
        kernels: Kernels {
            config: &["CONFIG_KEXEC_CORE"],
            since: None,
            arches: Some(&["x86_64", "s390x"]),
        },
        optional: true,
        without: "windows without a crash image are timed only for the agent's own loads, \
                  by their syscalls (an upper bound)",
    },
    Probe {
        target: Target::Function {
            name: PROTECT,
            shape: Shape::Entry,
        },
        kernels: Kernels {
            config: &["CONFIG_KEXEC_CORE"],
            since: None,
            arches: Some(&["x86_64", "s390x"]),
        },
        optional: true,
        without: "windows without a crash image are timed only for the agent's own loads, \
                  by their syscalls (an upper bound)",
    },
    syscall(
        "sys_enter_kexec_load",
        KEXEC_LOAD,
        "other loaders' kexec_load (kexec -c) is seen only by rescans, its header not captured",
    ),
    syscall(
        "sys_exit_kexec_load",
        KEXEC_LOAD,
        "kexec_load calls are never completed: they are seen only by rescans",
    ),
    optional(syscall(
        "sys_enter_kexec_file_load",
        KEXEC_FILE_LOAD,
        "other loaders' kexec_file_load is seen only by rescans, and their recipe cannot be \
         adopted",
    )),
    optional(syscall(
        "sys_exit_kexec_file_load",
        KEXEC_FILE_LOAD,
        "kexec_file_load calls are never completed: they are seen only by rescans",
    )),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_rule() {
        let names = |p: &str| -> Vec<String> {
            find(p)
                .unwrap_or_else(|| panic!("{p} not in the table"))
                .programs()
                .into_iter()
                .map(|p| p.name)
                .collect()
        };
        assert_eq!(
            names("__remove_memory"),
            [
                "dunder_remove_memory_fentry",
                "dunder_remove_memory_fexit",
                "dunder_remove_memory_kprobe",
                "dunder_remove_memory_kretprobe"
            ]
        );
        assert_eq!(
            names("crash_prepare_elf64_headers"),
            [
                "crash_prepare_elf64_headers_fexit",
                "crash_prepare_elf64_headers_kprobe",
                "crash_prepare_elf64_headers_kretprobe"
            ]
        );
        assert_eq!(
            names(PROTECT),
            [
                "arch_kexec_protect_crashkres_fentry",
                "arch_kexec_protect_crashkres_kprobe"
            ]
        );
        assert_eq!(
            names("syscalls/sys_exit_kexec_load"),
            ["sys_exit_kexec_load"]
        );
    }

    #[test]
    fn names_are_unique_and_the_window_probes_are_rows() {
        let mut all: Vec<String> = PROBES
            .iter()
            .flat_map(Probe::programs)
            .map(|p| p.name)
            .collect();
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), n);
        for w in WINDOW_PROBES {
            assert!(find(w).is_some(), "{w}");
        }
    }

    /// The lab's kernels: Debian 12's 6.1 lacks the in-kernel update, Debian 13's 6.12 and
    /// Debian unstable's 7.2 have it.
    #[test]
    fn the_hotplug_update_needs_6_6_and_crash_hotplug() {
        let update = find("arch_crash_handle_hotplug_event").unwrap().kernels;
        assert!(update.has("6.12.117+deb13-amd64", "x86_64", |_| true));
        assert!(update.has("7.2.13+deb14-amd64", "x86_64", |_| true));
        assert_eq!(version("7.2.13+deb14-amd64"), Some((7, 2)));
        assert!(!update.has("6.1.0-47-amd64", "x86_64", |_| true));
        assert!(!update.has("6.12.117+deb13-amd64", "x86_64", |c| c
            != "CONFIG_CRASH_HOTPLUG"));
        // Debian's arm64 kernels: no CONFIG_KEXEC_FILE, so no kexec_file_load probe is due.
        let no_file_load = |c: &str| c != "CONFIG_KEXEC_FILE";
        for p in PROBES
            .iter()
            .filter(|p| p.kernels.config.contains(&"CONFIG_KEXEC_FILE"))
        {
            assert!(p.optional, "{}", p.name());
            assert!(
                !p.kernels
                    .has("6.12.117+deb13-arm64", "aarch64", no_file_load)
            );
        }
        let window = find(PROTECT).unwrap().kernels;
        assert!(window.has("6.1.0-47-amd64", "x86_64", |_| true));
        assert!(!window.has("6.1.0-47-arm64", "aarch64", |_| true));
        assert_eq!(version("6.1.0-47-amd64"), Some((6, 1)));
        assert_eq!(version("junk"), None);
    }
}
