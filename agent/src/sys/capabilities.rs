//! What this kernel and this process can do for kdump-agent, each fact with its reason.
//!
//! Detection touches the system (bpf() probes, sysfs, procfs); the result is plain data.
use serde::{Deserialize, Serialize};

use crate::{
    model::kconfig::KernelConfig,
    sys::{procfs::Procfs, sysfs::Sysfs},
};

/// One capability the agent depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Feature {
    /// The `bpf()` syscall works for this process.
    Bpf,
    /// `BPF_MAP_TYPE_RINGBUF` (Linux >= 5.8).
    RingBuf,
    /// Kernel BTF at `/sys/kernel/btf/vmlinux`.
    Btf,
    /// fentry/fexit (`BPF_PROG_TYPE_TRACING`; needs CONFIG_FUNCTION_TRACER and BTF).
    Fentry,
    Kprobes,
    Tracepoints,
    /// kexec with crash support in the kernel (`/sys/kernel/kexec_crash_loaded`).
    Kexec,
}

impl Feature {
    pub const ALL: [Self; 7] = [
        Self::Bpf,
        Self::RingBuf,
        Self::Btf,
        Self::Fentry,
        Self::Kprobes,
        Self::Tracepoints,
        Self::Kexec,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Self::Bpf => "bpf() syscall",
            Self::RingBuf => "BPF ring buffer",
            Self::Btf => "kernel BTF",
            Self::Fentry => "fentry/fexit",
            Self::Kprobes => "kprobes",
            Self::Tracepoints => "tracepoints",
            Self::Kexec => "kexec",
        }
    }
}

/// Whether a feature is there, and in words why (not).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capability {
    pub feature: Feature,
    pub available: bool,
    pub detail: String,
}

/// Linux capability bits (include/uapi/linux/capability.h).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcessCap {
    SysAdmin = 21,
    SysBoot = 22,
    Bpf = 39,
}

impl ProcessCap {
    pub fn name(self) -> &'static str {
        match self {
            Self::SysAdmin => "CAP_SYS_ADMIN",
            Self::SysBoot => "CAP_SYS_BOOT",
            Self::Bpf => "CAP_BPF",
        }
    }

    pub fn held_in(self, effective: u64) -> bool {
        effective & (1 << self as u32) != 0
    }
}

/// The capabilities `kdump-agent run` needs that this process lacks. CAP_SYS_ADMIN is needed in
/// any case (without it /proc/iomem shows every address as 0), and the kernel accepts it for
/// bpf() and perf_event_open() too, so CAP_BPF and CAP_PERFMON alone are never enough.
pub fn missing_process_caps(effective: u64) -> Vec<ProcessCap> {
    [ProcessCap::SysAdmin, ProcessCap::SysBoot]
        .into_iter()
        .filter(|cap| !cap.held_in(effective))
        .collect()
}

/// An error with its sources, `outer: inner: innermost` (aya keeps the errno in the source).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Why a config-gated feature is missing, from the kernel config when we have it.
fn config_reason(config: Option<&KernelConfig>, option: &str, fallback: &str) -> String {
    match config {
        Some(c) if !c.is_enabled(option) => format!("{option} is not set"),
        _ => fallback.to_string(),
    }
}

fn cap(feature: Feature, available: bool, detail: impl Into<String>) -> Capability {
    Capability {
        feature,
        available,
        detail: detail.into(),
    }
}

