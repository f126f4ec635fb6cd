//! The agent's own arm64 crash load, laid out for one `kexec_load(KEXEC_ON_CRASH)`: the
//! `Image`, the initrd, the capture kernel's device tree, the elfcorehdr the agent built and
//! a few instructions that enter the kernel with the device tree in `x0`. Pure: bytes in,
//! segments out, every segment checked before the call.
//!
//! The facts come from kexec-tools (`kexec/arch/arm64/kexec-arm64.c`, `crashdump-arm64.c`):
//! the image at a 2 MiB boundary of the reservation plus `text_offset`, the initrd and the
//! device tree after it, the elfcorehdr at the top; `/chosen` gets `bootargs`,
//! `linux,elfcorehdr`, `linux,usable-memory-range` (the low range last) and the initrd.
//! The kernel enters a `kexec_load` image with `x0` = 0 (only `kexec_file_load` sets
//! `dtb_mem`), which is why the entry is the agent's own trampoline, not the image.
use fdt::{Fdt, node::FdtNode};
use vm_fdt::{FdtReserveEntry, FdtWriter};

use crate::{model::ranges::PhysRange, reload::recipe::Arm64Image};

const PAGE: u64 = 4096;
/// booting.rst: the image sits `text_offset` above a 2 MiB aligned base.
const KERNEL_ALIGN: u64 = 2 << 20;
/// booting.rst: the device tree must not exceed 2 MiB (the kernel maps it through a fixmap).
const MAX_FDT_BYTES: usize = 2 << 20;
/// `KEXEC_SEGMENT_MAX`.
pub const KEXEC_SEGMENT_MAX: usize = 16;

/// What a segment holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Kernel,
    Initrd,
    DeviceTree,
    ElfCoreHeader,
    Trampoline,
}

/// One segment of the load: `bytes` copied to physical `mem`, zero-filled to `memsz`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    pub role: Role,
    pub bytes: Vec<u8>,
    pub mem: u64,
    pub memsz: u64,
}

/// A crash image ready for `kexec_load`: its segments and the physical entry point.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CrashImage {
    pub segments: Vec<Segment>,
    pub entry: u64,
}

impl CrashImage {
    /// The elfcorehdr it loads: what the capture kernel will serve as `/proc/vmcore`'s head.
    pub fn header(&self) -> &[u8] {
        self.segment(Role::ElfCoreHeader).map_or(&[], |s| &s.bytes)
    }

    pub fn segment(&self, role: Role) -> Option<&Segment> {
        self.segments.iter().find(|s| s.role == role)
    }

    /// Bytes it copies into the reservation.
    pub fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.bytes.len() as u64).sum()
    }
}

/// What the load is made of.
#[derive(Debug)]
pub struct Arm64Load<'a> {
    /// Every `Crash kernel` reservation (the capture kernel's usable memory).
    pub reservations: &'a [PhysRange],
    /// The `Image` file and its header.
    pub kernel: Vec<u8>,
    pub image: Arm64Image,
    pub initrd: Option<Vec<u8>>,
    /// The elfcorehdr, built for this machine's RAM.
    pub header: Vec<u8>,
    /// The running kernel's device tree (`/sys/firmware/fdt`).
    pub running_fdt: &'a [u8],
    pub cmdline: &'a str,
    /// A fresh seed for `/chosen/kaslr-seed` (used only when the running tree has one).
    pub kaslr_seed: u64,
}

/// Why no image could be laid out.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    #[error("no crash kernel reservation")]
    NoReservation,
    #[error("the {role:?} segment ({bytes} bytes) does not fit the reservation {reservation}")]
    DoesNotFit {
        role: Role,
        bytes: u64,
        reservation: PhysRange,
    },
    #[error("segment {role:?} at {mem:#x} (+{memsz:#x}) {why}")]
    BadSegment {
        role: Role,
        mem: u64,
        memsz: u64,
        why: &'static str,
    },
    #[error("device tree: {0}")]
    DeviceTree(String),
    #[error("image: {0}")]
    Image(String),
}

fn page_align(bytes: u64) -> u64 {
    bytes.div_ceil(PAGE) * PAGE
}

