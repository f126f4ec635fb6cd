//! `kdump-agent header`: build the header this machine's kernel would build, parse a loaded
//! one, or compare a loaded one with the RAM in an iomem file.
use std::{
    fmt::Write as _,
    fs,
    io::Read as _,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, anyhow, bail};
use serde_json::json;

use crate::{
    model::{
        elfcorehdr::{
            self, Arch, ElfCoreHeader, HeaderDiff, HeaderInputs, KernelText, LoadPath,
            MAX_HEADER_BYTES, Segment, SegmentKind,
        },
        iomem::{Iomem, KERNEL_CODE},
        ranges::RamRanges,
        units::bytes,
    },
    sys::{crash_sysfs, kcore, node, procfs::Procfs, sysfs::Sysfs},
};

/// Exit code for unreadable or malformed input.
pub const EXIT_BAD_INPUT: i32 = 2;

#[derive(Debug, clap::Args)]
#[command(
    about = "Build, parse or compare a crash ELF header (elfcorehdr)",
    long_about = "Without --parse or --compare: build the header kexec_file_load would build \
                  on this machine now (x86_64) from PROCFS/iomem, PROCFS/kallsyms and the crash \
                  files in SYSFS.\n\
                  --parse FILE: print the program headers of an elfcorehdr or of the head of a \
                  capture kernel's /proc/vmcore.\n\
                  --compare FILE: diff FILE's RAM with the RAM PROCFS/iomem says a header should \
                  list (only iomem is read). Exit 0 whether stale or not: read `stale`.\n\
                  --read-back: read the header the kernel holds now from the crash reservation \
                  through PROCFS/kcore (root, CAP_SYS_RAWIO; lockdown below confidentiality) and \
                  print it as --parse does, with its address and the read time.\n\
                  Exit 2 on unreadable or malformed input."
)]
pub struct HeaderArgs {
    /// Directory standing in for /proc (reads iomem, kallsyms).
    #[arg(long, value_name = "DIR", default_value = "/proc")]
    pub procfs: PathBuf,
    /// Directory standing in for /sys (reads devices/system/cpu, kernel/vmcoreinfo).
    #[arg(long, value_name = "DIR", default_value = "/sys")]
    pub sysfs: PathBuf,
    /// Print the program headers of this elfcorehdr or /proc/vmcore head.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["compare", "read_back"])]
    pub parse: Option<PathBuf>,
    /// Compare this elfcorehdr or /proc/vmcore head with PROCFS/iomem.
    #[arg(long, value_name = "FILE", conflicts_with = "read_back")]
    pub compare: Option<PathBuf>,
    /// Read the loaded header back from the crash reservation through PROCFS/kcore.
    #[arg(long)]
    pub read_back: bool,
    /// Write the built or read-back header's ELF bytes to FILE.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["parse", "compare"])]
    pub output: Option<PathBuf>,
    /// Who built the compared header: decides the expected RAM (auto infers it from the header).
    #[arg(long, value_name = "PATH", default_value = "auto", value_parser = ["auto", "kexec_file_load", "kexec_load"])]
    pub load: String,
    /// Direct-map base for built RAM PT_LOADs' p_vaddr (hex; KASLR moves it).
    #[arg(long, value_name = "HEX", value_parser = parse_hex_u64, default_value = "0xffff888000000000")]
    pub page_offset: u64,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
}

fn parse_hex_u64(s: &str) -> Result<u64, String> {
    u64::from_str_radix(s.trim_start_matches("0x"), 16)
        .map_err(|_| format!("{s:?} is not a hexadecimal address"))
}

/// Runs the subcommand; returns the process exit code. Every error is one line on stderr.
pub fn run(args: HeaderArgs) -> Result<i32> {
    let result = if let Some(file) = &args.parse {
        parse(&args, file)
    } else if let Some(file) = &args.compare {
        compare(&args, file)
    } else if args.read_back {
        read_back(&args)
    } else {
        build(&args)
    };
    match result {
        Ok(out) => {
            super::print(&out)?;
            Ok(0)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            Ok(EXIT_BAD_INPUT)
        }
    }
}

