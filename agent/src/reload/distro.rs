//! Living next to the distribution's own kdump service: its configurations and its locks, read
//! under `--rootfs`, and its udev rules that reload on memory events too.
use std::{
    fs::{File, OpenOptions},
    io,
    os::unix::fs::{MetadataExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use crate::{
    reload::{
        recipe::{self, LoadRecipe},
        statefile::try_lock_exclusive,
    },
    sys::rootfs::Rootfs,
};

/// The distribution configurations a recipe can come from.
pub const KDUMP_TOOLS_CONFIG: &str = "/etc/default/kdump-tools";
pub const SYSCONFIG_KDUMP: &str = "/etc/sysconfig/kdump";
/// kdumpctl's `single_instance_lock` (Fedora/RHEL).
pub const KDUMPCTL_LOCK: &str = "/var/lock/kdump";
/// Where kdump-tools keeps its dumps when `KDUMP_COREDIR` is not set.
pub const KDUMP_TOOLS_COREDIR: &str = "/var/crash";
/// The file `kdump-config` flocks in `$KDUMP_COREDIR`.
pub const KDUMP_TOOLS_LOCK: &str = "kdump_lock";

/// What the agent's loads touch on the host besides the recipe's files.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Host {
    pub rootfs: Rootfs,
    /// Host paths flocked, in this order, around each of the agent's own loads.
    pub locks: Vec<PathBuf>,
}

/// What the host's distribution configuration gives: a recipe, or why none, and the locks its
/// scripts take.
#[derive(Debug, PartialEq, Eq)]
pub struct Found {
    /// `Err`: one line naming the file and the reason (no configuration, unreadable, a line
    /// that needs the shell, a file it names that cannot be opened).
    pub recipe: Result<LoadRecipe, String>,
    /// kdump-config's lock, when kdump-tools is configured.
    pub locks: Vec<PathBuf>,
}

/// Each file the recipe names must open under the rootfs before the agent relies on it.
fn openable(rootfs: &Rootfs, recipe: LoadRecipe) -> Result<LoadRecipe, String> {
    let files = std::iter::once(("kernel", &recipe.kernel))
        .chain(recipe.initrd.iter().map(|p| ("initrd", p)));
    for (role, path) in files {
        if let Err(e) = rootfs.open(path) {
            return Err(format!("{role} {e}, named by {}", recipe.source));
        }
    }
    Ok(recipe)
}

/// kdumpctl writes its initramfs to `/var/lib/kdump` instead of the boot directory when that
/// is read-only: take it there when the boot directory has none.
fn kdumpctl_initrd(rootfs: &Rootfs, mut recipe: LoadRecipe) -> LoadRecipe {
    if let Some(initrd) = &recipe.initrd
        && !rootfs.exists(initrd)
        && let Some(name) = initrd.file_name()
    {
        let fallback = Path::new("/var/lib/kdump").join(name);
        if rootfs.exists(&fallback) {
            recipe.initrd = Some(fallback);
        }
    }
    recipe
}

/// Reads the host's kdump-tools, then kdumpctl configuration under `rootfs`, as the
/// distribution's own scripts would on that host.
pub fn find(rootfs: &Rootfs, proc_cmdline: &str, running_release: &str) -> Found {
    let mut locks = Vec::new();
    let tools_path = Path::new(KDUMP_TOOLS_CONFIG);
    let tools = match rootfs.read_optional(tools_path) {
        Ok(text) => text,
        Err(e) => {
            return Found {
                recipe: Err(format!("cannot read {e}")),
                locks,
            };
        }
    };
    let mut off = None;
    if let Some(text) = &tools {
        let parsed = recipe::kdump_tools_coredir(tools_path, text).and_then(|coredir| {
            locks.push(coredir.join(KDUMP_TOOLS_LOCK));
            recipe::from_kdump_tools(tools_path, text, proc_cmdline)
        });
        match parsed {
            Ok(Some(r)) => {
                return Found {
                    recipe: openable(rootfs, r),
                    locks,
                };
            }
            Ok(None) => off = Some(format!("{KDUMP_TOOLS_CONFIG}: USE_KDUMP is not 1")),
            Err(e) => {
                return Found {
                    recipe: Err(e.to_string()),
                    locks,
                };
            }
        }
    }
    let sysconfig_path = Path::new(SYSCONFIG_KDUMP);
    let recipe = match rootfs.read_optional(sysconfig_path) {
        Err(e) => Err(format!("cannot read {e}")),
        Ok(Some(text)) => {
            recipe::from_sysconfig(sysconfig_path, &text, proc_cmdline, running_release)
                .map_err(|e| e.to_string())
                .map(|r| kdumpctl_initrd(rootfs, r))
                .and_then(|r| openable(rootfs, r))
        }
        Ok(None) => Err(off.unwrap_or_else(|| {
            format!(
                "no kdump configuration: neither {} nor {SYSCONFIG_KDUMP} exists",
                rootfs.describe(tools_path)
            )
        })),
    };
    Found { recipe, locks }
}

/// One distribution lock, opened for one load.
#[derive(Debug)]
pub enum Lock {
    Held(File),
    /// No such file and none can be made (no directory, read-only): no script holds it either.
    Absent,
    /// The file is not one the agent may trust; the load goes on without it.
    Ignored(String),
}

fn create(local: &Path) -> io::Result<File> {
    // The mode kdumpctl's `exec 9>` gives it under the usual umask.
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(local)
}

/// Opens the lock at the host's `path`. A lock directory may be world-writable (`/run/lock` is
/// 1777 on Debian): a file any user could have made, or a link or FIFO planted there, would let
/// that user block every reload, so only a regular file owned by root and not writable by
/// others is used.
pub fn open_lock(rootfs: &Rootfs, path: &Path) -> Lock {
    let name = rootfs.describe(path);
    let (Some(parent), Some(file_name)) = (path.parent(), path.file_name()) else {
        return Lock::Ignored(format!("{name}: not a file path"));
    };
    let local = match rootfs.resolve(parent) {
        Ok(dir) => dir.join(file_name),
        Err(e) => return Lock::Ignored(format!("lock {e}")),
    };
    // O_NOFOLLOW: a symlink is refused (ELOOP); O_NONBLOCK: a FIFO does not hang the open.
    let opened = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(&local)
        .or_else(|e| match e.kind() {
            io::ErrorKind::NotFound => create(&local),
            _ => Err(e),
        });
    let file = match opened {
        Ok(file) => file,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ReadOnlyFilesystem
            ) =>
        {
            return Lock::Absent;
        }
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Lock::Ignored(format!("lock {name}: a symlink, not used"));
        }
        Err(e) => return Lock::Ignored(format!("lock {name}: {e}")),
    };
    let why = match file.metadata() {
        Err(e) => e.to_string(),
        Ok(m) if !m.file_type().is_file() => "not a regular file".into(),
        Ok(m) if m.uid() != 0 => format!("owned by uid {}, not root", m.uid()),
        Ok(m) if m.mode() & 0o002 != 0 => {
            format!("mode {:04o} is writable by others", m.mode() & 0o7777)
        }
        Ok(_) => return Lock::Held(file),
    };
    Lock::Ignored(format!("lock {name}: {why}; not used"))
}

