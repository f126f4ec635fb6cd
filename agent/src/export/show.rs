//! `kdump-agent show`: the loaded crash header against the one the current RAM calls for,
//! range by range. Pure: built from an [`AgentState`], rendered as text or JSON.
use serde::{Deserialize, Serialize};

use crate::{
    model::{
        elfcorehdr::{LoadPath, expected_ram},
        header::Provenance,
        ranges::RamRanges,
        units::bytes,
    },
    state::AgentState,
};

/// One run of physical addresses and where it is listed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeRow {
    pub start: u64,
    /// Inclusive.
    pub end: u64,
    pub in_loaded: bool,
    pub in_expected: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShowReport {
    /// `kexec_load by kexec (pid 312)`, `in-kernel update`; `None` when nothing was captured.
    pub captured: Option<String>,
    /// Whose rules the expected header follows.
    pub load: Option<String>,
    /// How the loaded header is known; `None` when nothing is.
    #[serde(default)]
    pub provenance: Option<Provenance>,
    pub verified: bool,
    pub stale: bool,
    pub missing_bytes: u64,
    pub excess_bytes: u64,
    /// Sorted by address; empty when either side is unknown.
    pub ranges: Vec<RangeRow>,
    /// Why there is no range table.
    pub note: String,
}

fn rows(loaded: &RamRanges, expected: &RamRanges) -> Vec<RangeRow> {
    let mut out: Vec<RangeRow> = [
        (loaded.intersection(expected), true, true),
        (expected.subtract(loaded), false, true),
        (loaded.subtract(expected), true, false),
    ]
    .into_iter()
    .flat_map(|(set, in_loaded, in_expected)| {
        set.iter()
            .map(|r| RangeRow {
                start: r.start,
                end: r.end,
                in_loaded,
                in_expected,
            })
            .collect::<Vec<_>>()
    })
    .collect();
    out.sort_by_key(|r| r.start);
    out
}

impl ShowReport {
    /// Nothing known about the loaded header, and why.
    pub fn unknown(note: String) -> Self {
        ShowReport {
            captured: None,
            load: None,
            provenance: None,
            verified: false,
            stale: false,
            missing_bytes: 0,
            excess_bytes: 0,
            ranges: Vec::new(),
            note,
        }
    }

    pub fn from_state(s: &AgentState) -> Self {
        let h = s.header.status();
        let mut report = ShowReport {
            captured: h.captured.clone(),
            load: None,
            provenance: h.provenance,
            verified: h.verified,
            stale: h.stale,
            missing_bytes: h.missing_bytes,
            excess_bytes: h.excess_bytes,
            ranges: Vec::new(),
            note: String::new(),
        };
        let (Some(loaded), Some(iomem)) = (s.header.loaded(), &s.node.iomem) else {
            report.note = if !s.node.facts.crash_loaded {
                "no crash kernel is loaded".into()
            } else if s.header.loaded().is_none() {
                "the loaded header was not captured (loaded before the agent's probes ran, or \
                 without them): its ranges are unknown"
                    .into()
            } else {
                "/proc/iomem could not be read".into()
            };
            return report;
        };
        report.load = Some(loaded.load.as_str().into());
        if !loaded.provenance.verified() {
            report.note = format!("unverified: {}", loaded.origin);
        }
        match expected_ram(iomem, loaded.load) {
            Ok(expected) => report.ranges = rows(&loaded.ram, &expected),
            Err(e) => report.note = format!("expected header: {e}"),
        }
        report
    }

