//! What the event sources saw: hotplug events, loads, in-kernel updates, losses.
use prometheus::{IntCounter, IntCounterVec, Registry};

use super::{counter_vec, raise, reg};
use crate::{
    model::events::HotplugAction,
    observe::counters::{EventCounters, KEXEC_SYSCALLS, LOAD_ORIGINS, LOAD_RESULTS},
};

pub(super) struct CounterMetrics {
    hotplug_events: IntCounterVec,
    cpu_hotplug_events: IntCounterVec,
    kexec_loads: IntCounterVec,
    kernel_header_updates: IntCounterVec,
    events_lost: IntCounter,
}

impl CounterMetrics {
    pub(super) fn register(r: &Registry) -> Self {
        Self {
            hotplug_events: counter_vec(
                r,
                "kdump_memory_hotplug_events_total",
                "Memory hotplug events seen, by action.",
                &["action"],
            ),
            cpu_hotplug_events: counter_vec(
                r,
                "kdump_cpu_hotplug_events_total",
                "CPU hotplug events seen (uevents of the cpu subsystem), by action.",
                &["action"],
            ),
            kexec_loads: counter_vec(
                r,
                "kdump_kexec_loads_total",
                "Crash kernel loads seen, by syscall, result and origin.",
                &["syscall", "result", "origin"],
            ),
            kernel_header_updates: counter_vec(
                r,
                "kdump_kernel_header_updates_total",
                "In-kernel rewrites of the loaded crash header seen, by result.",
                &["result"],
            ),
            events_lost: reg(
                r,
                IntCounter::new(
                    "kdump_agent_events_lost_total",
                    "Events dropped before the agent read them; each forces a resync.",
                )
                .expect("valid metric"),
            ),
        }
    }

    pub(super) fn sync(&self, c: &EventCounters) {
        for action in HotplugAction::ALL {
            raise(
                &self.hotplug_events.with_label_values(&[action.as_str()]),
                c.hotplug(action),
            );
            raise(
                &self
                    .cpu_hotplug_events
                    .with_label_values(&[action.as_str()]),
                c.cpu_hotplug_events[action as usize],
            );
        }
        for syscall in KEXEC_SYSCALLS {
            for result in LOAD_RESULTS {
                for origin in LOAD_ORIGINS {
                    let n = c
                        .kexec_loads
                        .get(&(syscall, result, origin))
                        .copied()
                        .unwrap_or(0);
                    raise(
                        &self
                            .kexec_loads
                            .with_label_values(&[syscall, result, origin]),
                        n,
                    );
                }
            }
        }
        for result in LOAD_RESULTS {
            let n = c.kernel_header_updates.get(result).copied().unwrap_or(0);
            raise(&self.kernel_header_updates.with_label_values(&[result]), n);
        }
        raise(&self.events_lost, c.events_lost);
    }
}