impl Host {
    /// Takes every lock, waiting up to `wait` in all for scripts that hold one. Returns the held
    /// files and the warnings for locks ignored, or why the load must not run now.
    pub fn lock_all(&self, wait: Duration) -> Result<(Vec<File>, Vec<String>), String> {
        let start = Instant::now();
        let mut held = Vec::new();
        let mut warnings = Vec::new();
        for path in &self.locks {
            let file = match open_lock(&self.rootfs, path) {
                Lock::Held(file) => file,
                Lock::Absent => continue,
                Lock::Ignored(why) => {
                    warnings.push(why);
                    continue;
                }
            };
            loop {
                match try_lock_exclusive(&file) {
                    Ok(true) => break,
                    Ok(false) if start.elapsed() < wait => {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    Ok(false) => {
                        return Err(format!(
                            "{} is held by another loader (a distribution kdump script?) after {:.1} s; not loading now",
                            self.rootfs.describe(path),
                            wait.as_secs_f64()
                        ));
                    }
                    Err(e) => return Err(format!("{}: {e}", self.rootfs.describe(path))),
                }
            }
            held.push(file);
        }
        Ok((held, warnings))
    }

    /// The locks that would be ignored now, for `status` at start-up.
    pub fn lock_warnings(&self) -> Vec<String> {
        self.locks
            .iter()
            .filter_map(|path| match open_lock(&self.rootfs, path) {
                Lock::Ignored(why) => Some(why),
                Lock::Held(_) | Lock::Absent => None,
            })
            .collect()
    }
}

/// The distributions' udev rules that reload the crash kernel on hotplug: kdump-utils
/// (Fedora/RHEL), kdump-tools (Debian/Ubuntu), openSUSE's kdump.
pub const RELOAD_RULES: [&str; 3] = ["98-kexec.rules", "50-kdump-tools.rules", "70-kdump.rules"];
/// udev's rule directories, the first holding a name winning (`/etc` overrides the packages').
const RULE_DIRS: [&str; 4] = [
    "/etc/udev/rules.d",
    "/run/udev/rules.d",
    "/usr/lib/udev/rules.d",
    "/lib/udev/rules.d",
];

/// Whether a rules file acts on the `memory` subsystem and runs something: udev matches the
/// subsystem on one line and may `GOTO` a label whose line has the `RUN`.
pub fn reloads_on_memory(text: &str) -> bool {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .collect();
    lines
        .iter()
        .any(|l| l.contains("SUBSYSTEM==\"memory\"") || l.contains("SUBSYSTEM==memory"))
        && lines
            .iter()
            .any(|l| l.contains("RUN+=") || l.contains("RUN="))
}

/// The host's rules (as host paths) that reload the crash kernel on memory events. A name
/// masked in `/etc` by a link to `/dev/null` (or an empty file) is off, as udev reads it.
pub fn memory_reload_rules(rootfs: &Rootfs) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for name in RELOAD_RULES {
        let Some((path, local)) = RULE_DIRS.iter().find_map(|dir| {
            let local = rootfs.resolve(Path::new(dir)).ok()?.join(name);
            local
                .symlink_metadata()
                .is_ok()
                .then(|| (Path::new(dir).join(name), local))
        }) else {
            continue;
        };
        let masked = std::fs::read_link(&local).is_ok_and(|t| t == Path::new("/dev/null"));
        let text = rootfs
            .read_optional(&path)
            .ok()
            .flatten()
            .unwrap_or_default();
        if !masked && reloads_on_memory(&text) {
            found.push(path);
        }
    }
    found
}

