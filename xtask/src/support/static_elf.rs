//! What a shipped static agent binary is, read from its bytes: its ELF machine, that it needs
//! no loader or library, and that the eBPF object it embeds was built for its architecture
//! (its kprobes read their arguments where that architecture's `struct pt_regs` keeps them).
use anyhow::{Context as _, Result, bail, ensure};
use goblin::elf::{Elf, header::EM_BPF, program_header::PT_INTERP};

use super::agent::StaticTarget;

/// A kprobe whose first instructions read the first two arguments (`online_pages(pfn, nr)`).
const ARGUMENT_PROBE: &str = "online_pages_kprobe";

/// eBPF opcodes: `ldxdw dst, [src + off]`, `mov64 dst, src`, `call`.
const LDXDW: u8 = 0x79;
const MOV64_REG: u8 = 0xbf;
const CALL: u8 = 0x85;

/// Checks `binary` against `target`; returns a one-line summary.
pub fn check(binary: &[u8], target: &StaticTarget) -> Result<String> {
    let elf = Elf::parse(binary).context("not an ELF file")?;
    ensure!(
        elf.header.e_machine == target.e_machine,
        "e_machine {} where {} expects {}",
        elf.header.e_machine,
        target.triple,
        target.e_machine
    );
    ensure!(
        !elf.program_headers.iter().any(|p| p.p_type == PT_INTERP),
        "it has a PT_INTERP: not static"
    );
    ensure!(
        elf.libraries.is_empty(),
        "it needs {:?}: not static",
        elf.libraries
    );
    let (at, object) = embedded_bpf_object(binary)?;
    let offsets = argument_offsets(object)?;
    ensure!(
        offsets == sorted(target.pt_regs_arg_offsets),
        "the embedded probes' {ARGUMENT_PROBE} reads its arguments at pt_regs+{offsets:?}, \
         not {:?} as on {}: built for another architecture",
        target.pt_regs_arg_offsets,
        target.triple
    );
    Ok(format!(
        "static, e_machine {}, embeds an eBPF object at byte {at} whose kprobes read pt_regs+{}/+{}",
        target.e_machine, offsets[0], offsets[1]
    ))
}

/// The first EM_BPF ELF object inside `binary` (what `include_bytes_aligned!` put there).
fn embedded_bpf_object(binary: &[u8]) -> Result<(usize, &[u8])> {
    let mut from = 1;
    while let Some(pos) = binary[from..].windows(4).position(|w| w == b"\x7fELF") {
        let at = from + pos;
        if let Ok(elf) = Elf::parse(&binary[at..])
            && elf.header.e_machine == EM_BPF
        {
            return Ok((at, &binary[at..]));
        }
        from = at + 1;
    }
    bail!("no embedded eBPF object (built with AYA_BUILD_SKIP=1?)")
}

/// The `pt_regs` offsets `ARGUMENT_PROBE` loads before its first helper call from the context
/// register (r1) or a copy of it, ascending.
fn argument_offsets(object: &[u8]) -> Result<[i16; 2]> {
    let elf = Elf::parse(object).context("embedded eBPF object")?;
    let sym = elf
        .syms
        .iter()
        .find(|s| elf.strtab.get_at(s.st_name) == Some(ARGUMENT_PROBE))
        .with_context(|| format!("the embedded object has no {ARGUMENT_PROBE}"))?;
    let section = elf
        .section_headers
        .get(sym.st_shndx)
        .context("symbol section out of range")?;
    let start = usize::try_from(section.sh_offset + sym.st_value)?;
    let code = object
        .get(start..start + usize::try_from(sym.st_size)?)
        .context("program bytes out of range")?;
    let loads = context_loads(code);
    match loads[..] {
        [a, b] => Ok(sorted([a, b])),
        _ => bail!("{ARGUMENT_PROBE} loads {loads:?} from its context before its first call"),
    }
}

/// The pair in ascending order: the compiler may load the second argument first.
fn sorted(mut pair: [i16; 2]) -> [i16; 2] {
    pair.sort_unstable();
    pair
}

/// The offsets of the `ldxdw` loads from the context register (r1) or a copy of it, up to the
/// first helper call, in program order.
fn context_loads(code: &[u8]) -> Vec<i16> {
    let mut ctx = [false; 11];
    ctx[1] = true;
    let mut loads = Vec::new();
    for insn in code.chunks_exact(8) {
        let (op, dst, src) = (
            insn[0],
            usize::from(insn[1] & 0xf),
            usize::from(insn[1] >> 4),
        );
        let off = i16::from_le_bytes([insn[2], insn[3]]);
        match op {
            CALL => break,
            LDXDW if src < ctx.len() && ctx[src] => loads.push(off),
            MOV64_REG if src < ctx.len() && dst < ctx.len() => {
                ctx[dst] = ctx[src];
                continue;
            }
            _ => {}
        }
        // Any other write to a register (loads, ALU) ends its being the context.
        if matches!(op & 0x07, 0x00 | 0x01 | 0x04 | 0x07) && dst < ctx.len() {
            ctx[dst] = false;
        }
    }
    loads
}

#[cfg(test)]
mod tests {
    use super::*;

    fn insn(op: u8, dst: u8, src: u8, off: i16) -> [u8; 8] {
        let [lo, hi] = off.to_le_bytes();
        [op, dst | (src << 4), lo, hi, 0, 0, 0, 0]
    }

    #[test]
    fn loads_from_the_context_and_its_copies_until_the_first_call() {
        // The x86_64 probe as compiled: rsi, then rdi, then helpers.
        let code: Vec<u8> = [
            insn(LDXDW, 2, 1, 104),
            insn(0x7b, 10, 2, -16),
            insn(LDXDW, 9, 1, 112),
            insn(CALL, 0, 0, 0),
            insn(LDXDW, 3, 1, 96),
        ]
        .concat();
        assert_eq!(context_loads(&code), [104, 112]);
        // A copy of r1 is the context; r1 overwritten by a load is not.
        let code: Vec<u8> = [
            insn(MOV64_REG, 6, 1, 0),
            insn(LDXDW, 1, 6, 8),
            insn(LDXDW, 2, 1, 0),
            insn(LDXDW, 3, 6, 0),
        ]
        .concat();
        assert_eq!(context_loads(&code), [8, 0]);
        assert_eq!(sorted([8, 0]), [0, 8]);
    }
}
