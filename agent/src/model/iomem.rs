//! `/proc/iomem` as the kernel's resource tree: each line is `start-end : name`, indented two
//! spaces per level of nesting. Pure logic: the caller reads the file.
//!
//! The parser is strict (siblings ascending and disjoint, children inside their parent) because
//! the kernel's tree has those properties and everything downstream relies on them; any other
//! input is a typed error with its 1-based line number.
use std::fmt;

use crate::model::ranges::{PhysRange, RamRanges};

/// Name of the boot-time crash kernel reservation(s); twice with `crashkernel=X,high`.
pub const CRASH_KERNEL: &str = "Crash kernel";
pub const SYSTEM_RAM: &str = "System RAM";
/// Where kexec-tools finds the kernel's physical load address.
pub const KERNEL_CODE: &str = "Kernel code";
/// An AMD GART aperture, which kexec-tools leaves out of the dump.
pub const GART: &str = "GART";

/// One line of `/proc/iomem`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resource {
    pub range: PhysRange,
    /// Where the name sits in [`Iomem`]'s name arena (see [`Iomem::name`]): one allocation for
    /// all names instead of one per line halves the parse time.
    name: (usize, usize),
    /// 0 for top-level resources.
    pub depth: u32,
    /// Index of the enclosing resource in [`Iomem::resources`].
    pub parent: Option<u32>,
    /// 1-based line number in the parsed text.
    pub line: usize,
}

/// `System RAM` and its driver-owned variants such as `System RAM (virtio_mem)` and
/// `System RAM (kmem)`: the resources `walk_system_ram_res` matches.
pub fn is_system_ram(name: &str) -> bool {
    name.strip_prefix(SYSTEM_RAM)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(" ("))
}

/// The parsed resource tree, in file (depth-first, ascending) order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Iomem {
    resources: Vec<Resource>,
    names: String,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {kind}")]
pub struct IomemError {
    /// 1-based; 0 when the error is about the whole input.
    pub line: usize,
    pub kind: IomemErrorKind,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IomemErrorKind {
    #[error("empty input: no resources")]
    Empty,
    #[error("not UTF-8 text (byte {byte} of the line)")]
    NotUtf8 { byte: usize },
    #[error("expected \"start-end : name\", found {found:?}")]
    Syntax { found: String },
    #[error("address {found:?} is not a hexadecimal 64-bit number")]
    Address { found: String },
    #[error("control character {code:#04x} at column {column} (CRLF line ending or tab?)")]
    ControlChar { code: u32, column: usize },
    #[error("indentation of {spaces} spaces is not a multiple of 2")]
    OddIndent { spaces: usize },
    #[error("indentation jumps from depth {from} to {to}")]
    IndentJump { from: u32, to: u32 },
    #[error("range {start:#x}-{end:#x} ends before it starts")]
    Reversed { start: u64, end: u64 },
    #[error("range {range} is not inside its parent {parent} (line {parent_line})")]
    OutsideParent {
        range: PhysRange,
        parent: PhysRange,
        parent_line: usize,
    },
    #[error("range {range} overlaps or precedes its sibling {sibling} (line {sibling_line})")]
    SiblingOrder {
        range: PhysRange,
        sibling: PhysRange,
        sibling_line: usize,
    },
    #[error(
        "every address is zero: the file was read without root (CAP_SYS_ADMIN), which hides \
         the addresses; read it as root"
    )]
    Redacted,
}

impl Iomem {
    /// Parses raw bytes, reporting invalid UTF-8 with its line number.
    pub fn parse_bytes(bytes: &[u8]) -> Result<Iomem, IomemError> {
        match std::str::from_utf8(bytes) {
            Ok(text) => Self::parse(text),
            Err(e) => {
                let valid = &bytes[..e.valid_up_to()];
                let line = valid.iter().filter(|&&b| b == b'\n').count() + 1;
                let line_start = valid.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
                Err(IomemError {
                    line,
                    kind: IomemErrorKind::NotUtf8 {
                        byte: e.valid_up_to() - line_start + 1,
                    },
                })
            }
        }
    }