/// Lays out the load in the last reservation (kexec-tools' choice: the high one when there
/// are two) and checks it.
pub fn plan(load: Arm64Load<'_>) -> Result<CrashImage, LayoutError> {
    let res = *load.reservations.last().ok_or(LayoutError::NoReservation)?;
    let end = res.end.saturating_add(1);
    let misfit = |role, bytes: u64| LayoutError::DoesNotFit {
        role,
        bytes,
        reservation: res,
    };
    let header_memsz = page_align(load.header.len() as u64);
    let header_mem = end
        .checked_sub(header_memsz)
        .filter(|&m| m >= res.start)
        .ok_or(misfit(Role::ElfCoreHeader, header_memsz))?;
    // Each segment goes at the cursor, below the elfcorehdr at the top.
    let mut cursor = res.start.next_multiple_of(KERNEL_ALIGN) + load.image.text_offset;
    let mut place = |role, memsz: u64| {
        let mem = cursor;
        cursor = cursor.saturating_add(memsz);
        if cursor > header_mem {
            return Err(misfit(role, memsz));
        }
        Ok(mem)
    };
    let kernel_memsz = page_align(load.image.image_size.max(load.kernel.len() as u64));
    let kernel_mem = place(Role::Kernel, kernel_memsz)?;
    let mut segments = vec![Segment {
        role: Role::Kernel,
        bytes: load.kernel,
        mem: kernel_mem,
        memsz: kernel_memsz,
    }];
    let mut initrd_range = None;
    if let Some(initrd) = load.initrd {
        let memsz = page_align(initrd.len() as u64);
        let mem = place(Role::Initrd, memsz)?;
        initrd_range = Some((mem, mem + initrd.len() as u64));
        segments.push(Segment {
            role: Role::Initrd,
            bytes: initrd,
            mem,
            memsz,
        });
    }
    let elfcorehdr = (header_mem, load.header.len() as u64);
    segments.push(Segment {
        role: Role::ElfCoreHeader,
        bytes: load.header,
        mem: header_mem,
        memsz: header_memsz,
    });
    let dtb = capture_fdt(
        load.running_fdt,
        &Chosen {
            bootargs: load.cmdline,
            elfcorehdr,
            usable: load.reservations,
            initrd: initrd_range,
            kaslr_seed: load.kaslr_seed,
        },
    )?;
    let dtb_memsz = page_align(dtb.len() as u64);
    let dtb_mem = place(Role::DeviceTree, dtb_memsz)?;
    segments.push(Segment {
        role: Role::DeviceTree,
        bytes: dtb,
        mem: dtb_mem,
        memsz: dtb_memsz,
    });
    let entry = place(Role::Trampoline, PAGE)?;
    segments.push(Segment {
        role: Role::Trampoline,
        bytes: trampoline(dtb_mem, kernel_mem).to_vec(),
        mem: entry,
        memsz: PAGE,
    });
    let image = CrashImage { entry, segments };
    validate(&image, res)?;
    Ok(image)
}

/// What the kernel's `sanity_check_segment_list` refuses, and what booting.rst requires,
/// checked before the call so that a refusal names the segment.
pub fn validate(image: &CrashImage, res: PhysRange) -> Result<(), LayoutError> {
    if image.segments.len() > KEXEC_SEGMENT_MAX {
        return Err(LayoutError::Image(format!(
            "{} segments, kexec_load takes {KEXEC_SEGMENT_MAX}",
            image.segments.len()
        )));
    }
    for (i, s) in image.segments.iter().enumerate() {
        let bad = |why| LayoutError::BadSegment {
            role: s.role,
            mem: s.mem,
            memsz: s.memsz,
            why,
        };
        if s.mem % PAGE != 0 || s.memsz % PAGE != 0 || s.memsz == 0 {
            return Err(bad("is not page-aligned"));
        }
        if s.bytes.len() as u64 > s.memsz {
            return Err(bad("holds more bytes than its size"));
        }
        let range = PhysRange::from_start_size(s.mem, s.memsz).ok_or(bad("passes 2^64"))?;
        if !res.encloses(&range) {
            return Err(LayoutError::DoesNotFit {
                role: s.role,
                bytes: s.memsz,
                reservation: res,
            });
        }
        if let Some(other) = image.segments[..i].iter().find(|o| {
            PhysRange::from_start_size(o.mem, o.memsz).is_some_and(|o| o.overlaps(&range))
        }) {
            return Err(LayoutError::BadSegment {
                role: s.role,
                mem: s.mem,
                memsz: s.memsz,
                why: match other.role {
                    Role::Kernel => "overlaps the kernel",
                    Role::Initrd => "overlaps the initrd",
                    Role::DeviceTree => "overlaps the device tree",
                    Role::ElfCoreHeader => "overlaps the elfcorehdr",
                    Role::Trampoline => "overlaps the trampoline",
                },
            });
        }
        if s.role == Role::DeviceTree && s.bytes.len() > MAX_FDT_BYTES {
            return Err(bad("is a device tree larger than 2 MiB"));
        }
    }
    let entry_ok = image
        .segment(Role::Trampoline)
        .is_some_and(|t| t.mem == image.entry);
    if !entry_ok || image.segment(Role::Kernel).is_none() {
        return Err(LayoutError::Image(
            "the entry is not the trampoline segment, or there is no kernel".into(),
        ));
    }
    Ok(())
}

