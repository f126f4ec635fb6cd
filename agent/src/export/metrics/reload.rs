//! The agent's reloads and the windows without a crash kernel.
use prometheus::{Histogram, IntCounterVec, Registry};

use super::{counter_vec, raise, seconds_histogram};
use crate::{
    observe::{ObserveState, counters::EventCounters},
    reload::{RELOAD_RESULTS, ReloadState},
};

pub(super) struct ReloadMetrics {
    reloads: IntCounterVec,
    duration: Histogram,
    unprotected_window: Histogram,
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
    }
}
