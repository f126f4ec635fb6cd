//! The kernel is the oracle: for every scenario the VM lab saved (the first kernel's iomem just
//! before a crash, the head of the capture kernel's /proc/vmcore, and what the kernel did), the
//! real binary's `header --compare` must report exactly the staleness the kernel produced.
use std::{
    fs,
    io::Write as _,
    path::{Path, PathBuf},
    process::Command,
};

use kdump_agent::model::{
    elfcorehdr::{Arch, ElfCoreHeader, LoadPath, SegmentKind},
    iomem::Iomem,
};
use serde_json::Value;

fn lab_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lab")
}

/// Printed past libtest's capture so a run without scenarios is never a silent pass.
fn say(line: &str) {
    let _ = writeln!(std::io::stdout(), "lab oracle: {line}");
}

fn check(dir: &Path) -> Result<String, String> {
    let name = dir.file_name().unwrap().to_string_lossy().into_owned();
    for file in ["iomem", "vmcore-head", "expect.json", "SOURCE"] {
        if !dir.join(file).is_file() {
            return Err(format!("{name}: missing {file}"));
        }
    }
    let expect: Value = serde_json::from_str(&fs::read_to_string(dir.join("expect.json")).unwrap())
        .map_err(|e| format!("{name}/expect.json: {e}"))?;
    let out = Command::new(env!("CARGO_BIN_EXE_kdump-agent"))
        .args(["header", "--compare"])
        .arg(dir.join("vmcore-head"))
        .arg("--procfs")
        .arg(dir)
        .args(["--format", "json"])
        .output()
        .unwrap();
    if !out.status.success() {
        return Err(format!(
            "{name}: exit {:?}: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut wrong = Vec::new();
    for (got_key, want_key) in [
        ("missing_bytes", "expect_missing_bytes"),
        ("excess_bytes", "expect_excess_bytes"),
        ("load", "load"),
    ] {
        if got[got_key] != expect[want_key] {
            wrong.push(format!(
                "{got_key} = {} but the kernel gave {}",
                got[got_key], expect[want_key]
            ));
        }
    }
    // Where the kernel's header misses only what its loader can never list (on x86_64: where it
    // is fresh), the builder's PT_LOAD list for that loader must be the kernel's, range for
    // range (same splits, same order), not just the same bytes.
    let header = ElfCoreHeader::parse(&fs::read(dir.join("vmcore-head")).unwrap())
        .map_err(|e| format!("{name}/vmcore-head: {e}"))?;
    let arch = Arch::of_machine(header.machine)
        .ok_or_else(|| format!("{name}: no rules for e_machine {}", header.machine))?;
    let iomem = Iomem::parse_bytes(&fs::read(dir.join("iomem")).unwrap())
        .map_err(|e| format!("{name}/iomem {e}"))?;
    let mut same_loads = "";
    if let Some(load) = expect["load"]
        .as_str()
        .and_then(|l| l.parse::<LoadPath>().ok())
        && expect["expect_excess_bytes"] == 0
        && expect["expect_missing_bytes"]
            == arch
                .omitted_by(&iomem, load)
                .map_err(|e| e.to_string())?
                .total_bytes()
    {
        let kernel_loads: Vec<_> = header
            .segments
            .iter()
            .filter(|s| s.kind == SegmentKind::Ram)
            .filter_map(|s| s.phys_range())
            .collect();
        let ours = arch
            .crash_memory_ranges(&iomem, load)
            .map_err(|e| e.to_string())?;
        same_loads = ", builder's PT_LOADs identical to the kernel's";
        if ours.ranges() != kernel_loads.as_slice() {
            wrong.push(format!(
                "built PT_LOADs {:?} but the kernel's are {kernel_loads:?}",
                ours.ranges()
            ));
        }
    }
    let kernel = expect["kernel"].as_str().unwrap_or("?");
    if wrong.is_empty() {
        Ok(format!(
            "{name} ({kernel}, {}): missing {} B, excess {} B, as the kernel{same_loads}",
            got["load"].as_str().unwrap_or("?"),
            got["missing_bytes"],
            got["excess_bytes"]
        ))
    } else {
        Err(format!("{name} ({kernel}): {}", wrong.join("; ")))
    }
}

#[test]
fn compare_matches_the_kernel_in_every_lab_scenario() {
    let mut scenarios: Vec<PathBuf> = match fs::read_dir(lab_dir()) {
        Ok(entries) => entries
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_dir())
            .collect(),
        Err(_) => Vec::new(),
    };
    scenarios.sort();
    if scenarios.is_empty() {
        // The SKIP: line makes `cargo xtask test` count this as skipped, not passed.
        println!(
            "SKIP: no scenarios under {} yet (the VM lab writes them); nothing was compared",
            lab_dir().display()
        );
        return;
    }
    let mut failures = Vec::new();
    for dir in &scenarios {
        match check(dir) {
            Ok(line) => say(&format!("ok   {line}")),
            Err(line) => {
                say(&format!("FAIL {line}"));
                failures.push(line);
            }
        }
    }
    say(&format!(
        "{} of {} scenarios match the kernel",
        scenarios.len() - failures.len(),
        scenarios.len()
    ));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