/// The one line `status` and the log give for a rule that reloads too.
pub fn double_reload_warning(rule: &Path) -> String {
    format!(
        "{} also reloads the crash kernel on memory events: the node reloads twice per event \
         (mask it: ln -s /dev/null /etc/udev/rules.d/{})",
        rule.display(),
        rule.file_name().unwrap_or_default().to_string_lossy()
    )
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{PermissionsExt as _, symlink};

    use super::*;

    fn root() -> (tempfile::TempDir, Rootfs) {
        let dir = tempfile::tempdir().unwrap();
        for d in [
            "run/lock",
            "var/crash",
            "lib/udev/rules.d",
            "etc/udev/rules.d",
        ] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        symlink("../run/lock", dir.path().join("var/lock")).unwrap();
        let rootfs = Rootfs::new(dir.path());
        (dir, rootfs)
    }

    fn i_am_root() -> bool {
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() == 0 }
    }

    #[test]
    fn a_missing_lock_is_created_and_then_taken_through_the_var_lock_link() {
        let (dir, rootfs) = root();
        if !i_am_root() {
            println!("SKIP: the lock must be owned by root, and this test does not run as root");
            return;
        }
        let host = Host {
            rootfs,
            locks: vec![KDUMPCTL_LOCK.into(), "/var/crash/kdump_lock".into()],
        };
        let (held, warnings) = host.lock_all(Duration::from_millis(100)).unwrap();
        assert_eq!((held.len(), warnings.len()), (2, 0));
        let made = dir.path().join("run/lock/kdump");
        assert_eq!(made.metadata().unwrap().mode() & 0o7777, 0o644);
        // kdump-config (another open file description) waits now; so does a second load.
        assert!(!try_lock_exclusive(&File::open(&made).unwrap()).unwrap());
        let err = host.lock_all(Duration::from_millis(100)).unwrap_err();
        assert!(err.starts_with("/var/lock/kdump (under "), "{err}");
        assert!(err.ends_with("after 0.1 s; not loading now"), "{err}");
        drop(held);
        assert_eq!(host.lock_all(Duration::ZERO).unwrap().0.len(), 2);
    }

    #[test]
    fn untrusted_locks_are_ignored_with_the_reason() {
        let (dir, rootfs) = root();
        let lock = dir.path().join("run/lock/kdump");
        symlink("/etc/passwd", &lock).unwrap();
        let why = |rootfs: &Rootfs| match open_lock(rootfs, Path::new(KDUMPCTL_LOCK)) {
            Lock::Ignored(why) => why,
            other => panic!("{other:?}"),
        };
        assert!(why(&rootfs).ends_with("a symlink, not used"));
        std::fs::remove_file(&lock).unwrap();
        let c = std::ffi::CString::new(lock.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo with a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        assert!(why(&rootfs).ends_with("not a regular file; not used"));
        std::fs::remove_file(&lock).unwrap();
        std::fs::write(&lock, "").unwrap();
        std::fs::set_permissions(&lock, std::fs::Permissions::from_mode(0o666)).unwrap();
        if i_am_root() {
            assert!(why(&rootfs).ends_with("mode 0666 is writable by others; not used"));
        } else {
            assert!(why(&rootfs).contains("not root; not used"));
        }
        let host = Host {
            rootfs,
            locks: vec![KDUMPCTL_LOCK.into()],
        };
        assert_eq!(host.lock_warnings().len(), 1);
        let (held, warnings) = host.lock_all(Duration::ZERO).unwrap();
        assert_eq!((held.len(), warnings.len()), (0, 1));
    }

    #[test]
    fn a_lock_that_cannot_exist_is_absent() {
        let (_dir, rootfs) = root();
        assert!(matches!(
            open_lock(&rootfs, Path::new("/nonexistent/kdump")),
            Lock::Absent
        ));
    }

    const CMDLINE: &str = "BOOT_IMAGE=/vmlinuz root=/dev/vda1 crashkernel=256M quiet";

    fn put(root: &Path, path: &str, text: &str) {
        let path = root.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn the_debian_layout_gives_kdump_tools_recipe_and_lock() {
        let (dir, rootfs) = root();
        let r = dir.path();
        put(
            r,
            KDUMP_TOOLS_CONFIG,
            "USE_KDUMP=1\nKDUMP_COREDIR=/var/crash\n",
        );
        put(r, "/boot/vmlinuz-6.1.0-47-amd64", "k");
        put(r, "/boot/initrd.img-6.1.0-47-amd64", "i");
        std::fs::create_dir_all(r.join("var/lib/kdump")).unwrap();
        // kdump-tools' own links, absolute as the package makes them.
        symlink(
            "/boot/vmlinuz-6.1.0-47-amd64",
            r.join("var/lib/kdump/vmlinuz"),
        )
        .unwrap();
        symlink(
            "/boot/initrd.img-6.1.0-47-amd64",
            r.join("var/lib/kdump/initrd.img"),
        )
        .unwrap();
        let found = find(&rootfs, CMDLINE, "6.1.0-47-amd64");
        let recipe = found.recipe.unwrap();
        assert_eq!(recipe.kernel, Path::new("/var/lib/kdump/vmlinuz"));
        assert_eq!(recipe.cmdline, "BOOT_IMAGE=/vmlinuz root=/dev/vda1 quiet");
        assert_eq!(found.locks, vec![PathBuf::from("/var/crash/kdump_lock")]);
    }

    #[test]
    fn the_fedora_layout_gives_kdumpctl_recipe_with_its_initramfs() {
        let (dir, rootfs) = root();
        let r = dir.path();
        let release = "6.12.0-55.fc42.x86_64";
        put(
            r,
            SYSCONFIG_KDUMP,
            "KDUMP_COMMANDLINE_APPEND=\"irqpoll nr_cpus=1\"\n",
        );
        put(r, &format!("/boot/vmlinuz-{release}"), "k");
        put(
            r,
            &format!("/var/lib/kdump/initramfs-{release}kdump.img"),
            "i",
        );
        let found = find(&rootfs, CMDLINE, release);
        let recipe = found.recipe.unwrap();
        assert_eq!(
            recipe.kernel,
            PathBuf::from(format!("/boot/vmlinuz-{release}"))
        );
        assert_eq!(
            recipe.initrd,
            Some(PathBuf::from(format!(
                "/var/lib/kdump/initramfs-{release}kdump.img"
            )))
        );
        assert!(found.locks.is_empty());
        put(r, &format!("/boot/initramfs-{release}kdump.img"), "i");
        let recipe = find(&rootfs, CMDLINE, release).recipe.unwrap();
        assert_eq!(
            recipe.initrd,
            Some(PathBuf::from(format!("/boot/initramfs-{release}kdump.img")))
        );
    }

    #[test]
    fn bad_host_roots_give_one_line_naming_the_file_and_why() {
        let (dir, rootfs) = root();
        let r = dir.path();
        let under = format!("(under {})", r.display());
        let why = |rootfs: &Rootfs| find(rootfs, CMDLINE, "6.1").recipe.unwrap_err();
        assert_eq!(
            why(&rootfs),
            format!(
                "no kdump configuration: neither /etc/default/kdump-tools {under} nor \
                 /etc/sysconfig/kdump exists"
            )
        );
        put(r, KDUMP_TOOLS_CONFIG, "USE_KDUMP=1\n");
        assert_eq!(
            why(&rootfs),
            format!(
                "kernel /var/lib/kdump/vmlinuz {under}: No such file or directory (os error 2), \
                 named by config /etc/default/kdump-tools"
            )
        );
        std::fs::create_dir_all(r.join("var/lib/kdump")).unwrap();
        symlink("../../../../../etc/shadow", r.join("var/lib/kdump/vmlinuz")).unwrap();
        assert_eq!(
            why(&rootfs),
            format!(
                "kernel /var/lib/kdump/vmlinuz {under}: a symlink or `..` leads outside the \
                 rootfs, named by config /etc/default/kdump-tools"
            )
        );
        put(
            r,
            KDUMP_TOOLS_CONFIG,
            "USE_KDUMP=1\nKDUMP_KERNEL=/boot/vmlinuz-$(uname -r)\n",
        );
        assert_eq!(
            why(&rootfs),
            "/etc/default/kdump-tools:2: KDUMP_KERNEL: needs shell expansion, which is not supported"
        );
        std::fs::remove_file(r.join("etc/default/kdump-tools")).unwrap();
        std::fs::create_dir(r.join("etc/default/kdump-tools")).unwrap();
        assert_eq!(
            why(&rootfs),
            format!("cannot read /etc/default/kdump-tools {under}: Is a directory (os error 21)")
        );
    }

    const KDUMP_TOOLS_RULE: &str = "\
SUBSYSTEM==\"memory\", ACTION==\"online\", PROGRAM=\"/usr/sbin/kdump-config try-reload\"
SUBSYSTEM==\"memory\", ACTION==\"offline\", RUN+=\"/usr/sbin/kdump-config try-reload\"
";

    #[test]
    fn memory_reload_rules_are_found_unless_masked() {
        let (dir, rootfs) = root();
        let lib = dir.path().join("lib/udev/rules.d");
        std::fs::write(lib.join("50-kdump-tools.rules"), KDUMP_TOOLS_RULE).unwrap();
        std::fs::write(
            lib.join("70-kdump.rules"),
            "SUBSYSTEM==\"cpu\", RUN+=\"x\"\n",
        )
        .unwrap();
        assert_eq!(
            memory_reload_rules(&rootfs),
            vec![PathBuf::from("/lib/udev/rules.d/50-kdump-tools.rules")]
        );
        symlink(
            "/dev/null",
            dir.path().join("etc/udev/rules.d/50-kdump-tools.rules"),
        )
        .unwrap();
        assert!(memory_reload_rules(&rootfs).is_empty());
        assert_eq!(
            double_reload_warning(Path::new("/usr/lib/udev/rules.d/98-kexec.rules")),
            "/usr/lib/udev/rules.d/98-kexec.rules also reloads the crash kernel on memory \
             events: the node reloads twice per event (mask it: ln -s /dev/null \
             /etc/udev/rules.d/98-kexec.rules)"
        );
    }

    #[test]
    fn only_memory_rules_that_run_something_count() {
        assert!(reloads_on_memory(KDUMP_TOOLS_RULE));
        let goto = "SUBSYSTEM==\"memory\", ACTION==\"online\", GOTO=\"kdump_reload\"\n\
                    LABEL=\"kdump_reload\"\nRUN+=\"/usr/lib/udev/kdump-udev-throttler\"\n";
        assert!(reloads_on_memory(goto));
        assert!(!reloads_on_memory("# SUBSYSTEM==\"memory\", RUN+=\"x\"\n"));
        assert!(!reloads_on_memory("SUBSYSTEM==\"cpu\", RUN+=\"x\"\n"));
    }
}
