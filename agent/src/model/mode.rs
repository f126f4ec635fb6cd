//! How the loaded header is kept current, as every stage names it.
use serde::Serialize;

use crate::model::facts::KdumpFacts;

/// How the loaded header is kept current.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// The kernel rewrites the header on hotplug; the agent verifies and alerts.
    KernelManaged,
    /// The agent reloads the capture kernel when RAM changes.
    AgentManaged,
    /// Report only: the agent has no recipe to reload with.
    Observe,
    /// No kexec in this kernel, or no memory reserved for a crash kernel.
    Unsupported,
}

impl Mode {
    pub const ALL: [Self; 4] = [
        Self::KernelManaged,
        Self::AgentManaged,
        Self::Observe,
        Self::Unsupported,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::KernelManaged => "kernel-managed",
            Self::AgentManaged => "agent-managed",
            Self::Observe => "observe",
            Self::Unsupported => "unsupported",
        }
    }
}

impl Mode {
    /// The mode the kernel's facts and the agent's means to reload call for.
    pub fn of(facts: &KdumpFacts, can_reload: bool) -> Self {
        if !facts.kexec || facts.reserved_bytes == 0 {
            Self::Unsupported
        } else if facts.crash_hotplug == Some(true) {
            Self::KernelManaged
        } else if can_reload {
            Self::AgentManaged
        } else {
            Self::Observe
        }
    }
}