/// Reads no more than a header can span, so `--parse /proc/vmcore` reads its head, not the dump.
fn read_header(file: &Path) -> Result<(ElfCoreHeader, usize)> {
    let mut bytes = Vec::new();
    fs::File::open(file)
        .and_then(|f| f.take(MAX_HEADER_BYTES as u64).read_to_end(&mut bytes))
        .with_context(|| file.display().to_string())?;
    let header = ElfCoreHeader::parse(&bytes).map_err(|e| anyhow!("{}: {e}", file.display()))?;
    Ok((header, bytes.len()))
}

fn build(args: &HeaderArgs) -> Result<String> {
    let iomem = node::read_iomem(&Procfs::new(args.procfs.clone()))?;
    let notes = crash_sysfs::read_cpu_crash_notes(&args.sysfs)?;
    let vmcoreinfo = crash_sysfs::read_vmcoreinfo(&args.sysfs)?;
    let kernel_text = read_kernel_text(&args.procfs, &iomem)?;
    let mem = elfcorehdr::crash_memory_ranges(&iomem, LoadPath::KexecFileLoad)
        .map_err(|e| anyhow!("{}: {e}", args.procfs.join("iomem").display()))?;
    let bytes = elfcorehdr::build(&HeaderInputs {
        arch: Arch::RUNNING,
        cpu_notes: &notes.notes,
        vmcoreinfo,
        kernel_text: Some(kernel_text),
        ram: mem.ranges(),
        page_offset: args.page_offset,
    })?;
    if !notes.unreadable.is_empty() {
        eprintln!(
            "warning: {} possible CPU(s) have no sysfs entry (not present): their PT_NOTEs, \
             which the kernel includes, are left out",
            notes.unreadable.len()
        );
    }
    if let Some(out) = &args.output {
        fs::write(out, &bytes).with_context(|| out.display().to_string())?;
    }
    let header = ElfCoreHeader::parse(&bytes)?;
    Ok(render_header(&header, bytes.len(), args.format))
}

