//! How each probe is attached, as the observe stage reports it.
use std::fmt;

use serde::{Deserialize, Serialize};

/// How one probe is attached. The strings (`as_str`, serde) are the `how` label of
/// `kdump_agent_probe_attached` and what `status` prints: dashboards and alerts key on them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Attach {
    /// fentry/fexit trampolines (needs BTF and `CONFIG_FUNCTION_TRACER`).
    Fentry,
    /// kprobe/kretprobe, the fallback when trampolines are refused.
    Kprobe,
    /// A static tracepoint (the kexec syscalls).
    Tracepoint,
    /// Not attached; [`ProbeReport::reason`] says why.
    #[serde(rename = "none")]
    NotAttached,
}

impl Attach {
    pub const fn as_str(self) -> &'static str {
        match self {
            Attach::Fentry => "fentry",
            Attach::Kprobe => "kprobe",
            Attach::Tracepoint => "tracepoint",
            Attach::NotAttached => "none",
        }
    }

    pub const fn is_attached(self) -> bool {
        !matches!(self, Attach::NotAttached)
    }
}

impl fmt::Display for Attach {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How one probe is attached, or why it is not.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeReport {
    /// The kernel function, or `syscalls/<tracepoint>`.
    pub probe: String,
    pub how: Attach,
    /// Why it is not attached, or why it fell back to kprobes (empty when neither).
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The label values and JSON strings of before the enum.
    #[test]
    fn attach_keeps_its_strings() {
        for (how, s) in [
            (Attach::Fentry, "fentry"),
            (Attach::Kprobe, "kprobe"),
            (Attach::Tracepoint, "tracepoint"),
            (Attach::NotAttached, "none"),
        ] {
            assert_eq!(how.to_string(), s);
            assert_eq!(serde_json::to_string(&how).unwrap(), format!("\"{s}\""));
            assert_eq!(
                serde_json::from_str::<Attach>(&format!("\"{s}\"")).unwrap(),
                how
            );
        }
    }
}
