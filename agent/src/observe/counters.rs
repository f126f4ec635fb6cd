//! Counts of what the event sources saw. [`EventCounters::count`] is its only writer.
use std::collections::BTreeMap;

use crate::model::{
    events::{Event, HotplugAction},
    observations::Observations,
};

/// Label values of the load counters (low cardinality, fixed sets).
pub const KEXEC_SYSCALLS: [&str; 2] = ["kexec_load", "kexec_file_load"];
pub const LOAD_RESULTS: [&str; 2] = ["success", "failure"];
pub const LOAD_ORIGINS: [&str; 2] = ["agent", "other"];

/// Counters, all monotonic, and the windows without a crash image the probes timed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EventCounters {
    /// Per [`HotplugAction::ALL`] index.
    pub hotplug_events: [u64; 4],
    /// CPU hotplug events, per [`HotplugAction::ALL`] index.
    pub cpu_hotplug_events: [u64; 4],
    pub events_lost: u64,
    /// Keyed by (syscall, result, origin) from the label sets above.
    pub kexec_loads: BTreeMap<(&'static str, &'static str, &'static str), u64>,
    /// Keyed by result.
    pub kernel_header_updates: BTreeMap<&'static str, u64>,
    /// Every window without a crash image, any loader's, as the probes timed it.
    pub unprotected_windows: Observations,
}

impl EventCounters {
    pub fn hotplug(&self, action: HotplugAction) -> u64 {
        self.hotplug_events[action as usize]
    }

    /// Counts an event. Lost events are counted here; the resync they force is the caller's.
    pub fn count(&mut self, event: &Event) {
        match event {
            Event::Memory { action, .. } => self.hotplug_events[*action as usize] += 1,
            Event::Cpu { action, .. } => self.cpu_hotplug_events[*action as usize] += 1,
            Event::Lost { count, .. } => self.events_lost += count,
            Event::KexecLoad(load) if !load.unload => {
                let result = LOAD_RESULTS[usize::from(!load.succeeded())];
                let origin = LOAD_ORIGINS[usize::from(!load.by_agent)];
                *self
                    .kexec_loads
                    .entry((load.syscall.as_str(), result, origin))
                    .or_default() += 1;
            }
            Event::KernelHeaderUpdate(update) => {
                let result = LOAD_RESULTS[usize::from(!update.succeeded())];
                *self.kernel_header_updates.entry(result).or_default() += 1;
            }
            Event::UnprotectedWindow(window) => self.unprotected_windows.record(window.seconds()),
            Event::KexecLoad(_)
            | Event::MemoryFailed { .. }
            | Event::KernelUpdateSkipped { .. }
            | Event::KexecLoadStarted { .. }
            | Event::IomemChanged => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::events::EventSource;

    #[test]
    fn counts_events_by_action() {
        let mut c = EventCounters::default();
        let online = Event::Memory {
            action: HotplugAction::Online,
            phys_start: None,
            bytes: None,
            source: EventSource::Uevent,
            ktime_ns: None,
        };
        c.count(&online);
        c.count(&online);
        c.count(&Event::Lost {
            count: 3,
            source: EventSource::Ebpf,
        });
        assert_eq!(c.hotplug(HotplugAction::Online), 2);
        assert_eq!(c.hotplug(HotplugAction::Remove), 0);
        assert_eq!(c.events_lost, 3);
    }

    #[test]
    fn loads_are_counted_by_syscall_result_and_origin() {
        let mut c = EventCounters::default();
        let load = Event::KexecLoad(crate::model::events::KexecLoad::distro_file_load(
            None, None,
        ));
        c.count(&load);
        assert_eq!(c.kexec_loads[&("kexec_file_load", "success", "other")], 1);
    }
}