/// `_text` and `_end` from kallsyms; the physical start is iomem's "Kernel code"
/// (`__pa_symbol(_text)`).
fn read_kernel_text(procfs: &Path, iomem: &Iomem) -> Result<KernelText> {
    let path = procfs.join("kallsyms");
    let text = fs::read_to_string(&path).with_context(|| path.display().to_string())?;
    let (mut start, mut end) = (None, None);
    for line in text.lines() {
        let mut fields = line.split_ascii_whitespace();
        let (Some(addr), Some(_), Some(name)) = (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let slot = match name {
            "_text" => &mut start,
            "_end" => &mut end,
            _ => continue,
        };
        *slot = Some(
            u64::from_str_radix(addr, 16)
                .map_err(|_| anyhow!("{}: {name} address {addr:?} is not hex", path.display()))?,
        );
    }
    let (Some(start), Some(end)) = (start, end) else {
        bail!("{}: no _text and _end symbols", path.display());
    };
    if start == 0 || end <= start {
        bail!(
            "{}: _text is {start:#x} and _end {end:#x}: addresses are hidden (kptr_restrict; \
             read as root)",
            path.display()
        );
    }
    let paddr = iomem
        .named(KERNEL_CODE)
        .next()
        .ok_or_else(|| {
            anyhow!(
                "{}: no \"{KERNEL_CODE}\" line",
                procfs.join("iomem").display()
            )
        })?
        .range
        .start;
    Ok(KernelText {
        vaddr: start,
        paddr,
        size: end - start,
    })
}

fn parse(args: &HeaderArgs, file: &Path) -> Result<String> {
    let (header, len) = read_header(file)?;
    Ok(render_header(&header, len, args.format))
}

fn read_back(args: &HeaderArgs) -> Result<String> {
    let iomem = node::read_iomem(&Procfs::new(args.procfs.clone()))?;
    let back = kcore::read_back(&Procfs::new(&args.procfs), &Sysfs::new(&args.sysfs), &iomem)?;
    if let Some(out) = &args.output {
        fs::write(out, &back.bytes).with_context(|| out.display().to_string())?;
    }
    let kcore = args.procfs.join("kcore").display().to_string();
    let ms = back.elapsed.as_secs_f64() * 1000.0;
    let mut out = render_header(&back.header, back.bytes.len(), args.format);
    if args.format == Format::Json {
        let mut v: serde_json::Value = serde_json::from_str(&out)?;
        v["read_back"] = json!({
            "source": kcore,
            "phys_addr": back.phys_addr,
            "reservation": back.reservation,
            "candidates": back.candidates,
            "duplicates": back.duplicates,
            "skipped": back.skipped.iter().map(|s| json!({"phys_addr": s.paddr, "reason": s.reason})).collect::<Vec<_>>(),
            "pages_scanned": back.pages_scanned,
            "elapsed_ms": (ms * 1000.0).round() / 1000.0,
        });
        return Ok(format!("{v:#}\n"));
    }
    let _ = writeln!(
        out,
        "read back from {kcore} at physical {:#x} (crash reservation {}): {} ET_CORE \
         candidate(s) in {} pages, read in {ms:.1} ms",
        back.phys_addr, back.reservation, back.candidates, back.pages_scanned
    );
    for d in &back.duplicates {
        let _ = writeln!(out, "same RAM also at {d:#x}");
    }
    for s in &back.skipped {
        let _ = writeln!(out, "skipped {:#x}: {}", s.paddr, s.reason);
    }
    Ok(out)
}

fn compare(args: &HeaderArgs, file: &Path) -> Result<String> {
    let (header, _) = read_header(file)?;
    let iomem_path = args.procfs.join("iomem");
    let iomem = node::read_iomem(&Procfs::new(args.procfs.clone()))?;
    let loaded = header.ram_ranges();
    // The header's own machine: a capture from another node is judged by its rules.
    let arch = Arch::of_machine(header.machine).ok_or_else(|| {
        anyhow!(
            "{}: e_machine {} has no header rules (x86_64 and aarch64 have)",
            file.display(),
            header.machine
        )
    })?;
    let (load, inferred) = match args.load.as_str() {
        "auto" => (arch.infer_load_path(&loaded), true),
        other => (other.parse::<LoadPath>().map_err(|e| anyhow!(e))?, false),
    };
    let expected = arch
        .expected_ram(&iomem, load)
        .map_err(|e| anyhow!("{}: {e}", iomem_path.display()))?;
    let diff = elfcorehdr::diff(&expected, &loaded);
    let omitted = arch
        .omitted_by(&iomem, load)
        .map_err(|e| anyhow!("{}: {e}", iomem_path.display()))?
        .total_bytes();
    let defects: Vec<String> = elfcorehdr::header_defects(&header)
        .iter()
        .map(|d| d.to_string())
        .collect();
    Ok(match args.format {
        Format::Json => {
            let ranges: Vec<_> = diff_rows(&diff)
                .map(|(kind, r)| {
                    json!({"kind": kind, "start": r.start, "end": r.end, "bytes": r.size()})
                })
                .collect();
            let v = json!({
                "file": file.display().to_string(),
                "iomem": iomem_path.display().to_string(),
                "load": load,
                "load_inferred": inferred,
                "stale": diff.stale(),
                "missing_bytes": diff.missing_bytes,
                "excess_bytes": diff.excess_bytes,
                "expected_bytes": expected.total_bytes(),
                "loaded_bytes": loaded.total_bytes(),
                "omitted_by_loader_bytes": omitted,
                "defects": defects,
                "ranges": ranges,
            });
            format!("{v:#}\n")
        }
        Format::Table => {
            let mut out =
                render_compare(file, &iomem_path, load, inferred, &expected, &loaded, &diff);
            if omitted > 0 {
                let _ = writeln!(
                    out,
                    "\n{} of it no reload through {} can bring back: that loader never lists it",
                    bytes(omitted),
                    load.as_str()
                );
            }
            for d in &defects {
                let _ = writeln!(out, "defect    {d}");
            }
            out
        }
    })
}

fn diff_rows(
    diff: &HeaderDiff,
) -> impl Iterator<Item = (&'static str, &crate::model::ranges::PhysRange)> {
    let missing = diff.missing.iter().map(|r| ("missing", r));
    let excess = diff.excess.iter().map(|r| ("excess", r));
    let mut rows: Vec<_> = missing.chain(excess).collect();
    rows.sort_by_key(|(_, r)| r.start);
    rows.into_iter()
}

fn render_compare(
    file: &Path,
    iomem: &Path,
    load: LoadPath,
    inferred: bool,
    expected: &RamRanges,
    loaded: &RamRanges,
    diff: &HeaderDiff,
) -> String {
    let mut out = String::new();
    let how = if inferred { "inferred" } else { "given" };
    let _ = writeln!(
        out,
        "header    {} ({} header, {how})",
        file.display(),
        load.as_str()
    );
    let _ = writeln!(out, "ram from  {}", iomem.display());
    let _ = writeln!(
        out,
        "expected  {:>12}  in {} ranges",
        bytes(expected.total_bytes()),
        expected.len()
    );
    let _ = writeln!(
        out,
        "loaded    {:>12}  in {} ranges",
        bytes(loaded.total_bytes()),
        loaded.len()
    );
    let _ = writeln!(
        out,
        "missing   {:>12}  (RAM not in the dump)",
        bytes(diff.missing_bytes)
    );
    let _ = writeln!(
        out,
        "excess    {:>12}  (header ranges that are not RAM)",
        bytes(diff.excess_bytes)
    );
    let _ = writeln!(out, "stale     {}", if diff.stale() { "yes" } else { "no" });
    if diff.stale() {
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{:<8}  {:<29}  {:>12}",
            "DIFF", "PHYSICAL RANGE", "SIZE"
        );
        for (kind, r) in diff_rows(diff) {
            let _ = writeln!(
                out,
                "{kind:<8}  {:<29}  {:>12}",
                r.to_string(),
                bytes(r.size())
            );
        }
    }
    out
}

