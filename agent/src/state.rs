//! What the agent knows about the node, as plain data, in one part per writer:
//!
//! | part | written by |
//! | --- | --- |
//! | `node` | the rescans ([`NodeState::refresh`]) |
//! | `observe` | start-up, once the event source is settled |
//! | `counters` | the event loop, for every event ([`EventCounters::count`]) |
//! | `header`, `reload` | the reload stage's loop ([`ReconcileLoop`]) |
//!
//! Exporters (metrics, textfile, status, show) only read it.
//!
//! [`ReconcileLoop`]: crate::reload::ReconcileLoop
use crate::{
    model::{
        mode::Mode,
        readiness::{Readiness, readiness},
    },
    observe::{ObserveState, counters::EventCounters},
    reconcile::header::HeaderKnowledge,
    reload::{ReloadParts, ReloadState},
    sys::node::NodeState,
};

#[derive(Clone, Debug, PartialEq)]
pub struct AgentState {
    pub node: NodeState,
    pub observe: ObserveState,
    pub counters: EventCounters,
    pub header: HeaderKnowledge,
    pub reload: ReloadState,
}

/// The state as the daemon's tasks share it: the pipeline writes, exporters read.
pub type SharedState = std::sync::Arc<std::sync::RwLock<AgentState>>;

impl AgentState {
    pub fn new(node: NodeState) -> Self {
        Self {
            node,
            observe: ObserveState::default(),
            counters: EventCounters::default(),
            header: HeaderKnowledge::default(),
            reload: ReloadState::default(),
        }
    }

    pub fn mode(&self) -> Mode {
        Mode::of(&self.node.facts, self.reload.can_reload)
    }

    pub fn readiness(&self) -> Readiness {
        readiness(
            &self.node.facts,
            &self.node.no_kexec_reason,
            self.header.status(),
        )
    }

    /// The parts the reload stage may change.
    pub fn reload_parts(&mut self) -> ReloadParts<'_> {
        ReloadParts {
            node: &mut self.node,
            header: &mut self.header,
            reload: &mut self.reload,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        facts::KdumpFacts,
        header::{HeaderStatus, Provenance},
    };

    fn read_back() -> HeaderStatus {
        HeaderStatus {
            provenance: Some(Provenance::ReadBack),
            verified: true,
            ..Default::default()
        }
    }

    fn state(facts: KdumpFacts) -> AgentState {
        let mut node = NodeState::new("6.1.0".into(), vec![], "CONFIG_KEXEC is not set".into());
        node.facts = facts;
        AgentState::new(node)
    }

    fn loaded() -> KdumpFacts {
        KdumpFacts {
            kexec: true,
            crash_loaded: true,
            reserved_bytes: 256 << 20,
            crash_hotplug: None,
            system_ram_bytes: None,
        }
    }

    #[test]
    fn no_kexec_is_unsupported_and_says_why() {
        let s = state(KdumpFacts::default());
        assert_eq!(s.mode(), Mode::Unsupported);
        assert_eq!(
            s.readiness().reason,
            "this kernel has no kexec support (CONFIG_KEXEC is not set)"
        );
        assert!(!s.readiness().ready);
    }

    #[test]
    fn no_reservation_is_unsupported() {
        let s = state(KdumpFacts {
            reserved_bytes: 0,
            ..loaded()
        });
        assert_eq!(s.mode(), Mode::Unsupported);
        assert!(s.readiness().reason.starts_with("no memory is reserved"));
    }

    #[test]
    fn modes_follow_the_kernel_and_the_recipe() {
        let mut s = state(loaded());
        assert_eq!(s.mode(), Mode::Observe);
        s.reload.can_reload = true;
        assert_eq!(s.mode(), Mode::AgentManaged);
        s.node.facts.crash_hotplug = Some(true);
        assert_eq!(s.mode(), Mode::KernelManaged);
    }

    #[test]
    fn ready_needs_a_loaded_fresh_header() {
        let mut s = state(KdumpFacts {
            crash_loaded: false,
            ..loaded()
        });
        assert!(
            s.readiness()
                .reason
                .starts_with("no crash kernel is loaded")
        );
        s.node.facts.crash_loaded = true;
        let r = s.readiness();
        assert!(
            !r.ready
                && r.reason
                    .starts_with("what the loaded crash header lists is not known"),
            "nothing known of the header is not ready: {}",
            r.reason
        );
        s.header = HeaderKnowledge::with_status(read_back());
        assert!(s.readiness().ready, "{}", s.readiness().reason);
        let inferred = HeaderStatus {
            provenance: Some(Provenance::Inferred),
            unknown: Some("not captured by a probe, and not read back: EPERM".into()),
            ..Default::default()
        };
        let r = readiness(&s.node.facts, "", &inferred);
        assert_eq!(
            r.reason,
            "what the loaded crash header lists is not known: not captured by a probe, and not read back: EPERM"
        );
        let stale = HeaderStatus {
            stale: true,
            missing_bytes: 512 << 20,
            ..Default::default()
        };
        let r = readiness(&s.node.facts, "", &stale);
        assert!(!r.ready);
        assert!(
            r.reason.contains("512.0 MiB of RAM missing"),
            "{}",
            r.reason
        );
    }
}
