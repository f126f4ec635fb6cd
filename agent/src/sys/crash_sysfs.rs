//! The crash-dump files in sysfs that the header builder and the judge need: per-CPU crash
//! note buffers, the online CPUs and the vmcoreinfo note. Thin: read, parse one value, name
//! the file in every error. None of these files takes the kexec lock.
use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, anyhow, bail};

use crate::model::{
    cpus::{CpuNote, CpuNotes, parse_cpu_list},
    elfcorehdr::NoteRegion,
};

/// Crash note buffers of the possible CPUs that sysfs shows.
#[derive(Debug)]
pub struct CpuCrashNotes {
    pub notes: Vec<NoteRegion>,
    /// Possible CPUs without a sysfs directory (not present): the kernel lists their notes
    /// but their addresses cannot be read from user space.
    pub unreadable: Vec<u32>,
}

/// `SYSFS/devices/system/cpu/possible` and each `cpuN/crash_notes` (hex physical address) and
/// `cpuN/crash_notes_size` (decimal bytes).
pub fn read_cpu_crash_notes(sysfs: &Path) -> Result<CpuCrashNotes> {
    let cpu_dir = sysfs.join("devices/system/cpu");
    let possible_path = cpu_dir.join("possible");
    let possible = read_trimmed(&possible_path)?;
    let cpus =
        parse_cpu_list(&possible).map_err(|e| anyhow!("{}: {e}", possible_path.display()))?;
    let mut notes = Vec::with_capacity(cpus.len());
    let mut unreadable = Vec::new();
    for cpu in cpus {
        let dir = cpu_dir.join(format!("cpu{cpu}"));
        if !dir.is_dir() {
            unreadable.push(cpu);
            continue;
        }
        let addr_path = dir.join("crash_notes");
        if !addr_path.exists() {
            bail!(
                "{}: not found: this kernel exports no crash notes (built without \
                 CONFIG_CRASH_DUMP?), so there is no header to build",
                addr_path.display()
            );
        }
        let paddr = parse_number(&addr_path, 16)?;
        let size = parse_number(&dir.join("crash_notes_size"), 10)?;
        notes.push(NoteRegion { paddr, size });
    }
    Ok(CpuCrashNotes { notes, unreadable })
}

/// The present CPUs' crash note buffers (`SYSFS/devices/system/cpu/present`, each `cpuN`'s)
/// and the online CPUs, for the judge; `None` when the kernel exports no crash notes (no
/// `CONFIG_CRASH_DUMP`) or sysfs shows no CPUs.
pub fn read_cpu_notes(sysfs: &Path, kernel_lists_possible: bool) -> Result<Option<CpuNotes>> {
    let cpu_dir = sysfs.join("devices/system/cpu");
    let list = |name: &str| -> Result<Vec<u32>> {
        let path = cpu_dir.join(name);
        parse_cpu_list(&read_trimmed(&path)?).map_err(|e| anyhow!("{}: {e}", path.display()))
    };
    if !cpu_dir.join("present").exists() {
        return Ok(None);
    }
    let (present, online) = (list("present")?, list("online")?);
    let mut notes = Vec::with_capacity(present.len());
    for cpu in present {
        let dir = cpu_dir.join(format!("cpu{cpu}"));
        let addr_path = dir.join("crash_notes");
        if !addr_path.exists() {
            if notes.is_empty() {
                return Ok(None);
            }
            // Marked present a moment before its device is registered (a hot-add under way).
            continue;
        }
        let paddr = parse_number(&addr_path, 16)?;
        let size = parse_number(&dir.join("crash_notes_size"), 10)?;
        notes.push(CpuNote { cpu, paddr, size });
    }
    Ok(Some(CpuNotes {
        present: notes,
        online,
        kernel_lists_possible,
    }))
}

/// `SYSFS/kernel/vmcoreinfo`: "ADDR SIZE", both hex (`%pa %x`).
pub fn read_vmcoreinfo(sysfs: &Path) -> Result<NoteRegion> {
    let path = sysfs.join("kernel/vmcoreinfo");
    let text = read_trimmed(&path)?;
    let bad = || {
        anyhow!(
            "{}: expected \"ADDR SIZE\" in hex, found {text:?}",
            path.display()
        )
    };
    let (addr, size) = text.split_once(' ').ok_or_else(bad)?;
    let hex = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).map_err(|_| bad());
    Ok(NoteRegion {
        paddr: hex(addr)?,
        size: hex(size)?,
    })
}