/// Probes each feature. bpf() checks load a trivial map/program and unload it at once.
pub fn detect(sysfs: &Sysfs, config: Option<&KernelConfig>) -> Vec<Capability> {
    use aya::{
        maps::MapType,
        programs::ProgramType,
        sys::{is_map_supported, is_program_supported},
    };
    let bpf = match is_map_supported(MapType::Array) {
        Ok(true) => cap(Feature::Bpf, true, "array map created"),
        Ok(false) => cap(
            Feature::Bpf,
            false,
            config_reason(config, "CONFIG_BPF_SYSCALL", "BPF_MAP_CREATE refused"),
        ),
        Err(e) => cap(Feature::Bpf, false, bpf_denied(&error_chain(&e))),
    };
    let with_bpf = |feature, yes_what: &str, ok: Result<bool, String>, yes: &str, no: String| match (
        bpf.available,
        ok,
    ) {
        (false, _) => cap(feature, false, "bpf() unavailable"),
        (true, Ok(true)) => cap(feature, true, yes),
        (true, Ok(false)) => cap(feature, false, no),
        (true, Err(e)) => cap(feature, false, format!("{yes_what} refused: {e}")),
    };
    let ringbuf = with_bpf(
        Feature::RingBuf,
        "BPF_MAP_TYPE_RINGBUF",
        is_map_supported(MapType::RingBuf).map_err(|e| error_chain(&e)),
        "ring buffer map created",
        "BPF_MAP_TYPE_RINGBUF unsupported (Linux < 5.8)".into(),
    );
    let btf = if sysfs.has_btf() {
        cap(
            Feature::Btf,
            true,
            sysfs.path("kernel/btf/vmlinux").display().to_string(),
        )
    } else {
        cap(
            Feature::Btf,
            false,
            config_reason(
                config,
                "CONFIG_DEBUG_INFO_BTF",
                "no kernel/btf/vmlinux in sysfs",
            ),
        )
    };
    // A tracing program loads without CONFIG_FUNCTION_TRACER but cannot attach: ask the config first.
    let fentry = if config.is_some_and(|c| !c.is_enabled("CONFIG_FUNCTION_TRACER")) {
        cap(
            Feature::Fentry,
            false,
            "CONFIG_FUNCTION_TRACER is not set (no trampolines to attach to)",
        )
    } else if !btf.available {
        cap(Feature::Fentry, false, "needs kernel BTF")
    } else {
        with_bpf(
            Feature::Fentry,
            "BPF_PROG_TYPE_TRACING",
            is_program_supported(ProgramType::Tracing).map_err(|e| error_chain(&e)),
            "BPF_PROG_TYPE_TRACING loads",
            "BPF_PROG_TYPE_TRACING refused".into(),
        )
    };
    let kprobes = if sysfs.has_kprobe_pmu() {
        with_bpf(
            Feature::Kprobes,
            "BPF_PROG_TYPE_KPROBE",
            is_program_supported(ProgramType::KProbe).map_err(|e| error_chain(&e)),
            "kprobe PMU present",
            "BPF_PROG_TYPE_KPROBE refused".into(),
        )
    } else {
        cap(
            Feature::Kprobes,
            false,
            config_reason(config, "CONFIG_KPROBES", "no kprobe PMU in sysfs"),
        )
    };
    let tracepoints = if sysfs.has_tracepoint_pmu() {
        with_bpf(
            Feature::Tracepoints,
            "BPF_PROG_TYPE_TRACEPOINT",
            is_program_supported(ProgramType::TracePoint).map_err(|e| error_chain(&e)),
            "tracepoint PMU present",
            "BPF_PROG_TYPE_TRACEPOINT refused".into(),
        )
    } else {
        cap(
            Feature::Tracepoints,
            false,
            config_reason(config, "CONFIG_TRACEPOINTS", "no tracepoint PMU in sysfs"),
        )
    };
    let kexec = if sysfs.path("kernel/kexec_crash_loaded").exists() {
        cap(
            Feature::Kexec,
            true,
            sysfs
                .path("kernel/kexec_crash_loaded")
                .display()
                .to_string(),
        )
    } else {
        cap(Feature::Kexec, false, no_kexec_reason(config))
    };
    vec![bpf, ringbuf, btf, fentry, kprobes, tracepoints, kexec]
}

/// The reason `kdump: not ready` gives on a kernel without kexec.
pub fn no_kexec_reason(config: Option<&KernelConfig>) -> String {
    match config {
        Some(c) if c.is_enabled("CONFIG_KEXEC") && !c.is_enabled("CONFIG_CRASH_DUMP") => {
            "CONFIG_CRASH_DUMP is not set".to_string()
        }
        _ => "CONFIG_KEXEC is not set".to_string(),
    }
}

fn bpf_denied(error: &str) -> String {
    match Procfs::effective_capabilities() {
        Ok(eff) if !ProcessCap::Bpf.held_in(eff) && !ProcessCap::SysAdmin.held_in(eff) => {
            format!("{error} (this process lacks CAP_BPF)")
        }
        _ => error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT: u64 = 0x1ff_ffff_ffff;

    #[test]
    fn root_lacks_nothing() {
        assert!(missing_process_caps(ROOT).is_empty());
    }

    #[test]
    fn no_caps_lacks_both() {
        let names: Vec<_> = missing_process_caps(0).iter().map(|c| c.name()).collect();
        assert_eq!(names, ["CAP_SYS_ADMIN", "CAP_SYS_BOOT"]);
    }

    #[test]
    fn sys_admin_and_sys_boot_are_needed_and_bpf_with_perfmon_replace_neither() {
        let names = |effective| -> Vec<_> {
            missing_process_caps(effective)
                .iter()
                .map(|c| c.name())
                .collect()
        };
        assert_eq!(names(1 << 21), ["CAP_SYS_BOOT"]);
        assert_eq!(names((1 << 39) | (1 << 38) | (1 << 22)), ["CAP_SYS_ADMIN"]);
        assert!(names((1 << 21) | (1 << 22)).is_empty());
    }

    #[test]
    fn kexec_reason_names_the_option() {
        let none = KernelConfig::parse("# CONFIG_KEXEC is not set\n", "t");
        assert_eq!(no_kexec_reason(Some(&none)), "CONFIG_KEXEC is not set");
        let no_dump = KernelConfig::parse("CONFIG_KEXEC=y\n", "t");
        assert_eq!(
            no_kexec_reason(Some(&no_dump)),
            "CONFIG_CRASH_DUMP is not set"
        );
        assert_eq!(no_kexec_reason(None), "CONFIG_KEXEC is not set");
    }
}
