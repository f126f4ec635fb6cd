//! Scenarios for `kdump-agent header --read-back`: what the agent reads from the crash
//! reservation through /proc/kcore before the crash must be the header the capture kernel
//! serves as /proc/vmcore, `PT_LOAD` by `PT_LOAD`.
use anyhow::{Context as _, Result, anyhow};
use goblin::{
    container::{Container, Ctx},
    elf::program_header::{PT_LOAD, PT_NOTE, ProgramHeader},
};
use kdump_agent::model::elfcorehdr::LoadPath;
use serde_json::{Value, json};

use crate::lab::{
    guests::Boot,
    image::{GUEST_AGENT, KERNEL_6_1, KERNEL_6_12},
    machine::Machine,
    scenario::{Online, Run, Scenario},
};

/// The read-back scenarios, in `cargo xtask lab list` order.
pub const ALL: &[Scenario] = &[
    Scenario {
        name: "readback-matches-vmcore-6.1",
        about: "6.1, kexec -c -p, kexec -s -p, kexec -c -p, each read back via /proc/kcore: the last equals /proc/vmcore's PT_LOADs",
        kernel: KERNEL_6_1,
        fixture: false,
        benchmark: false,
        body: matches_vmcore_6_1,
    },
    Scenario {
        name: "readback-matches-vmcore-6.12",
        about: "6.12, kexec -s -p, +512 MiB (in-kernel update), read back via /proc/kcore: equals /proc/vmcore's PT_LOADs",
        kernel: KERNEL_6_12,
        fixture: false,
        benchmark: false,
        body: matches_vmcore_6_12,
    },
];

/// One successful read-back in the guest: the JSON `header --read-back` printed and the bytes.
struct Shot {
    json: Value,
    bytes: Vec<u8>,
}

/// Runs `header --read-back --format json` in the guest after `step`; records what it found
/// (or its one-line error) under `readbacks` in the report.
fn read_back(run: &mut Run, m: &mut Machine, step: &str) -> Result<Option<Shot>> {
    // A header read while the kernel rewrites it under the kexec lock could be torn.
    m.wait_until(
        "cat /sys/kernel/kexec_crash_size >/dev/null",
        std::time::Duration::from_secs(30),
    )
    .context("the kexec lock stayed busy before the read-back")?;
    let mut list = run
        .report
        .notes
        .remove("readbacks")
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default();
    let file = format!("/tmp/readback-{}.bin", list.len());
    let out = m.run(&format!(
        "{GUEST_AGENT} header --read-back --format json --output {file}"
    ))?;
    let mut entry = json!({"step": step, "exit": out.code});
    let shot = if out.code == 0 {
        let json: Value = serde_json::from_slice(&out.output)
            .with_context(|| format!("header --read-back after {step}: not JSON"))?;
        let rb = &json["read_back"];
        entry["candidates"] = rb["candidates"].clone();
        entry["phys_addr"] = json!(format!("{:#x}", rb["phys_addr"].as_u64().unwrap_or(0)));
        entry["reservation"] = rb["reservation"].clone();
        entry["pages_scanned"] = rb["pages_scanned"].clone();
        entry["duplicates"] = rb["duplicates"].clone();
        entry["skipped"] = rb["skipped"].clone();
        entry["readback_ms"] = rb["elapsed_ms"].clone();
        entry["phdrs"] = json!(json["segments"].as_array().map_or(0, Vec::len));
        entry["ram_bytes"] = json["ram_bytes"].clone();
        let bytes = m.run(&format!("cat {file}"))?.output;
        Some(Shot { json, bytes })
    } else {
        entry["error"] = json!(out.text().trim());
        None
    };
    list.push(entry);
    run.note("readbacks", list);
    Ok(shot)
}

/// The raw program headers of an ELF64 header.
fn phdrs(bytes: &[u8], what: &str) -> Result<Vec<ProgramHeader>> {
    let h = goblin::elf::Elf::parse_header(bytes).map_err(|e| anyhow!("{what}: {e}"))?;
    ProgramHeader::parse(
        bytes,
        h.e_phoff as usize,
        usize::from(h.e_phnum),
        Ctx::new(Container::Big, goblin::container::Endian::Little),
    )
    .map_err(|e| anyhow!("{what}: program headers: {e}"))
}

