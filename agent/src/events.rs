//! Typed events: what the probes, the uevent listener and the rescans tell the agent.
//!
//! Sources decode their raw records into these; nothing downstream sees raw offsets.
use std::fmt;

/// What happened to a range of memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HotplugAction {
    /// A block came online (`online_pages`, uevent `online`).
    Online,
    /// A block went offline (`offline_pages`, uevent `offline`).
    Offline,
    /// Memory was added to the resource tree (`add_memory_resource`, uevent `add`).
    Add,
    /// Memory was removed (`remove_memory`, uevent `remove`).
    Remove,
}

impl HotplugAction {
    pub const ALL: [Self; 4] = [Self::Online, Self::Offline, Self::Add, Self::Remove];

    /// The `action` label value of `kdump_memory_hotplug_events_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Online => "online",
            Self::Offline => "offline",
            Self::Add => "add",
            Self::Remove => "remove",
        }
    }

    /// Parses a uevent `ACTION=` value.
    pub fn from_uevent(action: &str) -> Option<Self> {
        match action {
            "online" => Some(Self::Online),
            "offline" => Some(Self::Offline),
            "add" => Some(Self::Add),
            "remove" => Some(Self::Remove),
            _ => None,
        }
    }
}

impl fmt::Display for HotplugAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which mechanism delivered the agent's events (`kdump_agent_event_source{source}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventSource {
    /// eBPF probes on the kernel's hotplug and kexec paths.
    Ebpf,
    /// `NETLINK_KOBJECT_UEVENT` messages of the `memory` subsystem.
    Uevent,
    /// Periodic `/proc/iomem` rescans only.
    Poll,
}

impl EventSource {
    pub const ALL: [Self; 3] = [Self::Ebpf, Self::Uevent, Self::Poll];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ebpf => "ebpf",
            Self::Uevent => "uevent",
            Self::Poll => "poll",
        }
    }
}

impl fmt::Display for EventSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One thing the agent learned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A memory block or range changed state.
    Memory {
        action: HotplugAction,
        /// Physical address of the first byte, when the source knows it.
        phys_start: Option<u64>,
        /// Size in bytes, when the source knows it.
        bytes: Option<u64>,
        source: EventSource,
        /// CLOCK_MONOTONIC nanoseconds when the kernel saw it (probes only).
        ktime_ns: Option<u64>,
    },
    /// A periodic rescan found `/proc/iomem` different from the last one.
    IomemChanged,
    /// Records were dropped (ring buffer full, socket overrun): the agent must resync.
    Lost { count: u64, source: EventSource },
}
