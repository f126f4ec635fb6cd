//! The real `kdump-agent header` binary in its three modes, on fixture machines.
use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use serde_json::Value;

const MIB: u64 = 1 << 20;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn agent(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kdump-agent"))
        .arg("header")
        .args(args)
        .output()
        .expect("run kdump-agent")
}

fn ok_stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn json(out: &Output) -> Value {
    serde_json::from_str(&ok_stdout(out)).unwrap()
}

/// A procfs directory holding `iomem` from `fixtures/iomem/<iomem>` and the QEMU machine's kallsyms.
fn procfs_with(iomem: &str, tag: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("header-cli-{tag}"));
    fs::create_dir_all(&dir).unwrap();
    fs::copy(fixtures().join("iomem").join(iomem), dir.join("iomem")).unwrap();
    fs::copy(
        fixtures().join("machine-qemu/proc/kallsyms"),
        dir.join("kallsyms"),
    )
    .unwrap();
    dir
}

fn build_header(procfs: &Path, out: &Path) -> Value {
    let sysfs = fixtures().join("machine-qemu/sys");
    json(&agent(&[
        "--procfs",
        procfs.to_str().unwrap(),
        "--sysfs",
        sysfs.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--format",
        "json",
    ]))
}

fn compare(file: &Path, procfs: &Path) -> Value {
    json(&agent(&[
        "--compare",
        file.to_str().unwrap(),
        "--procfs",
        procfs.to_str().unwrap(),
        "--format",
        "json",
    ]))
}

#[test]
fn build_prints_the_kexec_file_load_header() {
    let machine = fixtures().join("machine-qemu");
    let table = ok_stdout(&agent(&[
        "--procfs",
        machine.join("proc").to_str().unwrap(),
        "--sysfs",
        machine.join("sys").to_str().unwrap(),
    ]));
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("ELF64 core header, e_machine 62, 6 program headers, 4.0 KiB read")
    );
    assert!(lines[1].starts_with("TYPE"));
    assert_eq!(lines.iter().filter(|l| l.starts_with("PT_NOTE")).count(), 3);
    let text = lines
        .iter()
        .find(|l| l.starts_with("PT_LOAD text"))
        .unwrap();
    assert!(text.contains("0xffffffff99000000") && text.contains("36.0 MiB"));
    let ram: Vec<&&str> = lines
        .iter()
        .filter(|l| l.starts_with("PT_LOAD ram"))
        .collect();
    assert_eq!(ram.len(), 2);
    assert!(ram[0].contains("0x000000100000-0x00002effffff"));
    assert!(ram[0].contains("0xffff888000100000"));
    // Columns line up: every row puts SIZE at the same place.
    let size_col = lines[1].find("SIZE").unwrap() + 4;
    for row in &lines[2..8] {
        assert_eq!(&row[size_col - 1..size_col], "B", "{row}");
    }
}

#[test]
fn built_header_round_trips_through_parse() {
    let procfs = procfs_with("guest-1g-crashkernel", "roundtrip");
    let out = procfs.join("elfcorehdr");
    let built = build_header(&procfs, &out);
    let parsed = json(&agent(&[
        "--parse",
        out.to_str().unwrap(),
        "--format",
        "json",
    ]));
    assert_eq!(built["segments"], parsed["segments"]);
    assert_eq!(parsed["bytes_read"], 4096);
    assert_eq!(parsed["ram_bytes"], 0x3fee0000u64 - 256 * MIB);
    let table = ok_stdout(&agent(&["--parse", out.to_str().unwrap()]));
    assert!(table.contains("RAM: 766.9 MiB in 2 PT_LOADs (804126720 bytes)"));
}

#[test]
fn parse_reads_only_the_head_of_a_whole_vmcore() {
    let procfs = procfs_with("guest-1g-crashkernel", "vmcore");
    let header = procfs.join("elfcorehdr");
    build_header(&procfs, &header);
    // A stand-in for /proc/vmcore: the header followed by 16 MiB of "dump".
    let vmcore = procfs.join("vmcore");
    let mut bytes = fs::read(&header).unwrap();
    bytes.resize(bytes.len() + (16 << 20), 0xaa);
    fs::write(&vmcore, bytes).unwrap();
    let parsed = json(&agent(&[
        "--parse",
        vmcore.to_str().unwrap(),
        "--format",
        "json",
    ]));
    assert_eq!(
        parsed["bytes_read"],
        kdump_agent::model::elfcorehdr::MAX_HEADER_BYTES
    );
    assert_eq!(parsed["ram_bytes"], 0x3fee0000u64 - 256 * MIB);
}

