//! The verdict on the loaded header.
use prometheus::{IntCounter, IntGauge, IntGaugeVec, Registry};

use super::{gauge, gauge_vec, raise, reg};
use crate::{
    model::header::{Provenance, StaleReason},
    reconcile::header::HeaderKnowledge,
};

pub(super) struct HeaderMetrics {
    stale: IntGauge,
    verified: IntGauge,
    missing_bytes: IntGauge,
    excess_bytes: IntGauge,
    stale_since: IntGauge,
    provenance: IntGaugeVec,
    kernel_skipped_since: IntGauge,
    kernel_skipped_updates: IntCounter,
    stale_reason: IntGaugeVec,
    missing_cpu_notes: IntGauge,
    missing_beyond_reload_bytes: IntGauge,
}

impl HeaderMetrics {
    pub(super) fn register(r: &Registry) -> Self {
        Self {
            stale: gauge(
                r,
                "kdump_header_stale",
                "1 when the loaded crash ELF header differs from the current System RAM.",
            ),
            verified: gauge(
                r,
                "kdump_header_verified",
                "1 when the loaded header's content was captured, 0 when it is inferred.",
            ),
            missing_bytes: gauge(
                r,
                "kdump_header_missing_bytes",
                "System RAM not covered by the loaded header (lost from a dump), in bytes.",
            ),
            excess_bytes: gauge(
                r,
                "kdump_header_excess_bytes",
                "Header ranges that are no longer System RAM (can hang a dump), in bytes.",
            ),
            stale_since: gauge(
                r,
                "kdump_header_stale_since_timestamp_seconds",
                "When the header became stale (Unix time, seconds); 0 when fresh.",
            ),
            provenance: gauge_vec(
                r,
                "kdump_header_provenance",
                "1 for how the loaded header is known: captured (a probe saw it), read_back (from the crash reservation) or inferred (assumed from the RAM); all 0 when nothing is loaded.",
                &["provenance"],
            ),
            kernel_skipped_since: gauge(
                r,
                "kdump_kernel_header_behind_since_timestamp_seconds",
                "When the kernel first skipped an in-kernel update of the loaded header since it was last loaded or rewritten (kexec lock busy; Unix time, seconds); 0 when none.",
            ),
            kernel_skipped_updates: reg(
                r,
                IntCounter::new(
                    "kdump_kernel_header_skipped_updates_total",
                    "Hotplug events whose in-kernel header update the kernel skipped (kexec lock busy) while a header it keeps current was loaded.",
                )
                .expect("valid metric"),
            ),
            stale_reason: gauge_vec(
                r,
                "kdump_header_stale_reason",
                "1 for each reason the loaded header is stale: ram_missing, ram_excess, cpu_note_missing (an online CPU has no PT_NOTE: its registers are lost from a dump).",
                &["reason"],
            ),
            missing_cpu_notes: gauge(
                r,
                "kdump_header_missing_cpu_notes",
                "Online CPUs whose crash_notes buffer the loaded header does not list.",
            ),
            missing_beyond_reload_bytes: gauge(
                r,
                "kdump_header_missing_beyond_reload_bytes",
                "Of the missing bytes, those no reload through the node's loader can bring back: it never lists them (arm64 loaders and System RAM (virtio_mem)), in bytes.",
            ),
        }
    }

    pub(super) fn sync(&self, k: &HeaderKnowledge) {
        let h = k.status();
        self.stale.set(i64::from(h.stale));
        self.verified.set(i64::from(h.verified));
        self.missing_bytes.set(h.missing_bytes as i64);
        self.excess_bytes.set(h.excess_bytes as i64);
        self.stale_since.set(h.stale_since.unwrap_or(0) as i64);
        for p in Provenance::ALL {
            self.provenance
                .with_label_values(&[p.label()])
                .set(i64::from(h.provenance == Some(p)));
        }
        self.kernel_skipped_since
            .set(h.kernel_skipped_since.unwrap_or(0) as i64);
        raise(&self.kernel_skipped_updates, k.skipped_updates());
        for r in StaleReason::ALL {
            self.stale_reason
                .with_label_values(&[r.label()])
                .set(i64::from(h.stale_because(r)));
        }
        self.missing_cpu_notes.set(h.missing_cpu_notes.len() as i64);
        self.missing_beyond_reload_bytes
            .set(h.beyond_reload.as_ref().map_or(0, |b| b.bytes) as i64);
    }
}
