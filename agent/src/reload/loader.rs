//! Performs the reconciler's `Reload` and `Rollback`: validate, load with the configured
//! strategy, read back whether a crash kernel is loaded, keep the last known good image.
//! The arm64 `kexec_load` strategy also gathers what its image is made of (the running
//! device tree, the RAM, the CPUs' notes) right before the load.
//! Blocking (file copies, the syscall, a command): the daemon runs it off its event loop.
use std::{
    fmt,
    fs::File,
    os::unix::fs::FileExt as _,
    time::{Duration, Instant},
};

use crate::{
    model::{
        elfcorehdr::{self, Arch, HeaderInputs, LoadPath},
        load::LoadOutcome,
    },
    reload::{
        arm64_load::{self, Arm64Load, CrashImage},
        distro::Host,
        kexec::{self, SealedImage},
        recipe::{self, Arm64Image, KERNEL_HEAD_LEN, LoadRecipe},
    },
    sys::{
        cgroup::{self, MemoryRoom},
        crash_sysfs, kcore,
        kexec_load::{self, LoadSegment},
        node,
        procfs::Procfs,
        sysfs::Sysfs,
    },
};

/// How long a load waits for a distribution script holding the lock (kdumpctl waits 5 s too).
const DISTRO_LOCK_WAIT: Duration = Duration::from_secs(5);
/// Sealing the files and one `kexec_file_load` take about a second under TCG; far past this
/// something is stuck (a hung filesystem, a kernel waiting on a lock).
const KEXEC_FILE_BUDGET: Duration = Duration::from_secs(60);
/// What a command job may take past its timeout: killing the group, reaping, the output.
const COMMAND_MARGIN: Duration = Duration::from_secs(5);

/// Refuses a sealed copy of `bytes` that the cgroup's memory limit cannot hold next to what is
/// charged already (the last known good copy included), before anything is copied or loaded.
fn fits_in_memory(bytes: u64, room: Option<MemoryRoom>) -> Result<(), String> {
    match room {
        Some(room) if bytes > room.free() => Err(format!(
            "memory limit: sealing the kernel and initrd takes {bytes} bytes, the agent's cgroup \
             has {} of memory.max {} free; raise the container's memory limit",
            room.free(),
            room.limit
        )),
        _ => Ok(()),
    }
}

/// `--reload`: how the agent loads a crash kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReloadStrategy {
    /// `kexec_file_load(KEXEC_FILE_ON_CRASH)` from the agent itself.
    KexecFile(LoadRecipe),
    /// `kexec_load(KEXEC_ON_CRASH)` of an arm64 image the agent lays out itself, with the
    /// header it built (kernels without `CONFIG_KEXEC_FILE`).
    KexecLoad(LoadRecipe),
    /// A configured command (e.g. the distribution's reload), with a timeout.
    Command {
        argv: Vec<String>,
        timeout: Duration,
    },
}

impl ReloadStrategy {
    pub fn name(&self) -> &'static str {
        match self {
            Self::KexecFile(_) => "kexec-file",
            Self::KexecLoad(_) => "kexec-load",
            Self::Command { .. } => "command",
        }
    }
}

/// How one load went, for the reconciler, the metrics and the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadReport {
    pub outcome: LoadOutcome,
    /// One line: the refusal, the errno's meaning, or the command's last output line.
    pub detail: String,
    /// How long the load itself (syscall or command) ran. The kernel frees the old crash
    /// image at the start of `kexec_file_load`, so this bounds the time without one.
    pub load_time: Duration,
    /// The elfcorehdr this load handed the kernel itself (`kexec-load`): known exactly,
    /// since arm64 unmaps the reservation and it cannot be read back.
    pub header: Option<Vec<u8>>,
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} in {:.3} s: {}",
            self.outcome,
            self.load_time.as_secs_f64(),
            self.detail
        )
    }
}

/// What one load hands the kernel, kept whole for a rollback.
#[derive(Debug)]
enum Image {
    /// Kernel and initrd for `kexec_file_load`, sealed.
    File(SealedImage),
    /// Every segment of an arm64 `kexec_load`, laid out and checked.
    Segments(CrashImage),
}

