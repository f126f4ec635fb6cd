//! The loaded crash header as the agent knows it, and the one judgement of it against the RAM.
//!
//! Pure. [`judge`] is the only place that decides whether the loaded header is stale; every
//! path (start-up, rescans, after a load, after an in-kernel update) goes through it.
use serde::{Deserialize, Serialize};

use crate::model::{
    cpus::CpuNotes,
    elfcorehdr::{
        Arch, ElfCoreHeader, HeaderDiff, HeaderError, LoadPath, crash_memory_ranges, diff,
        expected_ram, missing_cpu_notes,
    },
    events::{CapturedHeader, HeaderSource},
    iomem::{Iomem, SYSTEM_RAM},
    ranges::{CapacityExceeded, RamRanges},
};

/// How the agent knows what the loaded header lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Provenance {
    /// A probe saw the header being loaded or rewritten by the kernel.
    Captured,
    /// Read from the crash reservation itself.
    ReadBack,
    /// Assumed: the header its loader would build for the RAM when the agent saw the load.
    /// Never enough to vouch for a header after RAM may have changed.
    Inferred,
}

impl Provenance {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Captured => "captured",
            Self::ReadBack => "read back",
            Self::Inferred => "inferred",
        }
    }

    pub const ALL: [Self; 3] = [Self::Captured, Self::ReadBack, Self::Inferred];

    /// The `provenance` label of `kdump_header_provenance`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Captured => "captured",
            Self::ReadBack => "read_back",
            Self::Inferred => "inferred",
        }
    }

    /// The content is known, not assumed (`kdump_header_verified`).
    pub fn verified(self) -> bool {
        self != Self::Inferred
    }
}

/// Which CPUs' note buffers a loaded header lists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListedCpuNotes {
    /// The addresses of its `PT_NOTE`s (captured, read back, or the present CPUs' buffers a
    /// loader lists).
    Addrs(Vec<u64>),
    /// Inferred on a kernel whose `kexec_file_load` lists every possible CPU: none can be missing.
    EveryPossibleCpu,
    /// Not recorded (an earlier run persisted only the RAM): only the RAM is judged.
    Unknown,
}

impl ListedCpuNotes {
    /// The notes `load` lists when it runs with `cpus`: the kernel's file load every possible
    /// CPU from 6.6 on, else one per present CPU (kexec-tools: per configured CPU).
    pub fn at_load(load: LoadPath, cpus: Option<&CpuNotes>) -> Self {
        match cpus {
            Some(c) if c.kernel_lists_possible && load == LoadPath::KexecFileLoad => {
                Self::EveryPossibleCpu
            }
            Some(c) => Self::Addrs(c.present.iter().map(|n| n.paddr).collect()),
            None => Self::Unknown,
        }
    }

    /// The online CPUs of `cpus` it has no note for.
    pub fn missing(&self, cpus: &CpuNotes) -> Vec<u32> {
        match self {
            Self::Addrs(addrs) => {
                let mut missing = missing_cpu_notes(cpus.expected(), addrs);
                missing.extend(cpus.online_without_note());
                missing.sort_unstable();
                missing
            }
            Self::EveryPossibleCpu | Self::Unknown => Vec::new(),
        }
    }
}

/// The crash header the kernel holds, as far as the agent knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadedHeader {
    /// Its RAM `PT_LOAD`s.
    pub ram: RamRanges,
    /// Its CPU `PT_NOTE`s.
    pub cpu_notes: ListedCpuNotes,
    /// Whose rules it follows: the kernel's (kexec_file_load, in-kernel updates) or
    /// kexec-tools' (kexec_load).
    pub load: LoadPath,
    pub provenance: Provenance,
    /// Who put it there: `kexec_load by kexec (pid 312)`, `in-kernel update`, `this agent's load`.
    pub origin: String,
    /// When the agent learnt it, in seconds since the epoch.
    pub at: u64,
    /// This agent's own load put it there, built by the kernel from the RAM the agent read
    /// right after: inferred, but vouched for.
    pub own_load: bool,
}

/// Why a captured header could not be used (what is loaded is then unknown).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeaderCaptureError {
    #[error("only {got} of its {total} bytes were captured")]
    Incomplete { got: usize, total: u64 },
    #[error("it does not parse: {0}")]
    Parse(HeaderError),
}

