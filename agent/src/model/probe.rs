//! How each probe is attached, as the observe stage reports it.
use serde::{Deserialize, Serialize};

/// How one probe is attached, or why it is not.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeReport {
    /// The kernel function or tracepoint.
    pub probe: String,
    /// `fentry`, `kprobe`, `tracepoint`, or `none`.
    pub how: String,
    /// Why it is not attached (empty when it is).
    pub reason: String,
}