#[test]
fn compare_finds_what_the_kernel_would_miss() {
    let before = procfs_with("guest-1g-crashkernel", "before");
    let after = procfs_with("guest-1g-dimm-512m", "after");
    let old_header = before.join("elfcorehdr");
    let new_header = after.join("elfcorehdr");
    build_header(&before, &old_header);
    build_header(&after, &new_header);

    // A header built for the current RAM is fresh.
    for (file, procfs) in [(&old_header, &before), (&new_header, &after)] {
        let v = compare(file, procfs);
        assert_eq!(v["stale"], false);
        assert_eq!(v["missing_bytes"], 0);
        assert_eq!(v["excess_bytes"], 0);
        assert_eq!(v["load"], "kexec_file_load");
    }
    // Hot-add after load: the DIMM is missing from the dump.
    let v = compare(&old_header, &after);
    assert_eq!(v["stale"], true);
    assert_eq!(v["missing_bytes"], 512 * MIB);
    assert_eq!(v["excess_bytes"], 0);
    assert_eq!(v["ranges"][0]["kind"], "missing");
    assert_eq!(v["ranges"][0]["start"], 0x1_0000_0000u64);
    // Hot-remove after load: the header still lists it.
    let v = compare(&new_header, &before);
    assert_eq!(v["excess_bytes"], 512 * MIB);
    assert_eq!(v["missing_bytes"], 0);

    let table = ok_stdout(&agent(&[
        "--compare",
        old_header.to_str().unwrap(),
        "--procfs",
        after.to_str().unwrap(),
    ]));
    assert!(
        table.contains("missing      512.0 MiB  (RAM not in the dump)"),
        "{table}"
    );
    assert!(table.contains("stale     yes"));
    assert!(table.contains("missing   0x000100000000-0x00011fffffff     512.0 MiB"));
}

#[test]
fn bad_input_is_one_line_and_exit_2() {
    let procfs = Path::new(env!("CARGO_TARGET_TMPDIR")).join("header-cli-bad");
    fs::create_dir_all(&procfs).unwrap();
    fs::copy(
        fixtures().join("iomem/hostile/garbage-line"),
        procfs.join("iomem"),
    )
    .unwrap();
    let header = procfs_with("guest-1g-crashkernel", "bad-header").join("elfcorehdr");
    build_header(header.parent().unwrap(), &header);
    let out = agent(&[
        "--compare",
        header.to_str().unwrap(),
        "--procfs",
        procfs.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(
        err,
        format!(
            "error: {} line 2: expected \"start-end : name\", found \"zz\"\n",
            procfs.join("iomem").display()
        )
    );
    let not_elf = fixtures().join("iomem/guest-1g-crashkernel");
    let out = agent(&["--parse", not_elf.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.starts_with(&format!("error: {}: not an ELF file", not_elf.display())));
    assert_eq!(err.lines().count(), 1);
}

/// Real arm64 capture kernels' headers (the lab's fixtures): kexec-tools never lists
/// virtio-mem RAM, and on 6.1 its kernel-text PT_LOAD runs past 2^64.
#[test]
fn compare_names_what_an_arm64_loader_omits_and_a_text_segment_that_wraps() {
    let lab = fixtures().join("lab");
    for (scenario, wraps) in [
        ("baseline-stale-6.1-arm64", true),
        ("baseline-kexec-tools-omits-virtio-mem-6.12-arm64", false),
    ] {
        let dir = lab.join(scenario);
        let v = compare(&dir.join("vmcore-head"), &dir);
        assert_eq!(v["load"], "kexec_load", "{scenario}: {v}");
        assert_eq!(v["load_inferred"], true);
        assert_eq!(v["missing_bytes"], 512 * MIB, "{scenario}");
        assert_eq!(v["omitted_by_loader_bytes"], 512 * MIB, "{scenario}");
        let defects = v["defects"].as_array().unwrap();
        assert_eq!(defects.len(), usize::from(wraps), "{scenario}: {defects:?}");
        if wraps {
            assert!(defects[0].as_str().unwrap().contains("runs past 2^64"));
        }
    }
}
