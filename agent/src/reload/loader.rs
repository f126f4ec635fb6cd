//! Performs the reconciler's `Reload` and `Rollback`: validate, load with the configured
//! strategy, read back whether a crash kernel is loaded, keep the last known good image.
//! Blocking (file copies, the syscall, a command): the daemon runs it off its event loop.
use std::{
    fmt,
    time::{Duration, Instant},
};

use crate::{
    model::load::LoadOutcome,
    reload::{
        distro::Host,
        kexec::{self, SealedImage},
        recipe::{self, LoadRecipe},
    },
    sys::{
        cgroup::{self, MemoryRoom},
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

/// Loads crash kernels and keeps the last image that loaded, sealed, for rollbacks.
#[derive(Debug)]
pub struct CrashLoader {
    strategy: ReloadStrategy,
    sysfs: Sysfs,
    last_good: Option<SealedImage>,
    host: Host,
}

impl CrashLoader {
    pub fn new(strategy: ReloadStrategy, sysfs: Sysfs) -> Self {
        Self {
            strategy,
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
        Self::new(self.strategy.clone(), self.sysfs.clone()).with_host(self.host.clone())
    }

    /// How long one job of this loader may run before the daemon's watchdog gives up on it.
    pub fn budget(&self) -> Duration {
        match &self.strategy {
            ReloadStrategy::KexecFile(_) => DISTRO_LOCK_WAIT + KEXEC_FILE_BUDGET,
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
        let ReloadStrategy::KexecFile(recipe) = &self.strategy else {
            return Err("the command strategy keeps no image".into());
        };
        let image = self.seal(recipe)?;
        let bytes = image.bytes;
        self.last_good = Some(image);
        Ok(bytes)
    }

    fn seal(&self, recipe: &LoadRecipe) -> Result<SealedImage, String> {
        let crash_size = self
            .sysfs
            .kexec_crash_size()
            .map_err(|e| e.to_string())?
            .unwrap_or(0);
        let opened = recipe::open_checked(recipe, crash_size, &self.host.rootfs)
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
            ReloadStrategy::KexecFile(recipe) => {
                let image = match self.seal(&recipe) {
                    Ok(image) => image,
                    Err(detail) => {
                        return LoadReport {
                            outcome: LoadOutcome::Refused,
                            detail,
                            load_time: Duration::ZERO,
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
                    },
                    Ok(out) => LoadReport {
                        outcome: LoadOutcome::Failed {
                            still_loaded: self.still_loaded(),
                        },
                        detail: out.to_string(),
                        load_time: out.elapsed,
                    },
                    Err(e) => LoadReport {
                        outcome: LoadOutcome::Refused,
                        detail: e.to_string(),
                        load_time: start.elapsed(),
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
            },
        }
    }

    fn load(&self, image: &SealedImage) -> LoadReport {
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
                };
            }
        };
        let start = Instant::now();
        let result = image.load();
        let load_time = start.elapsed();
        match result {
            Ok(()) => LoadReport {
                outcome: LoadOutcome::Loaded,
                detail: format!(
                    "kexec_file_load: loaded {} bytes, command line {:?}",
                    image.bytes,
                    image.cmdline().to_string_lossy()
                ),
                load_time,
            },
            Err(e) => LoadReport {
                outcome: LoadOutcome::Failed {
                    still_loaded: self.still_loaded(),
                },
                detail: e.to_string(),
                load_time,
            },
        }
    }
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
        let mut loader = CrashLoader::new(ReloadStrategy::KexecFile(recipe), sysfs);
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
        let report = CrashLoader::new(ReloadStrategy::KexecFile(recipe), sysfs).reload();
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
        let mut loader = CrashLoader::new(command("echo unloaded; exit 1"), sysfs.clone());
        let report = loader.reload();
        assert_eq!(
            report.outcome,
            LoadOutcome::Failed {
                still_loaded: false
            }
        );
        assert!(report.detail.ends_with(": unloaded"), "{report}");
        let report = CrashLoader::new(command("echo loaded"), sysfs.clone()).reload();
        assert_eq!(report.outcome, LoadOutcome::Loaded);
        let rollback = CrashLoader::new(command("true"), sysfs).rollback();
        assert_eq!(rollback.detail, "no last known good image to roll back to");
    }
}