    pub fn to_text(&self, source_note: &str) -> String {
        let mut out = match &self.captured {
            Some(c) => format!(
                "loaded header: {} from {c}; expected: what {} would build now{source_note}\n",
                self.provenance.map_or("captured", Provenance::as_str),
                self.load
                    .as_deref()
                    .unwrap_or(LoadPath::KexecFileLoad.as_str())
            ),
            None if self.ranges.is_empty() => format!("loaded header: unknown{source_note}\n"),
            None => format!("loaded header: {}{source_note}\n", self.note),
        };
        if self.ranges.is_empty() {
            out.push_str(&format!("  {}\n", self.note));
            return out;
        }
        out.push_str(&format!(
            "  {:<18}  {:<18}  {:>10}  {:<6}  expected\n",
            "start", "end", "size", "loaded"
        ));
        let yes = |b: bool| if b { "yes" } else { "no" };
        for r in &self.ranges {
            let verdict = match (r.in_loaded, r.in_expected) {
                (false, true) => "  missing from the dump",
                (true, false) => "  excess: no longer RAM",
                _ => "",
            };
            let row = format!(
                "  {:#018x}  {:#018x}  {:>10}  {:<6}  {:<8}{verdict}",
                r.start,
                r.end,
                bytes(r.end - r.start + 1),
                yes(r.in_loaded),
                yes(r.in_expected)
            );
            out.push_str(row.trim_end());
            out.push('\n');
        }
        out.push_str(&format!(
            "  {}: {} missing, {} excess\n",
            if self.stale { "stale" } else { "current" },
            bytes(self.missing_bytes),
            bytes(self.excess_bytes)
        ));
        out
    }

    /// 0 when the header is known and current, 3 (as `status`) otherwise.
    pub fn exit_code(&self) -> i32 {
        if self.verified && !self.stale {
            0
        } else {
            crate::export::status::EXIT_NOT_READY
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ranges::tests::set;

    #[test]
    fn rows_split_into_shared_missing_and_excess_in_address_order() {
        let loaded = set(&[
            (0x1000, 0x9fbff),
            (0x100000, 0x3fffffff),
            (0x1_4000_0000, 0x1_4fff_ffff),
        ]);
        let expected = set(&[
            (0x1000, 0x9fbff),
            (0x100000, 0x3fffffff),
            (0x1_0000_0000, 0x1_1fff_ffff),
        ]);
        let r = rows(&loaded, &expected);
        let flags: Vec<(u64, bool, bool)> = r
            .iter()
            .map(|r| (r.start, r.in_loaded, r.in_expected))
            .collect();
        assert_eq!(
            flags,
            [
                (0x1000, true, true),
                (0x100000, true, true),
                (0x1_0000_0000, false, true),
                (0x1_4000_0000, true, false)
            ]
        );
        let report = ShowReport {
            captured: Some("kexec_load by kexec (pid 9)".into()),
            load: Some("kexec_load".into()),
            provenance: Some(Provenance::Captured),
            verified: true,
            stale: true,
            missing_bytes: 512 << 20,
            excess_bytes: 256 << 20,
            ranges: r,
            note: String::new(),
        };
        let text = report.to_text("");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "loaded header: captured from kexec_load by kexec (pid 9); expected: what kexec_load would build now"
        );
        assert_eq!(
            lines[4],
            "  0x0000000100000000  0x000000011fffffff   512.0 MiB  no      yes       missing from the dump"
        );
        assert!(lines[5].ends_with("excess: no longer RAM"), "{text}");
        assert_eq!(lines[6], "  stale: 512.0 MiB missing, 256.0 MiB excess");
        // Columns line up (the "expected" column starts at the same place) and no line ends in spaces.
        assert!(
            lines[1..6]
                .iter()
                .all(|l| &l[62..65] == "yes" || &l[62..65] == "no " || &l[62..70] == "expected"),
            "{text}"
        );
        assert!(lines.iter().all(|l| !l.ends_with(' ')), "{text}");
        assert_eq!(report.exit_code(), 3);
        let back = ShowReport {
            provenance: Some(Provenance::ReadBack),
            captured: Some("the crash reservation at 0x2e000000, read in 300 ms".into()),
            ..report
        };
        assert!(
            back.to_text("")
                .starts_with("loaded header: read back from the crash reservation at 0x2e000000"),
            "{}",
            back.to_text("")
        );
    }

    #[test]
    fn without_a_capture_it_says_why() {
        let mut s = AgentState::new(crate::sys::node::NodeState::new(
            "6.1".into(),
            vec![],
            String::new(),
        ));
        s.node.facts.crash_loaded = true;
        let r = ShowReport::from_state(&s);
        assert!(r.ranges.is_empty());
        assert!(
            r.note.starts_with("the loaded header was not captured"),
            "{}",
            r.note
        );
        assert!(r.to_text("").starts_with("loaded header: unknown\n"));
        assert_eq!(r.exit_code(), 3);
    }
}