/// The entry: `x0` = the device tree, `x1`..`x3` = 0 (booting.rst), then a branch to the
/// image's first instruction. Runs with the MMU off, so the literals are 8-byte aligned.
pub fn trampoline(dtb: u64, kernel: u64) -> [u8; 40] {
    const INSNS: [u32; 6] = [
        0x5800_00c0, // ldr x0, .+24 (dtb)
        0xaa1f_03e1, // mov x1, xzr
        0xaa1f_03e2, // mov x2, xzr
        0xaa1f_03e3, // mov x3, xzr
        0x5800_0084, // ldr x4, .+16 (kernel)
        0xd61f_0080, // br x4
    ];
    let mut out = [0u8; 40];
    for (i, insn) in INSNS.iter().enumerate() {
        out[i * 4..i * 4 + 4].copy_from_slice(&insn.to_le_bytes());
    }
    out[24..32].copy_from_slice(&dtb.to_le_bytes());
    out[32..40].copy_from_slice(&kernel.to_le_bytes());
    out
}

/// What the capture kernel's `/chosen` says.
#[derive(Clone, Copy, Debug)]
pub struct Chosen<'a> {
    pub bootargs: &'a str,
    /// Start and length of the elfcorehdr.
    pub elfcorehdr: (u64, u64),
    /// The crash reservations: the capture kernel's only memory.
    pub usable: &'a [PhysRange],
    /// Start and end (exclusive) of the initrd.
    pub initrd: Option<(u64, u64)>,
    pub kaslr_seed: u64,
}

/// `/chosen` properties the capture tree sets itself, so the running tree's are dropped.
/// `rng-seed` is dropped too: a seed must not be handed on twice (the running kernel
/// consumed it), and kexec-tools leaves the capture kernel without one as well.
const CHOSEN_REPLACED: &[&str] = &[
    "bootargs",
    "linux,elfcorehdr",
    "linux,usable-memory-range",
    "linux,initrd-start",
    "linux,initrd-end",
    "kaslr-seed",
    "rng-seed",
];

/// The running device tree with `/chosen` edited for the capture kernel, written anew.
pub fn capture_fdt(running: &[u8], chosen: &Chosen<'_>) -> Result<Vec<u8>, LayoutError> {
    let running = &without_nops(running)?;
    let fdt = Fdt::new(running)
        .map_err(|e| LayoutError::DeviceTree(format!("/sys/firmware/fdt: {e:?}")))?;
    // The parser asserts on malformed structure blocks: a refusal, not a dead agent.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        write_capture_fdt(&fdt, running, chosen)
    }))
    .map_err(|_| {
        LayoutError::DeviceTree("the running device tree's structure block is malformed".into())
    })?
}

