//! The iomem parser and the expected-RAM rules against the fixture files.
use std::{fs, path::PathBuf, time::Instant};

use kdump_agent::model::{
    elfcorehdr::{LoadPath, crash_memory_ranges, expected_ram},
    iomem::{Iomem, IomemErrorKind},
    ranges::PhysRange,
};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/iomem")
        .join(name)
}

fn load(name: &str) -> Iomem {
    Iomem::parse_bytes(&fs::read(fixture(name)).unwrap()).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn r(start: u64, end: u64) -> PhysRange {
    PhysRange::new(start, end).unwrap()
}

const MIB: u64 = 1 << 20;

#[test]
fn host_iomem_parses_with_real_addresses() {
    let io = load("host-firecracker");
    let ram = io.system_ram();
    assert_eq!(ram.len(), 3);
    // 0x1000-0x9fbff, 1 MiB-3 GiB, 4 GiB-25 GiB.
    assert_eq!(
        ram.total_bytes(),
        0x9ec00 + (3072 - 1) * MIB + 21 * 1024 * MIB
    );
    assert!(io.crash_reservations().is_empty());
    assert_eq!(io.named("Kernel code").count(), 1);
}

#[test]
fn guest_with_crashkernel_expected_ram_per_load_path() {
    let io = load("guest-1g-crashkernel");
    let file = crash_memory_ranges(&io, LoadPath::KexecFileLoad).unwrap();
    assert_eq!(
        file.ranges(),
        &[r(0x100000, 0x2effffff), r(0x3f000000, 0x3ffdffff)]
    );
    let kexec = crash_memory_ranges(&io, LoadPath::KexecLoad).unwrap();
    assert_eq!(
        kexec.ranges(),
        &[
            r(0x1000, 0x9fbff),
            r(0x100000, 0x2effffff),
            r(0x3f000000, 0x3ffdffff)
        ]
    );
}

#[test]
fn hot_added_dimms_add_exactly_their_bytes() {
    let base = expected_ram(&load("guest-1g-crashkernel"), LoadPath::KexecFileLoad).unwrap();
    let one = expected_ram(&load("guest-1g-dimm-512m"), LoadPath::KexecFileLoad).unwrap();
    let three = expected_ram(&load("guest-1g-three-dimms"), LoadPath::KexecFileLoad).unwrap();
    assert_eq!(one.total_bytes() - base.total_bytes(), 512 * MIB);
    assert_eq!(
        three.total_bytes() - base.total_bytes(),
        (512 + 1024 + 256) * MIB
    );
}

#[test]
fn crashkernel_high_and_low_are_both_excluded() {
    let io = load("guest-crashkernel-high");
    assert_eq!(io.crash_reservations().len(), 2);
    let reserved: u64 = io.crash_reservations().iter().map(PhysRange::size).sum();
    assert_eq!(reserved, 128 * MIB + 256 * MIB);
    for path in [LoadPath::KexecFileLoad, LoadPath::KexecLoad] {
        let expected = expected_ram(&io, path).unwrap();
        for c in io.crash_reservations() {
            assert!(!expected.contains(c.start) && !expected.contains(c.end));
        }
    }
    let file = expected_ram(&io, LoadPath::KexecFileLoad).unwrap();
    assert_eq!(
        file.total_bytes(),
        io.system_ram().total_bytes() - reserved - 0x9ec00
    );
}

#[test]
fn nested_kmem_and_virtio_mem_ram_count() {
    let io = load("guest-virtio-mem-kmem");
    let ram = io.system_ram();
    assert!(ram.contains(0x1_0000_0000));
    assert!(ram.contains(0x1_8000_0000));
    assert!(!ram.contains(0x1_6000_0000));
    assert_eq!(io.system_ram_resources().len(), 5);
}

/// A real 6.12 guest after a 512 MiB virtio-mem grow: the RAM sits two levels down, under the
/// device, and both loaders list it (the kernels' PT_LOADs, from the lab, are these).
#[test]
fn real_virtio_mem_ram_below_its_device_counts_for_both_loaders() {
    let io = load("guest-virtio-mem-6.12");
    let virtio_mem = io.named("System RAM (virtio_mem)").next().unwrap();
    assert_eq!(virtio_mem.depth, 1);
    assert_eq!(
        io.name(&io.resources()[virtio_mem.parent.unwrap() as usize]),
        "virtio0"
    );
    let added = r(0x1_0000_0000, 0x1_1fff_ffff);
    assert_eq!(io.system_ram_resources().last(), Some(&added));
    let file = crash_memory_ranges(&io, LoadPath::KexecFileLoad).unwrap();
    assert_eq!(
        file.ranges(),
        &[
            r(0x10_0000, 0x1eff_ffff),
            r(0x2f00_0000, 0x3ffd_ffff),
            added
        ]
    );
    let load = crash_memory_ranges(&io, LoadPath::KexecLoad).unwrap();
    assert_eq!(
        load.ranges(),
        &[
            r(0x1000, 0x9_fbff),
            r(0x10_0000, 0x1eff_ffff),
            r(0x2f00_0000, 0x3ffd_ffff),
            added
        ]
    );
    for path in [LoadPath::KexecFileLoad, LoadPath::KexecLoad] {
        assert!(expected_ram(&io, path).unwrap().contains(0x1_1fff_ffff));
    }
}

#[test]
fn hostile_files_are_errors_with_lines() {
    let cases: &[(&str, usize, &str)] = &[
        ("empty", 0, "empty"),
        ("binary", 1, "UTF-8"),
        ("overlapping", 3, "overlaps"),
        ("reversed", 2, "ends before it starts"),
        ("unprivileged", 1, "without root"),
        ("indent-jump", 3, "indentation jumps"),
        ("child-outside-parent", 3, "not inside its parent"),
        (
            "garbage-line",
            2,
            "expected \"start-end : name\", found \"zz\"",
        ),
        ("address-overflow", 2, "not a hexadecimal 64-bit number"),
    ];
    let dir = fixture("hostile");
    let mut files: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n != "SOURCE")
        .collect();
    files.sort();
    let mut named: Vec<String> = cases.iter().map(|c| c.0.to_owned()).collect();
    named.sort();
    assert_eq!(files, named, "every hostile fixture has an expectation");
    for &(name, line, text) in cases {
        let err = Iomem::parse_bytes(&fs::read(dir.join(name)).unwrap()).unwrap_err();
        assert_eq!(err.line, line, "{name}: {err}");
        assert!(err.to_string().contains(text), "{name}: {err}");
    }
}

#[test]
fn a_million_lines_parse_in_linear_time() {
    let mut text = String::with_capacity(40_000_000);
    for i in 0..1_000_000u64 {
        let start = i * 0x1000;
        text.push_str(&format!(
            "{:08x}-{:08x} : System RAM\n",
            start,
            start + 0xfff
        ));
        if i % 2 == 0 {
            text.push_str(&format!(
                "  {:08x}-{:08x} : Kernel data\n",
                start,
                start + 0x7ff
            ));
        }
    }
    let started = Instant::now();
    let io = Iomem::parse(&text).unwrap();
    let elapsed = started.elapsed();
    assert_eq!(io.resources().len(), 1_500_000);
    // Adjacent System RAM merges into one range of 10^6 pages.
    assert_eq!(io.system_ram().total_bytes(), 1_000_000 * 0x1000);
    println!("parsed 1,500,000 lines in {:.3} s", elapsed.as_secs_f64());

    // An error on the last of a million lines still names it.
    text.push_str("garbage\n");
    let err = Iomem::parse(&text).unwrap_err();
    assert_eq!(err.line, 1_500_001);
    assert!(matches!(err.kind, IomemErrorKind::Syntax { .. }));
}