impl Image {
    fn bytes(&self) -> u64 {
        match self {
            Self::File(image) => image.bytes,
            Self::Segments(image) => image.bytes(),
        }
    }
}

/// Loads crash kernels and keeps the last image that loaded, sealed, for rollbacks.
#[derive(Debug)]
pub struct CrashLoader {
    strategy: ReloadStrategy,
    procfs: Procfs,
    sysfs: Sysfs,
    last_good: Option<Image>,
    host: Host,
}

impl CrashLoader {
    pub fn new(strategy: ReloadStrategy, procfs: Procfs, sysfs: Sysfs) -> Self {
        Self {
            strategy,
            procfs,
            sysfs,
            last_good: None,
            host: Host::default(),
        }
    }

    /// Resolves the recipe under the host's root and takes its distribution locks around each
    /// `kexec_file_load`. Not around the command strategy: a distribution command takes them
    /// itself and would wait on the agent.
    pub fn with_host(mut self, host: Host) -> Self {
        self.host = host;
        self
    }

    pub fn strategy(&self) -> &ReloadStrategy {
        &self.strategy
    }

    /// The same strategy and lock without the last known good image: what replaces a loader
    /// lost with a job that never came back.
    pub fn fresh(&self) -> Self {
        Self::new(
            self.strategy.clone(),
            self.procfs.clone(),
            self.sysfs.clone(),
        )
        .with_host(self.host.clone())
    }

    /// How long one job of this loader may run before the daemon's watchdog gives up on it.
    pub fn budget(&self) -> Duration {
        match &self.strategy {
            ReloadStrategy::KexecFile(_) | ReloadStrategy::KexecLoad(_) => {
                DISTRO_LOCK_WAIT + KEXEC_FILE_BUDGET
            }
            ReloadStrategy::Command { timeout, .. } => *timeout + COMMAND_MARGIN,
        }
    }

    /// A rollback image is at hand.
    pub fn has_last_good(&self) -> bool {
        self.last_good.is_some()
    }

    /// Copies the recipe's current files as the last known good image, without loading them:
    /// at start-up, when what is loaded was loaded from this recipe.
    pub fn adopt_last_good(&mut self) -> Result<u64, String> {
        let image = self.prepare()?;
        let bytes = image.bytes();
        self.last_good = Some(image);
        Ok(bytes)
    }

    /// The image the strategy's recipe makes now, checked, without loading it.
    fn prepare(&self) -> Result<Image, String> {
        match &self.strategy {
            ReloadStrategy::KexecFile(recipe) => self.seal(recipe).map(Image::File),
            ReloadStrategy::KexecLoad(recipe) => self.lay_out(recipe).map(Image::Segments),
            ReloadStrategy::Command { .. } => Err("the command strategy keeps no image".into()),
        }
    }

    fn crash_size(&self) -> Result<u64, String> {
        Ok(self
            .sysfs
            .kexec_crash_size()
            .map_err(|e| e.to_string())?
            .unwrap_or(0))
    }

