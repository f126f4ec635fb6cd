//! `kdump-agent status`: the kdumpctl-style summary of an [`AgentState`], as text or JSON.
use serde::{Deserialize, Serialize};

use crate::{
    model::{
        header::{HeaderStatus, Provenance},
        probe::ProbeReport,
        units::{bytes, utc},
    },
    reload::ReloadStatus,
    state::AgentState,
    sys::capabilities::Capability,
};

/// Exit code of `status`/`check` when kdump is not ready (kdumpctl's convention).
pub const EXIT_NOT_READY: i32 = 3;

/// The status as `--json` prints it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StatusReport {
    /// `daemon` (the running agent answered) or `one-shot` (computed without one, as `check`).
    #[serde(default)]
    pub answered_by: String,
    pub ready: bool,
    pub reason: String,
    pub mode: String,
    pub kernel: String,
    pub crash_kernel_loaded: bool,
    pub reserved_bytes: u64,
    pub crash_hotplug: Option<bool>,
    pub system_ram_bytes: Option<u64>,
    pub header: HeaderStatus,
    pub reload: ReloadStatus,
    pub event_source: String,
    pub capabilities: Vec<Capability>,
    pub probes: Vec<ProbeReport>,
}

impl StatusReport {
    pub fn from_state(s: &AgentState) -> Self {
        let r = s.readiness();
        Self {
            answered_by: "daemon".into(),
            ready: r.ready,
            reason: r.reason,
            mode: s.mode().as_str().to_string(),
            kernel: s.node.kernel_release.clone(),
            crash_kernel_loaded: s.node.facts.crash_loaded,
            reserved_bytes: s.node.facts.reserved_bytes,
            crash_hotplug: s.node.facts.crash_hotplug,
            system_ram_bytes: s.node.facts.system_ram_bytes,
            header: s.header.status().clone(),
            reload: s.reload.status.clone(),
            event_source: s.observe.event_source.as_str().to_string(),
            capabilities: s.node.capabilities.clone(),
            probes: s.observe.probes.clone(),
        }
    }

    pub fn exit_code(&self) -> i32 {
        if self.ready { 0 } else { EXIT_NOT_READY }
    }

    /// The human summary: the verdict, then one aligned line per fact.
    pub fn to_text(&self, source_note: &str) -> String {
        let mut out = if self.ready {
            "kdump: ready\n".to_string()
        } else {
            format!("kdump: not ready: {}\n", self.reason)
        };
        let mut line = |key: &str, value: String| out.push_str(&format!("  {key:<16} {value}\n"));
        line("kernel", self.kernel.clone());
        line(
            "crash kernel",
            match (
                self.capabilities
                    .iter()
                    .find(|c| c.feature == crate::sys::capabilities::Feature::Kexec),
                self.crash_kernel_loaded,
            ) {
                (Some(c), _) if !c.available => format!("not loaded (no kexec: {})", c.detail),
                (_, true) => "loaded".into(),
                (_, false) => "not loaded".into(),
            },
        );
        line(
            "reservation",
            if self.reserved_bytes == 0 {
                "none".into()
            } else {
                format!(
                    "{} ({} bytes)",
                    bytes(self.reserved_bytes),
                    self.reserved_bytes
                )
            },
        );
        line(
            "system RAM",
            self.system_ram_bytes
                .map_or("unknown".into(), |b| format!("{} ({b} bytes)", bytes(b))),
        );
        line(
            "mode",
            format!(
                "{}{}",
                self.mode,
                match self.crash_hotplug {
                    Some(true) => " (kernel updates the header on hotplug)",
                    Some(false) =>
                        " (crash_hotplug is 0: the kernel will not update this image's header)",
                    None => "",
                }
            ),
        );
        line(
            "header",
            header_text(&self.header, self.crash_kernel_loaded),
        );
        line(
            "reload",
            match &self.reload.recipe {
                Some(recipe) => format!("{}, recipe from {recipe}", self.reload.strategy),
                None => self.reload.strategy.clone(),
            },
        );
        if let Some(last) = &self.reload.last {
            line("last reload", last.clone());
        }
        if let Some(why) = &self.reload.recipe_refused {
            line("no recipe", why.clone());
        }
        if let Some(why) = &self.reload.adoption_refused {
            line("not adopted", why.clone());
        }
        for warning in &self.reload.warnings {
            line("warning", warning.clone());
        }
        if let Some(alert) = &self.reload.alert {
            line("alert", alert.clone());
        }
        line(
            "event source",
            format!("{}{source_note}", self.event_source),
        );
        let width = self.probes.iter().map(|p| p.probe.len()).max().unwrap_or(0);
        for p in &self.probes {
            let how = if !p.how.is_attached() {
                format!("not attached: {}", p.reason)
            } else {
                format!("attached ({})", p.how)
            };
            line("probe", format!("{:<width$} {how}", p.probe));
        }
        for c in self.capabilities.iter().filter(|c| !c.available) {
            line("missing", format!("{}: {}", c.feature.label(), c.detail));
        }
        out
    }
}