/// Compares every `PT_LOAD` of the read-back header with the capture kernel's /proc/vmcore
/// header in order (`p_offset` differs by construction: vmcore lays the dump out anew), and
/// notes the `PT_NOTE`s (vmcore merges them into one of the notes' real size).
fn compare_with_vmcore(run: &mut Run, shot: &Shot) -> Result<()> {
    let vmcore = run
        .report
        .fixture
        .as_ref()
        .map(|f| f.vmcore_head.clone())
        .context("no /proc/vmcore header was read")?;
    let ours = phdrs(&shot.bytes, "the read-back header")?;
    let theirs = phdrs(&vmcore, "the /proc/vmcore header")?;
    let loads = |p: &[ProgramHeader]| -> Vec<(u32, u32, u64, u64, u64)> {
        p.iter()
            .filter(|p| p.p_type == PT_LOAD)
            .map(|p| (p.p_type, p.p_flags, p.p_paddr, p.p_vaddr, p.p_memsz))
            .collect()
    };
    let (a, b) = (loads(&ours), loads(&theirs));
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        run.check(
            x == y,
            format!(
                "PT_LOAD {i}: read back (type, flags, paddr, vaddr, memsz) {x:x?}, /proc/vmcore {y:x?}"
            ),
        );
    }
    run.check(
        a.len() == b.len(),
        format!(
            "{} PT_LOADs read back, {} in /proc/vmcore",
            a.len(),
            b.len()
        ),
    );
    let notes = |p: &[ProgramHeader]| -> (usize, u64) {
        let n: Vec<_> = p.iter().filter(|p| p.p_type == PT_NOTE).collect();
        (n.len(), n.iter().map(|p| p.p_memsz).sum())
    };
    let ((on, os), (vn, vs)) = (notes(&ours), notes(&theirs));
    run.check(
        vn == 1,
        format!("/proc/vmcore has {vn} PT_NOTEs, expected the merged one"),
    );
    run.check(
        vs <= os,
        format!("/proc/vmcore's notes ({vs} bytes) exceed the read-back note buffers ({os} bytes)"),
    );
    run.note("phdrs_compared", a.len().min(b.len()));
    run.note("readback_notes", json!({"count": on, "bytes": os}));
    run.note("vmcore_notes", json!({"count": vn, "bytes": vs}));
    let rb = &shot.json["read_back"];
    run.note("readback_ms", rb["elapsed_ms"].clone());
    run.note(
        "readback_phys_addr",
        format!("{:#x}", rb["phys_addr"].as_u64().unwrap_or(0)),
    );
    run.note("readback_candidates", rb["candidates"].clone());
    Ok(())
}

/// Loads with `load` and reads the header back; a read-back that fails is recorded, not fatal.
fn load_and_read(run: &mut Run, m: &mut Machine, load: LoadPath) -> Result<Option<Shot>> {
    run.load_kdump(m, load)?;
    read_back(run, m, load.as_str())
}

/// 6.1: `kexec -c -p`, then `kexec -s -p` (a kexec_load followed by a kexec_file_load: are
/// the older load's bytes still a candidate?), then `kexec -c -p` again, whose read-back the
/// crash checks.
pub(super) fn matches_vmcore_6_1(run: &mut Run) -> Result<()> {
    let mut m = run.boot(&Boot::default())?;
    load_and_read(run, &mut m, LoadPath::KexecLoad)?;
    load_and_read(run, &mut m, LoadPath::KexecFileLoad)?;
    let shot = load_and_read(run, &mut m, LoadPath::KexecLoad)?
        .context("no read-back after the last kexec -c -p")?;
    run.crash(&mut m)?;
    run.expect(0, 0);
    compare_with_vmcore(run, &shot)
}

/// 6.12: `kexec -s -p`, then a 512 MiB DIMM the kernel adds to the header in place.
pub(super) fn matches_vmcore_6_12(run: &mut Run) -> Result<()> {
    let mut m = run.boot(&Boot::default())?;
    let before = load_and_read(run, &mut m, LoadPath::KexecFileLoad)?
        .context("no read-back after kexec -s -p")?;
    let dimm = run.hot_add(&mut m, 512, Online::Auto)?;
    let after = read_back(run, &mut m, "dimm_online")?.context("no read-back after the DIMM")?;
    let ram = |s: &Shot| s.json["ram_bytes"].as_u64().unwrap_or(0);
    run.check(
        ram(&after) == ram(&before) + dimm.size,
        format!(
            "the read-back header lists {} bytes of RAM after the DIMM, {} before: the in-kernel \
             update is not seen",
            ram(&after),
            ram(&before)
        ),
    );
    run.crash(&mut m)?;
    run.expect(0, 0);
    compare_with_vmcore(run, &after)
}