fn write_capture_fdt(
    fdt: &Fdt<'_>,
    running: &[u8],
    chosen: &Chosen<'_>,
) -> Result<Vec<u8>, LayoutError> {
    let werr = |e: vm_fdt::Error| LayoutError::DeviceTree(e.to_string());
    let root = fdt
        .find_node("/")
        .ok_or_else(|| LayoutError::DeviceTree("no root node".into()))?;
    let cells = root.cell_sizes();
    let reserved = fdt
        .memory_reservations()
        .map(|r| FdtReserveEntry::new(r.address() as u64, r.size() as u64))
        .collect::<Result<Vec<_>, _>>()
        .map_err(werr)?;
    let mut w = FdtWriter::new_with_mem_reserv(&reserved).map_err(werr)?;
    if let Some(cpuid) = running.get(0x1c..0x20) {
        w.set_boot_cpuid_phys(u32::from_be_bytes(cpuid.try_into().expect("4 bytes")));
    }
    let chosen_props = chosen_properties(chosen, cells.address_cells, cells.size_cells)?;
    let had_seed = fdt
        .find_node("/chosen")
        .and_then(|c| c.property("kaslr-seed"))
        .is_some_and(|p| p.value.len() == 8);
    let mut chosen_props = chosen_props;
    if had_seed {
        chosen_props.push(("kaslr-seed", chosen.kaslr_seed.to_be_bytes().to_vec()));
    }
    let has_chosen = root.children().any(|c| c.name == "chosen");
    write_node(&mut w, root, "", 0, &chosen_props, !has_chosen).map_err(werr)?;
    let bytes = w.finish().map_err(werr)?;
    if bytes.len() > MAX_FDT_BYTES {
        return Err(LayoutError::DeviceTree(format!(
            "{} bytes, booting.rst allows 2 MiB",
            bytes.len()
        )));
    }
    Ok(bytes)
}

const FDT_BEGIN_NODE: u32 = 1;
const FDT_END_NODE: u32 = 2;
const FDT_PROP: u32 = 3;
const FDT_NOP: u32 = 4;
const FDT_END: u32 = 9;

/// The tree with its `FDT_NOP` tokens taken out. The running kernel NOPs `/chosen/rng-seed` in
/// place once it has used it, and `fdt` 0.1.5 skips NOPs only before a node's first property
/// (it asserts on one between properties); 0.2 is an alpha.
fn without_nops(fdt: &[u8]) -> Result<Vec<u8>, LayoutError> {
    let bad = |why: &str| LayoutError::DeviceTree(format!("/sys/firmware/fdt: {why}"));
    let be32 = |at: usize| -> Result<u32, LayoutError> {
        fdt.get(at..at + 4)
            .map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes")))
            .ok_or_else(|| bad("truncated"))
    };
    if be32(0)? != 0xd00d_feed {
        return Err(bad("no FDT magic"));
    }
    let (off_struct, off_strings) = (be32(8)? as usize, be32(12)? as usize);
    let (size_strings, size_struct) = (be32(32)? as usize, be32(36)? as usize);
    let struct_end = off_struct
        .checked_add(size_struct)
        .filter(|&e| e <= off_strings && off_strings + size_strings <= fdt.len())
        .ok_or_else(|| bad("blocks out of order or past its end"))?;
    let mut out = fdt[..off_struct].to_vec();
    let mut at = off_struct;
    while at < struct_end {
        let token = be32(at)?;
        let len = match token {
            FDT_NOP => {
                at += 4;
                continue;
            }
            FDT_BEGIN_NODE => {
                let name = fdt[at + 4..struct_end]
                    .iter()
                    .position(|&b| b == 0)
                    .ok_or_else(|| bad("unterminated node name"))?;
                4 + (name + 1).next_multiple_of(4)
            }
            FDT_PROP => 12 + (be32(at + 4)? as usize).next_multiple_of(4),
            FDT_END_NODE | FDT_END => 4,
            _ => return Err(bad("unknown structure token")),
        };
        let next = at + len;
        out.extend_from_slice(fdt.get(at..next).ok_or_else(|| bad("truncated"))?);
        at = next;
        if token == FDT_END {
            break;
        }
    }
    let new_size = out.len() - off_struct;
    let new_strings = out.len();
    out.extend_from_slice(&fdt[off_strings..off_strings + size_strings]);
    let total = out.len();
    out[4..8].copy_from_slice(&(total as u32).to_be_bytes());
    out[12..16].copy_from_slice(&(new_strings as u32).to_be_bytes());
    out[36..40].copy_from_slice(&(new_size as u32).to_be_bytes());
    Ok(out)
}

