//! The agent's reloads and the windows without a crash kernel.
use prometheus::{Histogram, IntCounterVec, IntGaugeVec, Registry};

use super::{counter_vec, gauge_vec, raise, seconds_histogram};
use crate::{
    observe::{ObserveState, counters::EventCounters},
    reload::{RELOAD_RESULTS, ReloadState},
};

pub(super) struct ReloadMetrics {
    reloads: IntCounterVec,
    duration: Histogram,
    unprotected_window: Histogram,
    distro_rules: IntGaugeVec,
    /// Observations already exported: reload durations, windows.
    seen: (u64, u64),
}

impl ReloadMetrics {
    pub(super) fn register(r: &Registry) -> Self {
        Self {
            reloads: counter_vec(
                r,
                "kdump_reloads_total",
                "Crash kernel reloads done by the agent, by result.",
                &["result"],
            ),
            duration: seconds_histogram(
                r,
                "kdump_reload_duration_seconds",
                "Agent reloads, from decision to loaded, in seconds.",
            ),
            unprotected_window: seconds_histogram(
                r,
                "kdump_unprotected_window_seconds",
                "Time with no crash kernel loaded during a reload by any loader, in seconds (probes: from the kernel releasing the old image to the new one in place; without them, the agent's own load syscalls, an upper bound).",
            ),
            distro_rules: gauge_vec(
                r,
                "kdump_agent_distro_reload_rule",
                "1 for each of the host's udev rules that reloads the crash kernel on memory events; with the agent reloading too, the node reloads twice per event.",
                &["rule"],
            ),
            seen: (0, 0),
        }
    }

    /// The windows come from the probes when they time them, else from the agent's own loads.
    pub(super) fn sync(&mut self, r: &ReloadState, observe: &ObserveState, c: &EventCounters) {
        for result in RELOAD_RESULTS {
            raise(
                &self.reloads.with_label_values(&[result]),
                r.results.get(result).copied().unwrap_or(0),
            );
        }
        let windows = if observe.windows_from_probes {
            &c.unprotected_windows
        } else {
            &r.own_windows
        };
        r.durations
            .since(self.seen.0)
            .for_each(|v| self.duration.observe(v));
        windows
            .since(self.seen.1)
            .for_each(|v| self.unprotected_window.observe(v));
        self.seen = (r.durations.total, windows.total);
        self.distro_rules.reset();
        for rule in &r.status.distro_rules {
            self.distro_rules.with_label_values(&[rule]).set(1);
        }
    }
}