impl LoadedHeader {
    /// The header a probe captured at a load or an in-kernel update.
    pub fn captured(
        c: &CapturedHeader,
        origin: String,
        now: u64,
    ) -> Result<Self, HeaderCaptureError> {
        if !c.complete {
            return Err(HeaderCaptureError::Incomplete {
                got: c.bytes.len(),
                total: c.total_bytes,
            });
        }
        let header = ElfCoreHeader::parse(&c.bytes).map_err(HeaderCaptureError::Parse)?;
        Ok(Self {
            ram: header.ram_ranges(),
            cpu_notes: ListedCpuNotes::Addrs(header.note_addrs()),
            load: match c.source {
                HeaderSource::Kernel => LoadPath::KexecFileLoad,
                HeaderSource::KexecLoadSegment => LoadPath::KexecLoad,
            },
            provenance: Provenance::Captured,
            origin,
            at: now,
            own_load: false,
        })
    }

    /// The header this agent built and handed the kernel itself (its own `kexec_load`): known
    /// byte for byte, so it counts as captured.
    pub fn own(bytes: &[u8], now: u64) -> Result<Self, HeaderError> {
        let header = ElfCoreHeader::parse(bytes)?;
        Ok(Self {
            ram: header.ram_ranges(),
            cpu_notes: ListedCpuNotes::Addrs(header.note_addrs()),
            load: LoadPath::KexecLoad,
            provenance: Provenance::Captured,
            origin: "this agent's kexec_load".into(),
            at: now,
            own_load: true,
        })
    }

    /// The header read back from the crash reservation at `phys_addr`.
    pub fn read_back(header: &ElfCoreHeader, phys_addr: u64, millis: f64, now: u64) -> Self {
        let ram = header.ram_ranges();
        let arch = Arch::of_machine(header.machine).unwrap_or(Arch::RUNNING);
        Self {
            load: arch.infer_load_path(&ram),
            ram,
            cpu_notes: ListedCpuNotes::Addrs(header.note_addrs()),
            provenance: Provenance::ReadBack,
            origin: format!("the crash reservation at {phys_addr:#x}, read in {millis:.0} ms"),
            at: now,
            own_load: false,
        }
    }

    /// Whether its content is known, or vouched for by this agent's own load.
    pub fn known(&self) -> bool {
        self.provenance.verified() || self.own_load
    }

    /// The header `load` would build for `iomem` and `cpus` (its own list of RAM, which on
    /// arm64 leaves driver-managed RAM out): what a load the agent did not capture most likely
    /// holds.
    pub fn inferred(
        iomem: &Iomem,
        cpus: Option<&CpuNotes>,
        load: LoadPath,
        origin: String,
        now: u64,
    ) -> Result<Self, CapacityExceeded> {
        Ok(Self {
            ram: crash_memory_ranges(iomem, load)?.to_ram_ranges(),
            cpu_notes: ListedCpuNotes::at_load(load, cpus),
            load,
            provenance: Provenance::Inferred,
            origin,
            at: now,
            own_load: false,
        })
    }

    /// How it differs from the header its loader would build for `iomem` now, and which
    /// online CPUs of `cpus` it has no note for.
    pub fn diff(
        &self,
        iomem: &Iomem,
        cpus: Option<&CpuNotes>,
    ) -> Result<HeaderDiff, CapacityExceeded> {
        Ok(HeaderDiff {
            missing_cpu_notes: cpus.map(|c| self.cpu_notes.missing(c)).unwrap_or_default(),
            ..diff(&expected_ram(iomem, self.load)?, &self.ram)
        })
    }
}

/// Missing RAM that no reload through a loader can bring back: that loader never lists it
/// (arm64 loaders and `System RAM (virtio_mem)`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BeyondReload {
    pub bytes: u64,
    /// The loader the agent's reloads (or, without its own, the node's) go through.
    pub through: LoadPath,
    /// The /proc/iomem lines that RAM is listed under, e.g. `System RAM (virtio_mem)`.
    pub resources: Vec<String>,
}

