//! The load recipe (kernel, initrd, command line), where it comes from, and the checks it must
//! pass before the loaded image is touched.
//!
//! Parsing and checking are pure: they take file contents and file facts. The thin wrapper at
//! the end opens the files once, checks the open descriptors, and hands the same descriptors to
//! the loader, so what was checked is what gets loaded.
use std::{
    fmt,
    fs::File,
    io,
    os::unix::fs::{FileExt as _, MetadataExt as _},
    path::{Path, PathBuf},
};

use crate::{
    model::{
        elfcorehdr::{Arch, LoadPath},
        events::KexecLoad,
    },
    sys::rootfs::Rootfs,
};

/// What to load as the crash kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadRecipe {
    pub kernel: PathBuf,
    /// `kexec_file_load` accepts no initrd (`KEXEC_FILE_NO_INITRAMFS`).
    pub initrd: Option<PathBuf>,
    pub cmdline: String,
    pub source: RecipeSource,
}

/// Where the recipe came from (`status` shows it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecipeSource {
    /// `--kernel`, `--initrd`, `--cmdline`.
    Flags,
    /// Taken from a `kexec_file_load` another loader made (files resolved at the call).
    Adopted { pid: u32, comm: String },
    /// Debian/Ubuntu `/etc/default/kdump-tools`.
    KdumpTools(PathBuf),
    /// Fedora/RHEL `/etc/sysconfig/kdump`.
    Sysconfig(PathBuf),
    /// The state directory of an earlier run of this agent.
    Persisted,
}

impl fmt::Display for RecipeSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Flags => f.write_str("flags"),
            Self::Adopted { pid, comm } => write!(f, "adopted from {comm} (pid {pid})"),
            Self::KdumpTools(path) | Self::Sysconfig(path) => {
                write!(f, "config {}", path.display())
            }
            Self::Persisted => f.write_str("state directory"),
        }
    }
}

/// A line of a distribution config file the agent cannot read as a plain assignment.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{path}:{line}: {key}: {why}")]
pub struct ConfigError {
    pub path: String,
    pub line: usize,
    pub key: String,
    pub why: &'static str,
}

/// The `KEY=value` assignments of a shell-style config file, in order, with 1-based line numbers.
/// Only literal values are understood; a value needing the shell (`$VAR`, `$(...)`, backquotes)
/// is kept as an error and reported only if the key is used.
fn assignments(text: &str) -> Vec<(usize, &str, Result<String, &'static str>)> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        let line = line.strip_prefix("export ").unwrap_or(line).trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        out.push((i + 1, key, shell_literal(value)));
    }
    out
}

/// A shell word made only of literal text and quotes, followed by an optional comment.
fn shell_literal(value: &str) -> Result<String, &'static str> {
    let mut out = String::new();
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => loop {
                match chars.next() {
                    Some('\'') => break,
                    Some(c) => out.push(c),
                    None => return Err("unterminated single quote"),
                }
            },
            '"' => loop {
                match chars.next() {
                    Some('"') => break,
                    Some('$' | '`') => return Err("needs shell expansion, which is not supported"),
                    Some('\\') => match chars.next() {
                        Some(c) => out.push(c),
                        None => return Err("unterminated double quote"),
                    },
                    Some(c) => out.push(c),
                    None => return Err("unterminated double quote"),
                }
            },
            '$' | '`' => return Err("needs shell expansion, which is not supported"),
            '\\' => out.extend(chars.next()),
            ' ' | '\t' => {
                let rest = chars.as_str().trim_start();
                if rest.is_empty() || rest.starts_with('#') {
                    break;
                }
                return Err("unquoted value with spaces");
            }
            '#' if out.is_empty() => break,
            c => out.push(c),
        }
    }
    Ok(out)
}

/// The last assignment of `key` (the shell's answer), if any.
fn lookup(
    path: &Path,
    vars: &[(usize, &str, Result<String, &'static str>)],
    key: &str,
) -> Result<Option<String>, ConfigError> {
    match vars.iter().rev().find(|(_, k, _)| *k == key) {
        None => Ok(None),
        Some((_, _, Ok(value))) => Ok(Some(value.clone())),
        Some((line, _, Err(why))) => Err(ConfigError {
            path: path.display().to_string(),
            line: *line,
            key: key.to_owned(),
            why,
        }),
    }
}

/// The running kernel's command line without the parameters a capture kernel must not inherit.
fn inherited_cmdline(proc_cmdline: &str, remove: &[&str]) -> Vec<String> {
    proc_cmdline
        .split_whitespace()
        .filter(|word| {
            let name = word.split_once('=').map_or(*word, |(name, _)| name);
            name != "crashkernel" && !remove.contains(&name)
        })
        .map(str::to_owned)
        .collect()
}

fn join(mut words: Vec<String>, append: Option<&str>) -> String {
    words.extend(
        append
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_owned),
    );
    words.join(" ")
}

/// Debian/Ubuntu `/etc/default/kdump-tools`, read the way `kdump-config load` reads it:
/// `KDUMP_KERNEL` (default `/var/lib/kdump/vmlinuz`), `KDUMP_INITRD` (default
/// `/var/lib/kdump/initrd.img`), `KDUMP_CMDLINE` (default: `/proc/cmdline` without
/// `crashkernel=`, `hugepages=`, `hugepagesz=`) followed by `KDUMP_CMDLINE_APPEND`.
/// `Ok(None)` when `USE_KDUMP` is not 1: the distribution has kdump turned off.
pub fn from_kdump_tools(
    path: &Path,
    text: &str,
    proc_cmdline: &str,
) -> Result<Option<LoadRecipe>, ConfigError> {
    let vars = assignments(text);
    if lookup(path, &vars, "USE_KDUMP")?.as_deref() != Some("1") {
        return Ok(None);
    }
    let nonempty = |key| lookup(path, &vars, key).map(|v| v.filter(|v| !v.is_empty()));
    let kernel = nonempty("KDUMP_KERNEL")?.unwrap_or_else(|| "/var/lib/kdump/vmlinuz".into());
    let initrd = nonempty("KDUMP_INITRD")?.unwrap_or_else(|| "/var/lib/kdump/initrd.img".into());
    let base = match nonempty("KDUMP_CMDLINE")? {
        Some(cmdline) => cmdline.split_whitespace().map(str::to_owned).collect(),
        None => inherited_cmdline(proc_cmdline, &["hugepages", "hugepagesz"]),
    };
    let cmdline = join(base, nonempty("KDUMP_CMDLINE_APPEND")?.as_deref());
    Ok(Some(LoadRecipe {
        kernel: kernel.into(),
        initrd: Some(initrd.into()),
        cmdline,
        source: RecipeSource::KdumpTools(path.to_owned()),
    }))
}

/// `KDUMP_COREDIR` of a kdump-tools configuration (default `/var/crash`): where `kdump-config`
/// keeps its lock.
pub fn kdump_tools_coredir(path: &Path, text: &str) -> Result<PathBuf, ConfigError> {
    let vars = assignments(text);
    Ok(lookup(path, &vars, "KDUMP_COREDIR")?
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "/var/crash".into())
        .into())
}

