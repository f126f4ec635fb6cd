//! The event ABI between the kdump-agent eBPF probes and the agent.
//!
//! Every record on the ring buffer starts with an [`EventHeader`]; `kind` says which
//! struct follows. All structs are `#[repr(C)]` with explicit padding so the layout is the
//! same on both sides and no uninitialised bytes cross the kernel boundary.
#![no_std]

/// Name of the ring buffer map in the eBPF object.
pub const EVENTS_MAP: &str = "EVENTS";

/// Name of the one-entry array counting records the ring buffer had no room for.
pub const LOST_MAP: &str = "LOST";

/// Ring buffer size in bytes (a power of two, a multiple of the page size).
pub const EVENTS_RING_BYTES: u32 = 256 * 1024;

/// What kind of record follows the header.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// `online_pages(pfn, nr_pages, ...)` was entered: a memory block is going online.
    OnlinePages = 1,
}

impl EventKind {
    pub fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(Self::OnlinePages),
            _ => None,
        }
    }
}

/// Common prefix of every record.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventHeader {
    /// An [`EventKind`] value.
    pub kind: u32,
    /// CPU the probe ran on.
    pub cpu: u32,
    /// `bpf_ktime_get_ns()` when the probe fired (CLOCK_MONOTONIC, nanoseconds).
    pub ktime_ns: u64,
}

/// A range of page frames changing state (online, offline).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PagesEvent {
    pub header: EventHeader,
    /// First page frame number.
    pub pfn: u64,
    /// Number of pages.
    pub nr_pages: u64,
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain #[repr(C)] integer structs with no padding (checked by the tests below).
    unsafe impl aya::Pod for super::EventHeader {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PagesEvent {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<EventHeader>(), 4 + 4 + 8);
        assert_eq!(size_of::<PagesEvent>(), size_of::<EventHeader>() + 8 + 8);
    }

    #[test]
    fn kinds_round_trip() {
        assert_eq!(
            EventKind::from_u32(EventKind::OnlinePages as u32),
            Some(EventKind::OnlinePages)
        );
        assert_eq!(EventKind::from_u32(0), None);
    }
}
