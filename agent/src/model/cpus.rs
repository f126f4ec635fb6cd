//! The CPUs a crash header must name: each online CPU saves its registers into its own
//! `crash_notes` buffer at a crash, and the dump keeps them only if the header has a `PT_NOTE`
//! at that buffer. Pure: the sysfs text comes in, no I/O.
use serde::Serialize;

use crate::model::elfcorehdr::NoteRegion;

/// A CPU's crash note buffer (`/sys/devices/system/cpu/cpuN/crash_notes` and `crash_notes_size`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct CpuNote {
    pub cpu: u32,
    pub paddr: u64,
    pub size: u64,
}

impl CpuNote {
    pub fn region(&self) -> NoteRegion {
        NoteRegion {
            paddr: self.paddr,
            size: self.size,
        }
    }
}

/// What the node says about its CPUs, as the header judge needs it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CpuNotes {
    /// Every present CPU's note buffer, in CPU order (what a loader lists before 6.6).
    pub present: Vec<CpuNote>,
    /// `/sys/devices/system/cpu/online`: the CPUs whose registers a crash saves.
    pub online: Vec<u32>,
    /// The kernel's `kexec_file_load` lists every possible CPU (>= 6.6), not only the present ones.
    pub kernel_lists_possible: bool,
}

impl CpuNotes {
    /// The note buffers a correct header must list now: one per online CPU.
    pub fn expected(&self) -> impl Iterator<Item = CpuNote> + '_ {
        self.present
            .iter()
            .filter(|n| self.online.contains(&n.cpu))
            .copied()
    }

    /// Online CPUs without a note buffer: sysfs lists them online but not present (never seen
    /// on a sane kernel; reported rather than assumed covered).
    pub fn online_without_note(&self) -> impl Iterator<Item = u32> + '_ {
        self.online
            .iter()
            .filter(|c| !self.present.iter().any(|n| n.cpu == **c))
            .copied()
    }
}

/// The kernel's `NR_CPUS` ceiling; a longer list is not a real kernel's.
const MAX_CPUS: u32 = 8192;

/// A kernel CPU list such as `0-3,8,10-11` (`/sys/devices/system/cpu/{possible,present,online}`).
pub fn parse_cpu_list(text: &str) -> Result<Vec<u32>, String> {
    let text = text.trim();
    let mut cpus: Vec<u32> = Vec::new();
    for part in text.split(',') {
        let num = |s: &str| {
            s.parse::<u32>()
                .map_err(|_| format!("{s:?} in CPU list {text:?} is not a CPU number"))
        };
        let (lo, hi) = match part.split_once('-') {
            Some((lo, hi)) => (num(lo)?, num(hi)?),
            None => (num(part)?, num(part)?),
        };
        if lo > hi || hi >= MAX_CPUS || cpus.last().is_some_and(|&prev| lo <= prev) {
            return Err(format!(
                "CPU range {part:?} is reversed, out of order or beyond {MAX_CPUS} CPUs"
            ));
        }
        cpus.extend(lo..=hi);
    }
    Ok(cpus)
}

/// Whether this kernel release's `crash_prepare_elf64_headers` lists every possible CPU
/// (`for_each_possible_cpu`, since 6.6) rather than the present ones (`for_each_present_cpu`).
pub fn kernel_lists_possible_cpus(release: &str) -> bool {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next().and_then(|p| p.parse::<u32>().ok());
    let minor = parts.next().and_then(|p| p.parse::<u32>().ok());
    matches!((major, minor), (Some(major), Some(minor)) if (major, minor) >= (6, 6))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn cpu_lists_parse_as_the_kernel_prints_them() {
        assert_eq!(parse_cpu_list("0\n").unwrap(), [0]);
        assert_eq!(parse_cpu_list("0-1").unwrap(), [0, 1]);
        assert_eq!(parse_cpu_list("0-2,5,7-8").unwrap(), [0, 1, 2, 5, 7, 8]);
        for bad in [
            "",
            "x",
            "1-",
            "3-1",
            "2,1",
            "0-100000",
            "0-4294967295",
            "1,1",
        ] {
            assert!(parse_cpu_list(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn possible_cpus_from_6_6_on() {
        assert!(!kernel_lists_possible_cpus("6.1.0-47-amd64"));
        assert!(!kernel_lists_possible_cpus("6.5.13"));
        assert!(kernel_lists_possible_cpus("6.6.0"));
        assert!(kernel_lists_possible_cpus("6.12.117+deb13-amd64"));
        assert!(kernel_lists_possible_cpus("7.2.13+deb14-amd64"));
        assert!(!kernel_lists_possible_cpus("unknown"));
    }

    #[test]
    fn only_online_cpus_are_expected() {
        let note = |cpu| CpuNote {
            cpu,
            paddr: 0x1000 * u64::from(cpu + 1),
            size: 0x150,
        };
        let cpus = CpuNotes {
            present: vec![note(0), note(1)],
            online: vec![0, 2],
            kernel_lists_possible: false,
        };
        assert_eq!(cpus.expected().collect::<Vec<_>>(), [note(0)]);
        assert_eq!(cpus.online_without_note().collect::<Vec<_>>(), [2]);
    }

    proptest! {
        /// Printing a sorted set of CPUs the kernel's way and parsing it back is the identity.
        #[test]
        fn printed_lists_parse_back(set in proptest::collection::btree_set(0u32..300, 1..40)) {
            let cpus: Vec<u32> = set.into_iter().collect();
            let mut parts = Vec::new();
            let mut i = 0;
            while i < cpus.len() {
                let mut j = i;
                while j + 1 < cpus.len() && cpus[j + 1] == cpus[j] + 1 {
                    j += 1;
                }
                parts.push(if i == j { cpus[i].to_string() } else { format!("{}-{}", cpus[i], cpus[j]) });
                i = j + 1;
            }
            prop_assert_eq!(parse_cpu_list(&parts.join(",")).unwrap(), cpus);
        }
    }
}