/// Fedora/RHEL `/etc/sysconfig/kdump`, read the way `kdumpctl` reads it: kernel
/// `$KDUMP_BOOTDIR/$KDUMP_IMG-$KDUMP_KERNELVER$KDUMP_IMG_EXT` (defaults `/boot`, `vmlinuz`,
/// the running release, ``), initrd `$KDUMP_BOOTDIR/initramfs-${KDUMP_KERNELVER}kdump.img`,
/// command line `KDUMP_COMMANDLINE` (default `/proc/cmdline` without `crashkernel=` and the
/// `KDUMP_COMMANDLINE_REMOVE` parameters) followed by `KDUMP_COMMANDLINE_APPEND`.
pub fn from_sysconfig(
    path: &Path,
    text: &str,
    proc_cmdline: &str,
    running_release: &str,
) -> Result<LoadRecipe, ConfigError> {
    let vars = assignments(text);
    let get = |key: &str, default: &str| {
        lookup(path, &vars, key).map(|v| v.filter(|v| !v.is_empty()).unwrap_or(default.into()))
    };
    let release = get("KDUMP_KERNELVER", running_release)?;
    let bootdir = get("KDUMP_BOOTDIR", "/boot")?;
    let kernel = format!(
        "{bootdir}/{}-{release}{}",
        get("KDUMP_IMG", "vmlinuz")?,
        get("KDUMP_IMG_EXT", "")?
    );
    let initrd = format!("{bootdir}/initramfs-{release}kdump.img");
    let remove = get("KDUMP_COMMANDLINE_REMOVE", "")?;
    let remove: Vec<&str> = remove.split_whitespace().collect();
    let base = match get("KDUMP_COMMANDLINE", "")? {
        cmdline if cmdline.is_empty() => inherited_cmdline(proc_cmdline, &remove),
        cmdline => inherited_cmdline(&cmdline, &remove),
    };
    let cmdline = join(base, Some(&get("KDUMP_COMMANDLINE_APPEND", "")?));
    Ok(LoadRecipe {
        kernel: kernel.into(),
        initrd: Some(initrd.into()),
        cmdline,
        source: RecipeSource::Sysconfig(path.to_owned()),
    })
}

/// What a capture kernel's command line gets appended when `--cmdline` is not given
/// (the core of kdumpctl's and kdump-tools' defaults).
pub const DEFAULT_CMDLINE_APPEND: &str = "irqpoll nr_cpus=1 reset_devices";

/// `--kernel`, `--initrd`, `--cmdline`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecipeFlags {
    pub kernel: Option<PathBuf>,
    pub initrd: Option<PathBuf>,
    pub cmdline: Option<String>,
}

/// Picks the recipe: flags first, then the distribution's configuration (what the node's owner
/// states now), then what an earlier run persisted. `Ok(None)`: no recipe, so the agent only
/// observes.
pub fn resolve(
    flags: &RecipeFlags,
    persisted: Option<LoadRecipe>,
    distro: Option<LoadRecipe>,
    proc_cmdline: &str,
) -> Result<Option<LoadRecipe>, String> {
    if let Some(kernel) = &flags.kernel {
        let cmdline = match &flags.cmdline {
            Some(cmdline) => cmdline.clone(),
            None => join(
                inherited_cmdline(proc_cmdline, &[]),
                Some(DEFAULT_CMDLINE_APPEND),
            ),
        };
        return Ok(Some(LoadRecipe {
            kernel: kernel.clone(),
            initrd: flags.initrd.clone(),
            cmdline,
            source: RecipeSource::Flags,
        }));
    }
    if flags.initrd.is_some() || flags.cmdline.is_some() {
        return Err("--initrd and --cmdline need --kernel".into());
    }
    Ok(distro.or(persisted))
}

/// Why a loader's `kexec_file_load` gives no recipe to adopt.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AdoptError {
    #[error("not a successful kexec_file_load of a crash kernel")]
    NotAFileLoad,
    #[error("the {what} descriptor {fd} of pid {pid} was gone before the agent could resolve it")]
    Unresolved {
        what: &'static str,
        fd: i32,
        pid: u32,
    },
    #[error("the {what} was {path}, which cannot be opened again (an anonymous or deleted file)")]
    NotReopenable { what: &'static str, path: String },
}

/// The recipe of a `kexec_file_load` another loader made, from what the probes saw: its
/// descriptors resolved to paths while the call was in flight, and the command line as passed.
/// kexec-tools >= 2.0.28 hands the kernel over as a memfd copy; the kernel is then the argument
/// of the loader's command that names a file of the same size (`file_bytes` stats a path).
/// Anything else that cannot be opened again (a memfd, a deleted file) is refused.
pub fn adopted(
    load: &KexecLoad,
    file_bytes: impl Fn(&Path) -> Option<u64>,
) -> Result<LoadRecipe, AdoptError> {
    let files = match &load.files {
        Some(files)
            if load.syscall == LoadPath::KexecFileLoad && load.succeeded() && !load.unload =>
        {
            files
        }
        _ => return Err(AdoptError::NotAFileLoad),
    };
    let reopenable = |what: &'static str, fd: i32, path: &Option<PathBuf>| {
        let path = path.as_ref().ok_or(AdoptError::Unresolved {
            what,
            fd,
            pid: load.pid,
        })?;
        let text = path.to_string_lossy();
        if !path.is_absolute() || text.starts_with("/memfd:") || text.ends_with(" (deleted)") {
            return Err(AdoptError::NotReopenable {
                what,
                path: text.into_owned(),
            });
        }
        Ok(path.clone())
    };
    let initrd = (files.initrd_fd >= 0)
        .then(|| reopenable("initrd", files.initrd_fd, &files.initrd))
        .transpose()?;
    let kernel = reopenable("kernel", files.kernel_fd, &files.kernel).or_else(|refused| {
        let (Some(loader), Some(bytes)) = (&files.loader, files.kernel_bytes) else {
            return Err(refused);
        };
        loader
            .argv
            .iter()
            .skip(1)
            .filter(|a| !a.starts_with('-'))
            .map(|a| loader.cwd.join(a))
            .filter(|p| Some(p) != initrd.as_ref())
            .find(|p| file_bytes(p) == Some(bytes))
            .ok_or(refused)
    })?;
    Ok(LoadRecipe {
        kernel,
        initrd,
        // The kernel requires the NUL in cmdline_len; it is not part of the line.
        cmdline: files.cmdline.trim_end_matches('\0').to_owned(),
        source: RecipeSource::Adopted {
            pid: load.pid,
            comm: load.comm.clone(),
        },
    })
}