    /// The arm64 image for `kexec_load`: the recipe's files read whole (what is checked is
    /// what is loaded), and a header for all System RAM of now, driver-managed included.
    fn lay_out(&self, recipe: &LoadRecipe) -> Result<CrashImage, String> {
        let started = Instant::now();
        let opened = recipe::open_checked(recipe, self.crash_size()?, &self.host.rootfs)
            .map_err(|e| e.to_string())?;
        let len = |f: &File| f.metadata().map_or(0, |m| m.len());
        let bytes = len(&opened.kernel) + opened.initrd.as_ref().map_or(0, len);
        fits_in_memory(bytes, cgroup::own_room())?;
        let kernel = read_whole(&opened.kernel, "kernel", recipe)?;
        let image = Arm64Image::parse(
            &kernel[..kernel.len().min(KERNEL_HEAD_LEN)],
            kernel.len() as u64,
        )
        .map_err(|why| format!("kernel {}: {why}", recipe.kernel.display()))?;
        let initrd = opened
            .initrd
            .as_ref()
            .map(|f| read_whole(f, "initrd", recipe))
            .transpose()?;
        let iomem = node::read_iomem(&self.procfs).map_err(|e| format!("{e:#}"))?;
        let sysfs_root = self.sysfs.path("");
        let notes = crash_sysfs::read_cpu_crash_notes(&sysfs_root).map_err(|e| format!("{e:#}"))?;
        let vmcoreinfo = crash_sysfs::read_vmcoreinfo(&sysfs_root).map_err(|e| format!("{e:#}"))?;
        let read_files = started.elapsed();
        let mappings = kcore::kernel_mappings(&self.procfs, &self.sysfs)?;
        let ram = Arch::Aarch64
            .expected_ram(&iomem, LoadPath::KexecLoad)
            .map_err(|e| e.to_string())?;
        let header = elfcorehdr::build(&HeaderInputs {
            arch: Arch::Aarch64,
            cpu_notes: &notes.notes,
            vmcoreinfo,
            kernel_text: Some(mappings.kernel_text),
            ram: ram.as_slice(),
            page_offset: mappings.direct_map_offset,
        })
        .map_err(|e| format!("building the elfcorehdr: {e}"))?;
        let fdt_path = self.sysfs.path("firmware/fdt");
        let running_fdt =
            std::fs::read(&fdt_path).map_err(|e| format!("{}: {e}", fdt_path.display()))?;
        let image = arm64_load::plan(Arm64Load {
            reservations: &iomem.crash_reservations(),
            kernel,
            image,
            initrd,
            header,
            running_fdt: &running_fdt,
            cmdline: &recipe.cmdline,
            kaslr_seed: kaslr_seed(),
        })
        .map_err(|e| format!("laying out the crash image: {e}"))?;
        tracing::info!(
            segments = image.segments.len(),
            bytes = image.bytes(),
            read_files_seconds = read_files.as_secs_f64(),
            seconds = started.elapsed().as_secs_f64(),
            "arm64 crash image laid out"
        );
        Ok(image)
    }

    fn seal(&self, recipe: &LoadRecipe) -> Result<SealedImage, String> {
        let opened = recipe::open_checked(recipe, self.crash_size()?, &self.host.rootfs)
            .map_err(|e| e.to_string())?;
        let bytes = [Some(&opened.kernel), opened.initrd.as_ref()]
            .into_iter()
            .flatten()
            .map(|f| f.metadata().map_or(0, |m| m.len()))
            .sum();
        fits_in_memory(bytes, cgroup::own_room())?;
        SealedImage::copy(&opened, &recipe.cmdline)
            .map_err(|e| format!("copying the images into sealed memory: {e}"))
    }

    pub fn still_loaded(&self) -> bool {
        // Unreadable counts as not loaded: the caller then tries to roll back.
        matches!(self.sysfs.kexec_crash_loaded(), Ok(Some(true)))
    }

    /// Validates and loads the recipe (or runs the command).
    pub fn reload(&mut self) -> LoadReport {
        match self.strategy.clone() {
            ReloadStrategy::KexecFile(_) | ReloadStrategy::KexecLoad(_) => {
                let image = match self.prepare() {
                    Ok(image) => image,
                    Err(detail) => {
                        return LoadReport {
                            outcome: LoadOutcome::Refused,
                            detail,
                            load_time: Duration::ZERO,
                            header: None,
                        };
                    }
                };
                let report = self.load(&image);
                if report.outcome == LoadOutcome::Loaded {
                    self.last_good = Some(image);
                }
                report
            }
            ReloadStrategy::Command { argv, timeout } => {
                let start = Instant::now();
                match kexec::run_command(&argv, timeout) {
                    Ok(out) if out.success => LoadReport {
                        outcome: LoadOutcome::Loaded,
                        detail: out.to_string(),
                        load_time: out.elapsed,
                        header: None,
                    },
                    Ok(out) => LoadReport {
                        outcome: LoadOutcome::Failed {
                            still_loaded: self.still_loaded(),
                        },
                        detail: out.to_string(),
                        load_time: out.elapsed,
                        header: None,
                    },
                    Err(e) => LoadReport {
                        outcome: LoadOutcome::Refused,
                        detail: e.to_string(),
                        load_time: start.elapsed(),
                        header: None,
                    },
                }
            }
        }
    }

