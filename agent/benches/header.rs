//! `cargo bench -p kdump-agent --bench header`: the header engine at the sizes the kernel
//! allows (`CONFIG_CRASH_MAX_MEMORY_RANGES` = 8192, 256 CPUs) and a 10,000-line /proc/iomem.
//! Each measurement has a baseline in the same run (the memory traffic the work cannot avoid),
//! so the report can give ratios as well as times.
//! Targets on the 2-core dev host: parse <= 2 ms, build <= 200 us, diff <= 200 us.
use std::{fmt::Write as _, hint::black_box};

use criterion::{Criterion, criterion_group, criterion_main};
use kdump_agent::model::{
    elfcorehdr::{
        ElfCoreHeader, HeaderInputs, KernelText, LoadPath, NoteRegion, arch, build, diff,
        expected_ram,
    },
    iomem::Iomem,
    ranges::{PhysRange, RamRanges},
};

const RAM_RANGES: u64 = 8192;
const CPUS: u64 = 256;
const BLOCK: u64 = 128 << 20;

/// A 10,000-line iomem: low memory, then System RAM blocks each with a nested child, as a
/// host with many hot-added memory blocks shows.
fn iomem_text(lines: usize) -> String {
    let mut text = String::from(
        "00000000-00000fff : Reserved\n00001000-0009fbff : System RAM\n\
         00100000-7fffffff : System RAM\n  01000000-01ffffff : Kernel code\n  \
         6f000000-7effffff : Crash kernel\n80000000-febfffff : PCI Bus 0000:00\n",
    );
    let mut addr = 1u64 << 32;
    let mut n = 6;
    while n < lines {
        let _ = writeln!(text, "{addr:x}-{:x} : System RAM", addr + BLOCK - 1);
        let _ = writeln!(text, "  {addr:x}-{:x} : Kernel data", addr + 0xfff);
        addr += BLOCK + 0x1000;
        n += 2;
    }
    text
}

/// 8192 disjoint, non-adjacent RAM ranges (a gap after each, so none merge).
fn ram_ranges(count: u64) -> Vec<PhysRange> {
    (0..count)
        .map(|i| PhysRange::from_start_size((1 << 32) + i * (BLOCK + 0x1000), BLOCK).unwrap())
        .collect()
}

fn notes() -> Vec<NoteRegion> {
    (0..CPUS)
        .map(|cpu| NoteRegion {
            paddr: 0x7000_0000 + cpu * 0x4_0000,
            size: 336,
        })
        .collect()
}

fn inputs<'a>(notes: &'a [NoteRegion], ram: &'a [PhysRange]) -> HeaderInputs<'a> {
    HeaderInputs {
        arch: kdump_agent::model::elfcorehdr::Arch::X86_64,
        cpu_notes: notes,
        vmcoreinfo: NoteRegion {
            paddr: 0x1_00c6_6000,
            size: 0x1024,
        },
        kernel_text: Some(KernelText {
            vaddr: 0xffff_ffff_8100_0000,
            paddr: 0x100_0000,
            size: 0x2c5_8000,
        }),
        ram,
        page_offset: arch::X86_64_DEFAULT_PAGE_OFFSET,
    }
}

fn benches(c: &mut Criterion) {
    let text = iomem_text(10_000);
    assert_eq!(text.lines().count(), 10_000);
    let mut g = c.benchmark_group("iomem");
    g.bench_function("baseline: count lines, 10000", |b| {
        b.iter(|| black_box(&text).lines().count())
    });
    g.bench_function("parse, 10000 lines", |b| {
        b.iter(|| Iomem::parse(black_box(&text)).unwrap())
    });
    g.finish();

    let notes = notes();
    let ram = ram_ranges(RAM_RANGES);
    let header_len = build(&inputs(&notes, &ram)).unwrap().len();
    let mut g = c.benchmark_group("elfcorehdr");
    g.bench_function("baseline: zeroed buffer of the header's size", |b| {
        b.iter(|| vec![0u8; black_box(header_len)])
    });
    g.bench_function("build, 8192 ranges + 256 cpus", |b| {
        b.iter(|| build(black_box(&inputs(&notes, &ram))).unwrap())
    });

    let bytes = build(&inputs(&notes, &ram)).unwrap();
    g.bench_function("parse, 8192 ranges + 256 cpus", |b| {
        b.iter(|| ElfCoreHeader::parse(black_box(&bytes)).unwrap())
    });

    // Loaded: the built header. Expected: the last 64 blocks gone, 64 new ones added.
    let loaded = ElfCoreHeader::parse(&bytes).unwrap().ram_ranges();
    let expected: RamRanges = ram[..ram.len() - 64]
        .iter()
        .copied()
        .chain(
            ram_ranges(RAM_RANGES + 64)[RAM_RANGES as usize..]
                .iter()
                .copied(),
        )
        .collect();
    assert_eq!(loaded.len(), RAM_RANGES as usize);
    let d = diff(&expected, &loaded);
    assert_eq!(d.excess_bytes, 64 * BLOCK);
    assert_eq!(d.missing_bytes, 64 * BLOCK);
    g.bench_function("baseline: clone both range sets, 8192", |b| {
        b.iter(|| (black_box(&expected).clone(), black_box(&loaded).clone()))
    });
    g.bench_function("diff, 8192 ranges", |b| {
        b.iter(|| diff(black_box(&expected), black_box(&loaded)))
    });

    let iomem = Iomem::parse(&text).unwrap();
    g.bench_function("expected RAM from a 10000-line iomem", |b| {
        b.iter(|| expected_ram(black_box(&iomem), LoadPath::KexecFileLoad).unwrap())
    });
    g.finish();
}

criterion_group!(header, benches);
criterion_main!(header);
