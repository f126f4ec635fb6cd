//! How the agent observes: its event source, each probe, its build.
use prometheus::{GaugeVec, IntGaugeVec, Opts, Registry};

use super::{gauge_vec, reg};
use crate::{model::events::EventSource, observe::ObserveState};

pub(super) struct ObserveMetrics {
    event_source: IntGaugeVec,
    probe_attached: IntGaugeVec,
    build_info: GaugeVec,
}

impl ObserveMetrics {
    pub(super) fn register(r: &Registry) -> Self {
        Self {
            event_source: gauge_vec(
                r,
                "kdump_agent_event_source",
                "1 for the event source in use: ebpf, uevent or poll.",
                &["source"],
            ),
            probe_attached: gauge_vec(
                r,
                "kdump_agent_probe_attached",
                "1 when the probe is attached; how is fentry, kprobe, tracepoint or none.",
                &["probe", "how"],
            ),
            build_info: reg(
                r,
                GaugeVec::new(
                    Opts::new(
                        "kdump_agent_build_info",
                        "Always 1; labels give the agent version and the running kernel.",
                    ),
                    &["version", "kernel"],
                )
                .expect("valid metric"),
            ),
        }
    }

    pub(super) fn sync(&self, o: &ObserveState, kernel_release: &str) {
        for source in EventSource::ALL {
            self.event_source
                .with_label_values(&[source.as_str()])
                .set(i64::from(source == o.event_source));
        }
        self.build_info.reset();
        self.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), kernel_release])
            .set(1.0);
        self.probe_attached.reset();
        for p in &o.probes {
            self.probe_attached
                .with_label_values(&[p.probe.as_str(), p.how.as_str()])
                .set(i64::from(p.how.is_attached()));
        }
    }
}
