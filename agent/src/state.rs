//! What the agent knows about the node, as plain data. The pipeline writes it; the exporters
//! (metrics, textfile, status) only read it.
use std::{
    collections::{BTreeMap, VecDeque},
    time::SystemTime,
};

use serde::{Deserialize, Serialize};

use crate::{
    model::{
        elfcorehdr::{ElfCoreHeader, HeaderDiff, HeaderError, LoadPath, diff, expected_ram},
        events::{CapturedHeader, Event, EventSource, HeaderSource, HotplugAction},
        facts::KdumpFacts,
        iomem::Iomem,
        mode::Mode,
        probe::ProbeReport,
        ranges::RamRanges,
    },
    sys::capabilities::{Capability, Feature},
};

/// What the agent knows about the loaded header.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeaderStatus {
    /// The loaded header's content was captured (true) or inferred (false).
    pub verified: bool,
    pub stale: bool,
    pub missing_bytes: u64,
    pub excess_bytes: u64,
    /// Seconds since the epoch when it became stale.
    pub stale_since: Option<u64>,
    /// Who loaded the header the verdict is about, when it was captured.
    pub captured: Option<String>,
}

/// The crash header the kernel holds: as a probe captured it, or inferred.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadedHeader {
    /// Its RAM `PT_LOAD`s.
    pub ram: RamRanges,
    /// Captured (true), or inferred from the RAM when the agent first saw the load (false).
    pub verified: bool,
    /// Whose rules it follows: the kernel's (kexec_file_load, in-kernel updates) or
    /// kexec-tools' (kexec_load).
    pub load: LoadPath,
    /// `kexec_load by kexec (pid 312)`, `in-kernel update`, or how it was inferred.
    pub captured: String,
    /// Seconds since the epoch.
    pub captured_at: u64,
}

impl LoadedHeader {
    fn from_capture(
        c: &CapturedHeader,
        captured: String,
        now: u64,
    ) -> Result<Self, HeaderCaptureError> {
        if !c.complete {
            return Err(HeaderCaptureError::Incomplete {
                got: c.bytes.len(),
                total: c.total_bytes,
            });
        }
        Ok(Self {
            ram: ElfCoreHeader::parse(&c.bytes)
                .map_err(HeaderCaptureError::Parse)?
                .ram_ranges(),
            verified: true,
            load: match c.source {
                HeaderSource::Kernel => LoadPath::KexecFileLoad,
                HeaderSource::KexecLoadSegment => LoadPath::KexecLoad,
            },
            captured,
            captured_at: now,
        })
    }

    /// What a load the agent did not capture most likely holds: a header built for the RAM
    /// it sees now (by the kernel's rules). Unverified: RAM may have changed since the load.
    fn inferred(iomem: &Iomem, now: u64) -> Option<Self> {
        Some(Self {
            ram: expected_ram(iomem, LoadPath::KexecFileLoad).ok()?,
            verified: false,
            load: LoadPath::KexecFileLoad,
            captured: "inferred from the RAM when the agent first saw the load".into(),
            captured_at: now,
        })
    }

    /// How it differs from the header its loader would build for `iomem`.
    pub fn diff(&self, iomem: &Iomem) -> Option<HeaderDiff> {
        expected_ram(iomem, self.load)
            .ok()
            .map(|expected| diff(&expected, &self.ram))
    }
}

/// Why a captured header could not be used (the header is then unverified).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeaderCaptureError {
    #[error("only {got} of its {total} bytes were captured")]
    Incomplete { got: usize, total: u64 },
    #[error("it does not parse: {0}")]
    Parse(HeaderError),
}

/// The agent's reload side, as `status` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ReloadStatus {
    /// `kexec-file`, `command` or `off`.
    pub strategy: String,
    /// Where the recipe came from and what it loads.
    pub recipe: Option<String>,
    /// The last reload, one line.
    pub last: Option<String>,
    /// The last alert raised, one line.
    pub alert: Option<String>,
    /// Consecutive failed reloads (0 after a success).
    pub failures: u32,
    /// Why the last `kexec_file_load` by another loader gave no recipe to adopt.
    pub adoption_refused: Option<String>,
}

impl Default for ReloadStatus {
    fn default() -> Self {
        Self {
            strategy: "off".into(),
            recipe: None,
            last: None,
            alert: None,
            failures: 0,
            adoption_refused: None,
        }
    }
}