    pub fn parse(text: &str) -> Result<Iomem, IomemError> {
        if text.is_empty() {
            return Err(IomemError {
                line: 0,
                kind: IomemErrorKind::Empty,
            });
        }
        // Split on '\n' only: a '\r' (CRLF file) is a control character error, not silently
        // dropped, so what parses prints back the same.
        let body = text.strip_suffix('\n').unwrap_or(text);
        let mut tree = TreeBuilder::with_capacity(body.len() / 32);
        let mut all_zero = true;
        for (i, raw) in body.split('\n').enumerate() {
            let line = i + 1;
            let l = parse_line(raw).map_err(|kind| IomemError { line, kind })?;
            all_zero &= l.range == ZERO;
            if let Err(kind) = tree.push(l, line) {
                // An unprivileged read breaks the tree shape first: say why instead.
                let rest_zero = || {
                    body.split('\n')
                        .skip(line)
                        .all(|raw| parse_line(raw).is_ok_and(|l| l.range == ZERO))
                };
                if all_zero && rest_zero() {
                    return Err(IomemError {
                        line: 1,
                        kind: IomemErrorKind::Redacted,
                    });
                }
                return Err(IomemError { line, kind });
            }
        }
        if all_zero && tree.resources.len() > 1 {
            return Err(IomemError {
                line: 1,
                kind: IomemErrorKind::Redacted,
            });
        }
        Ok(Iomem {
            resources: tree.resources,
            names: tree.names,
        })
    }

    pub fn resources(&self) -> &[Resource] {
        &self.resources
    }

    pub fn name(&self, r: &Resource) -> &str {
        &self.names[r.name.0..r.name.1]
    }

    /// Resources with exactly this name, in address order.
    pub fn named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Resource> + 'a {
        self.resources.iter().filter(move |r| self.name(r) == name)
    }

    /// The System RAM resources as `walk_system_ram_res` visits them: ascending, at any depth
    /// (virtio-mem and kmem RAM sit below their device), but not inside another System RAM
    /// resource (the walk resumes after the end of each match).
    pub fn system_ram_resources(&self) -> Vec<PhysRange> {
        let mut out: Vec<PhysRange> = Vec::new();
        for r in self
            .resources
            .iter()
            .filter(|r| is_system_ram(self.name(r)))
        {
            match out.last() {
                Some(last) if r.range.start <= last.end => {}
                _ => out.push(r.range),
            }
        }
        out
    }

    /// All System RAM as a byte set.
    pub fn system_ram(&self) -> RamRanges {
        RamRanges::from_ranges(self.system_ram_resources())
    }

    /// The crash kernel reservation(s), ascending (low then high with `crashkernel=X,high`).
    pub fn crash_reservations(&self) -> Vec<PhysRange> {
        self.named(CRASH_KERNEL).map(|r| r.range).collect()
    }
}

/// What a line shows when addresses are hidden from non-root readers.
const ZERO: PhysRange = PhysRange { start: 0, end: 0 };

/// Builds the resource tree line by line, checking the kernel's invariants.
struct TreeBuilder {
    resources: Vec<Resource>,
    names: String,
    /// Open ancestors of the next line (indexes into `resources`).
    stack: Vec<usize>,
    /// Per depth, the last sibling seen.
    last_at_depth: Vec<Option<usize>>,
}

impl TreeBuilder {
    fn with_capacity(n: usize) -> Self {
        Self {
            resources: Vec::with_capacity(n),
            names: String::with_capacity(n * 16),
            stack: Vec::new(),
            last_at_depth: vec![None],
        }
    }

    fn push(&mut self, l: Line<'_>, line: usize) -> Result<(), IomemErrorKind> {
        let depth = l.depth as usize;
        if depth > self.stack.len() {
            return Err(IomemErrorKind::IndentJump {
                from: self.stack.len() as u32,
                to: l.depth,
            });
        }
        // Returning to a shallower depth closes the deeper levels.
        self.stack.truncate(depth);
        self.last_at_depth.truncate(depth + 1);
        if let Some(&p) = self.stack.last() {
            let parent = &self.resources[p];
            if !parent.range.encloses(&l.range) {
                return Err(IomemErrorKind::OutsideParent {
                    range: l.range,
                    parent: parent.range,
                    parent_line: parent.line,
                });
            }
        }
        if let Some(s) = self.last_at_depth[depth] {
            let sibling = &self.resources[s];
            if l.range.start <= sibling.range.end {
                return Err(IomemErrorKind::SiblingOrder {
                    range: l.range,
                    sibling: sibling.range,
                    sibling_line: sibling.line,
                });
            }
        }
        let index = self.resources.len();
        let name_start = self.names.len();
        self.names.push_str(l.name);
        self.resources.push(Resource {
            range: l.range,
            name: (name_start, self.names.len()),
            depth: l.depth,
            parent: self.stack.last().map(|&p| p as u32),
            line,
        });
        self.last_at_depth[depth] = Some(index);
        self.last_at_depth.push(None);
        self.stack.push(index);
        Ok(())
    }
}

