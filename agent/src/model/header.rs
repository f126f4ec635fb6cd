//! The loaded crash header as the agent knows it, and the one judgement of it against the RAM.
//!
//! Pure. [`judge`] is the only place that decides whether the loaded header is stale; every
//! path (start-up, rescans, after a load, after an in-kernel update) goes through it.
use serde::{Deserialize, Serialize};

use crate::model::{
    elfcorehdr::{ElfCoreHeader, HeaderDiff, HeaderError, LoadPath, diff, expected_ram},
    events::{CapturedHeader, HeaderSource},
    iomem::Iomem,
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

/// The crash header the kernel holds, as far as the agent knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadedHeader {
    /// Its RAM `PT_LOAD`s.
    pub ram: RamRanges,
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
        Ok(Self {
            ram: ElfCoreHeader::parse(&c.bytes)
                .map_err(HeaderCaptureError::Parse)?
                .ram_ranges(),
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

    /// The header read back from the crash reservation at `phys_addr`.
    pub fn read_back(header: &ElfCoreHeader, phys_addr: u64, millis: f64, now: u64) -> Self {
        let ram = header.ram_ranges();
        Self {
            load: LoadPath::infer(&ram),
            ram,
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

    /// The header `load` would build for `iomem`: what a load the agent did not capture most
    /// likely holds.
    pub fn inferred(
        iomem: &Iomem,
        load: LoadPath,
        origin: String,
        now: u64,
    ) -> Result<Self, CapacityExceeded> {
        Ok(Self {
            ram: expected_ram(iomem, load)?,
            load,
            provenance: Provenance::Inferred,
            origin,
            at: now,
            own_load: false,
        })
    }

    /// How it differs from the header its loader would build for `iomem` now.
    pub fn diff(&self, iomem: &Iomem) -> Result<HeaderDiff, CapacityExceeded> {
        Ok(diff(&expected_ram(iomem, self.load)?, &self.ram))
    }
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
}

/// What one judgement changed, for the caller's single log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    Unchanged,
    BecameStale,
    BecameFresh,
}

/// Judges `loaded` against the RAM in `iomem` at `now` (seconds since the epoch), keeping the
/// moment it first went stale from `previous`. The only rule for "stale". `unknown_because`
/// says why an unvouched header could not be known better.
pub fn judge(
    loaded: Option<&LoadedHeader>,
    iomem: Option<&Iomem>,
    previous: &HeaderStatus,
    now: u64,
    unknown_because: &str,
) -> (HeaderStatus, Transition) {
    let verdict = match (loaded, iomem) {
        (Some(loaded), Some(iomem)) => loaded.diff(iomem).ok().map(|d| (loaded, d)),
        _ => None,
    };
    let status = match verdict {
        Some((loaded, d)) => HeaderStatus {
            provenance: Some(loaded.provenance),
            verified: loaded.provenance.verified(),
            stale: d.stale(),
            missing_bytes: d.missing_bytes,
            excess_bytes: d.excess_bytes,
            stale_since: d.stale().then(|| previous.stale_since.unwrap_or(now)),
            captured: loaded.provenance.verified().then(|| loaded.origin.clone()),
            unknown: (!loaded.known()).then(|| unknown_because.to_owned()),
            kernel_skipped_since: None,
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
        let h = LoadedHeader::inferred(&before, LoadPath::KexecFileLoad, "x".into(), 1).unwrap();
        let (s, t) = judge(Some(&h), Some(&before), &HeaderStatus::default(), 1, "why");
        assert_eq!(t, Transition::Unchanged);
        assert!(!s.stale && !s.verified && s.captured.is_none());
        assert_eq!(
            s.unknown.as_deref(),
            Some("why"),
            "an inferred header is not known"
        );
        assert_eq!(s.provenance, Some(Provenance::Inferred));
        let dimm = iomem("100000000-11fffffff : System RAM\n");
        let (s, t) = judge(Some(&h), Some(&dimm), &s, 5, "why");
        assert_eq!(
            (t, s.missing_bytes, s.stale_since),
            (Transition::BecameStale, 512 << 20, Some(5))
        );
        let (s, t) = judge(Some(&h), Some(&dimm), &s, 9, "why");
        assert_eq!((t, s.stale_since), (Transition::Unchanged, Some(5)));
        let removed = Iomem::parse("00100000-1fffffff : System RAM\n").unwrap();
        let (s, _) = judge(Some(&h), Some(&removed), &s, 10, "why");
        assert!(s.excess_bytes > 0 && s.missing_bytes == 0);
        let (s, t) = judge(Some(&h), Some(&before), &s, 11, "why");
        assert_eq!((t, s.stale_since), (Transition::BecameFresh, None));
    }

    #[test]
    fn nothing_known_is_no_verdict() {
        let before = iomem("");
        let (s, _) = judge(None, Some(&before), &HeaderStatus::default(), 1, "why");
        assert_eq!(s, HeaderStatus::default());
        let h = LoadedHeader::inferred(&before, LoadPath::KexecLoad, "x".into(), 1).unwrap();
        assert_eq!(
            judge(Some(&h), None, &HeaderStatus::default(), 1, "why").0,
            HeaderStatus::default()
        );
    }

    #[test]
    fn provenance_says_whether_the_content_is_known() {
        assert!(Provenance::Captured.verified() && Provenance::ReadBack.verified());
        assert!(!Provenance::Inferred.verified());
        assert_eq!(Provenance::ReadBack.as_str(), "read back");
    }
}