    /// Loads the last known good image again.
    pub fn rollback(&mut self) -> LoadReport {
        match self.last_good.take() {
            Some(image) => {
                let report = self.load(&image);
                self.last_good = Some(image);
                report
            }
            None => LoadReport {
                outcome: LoadOutcome::Failed {
                    still_loaded: self.still_loaded(),
                },
                detail: "no last known good image to roll back to".into(),
                load_time: Duration::ZERO,
                header: None,
            },
        }
    }

    fn load(&self, image: &Image) -> LoadReport {
        let _held = match self.host.lock_all(DISTRO_LOCK_WAIT) {
            Ok((held, ignored)) => {
                for why in ignored {
                    tracing::warn!(lock = %why, "loading without this distribution lock");
                }
                held
            }
            Err(detail) => {
                return LoadReport {
                    outcome: LoadOutcome::Refused,
                    detail,
                    load_time: Duration::ZERO,
                    header: None,
                };
            }
        };
        let start = Instant::now();
        let result = match image {
            Image::File(image) => image.load().map_err(|e| e.to_string()).map(|()| {
                (
                    format!(
                        "kexec_file_load: loaded {} bytes, command line {:?}",
                        image.bytes,
                        image.cmdline().to_string_lossy()
                    ),
                    None,
                )
            }),
            Image::Segments(image) => {
                let segments: Vec<LoadSegment<'_>> = image
                    .segments
                    .iter()
                    .map(|s| LoadSegment {
                        bytes: &s.bytes,
                        mem: s.mem,
                        memsz: s.memsz,
                    })
                    .collect();
                kexec_load::kexec_load_crash(image.entry, &segments)
                    .map_err(|e| e.to_string())
                    .map(|()| {
                        (
                            format!(
                                "kexec_load: loaded {} bytes in {} segments, entry {:#x}, the agent's own elfcorehdr",
                                image.bytes(),
                                image.segments.len(),
                                image.entry
                            ),
                            Some(image.header().to_vec()),
                        )
                    })
            }
        };
        let load_time = start.elapsed();
        match result {
            Ok((detail, header)) => LoadReport {
                outcome: LoadOutcome::Loaded,
                detail,
                load_time,
                header,
            },
            Err(detail) => LoadReport {
                outcome: LoadOutcome::Failed {
                    still_loaded: self.still_loaded(),
                },
                detail,
                load_time,
                header: None,
            },
        }
    }
}

/// A file of the recipe read whole from its opened descriptor (positioned reads).
fn read_whole(file: &File, role: &str, recipe: &LoadRecipe) -> Result<Vec<u8>, String> {
    let len = file.metadata().map_or(0, |m| m.len());
    let mut bytes = vec![0; usize::try_from(len).map_err(|e| e.to_string())?];
    file.read_exact_at(&mut bytes, 0).map_err(|e| {
        let path = match role {
            "kernel" => recipe.kernel.display().to_string(),
            _ => recipe
                .initrd
                .as_ref()
                .map_or(String::new(), |p| p.display().to_string()),
        };
        format!("{role} {path}: {e}")
    })?;
    Ok(bytes)
}

/// A fresh `/chosen/kaslr-seed`; 0 (no randomisation in the capture kernel) when the pool is
/// not ready, as kexec-tools does.
fn kaslr_seed() -> u64 {
    let mut seed = [0u8; 8];
    // SAFETY: writes at most 8 bytes into `seed`.
    let n = unsafe { libc::getrandom(seed.as_mut_ptr().cast(), seed.len(), libc::GRND_NONBLOCK) };
    if n == 8 { u64::from_ne_bytes(seed) } else { 0 }
}