/// The properties the capture kernel's `/chosen` gets, in the root's cell sizes.
fn chosen_properties(
    chosen: &Chosen<'_>,
    address_cells: usize,
    size_cells: usize,
) -> Result<Vec<(&'static str, Vec<u8>)>, LayoutError> {
    let cell = |value: u64, cells: usize, what: &str| -> Result<Vec<u8>, LayoutError> {
        match cells {
            1 => u32::try_from(value)
                .map(|v| v.to_be_bytes().to_vec())
                .map_err(|_| {
                    LayoutError::DeviceTree(format!(
                        "{what} {value:#x} does not fit the root's one-cell #address-cells/#size-cells"
                    ))
                }),
            2 => Ok(value.to_be_bytes().to_vec()),
            n => Err(LayoutError::DeviceTree(format!(
                "the root's cell size {n} is neither 1 nor 2"
            ))),
        }
    };
    let range = |start: u64, size: u64| -> Result<Vec<u8>, LayoutError> {
        let mut v = cell(start, address_cells, "address")?;
        v.extend(cell(size, size_cells, "size")?);
        Ok(v)
    };
    let mut bootargs = chosen.bootargs.as_bytes().to_vec();
    bootargs.push(0);
    let mut props = vec![
        ("bootargs", bootargs),
        (
            "linux,elfcorehdr",
            range(chosen.elfcorehdr.0, chosen.elfcorehdr.1)?,
        ),
    ];
    // The low range last, as kexec-tools writes it (older capture kernels read only the first).
    let mut usable = Vec::new();
    for r in chosen.usable.iter().rev() {
        usable.extend(range(r.start, r.size())?);
    }
    props.push(("linux,usable-memory-range", usable));
    if let Some((start, end)) = chosen.initrd {
        props.push(("linux,initrd-start", start.to_be_bytes().to_vec()));
        props.push(("linux,initrd-end", end.to_be_bytes().to_vec()));
    }
    Ok(props)
}