/// The last observations of a histogram metric, with a running total so exporters can tell which
/// ones they have not seen yet.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Observations {
    recent: VecDeque<f64>,
    pub total: u64,
}

impl Observations {
    const KEEP: usize = 1024;

    pub fn record(&mut self, value: f64) {
        if self.recent.len() == Self::KEEP {
            self.recent.pop_front();
        }
        self.recent.push_back(value);
        self.total += 1;
    }

    /// Observations after the first `seen` ones (those still kept).
    pub fn since(&self, seen: u64) -> impl Iterator<Item = f64> + '_ {
        let new = self
            .total
            .saturating_sub(seen)
            .min(self.recent.len() as u64) as usize;
        self.recent.iter().skip(self.recent.len() - new).copied()
    }
}

/// Label values of the load and reload counters (low cardinality, fixed sets).
pub const KEXEC_SYSCALLS: [&str; 2] = ["kexec_load", "kexec_file_load"];
pub const LOAD_RESULTS: [&str; 2] = ["success", "failure"];
pub const LOAD_ORIGINS: [&str; 2] = ["agent", "other"];
pub const RELOAD_RESULTS: [&str; 3] = ["success", "failure", "rolled_back"];

/// Counters, all monotonic.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Counters {
    /// Per [`HotplugAction::ALL`] index.
    pub hotplug_events: [u64; 4],
    pub events_lost: u64,
    /// Keyed by (syscall, result, origin) from the label sets above.
    pub kexec_loads: BTreeMap<(&'static str, &'static str, &'static str), u64>,
    /// Keyed by result.
    pub kernel_header_updates: BTreeMap<&'static str, u64>,
    /// Keyed by result.
    pub reloads: BTreeMap<&'static str, u64>,
}

impl Counters {
    pub fn hotplug(&self, action: HotplugAction) -> u64 {
        self.hotplug_events[action as usize]
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct AgentState {
    pub kernel_release: String,
    pub capabilities: Vec<Capability>,
    /// Why there is no kexec, when there is none (e.g. `CONFIG_KEXEC is not set`).
    pub no_kexec_reason: String,
    pub facts: KdumpFacts,
    pub event_source: EventSource,
    pub probes: Vec<ProbeReport>,
    pub header: HeaderStatus,
    pub counters: Counters,
    pub reload_durations: Observations,
    pub unprotected_windows: Observations,
    /// The probes time every window without a crash image (any loader's); otherwise the
    /// agent records the duration of its own replacing loads, an upper bound.
    pub windows_from_probes: bool,
    /// The agent has a recipe and a reload strategy (agent-managed when the kernel is not).
    pub can_reload: bool,
    pub reload: ReloadStatus,
    /// When this state was last refreshed from the system.
    pub refreshed_at: Option<SystemTime>,
    /// The last `/proc/iomem` read: the RAM the loaded header should list.
    pub iomem: Option<Iomem>,
    /// The header as last captured at a load or an in-kernel update.
    pub loaded: Option<LoadedHeader>,
}

/// The state as the daemon's tasks share it: the pipeline writes, exporters read.
pub type SharedState = std::sync::Arc<std::sync::RwLock<AgentState>>;

/// Ready or not, and the first reason why not.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Readiness {
    pub ready: bool,
    pub reason: String,
}

impl AgentState {
    pub fn new(
        kernel_release: String,
        capabilities: Vec<Capability>,
        no_kexec_reason: String,
    ) -> Self {
        Self {
            kernel_release,
            capabilities,
            no_kexec_reason,
            facts: KdumpFacts::default(),
            event_source: EventSource::Poll,
            probes: Vec::new(),
            header: HeaderStatus::default(),
            counters: Counters::default(),
            reload_durations: Observations::default(),
            unprotected_windows: Observations::default(),
            windows_from_probes: false,
            can_reload: false,
            reload: ReloadStatus::default(),
            refreshed_at: None,
            iomem: None,
            loaded: None,
        }
    }

    pub fn capability(&self, feature: Feature) -> Option<&Capability> {
        self.capabilities.iter().find(|c| c.feature == feature)
    }

    pub fn mode(&self) -> Mode {
        let f = &self.facts;
        if !f.kexec || f.reserved_bytes == 0 {
            Mode::Unsupported
        } else if f.crash_hotplug == Some(true) {
            Mode::KernelManaged
        } else if self.can_reload {
            Mode::AgentManaged
        } else {
            Mode::Observe
        }
    }