/// The x86 boot protocol header fields the kernel's `bzImage64_probe` and loader look at
/// (Documentation/arch/x86/boot.rst; arch/x86/kernel/kexec-bzimage64.c).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BzImage {
    /// Boot protocol version, e.g. 0x020f for 2.15.
    pub version: u16,
    /// Bytes the kernel needs in place while it decompresses and initialises.
    pub init_size: u32,
    /// Longest command line the kernel accepts, without the terminating NUL.
    pub cmdline_size: u32,
}

/// Bytes of the kernel file [`BzImage::parse`] needs.
pub const BZIMAGE_HEADER_LEN: usize = 0x268;
const LOADED_HIGH: u8 = 1 << 0;
const XLF_KERNEL_64: u16 = 1 << 0;
const XLF_CAN_BE_LOADED_ABOVE_4G: u16 = 1 << 1;
/// Room the kernel keeps in the command line for `elfcorehdr=0x<addr> ` (MAX_ELFCOREHDR_STR_LEN).
const ELFCOREHDR_PARAM_LEN: usize = 30;
const PAGE: u64 = 4096;

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

impl BzImage {
    /// Checks what `kexec_file_load` will check, in the same order, and says which failed.
    /// `head` is the start of the file (at least [`BZIMAGE_HEADER_LEN`] bytes when it has them).
    pub fn parse(head: &[u8], file_len: u64) -> Result<Self, &'static str> {
        if file_len < 2 * 512 || head.len() < BZIMAGE_HEADER_LEN {
            return Err("too short to be a bzImage");
        }
        if &head[0x202..0x206] != b"HdrS" {
            return Err("not a bzImage (no \"HdrS\" boot header at 0x202)");
        }
        if le16(head, 0x1fe) != 0xaa55 {
            return Err("not a bzImage (no 0xAA55 boot sector signature at 0x1FE)");
        }
        let version = le16(head, 0x206);
        if version < 0x020c {
            return Err("boot protocol older than 2.12, which kexec_file_load needs");
        }
        if head[0x211] & LOADED_HIGH == 0 {
            return Err("a zImage, not a bzImage (LOADED_HIGH not set)");
        }
        let xloadflags = le16(head, 0x236);
        if xloadflags & XLF_KERNEL_64 == 0 {
            return Err("not a 64-bit kernel (XLF_KERNEL_64 not set)");
        }
        if xloadflags & XLF_CAN_BE_LOADED_ABOVE_4G == 0 {
            return Err("cannot be loaded above 4 GiB (XLF_CAN_BE_LOADED_ABOVE_4G not set)");
        }
        Ok(Self {
            version,
            init_size: le32(head, 0x260),
            cmdline_size: le32(head, 0x238),
        })
    }
}

/// The arm64 `Image` header fields a loader places the kernel by
/// (Documentation/arch/arm64/booting.rst; kexec-tools `arm64_process_image_header`), checked
/// against the file: a cut or damaged Image loads fine and fails only when the capture kernel
/// boots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arm64Image {
    /// Where the image goes above a 2 MiB aligned base (0 since Linux 5.8).
    pub text_offset: u64,
    /// Bytes the image takes in memory from there, its BSS included.
    pub image_size: u64,
}

/// Bytes of the kernel file every kernel check needs: the bzImage boot header, or the arm64
/// Image header with the EFI stub's PE section table after it.
pub const KERNEL_HEAD_LEN: usize = 4096;
/// The arm64 Image header (`struct arm64_image_header`).
const ARM64_HEADER_LEN: usize = 64;
const ARM64_MAGIC: &[u8; 4] = b"ARM\x64";
/// `flags` bit 0: a big-endian kernel.
const ARM64_FLAG_BE: u64 = 1 << 0;
/// A 2 MiB aligned base plus `text_offset`: any offset must stay below it.
const ARM64_BASE_ALIGN: u64 = 2 << 20;

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

impl Arm64Image {
    /// Checks the header a loader reads and, for an EFI stub kernel (Debian's, Fedora's), that
    /// the file holds every section its PE header lists. `head` is the start of the file (at
    /// least [`KERNEL_HEAD_LEN`] bytes when it has them).
    pub fn parse(head: &[u8], file_len: u64) -> Result<Self, String> {
        if file_len < ARM64_HEADER_LEN as u64 || head.len() < ARM64_HEADER_LEN {
            return Err("too short to be an arm64 Image".into());
        }
        if &head[56..60] != ARM64_MAGIC {
            return Err("not an arm64 Image (no \"ARM\\x64\" magic at offset 56)".into());
        }
        let text_offset = le64(head, 8);
        let image_size = le64(head, 16);
        let flags = le64(head, 24);
        if flags & ARM64_FLAG_BE != 0 {
            return Err("a big-endian arm64 kernel".into());
        }
        if image_size == 0 {
            return Err(
                "image_size is 0 (a kernel older than 3.17): its size in memory is unknown".into(),
            );
        }
        if text_offset >= ARM64_BASE_ALIGN || !text_offset.is_multiple_of(PAGE) {
            return Err(format!(
                "text_offset {text_offset:#x} is not a 4 KiB aligned offset below 2 MiB"
            ));
        }
        if file_len > image_size {
            return Err(format!(
                "{file_len} bytes, more than the {image_size} bytes of image_size: not one arm64 Image"
            ));
        }
        if let Some(end) = pe_sections_end(head)?
            && file_len < end
        {
            return Err(format!(
                "truncated: {file_len} bytes, its EFI header's sections end at byte {end}"
            ));
        }
        Ok(Self {
            text_offset,
            image_size,
        })
    }
}

/// Where the last section of the EFI stub's PE image ends in the file, or `None` for an Image
/// without one (no "MZ" at 0).
fn pe_sections_end(head: &[u8]) -> Result<Option<u64>, String> {
    if &head[..2] != b"MZ" {
        return Ok(None);
    }
    let unreadable =
        || "its EFI header (\"MZ\" at 0) has no PE section table in its first 4 KiB".to_string();
    let pe = le32(head, 60) as usize;
    // "PE\0\0", then the COFF header: NumberOfSections at +6, SizeOfOptionalHeader at +20.
    let coff = pe
        .checked_add(24)
        .filter(|&end| end <= head.len())
        .ok_or_else(unreadable)?;
    if &head[pe..pe + 4] != b"PE\0\0" {
        return Err(format!(
            "its EFI header has no \"PE\\0\\0\" signature at {pe:#x}"
        ));
    }
    let sections = usize::from(le16(head, pe + 6));
    let table = coff + usize::from(le16(head, pe + 20));
    if table + sections * 40 > head.len() {
        return Err(unreadable());
    }
    // Each 40-byte entry: SizeOfRawData at +16, PointerToRawData at +20.
    Ok((0..sections)
        .map(|i| table + i * 40)
        .map(|e| u64::from(le32(head, e + 20)) + u64::from(le32(head, e + 16)))
        .max())
}