fn read_trimmed(path: &PathBuf) -> Result<String> {
    let text = fs::read_to_string(path).with_context(|| path.display().to_string())?;
    Ok(text.trim().to_owned())
}

fn parse_number(path: &PathBuf, radix: u32) -> Result<u64> {
    let text = read_trimmed(path)?;
    let digits = if radix == 16 {
        text.trim_start_matches("0x")
    } else {
        &text
    };
    u64::from_str_radix(digits, radix).map_err(|_| {
        let kind = if radix == 16 {
            "hexadecimal"
        } else {
            "decimal"
        };
        anyhow!("{}: {text:?} is not a {kind} number", path.display())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, rel: &str, text: &str) {
        let path = dir.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }

    #[test]
    fn reads_present_cpus_and_names_the_absent_ones() {
        let sys = tempfile::tempdir().unwrap();
        let sys = sys.path();
        write(sys, "devices/system/cpu/possible", "0-3\n");
        for (cpu, addr) in [(0, "2ec1e9c0"), (1, "2ec5e9c0")] {
            write(
                sys,
                &format!("devices/system/cpu/cpu{cpu}/crash_notes"),
                &format!("{addr}\n"),
            );
            write(
                sys,
                &format!("devices/system/cpu/cpu{cpu}/crash_notes_size"),
                "336\n",
            );
        }
        write(sys, "kernel/vmcoreinfo", "0x000000001a9e9000 1024\n");
        let notes = read_cpu_crash_notes(sys).unwrap();
        assert_eq!(
            notes.notes,
            vec![
                NoteRegion {
                    paddr: 0x2ec1_e9c0,
                    size: 336
                },
                NoteRegion {
                    paddr: 0x2ec5_e9c0,
                    size: 336
                }
            ]
        );
        assert_eq!(notes.unreadable, vec![2, 3]);
        assert_eq!(
            read_vmcoreinfo(sys).unwrap(),
            NoteRegion {
                paddr: 0x1a9e_9000,
                size: 0x1024
            }
        );

        write(sys, "devices/system/cpu/cpu1/crash_notes_size", "lots\n");
        let err = read_cpu_crash_notes(sys).unwrap_err().to_string();
        assert!(
            err.ends_with("cpu1/crash_notes_size: \"lots\" is not a decimal number"),
            "{err}"
        );
        fs::remove_file(sys.join("devices/system/cpu/cpu0/crash_notes")).unwrap();
        let err = read_cpu_crash_notes(sys).unwrap_err().to_string();
        assert!(err.contains("CONFIG_CRASH_DUMP"), "{err}");
    }

    #[test]
    fn the_judge_reads_present_and_online_cpus() {
        let sys = tempfile::tempdir().unwrap();
        let sys = sys.path();
        write(sys, "devices/system/cpu/present", "0-1\n");
        write(sys, "devices/system/cpu/online", "0\n");
        for (cpu, addr) in [(0, "3fa18000"), (1, "3fa58000")] {
            write(
                sys,
                &format!("devices/system/cpu/cpu{cpu}/crash_notes"),
                addr,
            );
            write(
                sys,
                &format!("devices/system/cpu/cpu{cpu}/crash_notes_size"),
                "336\n",
            );
        }
        let c = read_cpu_notes(sys, false).unwrap().unwrap();
        assert_eq!(c.online, [0]);
        assert_eq!(
            c.present,
            [
                CpuNote {
                    cpu: 0,
                    paddr: 0x3fa1_8000,
                    size: 336
                },
                CpuNote {
                    cpu: 1,
                    paddr: 0x3fa5_8000,
                    size: 336
                },
            ]
        );
        write(sys, "devices/system/cpu/online", "0-x\n");
        let err = read_cpu_notes(sys, false).unwrap_err().to_string();
        assert!(
            err.contains("devices/system/cpu/online: \"x\" in CPU list"),
            "{err}"
        );
        write(sys, "devices/system/cpu/online", "0\n");
        fs::remove_file(sys.join("devices/system/cpu/cpu0/crash_notes")).unwrap();
        assert!(
            read_cpu_notes(sys, false).unwrap().is_none(),
            "no CONFIG_CRASH_DUMP"
        );
    }
}