struct Line<'a> {
    depth: u32,
    range: PhysRange,
    name: &'a str,
}

fn parse_line(raw: &str) -> Result<Line<'_>, IomemErrorKind> {
    // Byte screen first (C0, DEL, and 0xc2 which leads every C1 control); chars only then.
    if raw.bytes().any(|b| b < 0x20 || b == 0x7f || b == 0xc2)
        && let Some((column, c)) = raw.chars().enumerate().find(|(_, c)| c.is_control())
    {
        return Err(IomemErrorKind::ControlChar {
            code: u32::from(c),
            column: column + 1,
        });
    }
    let body = raw.trim_start_matches(' ');
    let spaces = raw.len() - body.len();
    if !spaces.is_multiple_of(2) {
        return Err(IomemErrorKind::OddIndent { spaces });
    }
    let syntax = || IomemErrorKind::Syntax {
        found: excerpt(raw),
    };
    let (addrs, name) = body.split_once(" : ").ok_or_else(syntax)?;
    let (start, end) = addrs.split_once('-').ok_or_else(syntax)?;
    let start = parse_hex(start)?;
    let end = parse_hex(end)?;
    let range = PhysRange::new(start, end).ok_or(IomemErrorKind::Reversed { start, end })?;
    Ok(Line {
        depth: u32::try_from(spaces / 2).map_err(|_| syntax())?,
        range,
        name,
    })
}

fn parse_hex(s: &str) -> Result<u64, IomemErrorKind> {
    let bad = || IomemErrorKind::Address { found: excerpt(s) };
    if s.is_empty() {
        return Err(bad());
    }
    s.bytes().try_fold(0u64, |acc, b| {
        let digit = (b as char).to_digit(16).ok_or_else(bad)?;
        // A fifth nibble above 60 bits would shift out of the u64.
        if acc >> 60 != 0 {
            return Err(bad());
        }
        Ok(acc << 4 | u64::from(digit))
    })
}

/// At most 60 characters of an offending input, for one-line errors.
fn excerpt(s: &str) -> String {
    const MAX: usize = 60;
    match s.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}...", &s[..cut]),
        None => s.to_owned(),
    }
}