impl std::fmt::Display for BeyondReload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} of it no reload through {} can bring back: that loader never lists {}",
            crate::model::units::bytes(self.bytes),
            self.through.as_str(),
            if self.resources.is_empty() {
                "it".to_owned()
            } else {
                self.resources.join(", ")
            }
        )
    }
}

/// What would write the header of the agent's next reload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reloader {
    /// The loader of the header now loaded: the agent reloads through a command, or not at all.
    HeadersOwnLoader,
    /// That load path's rules (the agent's `kexec_file_load`: the kernel builds the header).
    Through(LoadPath),
    /// The agent itself, from all System RAM (its own arm64 `kexec_load`): no RAM is beyond it.
    Agent,
}

/// What of `missing` no reload through `through` can bring back on `arch`, for `iomem`; `None`
/// when a reload would list all of it.
pub fn beyond_reload(
    arch: Arch,
    iomem: &Iomem,
    through: LoadPath,
    missing: &RamRanges,
) -> Result<Option<BeyondReload>, CapacityExceeded> {
    let never = arch.omitted_by(iomem, through)?.intersection(missing);
    if never.is_empty() {
        return Ok(None);
    }
    let mut resources: Vec<String> = iomem
        .resources()
        .iter()
        .filter(|r| iomem.name(r).starts_with(SYSTEM_RAM))
        .filter(|r| never.as_slice().iter().any(|n| n.overlaps(&r.range)))
        .map(|r| iomem.name(r).to_owned())
        .collect();
    resources.sort();
    resources.dedup();
    Ok(Some(BeyondReload {
        bytes: never.total_bytes(),
        through,
        resources,
    }))
}

/// The verdict on the loaded header, as every exporter shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct HeaderStatus {
    /// How the content is known; `None` when nothing is known (nothing loaded, or unreadable).
    pub provenance: Option<Provenance>,
    /// The content was captured or read back (true), or inferred (false).
    pub verified: bool,
    pub stale: bool,
    pub missing_bytes: u64,
    pub excess_bytes: u64,
    /// Online CPUs the header has no `PT_NOTE` for (their registers would be lost).
    pub missing_cpu_notes: Vec<u32>,
    /// Seconds since the epoch when it became stale.
    pub stale_since: Option<u64>,
    /// Who loaded the header the verdict is about, when its content is known.
    pub captured: Option<String>,
    /// Why what the header lists is not known (inferred, not vouched for); `None` when known.
    pub unknown: Option<String>,
    /// Seconds since the epoch of the first in-kernel update the kernel skipped since this
    /// header was loaded or rewritten: it is behind the RAM by what changed since.
    #[serde(default)]
    pub kernel_skipped_since: Option<u64>,
    /// What of the missing RAM no reload can bring back, and why.
    #[serde(default)]
    pub beyond_reload: Option<BeyondReload>,
}

/// Why a header is stale (`kdump_header_stale_reason{reason}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StaleReason {
    /// System RAM the header does not list.
    RamMissing,
    /// Header ranges that are no longer System RAM.
    RamExcess,
    /// An online CPU without a `PT_NOTE`.
    CpuNoteMissing,
}

impl StaleReason {
    pub const ALL: [Self; 3] = [Self::RamMissing, Self::RamExcess, Self::CpuNoteMissing];

    pub fn label(self) -> &'static str {
        match self {
            Self::RamMissing => "ram_missing",
            Self::RamExcess => "ram_excess",
            Self::CpuNoteMissing => "cpu_note_missing",
        }
    }
}

impl HeaderStatus {
    /// Whether `reason` makes it stale.
    pub fn stale_because(&self, reason: StaleReason) -> bool {
        match reason {
            StaleReason::RamMissing => self.missing_bytes > 0,
            StaleReason::RamExcess => self.excess_bytes > 0,
            StaleReason::CpuNoteMissing => !self.missing_cpu_notes.is_empty(),
        }
    }
}

/// What one judgement changed, for the caller's single log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    Unchanged,
    BecameStale,
    BecameFresh,
}