/// What the checks take from a kernel file's header, whatever its architecture's format.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelImage {
    /// Longest command line the loader may pass, its NUL included.
    pub cmdline_limit: usize,
    /// Where that limit comes from, for a refusal.
    pub cmdline_rule: String,
    /// Bytes the kernel needs in the reservation before anything else is placed.
    pub in_place_bytes: u64,
}

/// arm64 `COMMAND_LINE_SIZE`; the header travels in the device tree, not on the command line.
const ARM64_COMMAND_LINE_SIZE: usize = 2048;

impl KernelImage {
    /// Parses the kernel file format `arch` boots: a bzImage on x86_64, an Image on arm64.
    pub fn parse(arch: Arch, head: &[u8], file_len: u64) -> Result<Self, String> {
        match arch {
            Arch::X86_64 => {
                let image = BzImage::parse(head, file_len)?;
                Ok(Self {
                    cmdline_limit: (image.cmdline_size as usize)
                        .saturating_sub(ELFCOREHDR_PARAM_LEN),
                    cmdline_rule: format!(
                        "cmdline_size {} minus room for elfcorehdr=",
                        image.cmdline_size
                    ),
                    in_place_bytes: u64::from(image.init_size),
                })
            }
            Arch::Aarch64 => {
                let image = Arm64Image::parse(head, file_len)?;
                Ok(Self {
                    cmdline_limit: ARM64_COMMAND_LINE_SIZE,
                    cmdline_rule: "arm64 COMMAND_LINE_SIZE".into(),
                    in_place_bytes: image.text_offset + image.image_size,
                })
            }
        }
    }
}

/// What `fstat` says about one opened file of the recipe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileFacts {
    pub regular: bool,
    pub uid: u32,
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    pub len: u64,
}

/// A refused recipe: the one line the operator reads.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecipeError {
    #[error("{role} {path}: {why}")]
    File {
        role: &'static str,
        path: String,
        why: String,
    },
    #[error("command line: {0}")]
    Cmdline(String),
    #[error(
        "crash reservation: the images need at least {needed} bytes, /sys/kernel/kexec_crash_size is {reserved} bytes"
    )]
    TooLarge { needed: u64, reserved: u64 },
}

fn check_file(role: &'static str, path: &Path, facts: &FileFacts) -> Result<(), RecipeError> {
    let why = if !facts.regular {
        "not a regular file".to_owned()
    } else if facts.uid != 0 {
        format!("owned by uid {}, not root", facts.uid)
    } else if facts.mode & 0o022 != 0 {
        format!("mode {:04o} is writable by group or others", facts.mode)
    } else {
        return Ok(());
    };
    Err(RecipeError::File {
        role,
        path: path.display().to_string(),
        why,
    })
}

fn page_align(bytes: u64) -> u64 {
    bytes.div_ceil(PAGE) * PAGE
}

/// The checks before a load, on facts gathered from the opened files of a kernel for `arch`.
/// Returns the smallest reservation the images need (the kernel in place, from its header,
/// plus the initrd, page-aligned): a lower bound, so a refusal here is certain and anything
/// above it is left to the kernel.
pub fn check(
    arch: Arch,
    recipe: &LoadRecipe,
    kernel: &FileFacts,
    kernel_head: &[u8],
    initrd: Option<&FileFacts>,
    crash_size: u64,
) -> Result<u64, RecipeError> {
    check_file("kernel", &recipe.kernel, kernel)?;
    if let (Some(path), Some(facts)) = (&recipe.initrd, initrd) {
        check_file("initrd", path, facts)?;
    }
    let image =
        KernelImage::parse(arch, kernel_head, kernel.len).map_err(|why| RecipeError::File {
            role: "kernel",
            path: recipe.kernel.display().to_string(),
            why,
        })?;
    if recipe.cmdline.contains('\0') {
        return Err(RecipeError::Cmdline("contains a NUL byte".into()));
    }
    if recipe.cmdline.len() + 1 > image.cmdline_limit {
        return Err(RecipeError::Cmdline(format!(
            "{} bytes, the kernel accepts {} ({})",
            recipe.cmdline.len() + 1,
            image.cmdline_limit,
            image.cmdline_rule
        )));
    }
    let needed = page_align(image.in_place_bytes) + initrd.map_or(0, |f| page_align(f.len));
    if crash_size == 0 {
        return Err(RecipeError::TooLarge {
            needed,
            reserved: 0,
        });
    }
    if needed > crash_size {
        return Err(RecipeError::TooLarge {
            needed,
            reserved: crash_size,
        });
    }
    Ok(needed)
}

/// The recipe's files, opened and checked: these exact descriptors are what gets loaded.
#[derive(Debug)]
pub struct OpenedRecipe {
    pub kernel: File,
    pub initrd: Option<File>,
    /// Smallest reservation the images need, in bytes.
    pub needed_bytes: u64,
}

fn open(
    role: &'static str,
    path: &Path,
    rootfs: &Rootfs,
) -> Result<(File, FileFacts), RecipeError> {
    let file = rootfs.open(path).map_err(|e| RecipeError::File {
        role,
        path: e.path,
        why: e.why,
    })?;
    let fail = |e: io::Error| RecipeError::File {
        role,
        path: rootfs.describe(path),
        why: e.to_string(),
    };
    let meta = file.metadata().map_err(fail)?;
    let facts = FileFacts {
        regular: meta.file_type().is_file(),
        uid: meta.uid(),
        mode: meta.mode() & 0o7777,
        len: meta.len(),
    };
    Ok((file, facts))
}

/// Opens the recipe's files (host paths, under `rootfs`) and checks them against the
/// reservation (`crash_size` bytes).
pub fn open_checked(
    recipe: &LoadRecipe,
    crash_size: u64,
    rootfs: &Rootfs,
) -> Result<OpenedRecipe, RecipeError> {
    let (kernel, kernel_facts) = open("kernel", &recipe.kernel, rootfs)?;
    let initrd = recipe
        .initrd
        .as_deref()
        .map(|path| open("initrd", path, rootfs))
        .transpose()?;
    // Positioned reads leave the file offset alone for the loader.
    let head_len = kernel_facts.len.min(KERNEL_HEAD_LEN as u64) as usize;
    let mut head = vec![0; if kernel_facts.regular { head_len } else { 0 }];
    kernel
        .read_exact_at(&mut head, 0)
        .map_err(|e| RecipeError::File {
            role: "kernel",
            path: recipe.kernel.display().to_string(),
            why: e.to_string(),
        })?;
    let needed_bytes = check(
        Arch::RUNNING,
        recipe,
        &kernel_facts,
        &head,
        initrd.as_ref().map(|(_, facts)| facts),
        crash_size,
    )?;
    Ok(OpenedRecipe {
        kernel,
        initrd: initrd.map(|(file, _)| file),
        needed_bytes,
    })
}

#[cfg(test)]
mod tests {
    use std::{fs, os::unix::fs::PermissionsExt as _};