fn header_text(h: &HeaderStatus, loaded: bool) -> String {
    if !loaded {
        return "none loaded".into();
    }
    let how = match (h.provenance, &h.captured, &h.unknown) {
        (Some(Provenance::Captured), Some(from), _) => format!("verified (captured from {from})"),
        (Some(Provenance::ReadBack), Some(from), _) => format!("verified (read back from {from})"),
        (_, _, Some(why)) => format!("unverified (inferred from the RAM: {why})"),
        (Some(_), _, None) => {
            "vouched for (built by the kernel at this agent's own load, from the RAM of then)"
                .into()
        }
        (None, _, None) => "unknown (/proc/iomem could not be read)".into(),
    };
    let verdict = if h.stale {
        let cpus = match h.missing_cpu_notes.as_slice() {
            [] => String::new(),
            list => format!(
                ", no CPU note for online CPU {}",
                list.iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        let beyond = h
            .beyond_reload
            .as_ref()
            .map_or(String::new(), |b| format!("; {b}"));
        format!(
            "stale, {how}: {} missing, {} excess{cpus}{beyond}",
            bytes(h.missing_bytes),
            bytes(h.excess_bytes)
        )
    } else {
        format!("current, {how}")
    };
    match h.kernel_skipped_since {
        Some(t) => format!(
            "{verdict}; the kernel skipped its in-kernel update since {} (kexec lock busy)",
            utc(t)
        ),
        None => verdict,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        model::{facts::KdumpFacts, probe::Attach},
        sys::capabilities::Feature,
    };

    fn no_kexec() -> AgentState {
        let caps = vec![
            Capability {
                feature: Feature::Bpf,
                available: true,
                detail: "array map created".into(),
            },
            Capability {
                feature: Feature::Kprobes,
                available: false,
                detail: "CONFIG_KPROBES is not set".into(),
            },
            Capability {
                feature: Feature::Kexec,
                available: false,
                detail: "CONFIG_KEXEC is not set".into(),
            },
        ];
        AgentState::new(crate::sys::node::NodeState::new(
            "6.18.44".into(),
            caps,
            "CONFIG_KEXEC is not set".into(),
        ))
    }

    #[test]
    fn no_kexec_reads_like_kdumpctl() {
        let report = StatusReport::from_state(&no_kexec());
        let text = report.to_text("");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "kdump: not ready: this kernel has no kexec support (CONFIG_KEXEC is not set)"
        );
        assert!(
            text.contains("  crash kernel     not loaded (no kexec: CONFIG_KEXEC is not set)\n"),
            "{text}"
        );
        assert!(text.contains("  mode             unsupported\n"), "{text}");
        assert!(
            text.contains("  missing          kprobes: CONFIG_KPROBES is not set\n"),
            "{text}"
        );
        assert!(
            !text.contains("bpf() syscall"),
            "available capabilities are not listed as missing"
        );
        assert_eq!(report.exit_code(), EXIT_NOT_READY);
    }

    #[test]
    fn header_line_says_what_was_captured() {
        let mut h = HeaderStatus {
            provenance: Some(Provenance::Captured),
            verified: true,
            stale: true,
            missing_bytes: 512 << 20,
            captured: Some("kexec_load by kexec (pid 9)".into()),
            ..Default::default()
        };
        assert_eq!(
            header_text(&h, true),
            "stale, verified (captured from kexec_load by kexec (pid 9)): 512.0 MiB missing, 0 B excess"
        );
        h.provenance = Some(Provenance::ReadBack);
        h.captured = Some("the crash reservation at 0x2e000000, read in 300 ms".into());
        h.stale = false;
        assert_eq!(
            header_text(&h, true),
            "current, verified (read back from the crash reservation at 0x2e000000, read in 300 ms)"
        );
        h.provenance = Some(Provenance::Inferred);
        h.verified = false;
        h.captured = None;
        h.unknown = Some("not captured by a probe, and not read back: EPERM".into());
        assert_eq!(
            header_text(&h, true),
            "current, unverified (inferred from the RAM: not captured by a probe, and not read back: EPERM)"
        );
        h.unknown = None;
        assert!(header_text(&h, true).starts_with("current, vouched for (built by the kernel"));
        h.kernel_skipped_since = Some(0);
        assert!(
            header_text(&h, true).ends_with(
                "; the kernel skipped its in-kernel update since 1970-01-01 00:00:00 UTC (kexec lock busy)"
            ),
            "{}",
            header_text(&h, true)
        );
        assert_eq!(header_text(&h, false), "none loaded");
    }

    #[test]
    fn probe_names_are_aligned_whatever_their_length() {
        let mut s = no_kexec();
        s.observe.probes = vec![
            ProbeReport {
                probe: "online_pages".into(),
                how: Attach::Fentry,
                reason: String::new(),
            },
            ProbeReport {
                probe: "syscalls/sys_enter_kexec_file_load".into(),
                how: Attach::Tracepoint,
                reason: String::new(),
            },
        ];
        let text = StatusReport::from_state(&s).to_text("");
        let cols: Vec<usize> = text
            .lines()
            .filter(|l| l.contains("attached ("))
            .map(|l| l.find("attached (").unwrap())
            .collect();
        assert_eq!(cols.len(), 2);
        assert_eq!(cols[0], cols[1], "{text}");
    }

    #[test]
    fn json_has_the_documented_fields() {
        let mut s = no_kexec();
        s.node.facts = KdumpFacts {
            kexec: true,
            crash_loaded: true,
            reserved_bytes: 256 << 20,
            ..Default::default()
        };
        s.header = crate::reconcile::header::HeaderKnowledge::with_status(HeaderStatus {
            provenance: Some(crate::model::header::Provenance::ReadBack),
            verified: true,
            ..Default::default()
        });
        let v: serde_json::Value = serde_json::to_value(StatusReport::from_state(&s)).unwrap();
        assert_eq!(v["ready"], true);
        assert_eq!(v["reason"], "");
        assert_eq!(v["mode"], "observe");
        assert_eq!(v["crash_kernel_loaded"], true);
        assert_eq!(v["reserved_bytes"], 268435456);
        assert_eq!(v["event_source"], "poll");
        assert_eq!(v["reload"]["strategy"], "off");
        assert_eq!(v["capabilities"][1]["feature"], "kprobes");
        assert_eq!(v["capabilities"][1]["available"], false);
        assert_eq!(StatusReport::from_state(&s).exit_code(), 0);
    }
}