/// Judges `loaded` against the RAM in `iomem` and the online CPUs in `cpus` at `now` (seconds
/// since the epoch), keeping the moment it first went stale from `previous`. The only rule for
/// "stale". `unknown_because` says why an unvouched header could not be known better.
/// `reloader`: what would write the header of the agent's next reload.
pub fn judge(
    loaded: Option<&LoadedHeader>,
    iomem: Option<&Iomem>,
    cpus: Option<&CpuNotes>,
    previous: &HeaderStatus,
    now: u64,
    unknown_because: &str,
    reloader: Reloader,
) -> (HeaderStatus, Transition) {
    let verdict = match (loaded, iomem) {
        (Some(loaded), Some(iomem)) => loaded.diff(iomem, cpus).ok().map(|d| {
            let through = match reloader {
                Reloader::HeadersOwnLoader => Some(loaded.load),
                Reloader::Through(path) => Some(path),
                Reloader::Agent => None,
            };
            let beyond = through
                .and_then(|t| beyond_reload(Arch::RUNNING, iomem, t, &d.missing).ok())
                .flatten();
            (loaded, d, beyond)
        }),
        _ => None,
    };
    let status = match verdict {
        Some((loaded, d, beyond_reload)) => HeaderStatus {
            provenance: Some(loaded.provenance),
            verified: loaded.provenance.verified(),
            stale: d.stale(),
            missing_bytes: d.missing_bytes,
            excess_bytes: d.excess_bytes,
            stale_since: d.stale().then(|| previous.stale_since.unwrap_or(now)),
            missing_cpu_notes: d.missing_cpu_notes,
            captured: loaded.provenance.verified().then(|| loaded.origin.clone()),
            unknown: (!loaded.known()).then(|| unknown_because.to_owned()),
            kernel_skipped_since: None,
            beyond_reload,
        },
        None => HeaderStatus::default(),
    };
    let transition = match (previous.stale, status.stale) {
        (false, true) => Transition::BecameStale,
        (true, false) => Transition::BecameFresh,
        _ => Transition::Unchanged,
    };
    (status, transition)
}

#[cfg(test)]
mod tests {
    use super::*;

    const IOMEM_1G: &str = "\
00001000-0009fbff : System RAM
00100000-3ffdffff : System RAM
  2f000000-3effffff : Crash kernel
";

    fn iomem(extra: &str) -> Iomem {
        Iomem::parse(&format!("{IOMEM_1G}{extra}")).unwrap()
    }

    #[test]
    fn an_inferred_header_is_fresh_until_a_dimm_then_stale_since_the_first_time() {
        let before = iomem("");
        let h =
            LoadedHeader::inferred(&before, None, LoadPath::KexecFileLoad, "x".into(), 1).unwrap();
        let (s, t) = judge(
            Some(&h),
            Some(&before),
            None,
            &HeaderStatus::default(),
            1,
            "why",
            Reloader::HeadersOwnLoader,
        );
        assert_eq!(t, Transition::Unchanged);
        assert!(!s.stale && !s.verified && s.captured.is_none());
        assert_eq!(
            s.unknown.as_deref(),
            Some("why"),
            "an inferred header is not known"
        );
        assert_eq!(s.provenance, Some(Provenance::Inferred));
        let dimm = iomem("100000000-11fffffff : System RAM\n");
        let (s, t) = judge(
            Some(&h),
            Some(&dimm),
            None,
            &s,
            5,
            "why",
            Reloader::HeadersOwnLoader,
        );
        assert_eq!(
            (t, s.missing_bytes, s.stale_since),
            (Transition::BecameStale, 512 << 20, Some(5))
        );
        let (s, t) = judge(
            Some(&h),
            Some(&dimm),
            None,
            &s,
            9,
            "why",
            Reloader::HeadersOwnLoader,
        );
        assert_eq!((t, s.stale_since), (Transition::Unchanged, Some(5)));
        let removed = Iomem::parse("00100000-1fffffff : System RAM\n").unwrap();
        let (s, _) = judge(
            Some(&h),
            Some(&removed),
            None,
            &s,
            10,
            "why",
            Reloader::HeadersOwnLoader,
        );
        assert!(s.excess_bytes > 0 && s.missing_bytes == 0);
        let (s, t) = judge(
            Some(&h),
            Some(&before),
            None,
            &s,
            11,
            "why",
            Reloader::HeadersOwnLoader,
        );
        assert_eq!((t, s.stale_since), (Transition::BecameFresh, None));
    }