#[cfg(test)]
mod tests {
    use std::{fs, os::unix::fs::PermissionsExt as _};

    use super::*;
    use crate::reload::recipe::RecipeSource;

    fn sysfs(crash_loaded: &str, crash_size: &str) -> (tempfile::TempDir, Sysfs) {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("kernel")).unwrap();
        fs::write(dir.path().join("kernel/kexec_crash_loaded"), crash_loaded).unwrap();
        fs::write(dir.path().join("kernel/kexec_crash_size"), crash_size).unwrap();
        let sysfs = Sysfs::new(dir.path());
        (dir, sysfs)
    }

    #[test]
    fn a_garbage_kernel_is_refused_before_anything_is_touched() {
        let (dir, sysfs) = sysfs("1\n", "268435456\n");
        let kernel = dir.path().join("vmlinuz");
        fs::write(&kernel, vec![0x5a; 8192]).unwrap();
        fs::set_permissions(&kernel, fs::Permissions::from_mode(0o644)).unwrap();
        let recipe = LoadRecipe {
            kernel: kernel.clone(),
            initrd: None,
            cmdline: "console=ttyS0".into(),
            source: RecipeSource::Flags,
        };
        let mut loader = CrashLoader::new(
            ReloadStrategy::KexecFile(recipe),
            Procfs::new("/proc"),
            sysfs,
        );
        let report = loader.reload();
        assert_eq!(report.outcome, LoadOutcome::Refused);
        assert_eq!(
            report.detail,
            format!(
                "kernel {}: not a bzImage (no \"HdrS\" boot header at 0x202)",
                kernel.display()
            )
        );
        assert!(!loader.has_last_good());
        assert!(loader.adopt_last_good().is_err());
    }

    #[test]
    fn a_copy_the_memory_limit_cannot_hold_is_refused_first() {
        let room = MemoryRoom {
            limit: 128 << 20,
            current: 100 << 20,
            reclaimable: 0,
        };
        assert!(fits_in_memory(28 << 20, Some(room)).is_ok());
        assert_eq!(
            fits_in_memory(40 << 20, Some(room)).unwrap_err(),
            "memory limit: sealing the kernel and initrd takes 41943040 bytes, the agent's \
             cgroup has 29360128 of memory.max 134217728 free; raise the container's memory limit"
        );
        assert!(fits_in_memory(u64::MAX, None).is_ok());
    }

    #[test]
    fn without_a_reservation_the_load_is_refused() {
        let (dir, sysfs) = sysfs("0\n", "0\n");
        let recipe = LoadRecipe {
            kernel: dir.path().join("missing"),
            initrd: None,
            cmdline: String::new(),
            source: RecipeSource::Flags,
        };
        let report = CrashLoader::new(
            ReloadStrategy::KexecFile(recipe),
            Procfs::new("/proc"),
            sysfs,
        )
        .reload();
        assert_eq!(report.outcome, LoadOutcome::Refused);
        assert!(report.detail.contains("missing: No such file"), "{report}");
    }

    #[test]
    fn the_command_strategy_reports_failure_with_the_readback() {
        let (_dir, sysfs) = sysfs("0\n", "268435456\n");
        let command = |script: &str| ReloadStrategy::Command {
            argv: vec!["sh".into(), "-c".into(), script.into()],
            timeout: Duration::from_secs(10),
        };
        let mut loader = CrashLoader::new(
            command("echo unloaded; exit 1"),
            Procfs::new("/proc"),
            sysfs.clone(),
        );
        let report = loader.reload();
        assert_eq!(
            report.outcome,
            LoadOutcome::Failed {
                still_loaded: false
            }
        );
        assert!(report.detail.ends_with(": unloaded"), "{report}");
        let report =
            CrashLoader::new(command("echo loaded"), Procfs::new("/proc"), sysfs.clone()).reload();
        assert_eq!(report.outcome, LoadOutcome::Loaded);
        let rollback = CrashLoader::new(command("true"), Procfs::new("/proc"), sysfs).rollback();
        assert_eq!(rollback.detail, "no last known good image to roll back to");
    }
}