    use super::*;

    const PROC_CMDLINE: &str = "BOOT_IMAGE=/boot/vmlinuz-6.1.0-47-amd64 root=/dev/vda1 ro crashkernel=256M hugepages=16 quiet";

    /// The start of a bzImage as the boot protocol lays it out (2.15, 64-bit, relocatable).
    fn bzimage_head() -> Vec<u8> {
        let mut b = vec![0u8; BZIMAGE_HEADER_LEN];
        b[0x1fe..0x200].copy_from_slice(&0xaa55u16.to_le_bytes());
        b[0x202..0x206].copy_from_slice(b"HdrS");
        b[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
        b[0x211] = LOADED_HIGH;
        b[0x236..0x238]
            .copy_from_slice(&(XLF_KERNEL_64 | XLF_CAN_BE_LOADED_ABOVE_4G).to_le_bytes());
        b[0x238..0x23c].copy_from_slice(&2047u32.to_le_bytes());
        b[0x260..0x264].copy_from_slice(&(40u32 << 20).to_le_bytes());
        b
    }

    fn root_file(len: u64) -> FileFacts {
        FileFacts {
            regular: true,
            uid: 0,
            mode: 0o644,
            len,
        }
    }

    fn recipe() -> LoadRecipe {
        LoadRecipe {
            kernel: "/boot/vmlinuz".into(),
            initrd: Some("/boot/initrd.img".into()),
            cmdline: "console=ttyS0 irqpoll nr_cpus=1 reset_devices".into(),
            source: RecipeSource::Flags,
        }
    }

    const MIB: u64 = 1 << 20;

    #[test]
    fn a_good_bzimage_parses() {
        assert_eq!(
            BzImage::parse(&bzimage_head(), 8 * MIB),
            Ok(BzImage {
                version: 0x020f,
                init_size: 40 << 20,
                cmdline_size: 2047
            })
        );
    }

    #[test]
    fn each_boot_header_check_names_what_failed() {
        // (offset, byte written there, what the refusal must name)
        let cases = [
            (0x203, b'x', "HdrS"),
            (0x1fe, 0, "0xAA55"),
            (0x206, 0x0b, "2.12"),
            (0x211, 0, "LOADED_HIGH"),
            (0x236, XLF_CAN_BE_LOADED_ABOVE_4G as u8, "XLF_KERNEL_64"),
            (0x236, XLF_KERNEL_64 as u8, "XLF_CAN_BE_LOADED_ABOVE_4G"),
        ];
        for (offset, byte, expect) in cases {
            let mut head = bzimage_head();
            head[offset] = byte;
            let err = BzImage::parse(&head, 8 * MIB).unwrap_err();
            assert!(err.contains(expect), "{err:?} should mention {expect}");
        }
        assert_eq!(
            BzImage::parse(&bzimage_head(), 1000),
            Err("too short to be a bzImage")
        );
        assert_eq!(
            BzImage::parse(&bzimage_head()[..0x200], 8 * MIB),
            Err("too short to be a bzImage")
        );
    }

    #[test]
    fn garbage_is_not_a_bzimage() {
        let garbage: Vec<u8> = (0..BZIMAGE_HEADER_LEN)
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        assert!(BzImage::parse(&garbage, 8 * MIB).is_err());
    }

    #[test]
    fn a_good_recipe_passes_and_reports_the_lower_bound_it_needs() {
        let needed = check(
            Arch::X86_64,
            &recipe(),
            &root_file(8 * MIB),
            &bzimage_head(),
            Some(&root_file(30 * MIB + 1)),
            256 * MIB,
        );
        assert_eq!(needed, Ok(40 * MIB + 30 * MIB + PAGE));
    }

    #[test]
    fn refusals_are_one_line_naming_the_file_and_why() {
        let head = bzimage_head();
        let r = recipe();
        let run = |kernel: FileFacts, initrd: FileFacts, crash_size| {
            check(Arch::X86_64, &r, &kernel, &head, Some(&initrd), crash_size)
                .unwrap_err()
                .to_string()
        };
        let ok = root_file(8 * MIB);
        assert_eq!(
            run(
                FileFacts {
                    regular: false,
                    ..ok
                },
                ok,
                256 * MIB
            ),
            "kernel /boot/vmlinuz: not a regular file"
        );
        assert_eq!(
            run(ok, FileFacts { uid: 1000, ..ok }, 256 * MIB),
            "initrd /boot/initrd.img: owned by uid 1000, not root"
        );
        assert_eq!(
            run(FileFacts { mode: 0o664, ..ok }, ok, 256 * MIB),
            "kernel /boot/vmlinuz: mode 0664 is writable by group or others"
        );
        assert_eq!(
            run(ok, FileFacts { mode: 0o646, ..ok }, 256 * MIB),
            "initrd /boot/initrd.img: mode 0646 is writable by group or others"
        );
        assert_eq!(
            run(ok, root_file(300 * MIB), 256 * MIB),
            "crash reservation: the images need at least 356515840 bytes, \
             /sys/kernel/kexec_crash_size is 268435456 bytes"
        );
        assert_eq!(
            run(ok, ok, 0),
            "crash reservation: the images need at least 50331648 bytes, \
             /sys/kernel/kexec_crash_size is 0 bytes"
        );
    }

    #[test]
    fn a_garbage_kernel_is_refused_by_name() {
        let garbage = vec![0xffu8; BZIMAGE_HEADER_LEN];
        let err = check(
            Arch::X86_64,
            &recipe(),
            &root_file(8 * MIB),
            &garbage,
            None,
            256 * MIB,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "kernel /boot/vmlinuz: not a bzImage (no \"HdrS\" boot header at 0x202)"
        );
    }

    /// Debian 13's arm64 6.12 `vmlinuz` as its header says: an EFI stub Image of
    /// [`ARM64_FILE_LEN`] bytes, two PE sections, 4 KiB pages, placed anywhere.
    const ARM64_FILE_LEN: u64 = 37_730_816;
    const ARM64_IMAGE_SIZE: u64 = 38_797_312;

    fn arm64_head() -> Vec<u8> {
        let mut b = vec![0u8; KERNEL_HEAD_LEN];
        b[0..2].copy_from_slice(b"MZ");
        b[16..24].copy_from_slice(&ARM64_IMAGE_SIZE.to_le_bytes());
        b[24..32].copy_from_slice(&0xau64.to_le_bytes());
        b[56..60].copy_from_slice(ARM64_MAGIC);
        b[60..64].copy_from_slice(&0x40u32.to_le_bytes());
        b[0x40..0x44].copy_from_slice(b"PE\0\0");
        b[0x44..0x46].copy_from_slice(&0xaa64u16.to_le_bytes());
        b[0x46..0x48].copy_from_slice(&2u16.to_le_bytes());
        b[0x54..0x56].copy_from_slice(&160u16.to_le_bytes());
        // (name, SizeOfRawData, PointerToRawData) of .text and .data.
        for (i, (name, size, at)) in [
            (b".text\0\0\0", 0x1e1_0000u32, 0x1_0000u32),
            (b".data\0\0\0", 0x5d_ba00, 0x1e2_0000),
        ]
        .into_iter()
        .enumerate()
        {
            let e = 0x40 + 24 + 160 + 40 * i;
            b[e..e + 8].copy_from_slice(name);
            b[e + 16..e + 20].copy_from_slice(&size.to_le_bytes());
            b[e + 20..e + 24].copy_from_slice(&at.to_le_bytes());
        }
        b
    }

    #[test]
    fn a_whole_arm64_image_parses_and_a_half_one_is_truncated() {
        let head = arm64_head();
        assert_eq!(
            Arm64Image::parse(&head, ARM64_FILE_LEN),
            Ok(Arm64Image {
                text_offset: 0,
                image_size: ARM64_IMAGE_SIZE
            })
        );
        assert_eq!(
            Arm64Image::parse(&head, ARM64_FILE_LEN / 2),
            Err("truncated: 18865408 bytes, its EFI header's sections end at byte 37730816".into())
        );
        // Without an EFI stub nothing in the header says where the file ends.
        let mut plain = head.clone();
        plain[0..2].copy_from_slice(&[0, 0]);
        assert!(Arm64Image::parse(&plain, ARM64_FILE_LEN / 2).is_ok());
    }

    #[test]
    fn each_arm64_header_check_names_what_failed() {
        // (offset, bytes written there, what the refusal must name)
        let cases: [(usize, &[u8], &str); 6] = [
            (59, b"x", "ARM\\x64"),
            (24, &[0xb], "big-endian"),
            (16, &[0; 8], "image_size is 0"),
            (8, &[0x10, 0x02], "text_offset 0x210 is not"),
            (10, &[0x20], "text_offset 0x200000 is not"),
            (0x41, b"X", "PE\\0\\0"),
        ];
        for (offset, bytes, expect) in cases {
            let mut head = arm64_head();
            head[offset..offset + bytes.len()].copy_from_slice(bytes);
            let err = Arm64Image::parse(&head, ARM64_FILE_LEN).unwrap_err();
            assert!(err.contains(expect), "{err:?} should mention {expect}");
        }
        let err = Arm64Image::parse(&arm64_head(), ARM64_IMAGE_SIZE + 1).unwrap_err();
        assert!(
            err.contains("more than the 38797312 bytes of image_size"),
            "{err}"
        );
        let mut far = arm64_head();
        far[60..64].copy_from_slice(&0x1000u32.to_le_bytes());
        let err = Arm64Image::parse(&far, ARM64_FILE_LEN).unwrap_err();
        assert!(err.contains("no PE section table"), "{err}");
        assert_eq!(
            Arm64Image::parse(&arm64_head()[..63], ARM64_FILE_LEN),
            Err("too short to be an arm64 Image".into())
        );
    }

    #[test]
    fn each_architecture_takes_only_its_own_kernel_format() {
        let err = KernelImage::parse(Arch::Aarch64, &bzimage_head(), 8 * MIB).unwrap_err();
        assert!(err.starts_with("not an arm64 Image"), "{err}");
        let err = KernelImage::parse(Arch::X86_64, &arm64_head(), ARM64_FILE_LEN).unwrap_err();
        assert!(err.starts_with("not a bzImage"), "{err}");
    }

    #[test]
    fn an_arm64_recipe_is_checked_against_its_image() {
        let head = arm64_head();
        let needed = check(
            Arch::Aarch64,
            &recipe(),
            &root_file(ARM64_FILE_LEN),
            &head,
            Some(&root_file(30 * MIB + 1)),
            256 * MIB,
        );
        assert_eq!(needed, Ok(ARM64_IMAGE_SIZE + 30 * MIB + PAGE));
        let cut = check(
            Arch::Aarch64,
            &recipe(),
            &root_file(ARM64_FILE_LEN / 2),
            &head,
            None,
            256 * MIB,
        )
        .unwrap_err();
        assert_eq!(
            cut.to_string(),
            "kernel /boot/vmlinuz: truncated: 18865408 bytes, its EFI header's sections end at byte 37730816"
        );
        let long = LoadRecipe {
            cmdline: "x".repeat(2048),
            ..recipe()
        };
        assert_eq!(
            check(
                Arch::Aarch64,
                &long,
                &root_file(ARM64_FILE_LEN),
                &head,
                None,
                256 * MIB
            )
            .unwrap_err()
            .to_string(),
            "command line: 2049 bytes, the kernel accepts 2048 (arm64 COMMAND_LINE_SIZE)"
        );
    }

    proptest::proptest! {
        /// Any cut of an EFI stub Image short of its last section is refused as truncated;
        /// the whole file, or one padded up to image_size, is not.
        #[test]
        fn any_cut_of_an_arm64_image_is_refused(len in 64u64..ARM64_IMAGE_SIZE + 1) {
            let parsed = Arm64Image::parse(&arm64_head(), len);
            if len < ARM64_FILE_LEN {
                proptest::prop_assert!(parsed.unwrap_err().starts_with("truncated"));
            } else {
                proptest::prop_assert!(parsed.is_ok());
            }
        }
    }

    #[test]
    fn the_command_line_must_leave_room_for_elfcorehdr() {
        let head = bzimage_head();
        let fits = LoadRecipe {
            cmdline: "x".repeat(2047 - 30 - 1),
            ..recipe()
        };
        assert!(
            check(
                Arch::X86_64,
                &fits,
                &root_file(8 * MIB),
                &head,
                None,
                256 * MIB
            )
            .is_ok()
        );
        let long = LoadRecipe {
            cmdline: "x".repeat(2047 - 30),
            ..recipe()
        };
        assert_eq!(
            check(
                Arch::X86_64,
                &long,
                &root_file(8 * MIB),
                &head,
                None,
                256 * MIB
            )
            .unwrap_err()
            .to_string(),
            "command line: 2018 bytes, the kernel accepts 2017 (cmdline_size 2047 minus room for elfcorehdr=)"
        );
        let nul = LoadRecipe {
            cmdline: "a\0b".into(),
            ..recipe()
        };
        assert!(
            check(
                Arch::X86_64,
                &nul,
                &root_file(8 * MIB),
                &head,
                None,
                256 * MIB
            )
            .is_err()
        );
    }

    const KDUMP_TOOLS: &str = r#"
# kdump-tools configuration
USE_KDUMP=1
KDUMP_COREDIR="/var/crash"
#KDUMP_KERNEL=/var/lib/kdump/vmlinuz
KDUMP_CMDLINE_APPEND="reset_devices systemd.unit=kdump-tools-dump.service nr_cpus=1 irqpoll nousb"
MAKEDUMP_ARGS="-c -d 31"
KDUMP_SSH=$(hostname)
"#;

    #[test]
    fn kdump_tools_defaults_and_the_inherited_command_line() {
        let path = Path::new("/etc/default/kdump-tools");
        let r = from_kdump_tools(path, KDUMP_TOOLS, PROC_CMDLINE)
            .unwrap()
            .unwrap();
        assert_eq!(r.kernel, Path::new("/var/lib/kdump/vmlinuz"));
        assert_eq!(
            r.initrd.as_deref(),
            Some(Path::new("/var/lib/kdump/initrd.img"))
        );
        assert_eq!(
            r.cmdline,
            "BOOT_IMAGE=/boot/vmlinuz-6.1.0-47-amd64 root=/dev/vda1 ro quiet \
             reset_devices systemd.unit=kdump-tools-dump.service nr_cpus=1 irqpoll nousb"
        );
        assert_eq!(r.source.to_string(), "config /etc/default/kdump-tools");
    }

    #[test]
    fn kdump_tools_coredir_defaults_to_var_crash() {
        let path = Path::new("k");
        assert_eq!(
            kdump_tools_coredir(path, KDUMP_TOOLS).unwrap(),
            Path::new("/var/crash")
        );
        assert_eq!(
            kdump_tools_coredir(path, "KDUMP_COREDIR=/srv/dumps\n").unwrap(),
            Path::new("/srv/dumps")
        );
    }

    #[test]
    fn kdump_tools_explicit_values_win_and_the_last_assignment_counts() {
        let text = "USE_KDUMP=1\nKDUMP_KERNEL=/boot/old\nexport KDUMP_KERNEL='/boot/vmlinuz-6.1'  # pinned\n\
                    KDUMP_INITRD=/boot/initrd-kdump\nKDUMP_CMDLINE=\"root=/dev/sda1 console=ttyS0\"\n";
        let r = from_kdump_tools(Path::new("k"), text, PROC_CMDLINE)
            .unwrap()
            .unwrap();
        assert_eq!(r.kernel, Path::new("/boot/vmlinuz-6.1"));
        assert_eq!(r.initrd.as_deref(), Some(Path::new("/boot/initrd-kdump")));
        assert_eq!(r.cmdline, "root=/dev/sda1 console=ttyS0");
    }

    #[test]
    fn kdump_tools_turned_off_is_no_recipe() {
        for text in ["USE_KDUMP=0\n", "", "KDUMP_KERNEL=/boot/x\n"] {
            assert_eq!(
                from_kdump_tools(Path::new("k"), text, PROC_CMDLINE),
                Ok(None)
            );
        }
    }

    #[test]
    fn a_used_value_that_needs_the_shell_is_an_error_with_its_line() {
        let text = "USE_KDUMP=1\n\nKDUMP_KERNEL=/boot/vmlinuz-$(uname -r)\n";
        assert_eq!(
            from_kdump_tools(Path::new("/etc/default/kdump-tools"), text, PROC_CMDLINE)
                .unwrap_err()
                .to_string(),
            "/etc/default/kdump-tools:3: KDUMP_KERNEL: needs shell expansion, which is not supported"
        );
        let text = "USE_KDUMP=1\nKDUMP_CMDLINE_APPEND=\"irqpoll\n";
        assert_eq!(
            from_kdump_tools(Path::new("k"), text, PROC_CMDLINE)
                .unwrap_err()
                .to_string(),
            "k:2: KDUMP_CMDLINE_APPEND: unterminated double quote"
        );
    }

    #[test]
    fn flags_win_then_the_distribution_then_the_persisted_recipe() {
        let tools = from_kdump_tools(
            Path::new("/etc/default/kdump-tools"),
            "USE_KDUMP=1\n",
            PROC_CMDLINE,
        )
        .unwrap();
        let flags = RecipeFlags {
            kernel: Some("/boot/vmlinuz".into()),
            initrd: None,
            cmdline: None,
        };
        let persisted = LoadRecipe {
            source: RecipeSource::Persisted,
            ..recipe()
        };
        let r = resolve(&flags, Some(persisted.clone()), tools.clone(), PROC_CMDLINE)
            .unwrap()
            .unwrap();
        assert_eq!(r.source, RecipeSource::Flags);
        assert_eq!(r.initrd, None);
        assert_eq!(
            r.cmdline,
            "BOOT_IMAGE=/boot/vmlinuz-6.1.0-47-amd64 root=/dev/vda1 ro hugepages=16 quiet \
             irqpoll nr_cpus=1 reset_devices"
        );
        let none = RecipeFlags::default();
        // The distribution's configuration says what its owner wants now: it beats the record.
        let r = resolve(&none, Some(persisted.clone()), tools.clone(), PROC_CMDLINE);
        assert_eq!(
            r.unwrap().unwrap().source,
            RecipeSource::KdumpTools("/etc/default/kdump-tools".into())
        );
        let r = resolve(&none, Some(persisted), None, PROC_CMDLINE);
        assert_eq!(r.unwrap().unwrap().source, RecipeSource::Persisted);
        let r = resolve(&none, None, tools, PROC_CMDLINE).unwrap().unwrap();
        assert_eq!(
            r.source,
            RecipeSource::KdumpTools("/etc/default/kdump-tools".into())
        );
        assert_eq!(resolve(&none, None, None, PROC_CMDLINE), Ok(None));
        let orphan = RecipeFlags {
            cmdline: Some("x".into()),
            ..none
        };
        assert_eq!(
            resolve(&orphan, None, None, ""),
            Err("--initrd and --cmdline need --kernel".into())
        );
    }

    fn file_load(kernel: &str, initrd: Option<&str>) -> KexecLoad {
        KexecLoad::distro_file_load(
            (!kernel.is_empty()).then(|| kernel.into()),
            initrd.map(Into::into),
        )
    }

    /// No file on this "node" has the memfd's size.
    fn adopted_here(load: &KexecLoad) -> Result<LoadRecipe, AdoptError> {
        adopted(load, |_| None)
    }

    #[test]
    fn a_memfd_kernel_is_the_loaders_argument_of_the_same_size() {
        let load = file_load("/memfd:kernel (deleted)", Some("/boot/initrd.img-kdump"));
        let sizes = |p: &Path| match p.to_str() {
            Some("/boot/vmlinuz-6.12") => Some(8_000_000),
            _ => Some(1),
        };
        let r = adopted(&load, sizes).unwrap();
        assert_eq!(r.kernel, Path::new("/boot/vmlinuz-6.12"));
        let wrong_size = |p: &Path| (p == Path::new("/boot/vmlinuz-6.12")).then_some(7);
        assert!(adopted(&load, wrong_size).is_err());
    }

    #[test]
    fn an_adopted_recipe_takes_the_loaders_files_and_command_line() {
        let r = adopted_here(&file_load("/boot/vmlinuz", Some("/boot/initrd.img-kdump"))).unwrap();
        assert_eq!(r.kernel, Path::new("/boot/vmlinuz"));
        assert_eq!(
            r.initrd.as_deref(),
            Some(Path::new("/boot/initrd.img-kdump"))
        );
        assert_eq!(r.cmdline, "console=ttyS0 irqpoll");
        assert_eq!(r.source.to_string(), "adopted from kexec (pid 4242)");
        assert_eq!(
            adopted_here(&file_load("/boot/vmlinuz", None))
                .unwrap()
                .initrd,
            None
        );
    }

    #[test]
    fn files_that_cannot_be_opened_again_are_not_adopted() {
        for (kernel, initrd, want) in [
            (
                "/memfd:kernel (deleted)",
                None,
                "the kernel was /memfd:kernel (deleted)",
            ),
            (
                "/boot/vmlinuz",
                Some("/boot/old.img (deleted)"),
                "the initrd was /boot/old.img (deleted)",
            ),
            ("", None, "the kernel descriptor 3 of pid 4242 was gone"),
        ] {
            let err = adopted_here(&file_load(kernel, initrd))
                .unwrap_err()
                .to_string();
            assert!(err.starts_with(want), "{err}");
        }
        let failed = KexecLoad {
            result: -22,
            ..file_load("/boot/vmlinuz", None)
        };
        assert_eq!(adopted_here(&failed), Err(AdoptError::NotAFileLoad));
    }

    const SYSCONFIG: &str = r#"
KDUMP_KERNELVER=""
KDUMP_COMMANDLINE=""
KDUMP_COMMANDLINE_REMOVE="hugepages hugepagesz slub_debug quiet log_buf_len swiotlb"
KDUMP_COMMANDLINE_APPEND="irqpoll nr_cpus=1 reset_devices cgroup_disable=memory mce=off numa=off"
KEXEC_ARGS="-s"
KDUMP_IMG="vmlinuz"
KDUMP_IMG_EXT=""
"#;

    #[test]
    fn sysconfig_defaults_follow_kdumpctl() {
        let path = Path::new("/etc/sysconfig/kdump");
        let r = from_sysconfig(path, SYSCONFIG, PROC_CMDLINE, "6.12.0-55.el10.x86_64").unwrap();
        assert_eq!(r.kernel, Path::new("/boot/vmlinuz-6.12.0-55.el10.x86_64"));
        assert_eq!(
            r.initrd.as_deref(),
            Some(Path::new("/boot/initramfs-6.12.0-55.el10.x86_64kdump.img"))
        );
        assert_eq!(
            r.cmdline,
            "BOOT_IMAGE=/boot/vmlinuz-6.1.0-47-amd64 root=/dev/vda1 ro \
             irqpoll nr_cpus=1 reset_devices cgroup_disable=memory mce=off numa=off"
        );
        assert_eq!(r.source, RecipeSource::Sysconfig(path.to_owned()));
    }

    #[test]
    fn sysconfig_pinned_release_and_command_line() {
        let text = "KDUMP_KERNELVER=6.1.0-debug\nKDUMP_COMMANDLINE='root=/dev/vda1 crashkernel=1G'\n\
                    KDUMP_BOOTDIR=/var/lib/kdump\n";
        let r = from_sysconfig(Path::new("s"), text, PROC_CMDLINE, "6.12").unwrap();
        assert_eq!(r.kernel, Path::new("/var/lib/kdump/vmlinuz-6.1.0-debug"));
        assert_eq!(
            r.initrd.as_deref(),
            Some(Path::new("/var/lib/kdump/initramfs-6.1.0-debugkdump.img"))
        );
        assert_eq!(r.cmdline, "root=/dev/vda1");
    }

    #[test]
    fn shell_literals() {
        assert_eq!(shell_literal("plain"), Ok("plain".into()));
        assert_eq!(shell_literal("'a b'\"c d\""), Ok("a bc d".into()));
        assert_eq!(shell_literal("\"a\\\"b\""), Ok("a\"b".into()));
        assert_eq!(shell_literal("x # comment"), Ok("x".into()));
        assert_eq!(shell_literal(""), Ok(String::new()));
        assert_eq!(shell_literal("# all comment"), Ok(String::new()));
        assert_eq!(shell_literal("a b"), Err("unquoted value with spaces"));
        assert!(shell_literal("'open").is_err());
        assert!(shell_literal("`cmd`").is_err());
        assert!(shell_literal("\"${X}\"").is_err());
    }

    fn write_file(dir: &Path, name: &str, bytes: &[u8], mode: u32) -> PathBuf {
        let path = dir.join(name);
        fs::write(&path, bytes).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn open_checked_reads_real_files_and_leaves_the_offset_at_zero() {
        use std::io::Seek as _;

        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        let mut image = bzimage_head();
        image.resize(MIB as usize, 0);
        let r = LoadRecipe {
            kernel: write_file(dir, "vmlinuz", &image, 0o644),
            initrd: Some(write_file(dir, "initrd", &[1; 4096], 0o600)),
            ..recipe()
        };
        let uid = fs::metadata(&r.kernel).unwrap().uid();
        if uid != 0 {
            // Files made by a non-root test run are refused for their owner; that is checked below.
            let err = open_checked(&r, 256 * MIB, &Rootfs::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains("not root"), "{err}");
            return;
        }
        let mut opened = open_checked(&r, 256 * MIB, &Rootfs::default()).unwrap();
        assert_eq!(opened.needed_bytes, 40 * MIB + PAGE);
        assert_eq!(opened.kernel.stream_position().unwrap(), 0);

        let writable = LoadRecipe {
            kernel: write_file(dir, "vmlinuz-w", &image, 0o666),
            ..r.clone()
        };
        assert!(
            open_checked(&writable, 256 * MIB, &Rootfs::default())
                .unwrap_err()
                .to_string()
                .ends_with("vmlinuz-w: mode 0666 is writable by group or others")
        );
        let missing = LoadRecipe {
            initrd: Some(dir.join("nope")),
            ..r.clone()
        };
        assert!(
            open_checked(&missing, 256 * MIB, &Rootfs::default())
                .unwrap_err()
                .to_string()
                .ends_with("nope: No such file or directory (os error 2)")
        );
        let fifo = dir.join("fifo");
        let c_fifo = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a NUL-terminated path; mkfifo touches nothing else.
        assert_eq!(unsafe { libc::mkfifo(c_fifo.as_ptr(), 0o600) }, 0);
        let fifo = LoadRecipe {
            initrd: Some(fifo),
            ..r.clone()
        };
        assert!(
            open_checked(&fifo, 256 * MIB, &Rootfs::default())
                .unwrap_err()
                .to_string()
                .ends_with("fifo: not a regular file")
        );
        let directory = LoadRecipe {
            kernel: dir.to_owned(),
            ..r
        };
        assert!(
            open_checked(&directory, 256 * MIB, &Rootfs::default())
                .unwrap_err()
                .to_string()
                .ends_with(": not a regular file")
        );
    }
}