    #[test]
    fn nothing_known_is_no_verdict() {
        let before = iomem("");
        let (s, _) = judge(
            None,
            Some(&before),
            None,
            &HeaderStatus::default(),
            1,
            "why",
            Reloader::HeadersOwnLoader,
        );
        assert_eq!(s, HeaderStatus::default());
        let h = LoadedHeader::inferred(&before, None, LoadPath::KexecLoad, "x".into(), 1).unwrap();
        assert_eq!(
            judge(
                Some(&h),
                None,
                None,
                &HeaderStatus::default(),
                1,
                "why",
                Reloader::HeadersOwnLoader
            )
            .0,
            HeaderStatus::default()
        );
    }

    fn cpus(online: &[u32], present: &[u32], kernel_lists_possible: bool) -> CpuNotes {
        CpuNotes {
            present: present
                .iter()
                .map(|&cpu| crate::model::cpus::CpuNote {
                    cpu,
                    paddr: 0x3fa1_8000 + 0x4_0000 * u64::from(cpu),
                    size: 0x150,
                })
                .collect(),
            online: online.to_vec(),
            kernel_lists_possible,
        }
    }

    /// 6.1: the header lists the CPU present at the load; the CPU added and onlined since
    /// makes it stale with its own reason, the RAM still matching.
    #[test]
    fn a_cpu_onlined_after_the_load_makes_it_stale_with_its_own_reason() {
        let io = iomem("");
        let one = cpus(&[0], &[0], false);
        let h = LoadedHeader::inferred(&io, Some(&one), LoadPath::KexecFileLoad, "x".into(), 1)
            .unwrap();
        let (s, _) = judge(
            Some(&h),
            Some(&io),
            Some(&one),
            &HeaderStatus::default(),
            1,
            "",
            Reloader::HeadersOwnLoader,
        );
        assert!(!s.stale);
        let added = cpus(&[0], &[0, 1], false);
        let (s, _) = judge(
            Some(&h),
            Some(&io),
            Some(&added),
            &s,
            2,
            "",
            Reloader::HeadersOwnLoader,
        );
        assert!(!s.stale, "present but offline: it saves no registers");
        let onlined = cpus(&[0, 1], &[0, 1], false);
        let (s, t) = judge(
            Some(&h),
            Some(&io),
            Some(&onlined),
            &s,
            3,
            "",
            Reloader::HeadersOwnLoader,
        );
        assert_eq!(
            (t, s.missing_cpu_notes.as_slice()),
            (Transition::BecameStale, &[1][..])
        );
        assert!(s.stale_because(StaleReason::CpuNoteMissing));
        assert!(
            !s.stale_because(StaleReason::RamMissing) && !s.stale_because(StaleReason::RamExcess)
        );
        // The reload's header lists both.
        let reloaded =
            LoadedHeader::inferred(&io, Some(&onlined), LoadPath::KexecFileLoad, "x".into(), 4)
                .unwrap();
        let (s, t) = judge(
            Some(&reloaded),
            Some(&io),
            Some(&onlined),
            &s,
            4,
            "",
            Reloader::HeadersOwnLoader,
        );
        assert_eq!((t, s.stale), (Transition::BecameFresh, false));
    }

    /// 6.6+: kexec_file_load lists every possible CPU, kexec-tools only the configured ones.
    #[test]
    fn the_kernel_rule_decides_what_an_inferred_header_lists() {
        let io = iomem("");
        let one = cpus(&[0], &[0], true);
        let onlined = cpus(&[0, 1], &[0, 1], true);
        for (load, stale) in [
            (LoadPath::KexecFileLoad, false),
            (LoadPath::KexecLoad, true),
        ] {
            let h = LoadedHeader::inferred(&io, Some(&one), load, "x".into(), 1).unwrap();
            let (s, _) = judge(
                Some(&h),
                Some(&io),
                Some(&onlined),
                &HeaderStatus::default(),
                2,
                "",
                Reloader::HeadersOwnLoader,
            );
            assert_eq!(s.stale, stale, "{load:?}");
        }
        assert_eq!(
            ListedCpuNotes::at_load(LoadPath::KexecLoad, None),
            ListedCpuNotes::Unknown
        );
        assert_eq!(ListedCpuNotes::Unknown.missing(&onlined), Vec::<u32>::new());
    }

