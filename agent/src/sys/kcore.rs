//! Reads the elfcorehdr the kernel holds now back from the crash reservation through
//! `PROCFS/kcore`, so an agent that starts after the load knows it exactly. Thin: the map from
//! physical pages to file offsets and the choice between candidates are in
//! [`crate::model::elfcorehdr::readback`].
use std::{
    fs::File,
    io,
    os::unix::fs::FileExt as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use crate::{
    model::{
        elfcorehdr::{
            ElfCoreHeader, KernelText,
            readback::{
                self, Candidate, ChooseError, KcoreError, KcoreMap, PAGE_HEAD, Skipped, Unmapped,
            },
        },
        iomem::Iomem,
        ranges::PhysRange,
    },
    sys::{procfs::Procfs, sysfs::Sysfs},
};

/// The header read back, where it was, and what the read cost.
#[derive(Clone, Debug)]
pub struct ReadBack {
    /// The ELF header and program headers, as the kernel holds them.
    pub bytes: Vec<u8>,
    pub header: ElfCoreHeader,
    pub phys_addr: u64,
    /// The reservation it was found in.
    pub reservation: PhysRange,
    /// `ET_CORE` page heads seen in every reservation.
    pub candidates: usize,
    /// Other addresses holding a header with the same RAM.
    pub duplicates: Vec<u64>,
    /// Candidates that did not parse, and why.
    pub skipped: Vec<Skipped>,
    pub pages_scanned: u64,
    /// From opening kcore to the last byte read.
    pub elapsed: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ReadBackError {
    #[error("{}: no \"Crash kernel\" reservation (boot with crashkernel=)", .0.display())]
    NoReservation(PathBuf),
    #[error("{}: not found: the kernel has no /proc/kcore (CONFIG_PROC_KCORE unset)", .0.display())]
    NoKcore(PathBuf),
    #[error("{}: {cause}: {hint}", path.display())]
    Denied {
        path: PathBuf,
        cause: io::Error,
        hint: String,
    },
    #[error("{}: {what}: {cause}", path.display())]
    Io {
        path: PathBuf,
        what: String,
        cause: io::Error,
    },
    #[error("{}: {cause}", path.display())]
    Layout { path: PathBuf, cause: KcoreError },
    #[error("{}: {cause}", path.display())]
    Unmapped { path: PathBuf, cause: Unmapped },
    #[error("{}: {cause}", path.display())]
    Choose { path: PathBuf, cause: ChooseError },
}

/// Reads the loaded header from every `Crash kernel` reservation in `iomem`: the first
/// [`PAGE_HEAD`] bytes of each page through kcore's direct map, then each `ET_CORE`
/// candidate's program headers. Needs CAP_SYS_RAWIO, and lockdown below confidentiality.
pub fn read_back(procfs: &Procfs, sysfs: &Sysfs, iomem: &Iomem) -> Result<ReadBack, ReadBackError> {
    let reservations = iomem.crash_reservations();
    if reservations.is_empty() {
        return Err(ReadBackError::NoReservation(procfs.path("iomem")));
    }
    let started = Instant::now();
    let (kcore, map, path) = open_map(procfs, sysfs)?;
    let io = io_error(&path);
    let mut head = [0u8; PAGE_HEAD];
    let mut candidates = Vec::new();
    let mut pages_scanned = 0;
    for reservation in &reservations {
        let pages = map
            .pages(*reservation)
            .map_err(|cause| ReadBackError::Unmapped {
                path: path.clone(),
                cause,
            })?;
        for page in pages {
            pages_scanned += 1;
            kcore
                .read_exact_at(&mut head, page.offset)
                .map_err(io(format!("reading physical {:#x}", page.paddr)))?;
            if !readback::is_core_head(&head) {
                continue;
            }
            candidates.push(candidate(&kcore, &map, page.paddr, &head, &path)?);
        }
    }
    let found = readback::choose(candidates).map_err(|cause| ReadBackError::Choose {
        path: path.clone(),
        cause,
    })?;
    let reservation = reservations
        .iter()
        .copied()
        .find(|r| r.contains(found.paddr))
        .unwrap_or(reservations[0]);
    Ok(ReadBack {
        bytes: found.bytes,
        header: found.header,
        phys_addr: found.paddr,
        reservation,
        candidates: found.candidates,
        duplicates: found.duplicates,
        skipped: found.skipped,
        pages_scanned,
        elapsed: started.elapsed(),
    })
}

/// A maker of read errors on `path`: given what was being read, the `map_err` for it.
fn io_error(
    path: &Path,
) -> impl Fn(String) -> Box<dyn FnOnce(std::io::Error) -> ReadBackError> + use<> {
    let path = path.to_path_buf();
    move |what| {
        let path = path.clone();
        Box::new(move |cause| ReadBackError::Io { path, what, cause })
    }
}

/// `/proc/kcore` opened, and its physical-to-file map.
fn open_map(procfs: &Procfs, sysfs: &Sysfs) -> Result<(File, KcoreMap, PathBuf), ReadBackError> {
    let path = procfs.path("kcore");
    let kcore = open(&path, sysfs)?;
    let io = io_error(&path);
    let mut head = [0u8; PAGE_HEAD];
    kcore
        .read_exact_at(&mut head, 0)
        .map_err(io("reading its ELF header".into()))?;
    let layout = |cause| ReadBackError::Layout {
        path: path.clone(),
        cause,
    };
    let span = readback::header_span(&head).map_err(layout)?;
    let mut table = vec![0u8; span];
    kcore
        .read_exact_at(&mut table, 0)
        .map_err(io(format!("reading {span} bytes of program headers")))?;
    let map = KcoreMap::parse(&table).map_err(layout)?;
    Ok((kcore, map, path))
}

/// What kcore says of the running kernel's mappings, for a header of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelMappings {
    /// `__va(0)`: what a header's RAM `p_vaddr`s are shifted by (arm64 randomises the linear
    /// map, so no constant will do).
    pub direct_map_offset: u64,
    /// The kernel-text segment (kallsyms lacks `_end` without `CONFIG_KALLSYMS_ALL`, as on
    /// Debian's arm64 6.1).
    pub kernel_text: KernelText,
}

pub fn kernel_mappings(procfs: &Procfs, sysfs: &Sysfs) -> Result<KernelMappings, String> {
    let (_, map, path) = open_map(procfs, sysfs).map_err(|e| e.to_string())?;
    let missing = |what| format!("{}: no {what} PT_LOAD", path.display());
    Ok(KernelMappings {
        direct_map_offset: map
            .direct_map_offset()
            .ok_or_else(|| missing("direct-map"))?,
        kernel_text: map.kernel_text().ok_or_else(|| missing("kernel-text"))?,
    })
}

/// The whole header at an `ET_CORE` page head; a span past kcore's map is kept short, so
/// [`readback::choose`] skips it as truncated.
fn candidate(
    kcore: &File,
    map: &KcoreMap,
    paddr: u64,
    head: &[u8],
    path: &Path,
) -> Result<Candidate, ReadBackError> {
    let Ok(span) = readback::header_span(head) else {
        return Ok(Candidate {
            paddr,
            bytes: head.to_vec(),
        });
    };
    let Some(offset) = map.offset_of(paddr, span as u64) else {
        return Ok(Candidate {
            paddr,
            bytes: head.to_vec(),
        });
    };
    let mut bytes = vec![0u8; span];
    kcore
        .read_exact_at(&mut bytes, offset)
        .map_err(|cause| ReadBackError::Io {
            path: path.to_path_buf(),
            what: format!("reading {span} bytes of the header at physical {paddr:#x}"),
            cause,
        })?;
    Ok(Candidate { paddr, bytes })
}

fn open(path: &Path, sysfs: &Sysfs) -> Result<File, ReadBackError> {
    File::open(path).map_err(|cause| match cause.kind() {
        io::ErrorKind::NotFound => ReadBackError::NoKcore(path.to_path_buf()),
        io::ErrorKind::PermissionDenied => ReadBackError::Denied {
            path: path.to_path_buf(),
            cause,
            hint: denied_hint(sysfs),
        },
        _ => ReadBackError::Io {
            path: path.to_path_buf(),
            what: "opening".into(),
            cause,
        },
    })
}

/// Why kcore refused to open: lockdown's confidentiality mode, else a missing CAP_SYS_RAWIO.
fn denied_hint(sysfs: &Sysfs) -> String {
    let lockdown = sysfs.path("kernel/security/lockdown");
    match std::fs::read_to_string(&lockdown) {
        Ok(text) => {
            let mode = lockdown_mode(&text).unwrap_or("unknown");
            if mode == "confidentiality" {
                format!(
                    "kernel lockdown is in confidentiality mode ({}), which forbids /proc/kcore",
                    lockdown.display()
                )
            } else {
                format!(
                    "needs CAP_SYS_RAWIO (run as root); lockdown is {mode} ({}), which allows it",
                    lockdown.display()
                )
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => format!(
            "needs CAP_SYS_RAWIO (run as root); {} is absent, so no lockdown forbids it",
            lockdown.display()
        ),
        Err(_) => format!(
            "needs CAP_SYS_RAWIO (run as root); {} unreadable, so lockdown is unknown",
            lockdown.display()
        ),
    }
}

/// The bracketed mode of `none [integrity] confidentiality`.
fn lockdown_mode(text: &str) -> Option<&str> {
    text.split_ascii_whitespace()
        .find_map(|w| w.strip_prefix('[')?.strip_suffix(']'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lockdown_mode_is_the_bracketed_word() {
        assert_eq!(
            lockdown_mode("none [integrity] confidentiality\n"),
            Some("integrity")
        );
        assert_eq!(
            lockdown_mode("[none] integrity confidentiality"),
            Some("none")
        );
        assert_eq!(lockdown_mode(""), None);
    }

    #[test]
    fn errors_name_the_file_and_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let procfs = Procfs::new(dir.path());
        let sysfs = Sysfs::new(dir.path());
        let none = Iomem::parse("00100000-7ffdffff : System RAM\n").unwrap();
        let e = read_back(&procfs, &sysfs, &none).unwrap_err().to_string();
        assert!(e.contains("iomem: no \"Crash kernel\""), "{e}");
        let iomem =
            Iomem::parse("00100000-7ffdffff : System RAM\n  6f000000-7effffff : Crash kernel\n")
                .unwrap();
        let e = read_back(&procfs, &sysfs, &iomem).unwrap_err().to_string();
        assert!(
            e.contains("kcore: not found") && e.contains("CONFIG_PROC_KCORE"),
            "{e}"
        );
    }

    /// A kcore file whose one direct-map PT_LOAD holds a 16 MiB reservation at file offset
    /// 0x10000, with crash headers written at `headers` (physical address, RAM).
    fn fake_kcore(dir: &Path, headers: &[(u64, &[PhysRange])]) -> Iomem {
        use crate::model::elfcorehdr::{HeaderInputs, NoteRegion, build};
        use goblin::elf64::{header::Header, program_header::ProgramHeader};
        use scroll::Pwrite as _;
        let (base, size, data) = (0x6f00_0000u64, 16u64 << 20, 0x1_0000u64);
        let mut table = vec![0u8; 64 + 56];
        let mut e_ident = [0u8; 16];
        e_ident[..4].copy_from_slice(b"\x7fELF");
        (e_ident[4], e_ident[5]) = (2, 1);
        let h = Header {
            e_ident,
            e_type: goblin::elf::header::ET_CORE,
            e_phoff: 64,
            e_phentsize: 56,
            e_phnum: 1,
            ..Header::default()
        };
        table.pwrite_with(h, 0, scroll::LE).unwrap();
        let p = ProgramHeader {
            p_type: goblin::elf::program_header::PT_LOAD,
            p_paddr: base,
            p_memsz: size,
            p_offset: data,
            ..ProgramHeader::default()
        };
        table.pwrite_with(p, 64, scroll::LE).unwrap();
        let file = File::create(dir.join("kcore")).unwrap();
        file.set_len(data + size).unwrap();
        file.write_all_at(&table, 0).unwrap();
        for (paddr, ram) in headers {
            let bytes = build(&HeaderInputs {
                arch: crate::model::elfcorehdr::Arch::X86_64,
                cpu_notes: &[NoteRegion {
                    paddr: 0x1000,
                    size: 0x150,
                }],
                vmcoreinfo: NoteRegion {
                    paddr: 0x2000,
                    size: 1024,
                },
                kernel_text: None,
                ram,
                page_offset: 0xffff_8880_0000_0000,
            })
            .unwrap();
            file.write_all_at(&bytes, data + paddr - base).unwrap();
        }
        Iomem::parse("00100000-7ffdffff : System RAM\n  6f000000-6fffffff : Crash kernel\n")
            .unwrap()
    }

    #[test]
    fn reads_the_header_from_a_kcore_file() {
        let dir = tempfile::tempdir().unwrap();
        let ram = [PhysRange::new(0x10_0000, 0x6eff_ffff).unwrap()];
        let iomem = fake_kcore(dir.path(), &[(0x6f00_0000, &ram), (0x6ff0_0000, &ram)]);
        let back = read_back(&Procfs::new(dir.path()), &Sysfs::new(dir.path()), &iomem).unwrap();
        assert_eq!(back.phys_addr, 0x6f00_0000);
        assert_eq!(back.header.ram_ranges().as_slice(), &ram);
        assert_eq!(
            (back.candidates, back.duplicates.clone()),
            (2, vec![0x6ff0_0000])
        );
        assert_eq!(back.pages_scanned, 4096);
        assert_eq!(back.bytes.len(), 64 + 3 * 56);
    }

    #[test]
    fn a_stale_header_that_differs_is_ambiguous() {
        let dir = tempfile::tempdir().unwrap();
        let new = [PhysRange::new(0x10_0000, 0x6eff_ffff).unwrap()];
        let old = [PhysRange::new(0x1000, 0x9_ffff).unwrap(), new[0]];
        let iomem = fake_kcore(dir.path(), &[(0x6f00_0000, &new), (0x6ff0_0000, &old)]);
        let e = read_back(&Procfs::new(dir.path()), &Sysfs::new(dir.path()), &iomem)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("kcore: AMBIGUOUS") && e.contains("0x6f000000, 0x6ff00000"),
            "{e}"
        );
    }
}
