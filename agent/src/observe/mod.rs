//! Observe: the probes, their records and the uevent fallback, turned into [`Event`]s.
//!
//! [`Event`]: crate::model::events::Event
use crate::model::{events::EventSource, probe::ProbeReport};

pub mod assemble;
pub mod counters;
pub mod probe_table;
pub mod probes;
pub mod records;
pub mod uevent;

/// `--event-source`: where the agent hears about changes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum SourceChoice {
    /// The probes when they attach, else uevents, else rescans alone.
    #[default]
    Auto,
    /// The probes, or refuse to start.
    Ebpf,
    /// Memory uevents and rescans, no probes (policy, or a verifier that refuses them).
    Uevent,
    /// Rescans alone.
    Poll,
}

/// How the agent observes the node, settled at start-up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObserveState {
    pub event_source: EventSource,
    pub probes: Vec<ProbeReport>,
    /// The probes time every window without a crash image (any loader's); otherwise the
    /// agent records the duration of its own replacing loads, an upper bound.
    pub windows_from_probes: bool,
}

impl Default for ObserveState {
    fn default() -> Self {
        Self {
            event_source: EventSource::Poll,
            probes: Vec::new(),
            windows_from_probes: false,
        }
    }
}