    pub fn readiness(&self) -> Readiness {
        let f = &self.facts;
        let not_ready = |reason: String| Readiness {
            ready: false,
            reason,
        };
        if !f.kexec {
            return not_ready(format!(
                "this kernel has no kexec support ({})",
                self.no_kexec_reason
            ));
        }
        if f.reserved_bytes == 0 {
            return not_ready(
                "no memory is reserved for a crash kernel (crashkernel= is not on the kernel command line)"
                    .into(),
            );
        }
        if !f.crash_loaded {
            return not_ready("no crash kernel is loaded (kexec_crash_loaded is 0)".into());
        }
        if self.header.stale {
            return not_ready(format!(
                "the loaded crash header is stale: {} of RAM missing from the dump, {} listed that is no longer RAM",
                crate::model::units::bytes(self.header.missing_bytes),
                crate::model::units::bytes(self.header.excess_bytes)
            ));
        }
        Readiness {
            ready: true,
            reason: String::new(),
        }
    }

    /// Counts an event. Lost events are counted here; the resync they force is the caller's.
    pub fn count(&mut self, event: &Event) {
        match event {
            Event::Memory { action, .. } => self.counters.hotplug_events[*action as usize] += 1,
            Event::Lost { count, .. } => self.counters.events_lost += count,
            Event::KexecLoad(load) if !load.unload => {
                let result = LOAD_RESULTS[usize::from(!load.succeeded())];
                let origin = LOAD_ORIGINS[usize::from(!load.by_agent)];
                *self
                    .counters
                    .kexec_loads
                    .entry((load.syscall.as_str(), result, origin))
                    .or_default() += 1;
            }
            Event::KernelHeaderUpdate(update) => {
                let result = LOAD_RESULTS[usize::from(!update.succeeded())];
                *self
                    .counters
                    .kernel_header_updates
                    .entry(result)
                    .or_default() += 1;
            }
            Event::UnprotectedWindow(window) => self.unprotected_windows.record(window.seconds()),
            Event::KexecLoad(_) | Event::MemoryFailed { .. } | Event::IomemChanged => {}
        }
    }

    /// Keeps the header a successful load or in-kernel update put in place (`now`: seconds
    /// since the epoch). A load whose header was not captured, or an unload, forgets it: what
    /// is loaded then is unknown. A failed update keeps the old one, which is what the kernel
    /// keeps.
    pub fn take_header(&mut self, event: &Event, now: u64) -> Result<(), HeaderCaptureError> {
        let (captured, header) = match event {
            Event::KexecLoad(load) if load.succeeded() => {
                if load.unload {
                    self.loaded = None;
                    return Ok(());
                }
                (
                    format!(
                        "{} by {} (pid {})",
                        load.syscall.as_str(),
                        load.comm,
                        load.pid
                    ),
                    &load.header,
                )
            }
            Event::KernelHeaderUpdate(update) if update.succeeded() => {
                ("in-kernel update".to_string(), &update.header)
            }
            _ => return Ok(()),
        };
        self.loaded = None;
        let Some(header) = header else { return Ok(()) };
        self.loaded = Some(LoadedHeader::from_capture(header, captured, now)?);
        Ok(())
    }

