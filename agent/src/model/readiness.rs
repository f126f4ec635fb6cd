//! Ready or not: the headline verdict, from the node's facts and the header's.
use serde::Serialize;

use crate::model::{facts::KdumpFacts, header::HeaderStatus, units::bytes};

/// Ready or not, and the first reason why not.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Readiness {
    pub ready: bool,
    pub reason: String,
}

/// `no_kexec_reason` says why a kernel without kexec has none (e.g. `CONFIG_KEXEC is not set`).
pub fn readiness(facts: &KdumpFacts, no_kexec_reason: &str, header: &HeaderStatus) -> Readiness {
    let not_ready = |reason: String| Readiness {
        ready: false,
        reason,
    };
    if !facts.kexec {
        return not_ready(format!(
            "this kernel has no kexec support ({no_kexec_reason})"
        ));
    }
    if facts.reserved_bytes == 0 {
        return not_ready(
            "no memory is reserved for a crash kernel (crashkernel= is not on the kernel command line)"
                .into(),
        );
    }
    if !facts.crash_loaded {
        return not_ready("no crash kernel is loaded (kexec_crash_loaded is 0)".into());
    }
    if header.stale {
        let beyond = header
            .beyond_reload
            .as_ref()
            .map_or(String::new(), |b| format!("; {b}"));
        return not_ready(format!(
            "the loaded crash header is stale: {} of RAM missing from the dump, {} listed that is no longer RAM{beyond}",
            bytes(header.missing_bytes),
            bytes(header.excess_bytes)
        ));
    }
    if header.provenance.is_none() || header.unknown.is_some() {
        return not_ready(format!(
            "what the loaded crash header lists is not known: {}",
            header
                .unknown
                .as_deref()
                .unwrap_or("/proc/iomem could not be read")
        ));
    }
    Readiness {
        ready: true,
        reason: String::new(),
    }
}