fn kind_label(s: &Segment) -> String {
    match s.kind {
        SegmentKind::Note => "PT_NOTE".into(),
        SegmentKind::KernelText => "PT_LOAD text".into(),
        SegmentKind::Ram => "PT_LOAD ram".into(),
        SegmentKind::Other(t) => format!("type {t:#x}"),
    }
}

fn render_header(header: &ElfCoreHeader, bytes_read: usize, format: Format) -> String {
    let ram = header.ram_ranges();
    if format == Format::Json {
        let v = json!({
            "class_bits": header.class_bits,
            "machine": header.machine,
            "bytes_read": bytes_read,
            "segments": header.segments,
            "ram_bytes": ram.total_bytes(),
            "ram_ranges": ram,
        });
        return format!("{v:#}\n");
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "ELF{} core header, e_machine {}, {} program headers, {} read",
        header.class_bits,
        header.machine,
        header.segments.len(),
        bytes(bytes_read as u64)
    );
    let _ = writeln!(
        out,
        "{:<12}  {:<29}  {:>12}  VIRTUAL ADDRESS",
        "TYPE", "PHYSICAL RANGE", "SIZE"
    );
    for s in &header.segments {
        let range = s
            .phys_range()
            .map_or_else(|| format!("{:#014x} (empty)", s.paddr), |r| r.to_string());
        let vaddr = if s.kind == SegmentKind::Note {
            "-".to_owned()
        } else {
            format!("{:#018x}", s.vaddr)
        };
        let _ = writeln!(
            out,
            "{:<12}  {range:<29}  {:>12}  {vaddr}",
            kind_label(s),
            bytes(s.memsz)
        );
    }
    let _ = writeln!(
        out,
        "RAM: {} in {} PT_LOADs ({} bytes); notes: {}; kernel text: {}",
        bytes(ram.total_bytes()),
        header.count(SegmentKind::Ram),
        ram.total_bytes(),
        header.count(SegmentKind::Note),
        header.count(SegmentKind::KernelText)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::elfcorehdr::arch::X86_64_DEFAULT_PAGE_OFFSET;

    #[test]
    fn default_page_offset_matches_the_arch_constant() {
        assert_eq!(
            parse_hex_u64("0xffff888000000000"),
            Ok(X86_64_DEFAULT_PAGE_OFFSET)
        );
    }
}