    /// Re-derives [`HeaderStatus`] from the captured header and the last `/proc/iomem`.
    pub fn assess_header(&mut self, now: u64) {
        if !self.facts.crash_loaded {
            self.loaded = None;
        } else if self.loaded.is_none()
            || (self.mode() == Mode::KernelManaged
                && !self.loaded.as_ref().is_some_and(|l| l.verified))
        {
            // Kernel-managed without a capture: the kernel rewrites the header on hotplug, so
            // the best guess follows the RAM (as the reconciler's does).
            self.loaded = self
                .iomem
                .as_ref()
                .and_then(|iomem| LoadedHeader::inferred(iomem, now));
        }
        let verdict = match (&self.loaded, &self.iomem) {
            (Some(loaded), Some(iomem)) => loaded.diff(iomem).map(|d| (loaded, d)),
            _ => None,
        };
        self.header = match verdict {
            Some((loaded, d)) => HeaderStatus {
                verified: loaded.verified,
                stale: d.stale(),
                missing_bytes: d.missing_bytes,
                excess_bytes: d.excess_bytes,
                stale_since: d.stale().then(|| self.header.stale_since.unwrap_or(now)),
                captured: loaded.verified.then(|| loaded.captured.clone()),
            },
            None => HeaderStatus::default(),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(facts: KdumpFacts) -> AgentState {
        let mut s = AgentState::new("6.1.0".into(), vec![], "CONFIG_KEXEC is not set".into());
        s.facts = facts;
        s
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
        s.can_reload = true;
        assert_eq!(s.mode(), Mode::AgentManaged);
        s.facts.crash_hotplug = Some(true);
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
        s.facts.crash_loaded = true;
        assert!(s.readiness().ready);
        s.header = HeaderStatus {
            stale: true,
            missing_bytes: 512 << 20,
            ..Default::default()
        };
        let r = s.readiness();
        assert!(!r.ready);
        assert!(
            r.reason.contains("512.0 MiB of RAM missing"),
            "{}",
            r.reason
        );
    }

    #[test]
    fn counts_events_by_action() {
        let mut s = state(loaded());
        let online = Event::Memory {
            action: HotplugAction::Online,
            phys_start: None,
            bytes: None,
            source: EventSource::Uevent,
            ktime_ns: None,
        };
        s.count(&online);
        s.count(&online);
        s.count(&Event::Lost {
            count: 3,
            source: EventSource::Ebpf,
        });
        assert_eq!(s.counters.hotplug(HotplugAction::Online), 2);
        assert_eq!(s.counters.hotplug(HotplugAction::Remove), 0);
        assert_eq!(s.counters.events_lost, 3);
    }

    const IOMEM_1G: &str = "\
00001000-0009fbff : System RAM
00100000-3ffdffff : System RAM
  2f000000-3effffff : Crash kernel
";

    /// The header `load` builds for `iomem`, as a probe would capture it.
    fn captured(iomem: &str, source: HeaderSource) -> CapturedHeader {
        use crate::model::elfcorehdr::{HeaderInputs, NoteRegion, build, crash_memory_ranges};
        let load = match source {
            HeaderSource::Kernel => LoadPath::KexecFileLoad,
            HeaderSource::KexecLoadSegment => LoadPath::KexecLoad,
        };
        let mem = crash_memory_ranges(&Iomem::parse(iomem).unwrap(), load).unwrap();
        let bytes = build(&HeaderInputs {
            cpu_notes: &[NoteRegion {
                paddr: 0x3000_0000,
                size: 336,
            }],
            vmcoreinfo: NoteRegion {
                paddr: 0x3100_0000,
                size: 4096,
            },
            kernel_text: None,
            ram: mem.ranges(),
            page_offset: crate::model::elfcorehdr::arch::X86_64_DEFAULT_PAGE_OFFSET,
        })
        .unwrap();
        CapturedHeader {
            source,
            total_bytes: bytes.len() as u64,
            bytes,
            complete: true,
        }
    }

    fn load_event(syscall: LoadPath, header: Option<CapturedHeader>) -> Event {
        Event::KexecLoad(crate::model::events::KexecLoad {
            syscall,
            pid: 312,
            comm: "kexec".into(),
            flags: 1,
            unload: false,
            by_agent: false,
            result: 0,
            duration_ns: Some(1),
            header,
            files: None,
            ktime_ns: 1,
        })
    }

    #[test]
    fn a_captured_load_is_verified_then_goes_stale_with_a_dimm() {
        let dimm = format!("{IOMEM_1G}100000000-11fffffff : System RAM\n");
        for (source, syscall) in [
            (HeaderSource::KexecLoadSegment, LoadPath::KexecLoad),
            (HeaderSource::Kernel, LoadPath::KexecFileLoad),
        ] {
            let mut s = state(loaded());
            s.iomem = Some(Iomem::parse(IOMEM_1G).unwrap());
            s.assess_header(10);
            assert!(!s.header.verified, "nothing captured yet");
            let event = load_event(syscall, Some(captured(IOMEM_1G, source)));
            s.count(&event);
            s.take_header(&event, 11).unwrap();
            s.assess_header(11);
            assert!(s.header.verified && !s.header.stale, "{:?}", s.header);
            assert_eq!(
                s.header.captured.as_deref(),
                Some(format!("{} by kexec (pid 312)", syscall.as_str()).as_str())
            );
            assert_eq!(
                s.counters.kexec_loads[&(syscall.as_str(), "success", "other")],
                1
            );
            s.iomem = Some(Iomem::parse(&dimm).unwrap());
            s.assess_header(12);
            assert!(s.header.stale);
            assert_eq!(
                (s.header.missing_bytes, s.header.excess_bytes),
                (512 << 20, 0)
            );
            assert_eq!(s.header.stale_since, Some(12));
            s.assess_header(13);
            assert_eq!(s.header.stale_since, Some(12), "stale since the first time");
            assert!(!s.readiness().ready);
            // The kernel rewrites it: verified and fresh again.
            let update = Event::KernelHeaderUpdate(crate::model::events::KernelHeaderUpdate {
                header: Some(captured(&dimm, HeaderSource::Kernel)),
                result: 0,
                duration_ns: None,
                ktime_ns: 2,
            });
            s.count(&update);
            s.take_header(&update, 14).unwrap();
            s.assess_header(14);
            assert!(s.header.verified && !s.header.stale && s.header.stale_since.is_none());
            assert_eq!(s.counters.kernel_header_updates[&"success"], 1);
        }
    }

    #[test]
    fn uncaptured_or_unusable_headers_are_unverified() {
        let mut s = state(loaded());
        s.iomem = Some(Iomem::parse(IOMEM_1G).unwrap());
        let event = load_event(
            LoadPath::KexecLoad,
            Some(captured(IOMEM_1G, HeaderSource::KexecLoadSegment)),
        );
        s.take_header(&event, 1).unwrap();
        s.take_header(&load_event(LoadPath::KexecFileLoad, None), 2)
            .unwrap();
        s.assess_header(2);
        assert!(
            !s.header.verified,
            "a newer load without a capture replaces it"
        );
        let mut partial = captured(IOMEM_1G, HeaderSource::Kernel);
        partial.complete = false;
        assert!(matches!(
            s.take_header(&load_event(LoadPath::KexecFileLoad, Some(partial)), 3),
            Err(HeaderCaptureError::Incomplete { .. })
        ));
        let mut garbage = captured(IOMEM_1G, HeaderSource::Kernel);
        garbage.bytes[0] = 0;
        assert!(matches!(
            s.take_header(&load_event(LoadPath::KexecFileLoad, Some(garbage)), 3),
            Err(HeaderCaptureError::Parse(_))
        ));
        s.assess_header(3);
        assert!(!s.header.verified);
    }

    #[test]
    fn an_uncaptured_load_is_inferred_from_the_ram_the_agent_first_sees() {
        let mut s = state(loaded());
        s.iomem = Some(Iomem::parse(IOMEM_1G).unwrap());
        s.assess_header(5);
        assert!(!s.header.verified && !s.header.stale && s.header.captured.is_none());
        s.iomem =
            Some(Iomem::parse(&format!("{IOMEM_1G}100000000-11fffffff : System RAM\n")).unwrap());
        s.assess_header(6);
        assert!(!s.header.verified && s.header.stale);
        assert_eq!(s.header.missing_bytes, 512 << 20);
        assert!(!s.readiness().ready);
    }

    #[test]
    fn unloading_forgets_the_header() {
        let mut s = state(loaded());
        s.iomem = Some(Iomem::parse(IOMEM_1G).unwrap());
        s.take_header(
            &load_event(
                LoadPath::KexecLoad,
                Some(captured(IOMEM_1G, HeaderSource::KexecLoadSegment)),
            ),
            1,
        )
        .unwrap();
        s.facts.crash_loaded = false;
        s.assess_header(2);
        assert!(s.loaded.is_none() && !s.header.verified);
    }

    #[test]
    fn observations_report_only_unseen_values() {
        let mut o = Observations::default();
        o.record(1.0);
        o.record(2.0);
        assert_eq!(o.since(0).collect::<Vec<_>>(), [1.0, 2.0]);
        assert_eq!(o.since(1).collect::<Vec<_>>(), [2.0]);
        assert_eq!(o.since(2).count(), 0);
        for i in 0..2000 {
            o.record(f64::from(i));
        }
        assert_eq!(o.since(0).count(), Observations::KEEP);
        assert_eq!(o.since(o.total - 1).collect::<Vec<_>>(), [1999.0]);
    }
}
