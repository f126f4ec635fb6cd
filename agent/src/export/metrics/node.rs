//! The node's facts and the headline verdict: ready, loaded, reserved, mode, RAM.
use prometheus::{Gauge, IntGauge, IntGaugeVec, Registry};

use super::{gauge, gauge_vec, reg};
use crate::{model::mode::Mode, state::AgentState};

pub(super) struct NodeMetrics {
    ready: IntGauge,
    crash_kernel_loaded: IntGauge,
    reserved_bytes: IntGauge,
    mode: IntGaugeVec,
    system_ram_bytes: Gauge,
}

impl NodeMetrics {
    pub(super) fn register(r: &Registry) -> Self {
        Self {
            ready: gauge(
                r,
                "kdump_ready",
                "1 when a crash kernel is loaded and its ELF header covers the current RAM.",
            ),
            crash_kernel_loaded: gauge(
                r,
                "kdump_crash_kernel_loaded",
                "1 when a crash kernel is loaded (/sys/kernel/kexec_crash_loaded).",
            ),
            reserved_bytes: gauge(
                r,
                "kdump_crash_kernel_reserved_bytes",
                "Memory reserved for the crash kernel (/sys/kernel/kexec_crash_size), in bytes.",
            ),
            mode: gauge_vec(
                r,
                "kdump_mode",
                "1 for the current mode: kernel-managed, agent-managed, observe or unsupported.",
                &["mode"],
            ),
            system_ram_bytes: reg(
                r,
                Gauge::new(
                    "kdump_system_ram_bytes",
                    "System RAM from /proc/iomem, in bytes; NaN when unreadable.",
                )
                .expect("valid metric"),
            ),
        }
    }

    /// Readiness and mode combine the parts, so this collector reads the whole state.
    pub(super) fn sync(&self, s: &AgentState) {
        let f = &s.node.facts;
        self.ready.set(i64::from(s.readiness().ready));
        self.crash_kernel_loaded.set(i64::from(f.crash_loaded));
        self.reserved_bytes.set(f.reserved_bytes as i64);
        let mode = s.mode();
        for m in Mode::ALL {
            self.mode
                .with_label_values(&[m.as_str()])
                .set(i64::from(m == mode));
        }
        self.system_ram_bytes
            .set(f.system_ram_bytes.map_or(f64::NAN, |b| b as f64));
    }
}