    /// LAB.md §8: an arm64 virt guest after a 512 MiB virtio-mem grow.
    const ARM64_IOMEM: &str = "\
40000000-7fffffff : System RAM
  6ac00000-7abfffff : Crash kernel
80000000-bfffffff : virtio1
  80000000-9fffffff : System RAM (virtio_mem)
";

    fn r(start: u64, end: u64) -> crate::model::ranges::PhysRange {
        crate::model::ranges::PhysRange::new(start, end).unwrap()
    }

    #[test]
    fn arm64_virtio_mem_ram_is_beyond_any_reload_and_says_why() {
        let io = Iomem::parse(ARM64_IOMEM).unwrap();
        let virtio = RamRanges::from_ranges([r(0x8000_0000, 0x9fff_ffff)]);
        for through in [LoadPath::KexecLoad, LoadPath::KexecFileLoad] {
            let b = beyond_reload(Arch::Aarch64, &io, through, &virtio)
                .unwrap()
                .unwrap();
            assert_eq!(
                b,
                BeyondReload {
                    bytes: 512 << 20,
                    through,
                    resources: vec!["System RAM (virtio_mem)".into()],
                }
            );
        }
        let b = beyond_reload(Arch::Aarch64, &io, LoadPath::KexecLoad, &virtio).unwrap();
        assert_eq!(
            b.unwrap().to_string(),
            "512.0 MiB of it no reload through kexec_load can bring back: that loader never lists System RAM (virtio_mem)"
        );
        // Plain System RAM missing (a header from before a DIMM): a reload lists it.
        let plain = RamRanges::from_ranges([r(0x7ac0_0000, 0x7fff_ffff)]);
        assert_eq!(
            beyond_reload(Arch::Aarch64, &io, LoadPath::KexecLoad, &plain).unwrap(),
            None
        );
        // x86_64 loaders list virtio-mem RAM: nothing is beyond a reload there.
        assert_eq!(
            beyond_reload(Arch::X86_64, &io, LoadPath::KexecLoad, &virtio).unwrap(),
            None
        );
    }

    #[test]
    fn on_this_machine_a_dimm_is_never_beyond_a_reload() {
        let before = iomem("");
        let h = LoadedHeader::inferred(&before, None, LoadPath::KexecLoad, "x".into(), 1).unwrap();
        let dimm = iomem("100000000-11fffffff : System RAM\n");
        for through in [
            Reloader::HeadersOwnLoader,
            Reloader::Through(LoadPath::KexecFileLoad),
        ] {
            let (s, _) = judge(
                Some(&h),
                Some(&dimm),
                None,
                &HeaderStatus::default(),
                2,
                "",
                through,
            );
            assert!(s.stale && s.beyond_reload.is_none(), "{through:?}");
        }
    }

    proptest::proptest! {
        /// What is beyond a reload is exactly the missing RAM its loader omits: never more
        /// than is missing, and all of it inside `System RAM (...)` lines.
        #[test]
        fn beyond_a_reload_is_the_missing_ram_the_loader_omits(
            start in 0u64..0x40, len in 1u64..0x40,
        ) {
            let io = Iomem::parse(ARM64_IOMEM).unwrap();
            let from = 0x6000_0000 + (start << 24);
            let missing = RamRanges::from_ranges([r(from, from + (len << 24) - 1)]);
            let omitted = Arch::Aarch64.omitted_by(&io, LoadPath::KexecLoad).unwrap();
            let want = omitted.intersection(&missing);
            let got = beyond_reload(Arch::Aarch64, &io, LoadPath::KexecLoad, &missing).unwrap();
            proptest::prop_assert_eq!(got.as_ref().map_or(0, |b| b.bytes), want.total_bytes());
            proptest::prop_assert!(want.total_bytes() <= missing.total_bytes());
            if let Some(b) = got {
                proptest::prop_assert_eq!(b.resources, vec!["System RAM (virtio_mem)".to_owned()]);
            }
        }
    }

    #[test]
    fn provenance_says_whether_the_content_is_known() {
        assert!(Provenance::Captured.verified() && Provenance::ReadBack.verified());
        assert!(!Provenance::Inferred.verified());
        assert_eq!(Provenance::ReadBack.as_str(), "read back");
    }
}