impl fmt::Display for Iomem {
    /// Prints the tree back in `/proc/iomem` form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for r in &self.resources {
            let width = if r.range.end > u32::MAX as u64 { 0 } else { 8 };
            writeln!(
                f,
                "{:indent$}{:0width$x}-{:0width$x} : {}",
                "",
                r.range.start,
                r.range.end,
                self.name(r),
                indent = r.depth as usize * 2,
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: &str = "\
00000000-00000fff : Reserved
00001000-0009fbff : System RAM
0009fc00-000fffff : Reserved
  000f0000-000fffff : System ROM
00100000-bfffffff : System RAM
  01000000-0220bb07 : Kernel code
  03000000-0327c13f : Kernel data
  20000000-2fffffff : Crash kernel
c0001000-eebfffff : PCI Bus 0000:00
100000000-63fffffff : System RAM
";

    fn r(start: u64, end: u64) -> PhysRange {
        PhysRange::new(start, end).unwrap()
    }

    fn kind(text: &str) -> (usize, IomemErrorKind) {
        let e = Iomem::parse(text).unwrap_err();
        (e.line, e.kind)
    }

    #[test]
    fn parses_tree_with_depths_and_parents() {
        let io = Iomem::parse(HOST).unwrap();
        assert_eq!(io.resources().len(), 10);
        let code = io.named(KERNEL_CODE).next().unwrap();
        assert_eq!(code.depth, 1);
        assert_eq!(code.line, 6);
        assert_eq!(io.resources()[code.parent.unwrap() as usize].line, 5);
        assert_eq!(io.crash_reservations(), vec![r(0x2000_0000, 0x2fff_ffff)]);
        assert_eq!(
            io.system_ram_resources(),
            vec![
                r(0x1000, 0x9fbff),
                r(0x100000, 0xbfffffff),
                r(0x1_0000_0000, 0x6_3fff_ffff)
            ]
        );
        assert_eq!(io.to_string(), HOST);
    }

    #[test]
    fn nested_ram_variants_count_and_children_of_ram_do_not() {
        let text = "\
00100000-3fffffff : System RAM
  00100000-001fffff : System RAM
140000000-33fffffff : virtio0
  140000000-17fffffff : System RAM (virtio_mem)
380000000-3bfffffff : Persistent Memory
  380000000-3bfffffff : dax0.0
    380000000-3bfffffff : System RAM (kmem)
3c0000000-3ffffffff : System RAMBO
";
        let io = Iomem::parse(text).unwrap();
        assert_eq!(
            io.system_ram_resources(),
            vec![
                r(0x100000, 0x3fffffff),
                r(0x1_4000_0000, 0x1_7fff_ffff),
                r(0x3_8000_0000, 0x3_bfff_ffff)
            ]
        );
    }

    #[test]
    fn two_crash_kernel_reservations() {
        let text = "\
00001000-0009ffff : System RAM
00100000-7fffffff : System RAM
  6f000000-7effffff : Crash kernel
100000000-47fffffff : System RAM
  43f000000-47effffff : Crash kernel
";
        let io = Iomem::parse(text).unwrap();
        assert_eq!(
            io.crash_reservations(),
            vec![r(0x6f00_0000, 0x7eff_ffff), r(0x4_3f00_0000, 0x4_7eff_ffff)]
        );
    }

    #[test]
    fn malformed_lines_are_typed_errors_with_line_numbers() {
        assert_eq!(
            kind("00000000-00000fff : Reserved\nzz\n"),
            (2, IomemErrorKind::Syntax { found: "zz".into() })
        );
        assert_eq!(kind(""), (0, IomemErrorKind::Empty));
        assert_eq!(
            kind("00001000-00000fff : x\n"),
            (
                1,
                IomemErrorKind::Reversed {
                    start: 0x1000,
                    end: 0xfff
                }
            )
        );
        assert!(matches!(
            kind("0-1 : a\n    0-1 : b\n"),
            (2, IomemErrorKind::IndentJump { from: 1, to: 2 })
        ));
        assert!(matches!(
            kind(" 0-1 : a\n"),
            (1, IomemErrorKind::OddIndent { spaces: 1 })
        ));
        assert!(matches!(
            kind("0-f : a\n  0-1f : b\n"),
            (2, IomemErrorKind::OutsideParent { parent_line: 1, .. })
        ));
        assert!(matches!(
            kind("0-f : a\nf-1f : b\n"),
            (
                2,
                IomemErrorKind::SiblingOrder {
                    sibling_line: 1,
                    ..
                }
            )
        ));
        assert!(matches!(
            kind("10-1f : a\n0-f : b\n"),
            (2, IomemErrorKind::SiblingOrder { .. })
        ));
        assert!(matches!(
            kind("0-10000000000000000 : a\n"),
            (1, IomemErrorKind::Address { .. })
        ));
        assert!(matches!(
            kind("+0-1 : a\n"),
            (1, IomemErrorKind::Address { .. })
        ));
        assert!(matches!(
            kind("0-1 : a\n\n"),
            (2, IomemErrorKind::Syntax { .. })
        ));
    }

    #[test]
    fn all_zero_addresses_mean_an_unprivileged_read() {
        let text = "00000000-00000000 : Reserved\n00000000-00000000 : System RAM\n  00000000-00000000 : Kernel code\n";
        let err = Iomem::parse(text).unwrap_err();
        assert_eq!(err.kind, IomemErrorKind::Redacted);
        assert!(err.to_string().contains("without root"));
    }

    #[test]
    fn invalid_utf8_names_its_line() {
        let err = Iomem::parse_bytes(b"0-1 : a\n2-3 : b\xff\n").unwrap_err();
        assert_eq!(err.line, 2);
        assert_eq!(err.kind, IomemErrorKind::NotUtf8 { byte: 8 });
    }

    #[test]
    fn control_characters_are_rejected_so_output_round_trips() {
        // Found by the fuzzer: "\r\r\n" used to leave '\r's in the name.
        assert!(matches!(
            kind("0-1 : a\r\n"),
            (
                1,
                IomemErrorKind::ControlChar {
                    code: 0x0d,
                    column: 8
                }
            )
        ));
        assert!(matches!(
            kind("0-1 : a\n\t2-3 : b\n"),
            (
                2,
                IomemErrorKind::ControlChar {
                    code: 0x09,
                    column: 1
                }
            )
        ));
        assert!(matches!(kind("\n"), (1, IomemErrorKind::Syntax { .. })));
        assert!(Iomem::parse("0-1 : a").is_ok());
    }

    #[test]
    fn empty_name_and_long_garbage_do_not_panic() {
        assert!(Iomem::parse("0-1 : \n").is_ok());
        let long = "x".repeat(10_000);
        let (_, k) = kind(&long);
        assert!(k.to_string().len() < 120);
    }
}