/// Copies `node` and its subtree; `/chosen` (depth 1) loses [`CHOSEN_REPLACED`] and gains
/// `chosen_props`, or is created under the root when the tree has none.
fn write_node(
    w: &mut FdtWriter,
    node: FdtNode<'_, '_>,
    name: &str,
    depth: usize,
    chosen_props: &[(&str, Vec<u8>)],
    create_chosen: bool,
) -> Result<(), vm_fdt::Error> {
    let handle = w.begin_node(name)?;
    let is_chosen = depth == 1 && name == "chosen";
    for p in node.properties() {
        if !(is_chosen && CHOSEN_REPLACED.contains(&p.name)) {
            w.property(p.name, p.value)?;
        }
    }
    if is_chosen {
        for (name, value) in chosen_props {
            w.property(name, value)?;
        }
    }
    for child in node.children() {
        write_node(w, child, child.name, depth + 1, chosen_props, false)?;
    }
    if depth == 0 && create_chosen {
        let chosen = w.begin_node("chosen")?;
        for (name, value) in chosen_props {
            w.property(name, value)?;
        }
        w.end_node(chosen)?;
    }
    w.end_node(handle)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const MIB: u64 = 1 << 20;

    /// A device tree shaped like QEMU virt's: two-cell root, memory, /chosen with the boot's
    /// initrd, bootargs and seeds, a reserved-memory entry.
    fn running_fdt(address_cells: u32) -> Vec<u8> {
        let mut w =
            FdtWriter::new_with_mem_reserv(&[FdtReserveEntry::new(0x4800_0000, 0x1000).unwrap()])
                .unwrap();
        let root = w.begin_node("").unwrap();
        w.property_u32("#address-cells", address_cells).unwrap();
        w.property_u32("#size-cells", address_cells).unwrap();
        w.property_string("compatible", "linux,dummy-virt").unwrap();
        let mem = w.begin_node("memory@40000000").unwrap();
        w.property_string("device_type", "memory").unwrap();
        w.property_array_u32("reg", &[0, 0x4000_0000, 0, 0x4000_0000])
            .unwrap();
        w.end_node(mem).unwrap();
        let chosen = w.begin_node("chosen").unwrap();
        w.property_string("bootargs", "console=ttyAMA0 crashkernel=256M")
            .unwrap();
        w.property_u64("linux,initrd-start", 0x4800_0000).unwrap();
        w.property_u64("linux,initrd-end", 0x4900_0000).unwrap();
        w.property_u64("kaslr-seed", 0).unwrap();
        w.property("rng-seed", &[7; 32]).unwrap();
        w.property_string("stdout-path", "/pl011@9000000").unwrap();
        w.end_node(chosen).unwrap();
        let uart = w.begin_node("pl011@9000000").unwrap();
        w.property_phandle(0x8000).unwrap();
        w.end_node(uart).unwrap();
        w.end_node(root).unwrap();
        w.finish().unwrap()
    }

    fn chosen_of(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
        let fdt = Fdt::new(bytes).unwrap();
        fdt.find_node("/chosen")
            .unwrap()
            .properties()
            .map(|p| (p.name.to_owned(), p.value.to_vec()))
            .collect()
    }

    fn image(kernel_len: usize) -> Arm64Image {
        Arm64Image {
            text_offset: 0,
            image_size: (kernel_len as u64 + 2 * MIB).next_multiple_of(PAGE),
        }
    }

    fn load<'a>(res: &'a [PhysRange], fdt: &'a [u8], initrd: usize) -> Arm64Load<'a> {
        Arm64Load {
            reservations: res,
            kernel: vec![0x11; 30 * MIB as usize + 123],
            image: image(30 * MIB as usize + 123),
            initrd: (initrd > 0).then(|| vec![0x22; initrd]),
            header: vec![0x33; 64 + 7 * 56],
            running_fdt: fdt,
            cmdline: "console=ttyAMA0 nr_cpus=1 reset_devices",
            kaslr_seed: 0x0123_4567_89ab_cdef,
        }
    }

    #[test]
    fn the_capture_tree_says_where_everything_is() {
        let fdt = running_fdt(2);
        let res = [PhysRange::from_start_size(0x6000_0000, 256 * MIB).unwrap()];
        let image = plan(load(&res, &fdt, 5 * MIB as usize + 1)).unwrap();
        let kernel = image.segment(Role::Kernel).unwrap();
        assert_eq!(kernel.mem, 0x6000_0000);
        let initrd = image.segment(Role::Initrd).unwrap();
        assert_eq!(initrd.mem, kernel.mem + kernel.memsz);
        let header = image.segment(Role::ElfCoreHeader).unwrap();
        assert_eq!(header.mem + header.memsz, 0x7000_0000);
        let dtb = image.segment(Role::DeviceTree).unwrap();
        let chosen = chosen_of(&dtb.bytes);
        let get = |name: &str| {
            chosen
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(
            get("bootargs").unwrap(),
            b"console=ttyAMA0 nr_cpus=1 reset_devices\0"
        );
        let mut hdr = header.mem.to_be_bytes().to_vec();
        hdr.extend((64u64 + 7 * 56).to_be_bytes());
        assert_eq!(get("linux,elfcorehdr").unwrap(), hdr);
        let mut usable = 0x6000_0000u64.to_be_bytes().to_vec();
        usable.extend((256 * MIB).to_be_bytes());
        assert_eq!(get("linux,usable-memory-range").unwrap(), usable);
        assert_eq!(get("linux,initrd-start").unwrap(), initrd.mem.to_be_bytes());
        assert_eq!(
            get("linux,initrd-end").unwrap(),
            (initrd.mem + 5 * MIB + 1).to_be_bytes()
        );
        assert_eq!(
            get("kaslr-seed").unwrap(),
            0x0123_4567_89ab_cdefu64.to_be_bytes()
        );
        assert!(get("rng-seed").is_none());
        assert_eq!(get("stdout-path").unwrap(), b"/pl011@9000000\0");
        // Everything else is copied: nodes, phandles, the reservation block.
        let parsed = Fdt::new(&dtb.bytes).unwrap();
        assert!(parsed.find_node("/memory@40000000").is_some());
        assert!(parsed.find_phandle(0x8000).is_some());
        assert_eq!(parsed.memory_reservations().count(), 1);
        // The trampoline loads the tree's address and branches to the image.
        let t = image.segment(Role::Trampoline).unwrap();
        assert_eq!(image.entry, t.mem);
        assert_eq!(t.bytes[24..32], dtb.mem.to_le_bytes());
        assert_eq!(t.bytes[32..40], kernel.mem.to_le_bytes());
        assert_eq!(image.header(), &vec![0x33; 64 + 7 * 56][..]);
    }

    /// `running_fdt` after the kernel used its `rng-seed`: each word of the property NOPed.
    fn nopped_fdt() -> Vec<u8> {
        let mut b = running_fdt(2);
        let seed: Vec<u8> = [7u8; 32].to_vec();
        let at = b.windows(32).position(|w| w == &seed[..]).unwrap() - 12;
        for word in (at..at + 12 + 32).step_by(4) {
            b[word..word + 4].copy_from_slice(&FDT_NOP.to_be_bytes());
        }
        b
    }

    #[test]
    fn a_tree_with_nops_between_properties_is_read() {
        let fdt = nopped_fdt();
        let out = without_nops(&fdt).unwrap();
        assert_eq!(out.len(), fdt.len() - 44);
        let res = [PhysRange::from_start_size(0x6000_0000, 256 * MIB).unwrap()];
        let image = plan(load(&res, &fdt, 0)).unwrap();
        let chosen = chosen_of(&image.segment(Role::DeviceTree).unwrap().bytes);
        assert!(chosen.iter().any(|(n, _)| n == "stdout-path"));
        assert!(!chosen.iter().any(|(n, _)| n == "rng-seed"));
        assert!(without_nops(&fdt[..fdt.len() - 8]).is_err());
    }

    #[test]
    fn without_an_initrd_the_boot_initrd_is_not_handed_on() {
        let fdt = running_fdt(2);
        let res = [PhysRange::from_start_size(0x6000_0000, 256 * MIB).unwrap()];
        let image = plan(load(&res, &fdt, 0)).unwrap();
        let chosen = chosen_of(&image.segment(Role::DeviceTree).unwrap().bytes);
        assert!(!chosen.iter().any(|(n, _)| n.starts_with("linux,initrd")));
    }

    #[test]
    fn one_cell_roots_take_one_cell_values_and_refuse_bigger_ones() {
        let fdt = running_fdt(1);
        let low = [PhysRange::from_start_size(0x6000_0000, 256 * MIB).unwrap()];
        let image = plan(load(&low, &fdt, 0)).unwrap();
        let chosen = chosen_of(&image.segment(Role::DeviceTree).unwrap().bytes);
        let hdr = &chosen
            .iter()
            .find(|(n, _)| n == "linux,elfcorehdr")
            .unwrap()
            .1;
        assert_eq!(hdr.len(), 8);
        let high = [PhysRange::from_start_size(0x1_6000_0000, 256 * MIB).unwrap()];
        let err = plan(load(&high, &fdt, 0)).unwrap_err();
        assert!(err.to_string().contains("one-cell"), "{err}");
    }

    #[test]
    fn the_low_reservation_is_listed_last() {
        let fdt = running_fdt(2);
        let res = [
            PhysRange::from_start_size(0x3000_0000, 64 * MIB).unwrap(),
            PhysRange::from_start_size(0x1_0000_0000, 256 * MIB).unwrap(),
        ];
        let image = plan(load(&res, &fdt, 0)).unwrap();
        assert_eq!(image.segment(Role::Kernel).unwrap().mem, 0x1_0000_0000);
        let chosen = chosen_of(&image.segment(Role::DeviceTree).unwrap().bytes);
        let usable = &chosen
            .iter()
            .find(|(n, _)| n == "linux,usable-memory-range")
            .unwrap()
            .1;
        assert_eq!(usable[..8], 0x1_0000_0000u64.to_be_bytes());
        assert_eq!(usable[16..24], 0x3000_0000u64.to_be_bytes());
    }

    #[test]
    fn too_small_a_reservation_is_refused_by_segment() {
        let fdt = running_fdt(2);
        let res = [PhysRange::from_start_size(0x6000_0000, 32 * MIB).unwrap()];
        let err = plan(load(&res, &fdt, 5 * MIB as usize)).unwrap_err();
        assert!(matches!(err, LayoutError::DoesNotFit { .. }), "{err}");
        let err = capture_fdt(
            b"garbage garbage garbage garbage garbage",
            &Chosen {
                bootargs: "",
                elfcorehdr: (0, 0),
                usable: &res,
                initrd: None,
                kaslr_seed: 0,
            },
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("device tree: /sys/firmware/fdt"),
            "{err}"
        );
    }

    #[test]
    fn validation_names_the_segment_the_kernel_would_refuse() {
        let fdt = running_fdt(2);
        let res = [PhysRange::from_start_size(0x6000_0000, 256 * MIB).unwrap()];
        let good = plan(load(&res, &fdt, MIB as usize)).unwrap();
        let with = |f: &dyn Fn(&mut CrashImage)| {
            let mut image = good.clone();
            f(&mut image);
            validate(&image, res[0]).unwrap_err().to_string()
        };
        let dtb = good
            .segments
            .iter()
            .position(|s| s.role == Role::DeviceTree)
            .unwrap();
        assert!(with(&|i| i.segments[dtb].mem = 0x6000_0000).ends_with("overlaps the kernel"),);
        assert!(with(&|i| i.segments[dtb].mem += 8).ends_with("is not page-aligned"));
        assert!(with(&|i| i.segments[dtb].mem = 0x7000_0000).contains("does not fit"));
        assert!(with(&|i| i.segments[dtb].memsz = 0).ends_with("is not page-aligned"));
        assert!(with(&|i| i.entry += PAGE).contains("the entry is not the trampoline"));
        assert!(
            with(&|i| {
                let t = i.segments.pop().unwrap();
                i.segments.extend(std::iter::repeat_n(t, 13));
            })
            .contains("kexec_load takes 16"),
        );
    }

    #[test]
    fn trampoline_encodes_the_documented_instructions() {
        let t = trampoline(0x7000_1000, 0x6020_0000);
        let word = |i: usize| u32::from_le_bytes(t[i * 4..i * 4 + 4].try_into().unwrap());
        // ldr x0, #24: imm19 = 6, Rt = 0; ldr x4, #16: imm19 = 4, Rt = 4.
        assert_eq!(word(0) >> 24, 0x58);
        assert_eq!((word(0) >> 5) & 0x7ffff, 6);
        assert_eq!((word(4) >> 5) & 0x7ffff, 4);
        assert_eq!(word(4) & 0x1f, 4);
        // br x4
        assert_eq!(word(5), 0xd61f_0000 | (4 << 5));
        // The literals sit where the loads point: pc + imm19 * 4.
        assert_eq!(
            u64::from_le_bytes(t[24..32].try_into().unwrap()),
            0x7000_1000
        );
        assert_eq!(
            u64::from_le_bytes(t[16 + 16..40].try_into().unwrap()),
            0x6020_0000
        );
    }

    proptest! {
        /// Any reservation that fits lays out disjoint, page-aligned segments inside it, with
        /// the image on its 2 MiB boundary plus text_offset.
        #[test]
        fn layouts_are_disjoint_and_inside(
            start_mib in 512u64..8192,
            extra_mib in 0u64..512,
            kernel_kib in 1u64..40_000,
            text_offset in prop_oneof![Just(0u64), Just(0x80000u64)],
            initrd_kib in 0u64..40_000,
            header_phdrs in 1usize..4000,
        ) {
            let fdt = running_fdt(2);
            let size = 96 * MIB + extra_mib * MIB;
            let res = [PhysRange::from_start_size(start_mib * MIB + 0x1000, size).unwrap()];
            let kernel_len = (kernel_kib * 1024) as usize;
            let l = Arm64Load {
                reservations: &res,
                kernel: vec![1; kernel_len],
                image: Arm64Image { text_offset, image_size: kernel_len as u64 + MIB },
                initrd: (initrd_kib > 0).then(|| vec![2; (initrd_kib * 1024) as usize]),
                header: vec![3; 64 + header_phdrs * 56],
                running_fdt: &fdt,
                cmdline: "x",
                kaslr_seed: 1,
            };
            match plan(l) {
                Ok(image) => {
                    let k = image.segment(Role::Kernel).unwrap();
                    prop_assert_eq!((k.mem - text_offset) % KERNEL_ALIGN, 0);
                    prop_assert!(validate(&image, res[0]).is_ok());
                    let mut ranges: Vec<_> = image.segments.iter().map(|s| (s.mem, s.mem + s.memsz)).collect();
                    ranges.sort_unstable();
                    for w in ranges.windows(2) {
                        prop_assert!(w[0].1 <= w[1].0);
                    }
                }
                Err(e) => prop_assert!(matches!(e, LayoutError::DoesNotFit { .. }), "{}", e),
            }
        }
    }
}
