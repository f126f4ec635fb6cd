//! Loading the crash kernel: the `kexec_file_load` syscall, the sealed last-known-good copy,
//! and the `command` strategy. Thin: no policy.
use std::{
    ffi::{CStr, CString},
    fmt,
    fs::File,
    io::{self, Write as _},
    os::{
        fd::{AsFd, AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
        unix::{fs::FileExt as _, process::CommandExt as _},
    },
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use crate::reload::recipe::OpenedRecipe;

/// `kexec_file_load` flags (include/uapi/linux/kexec.h).
const KEXEC_FILE_ON_CRASH: libc::c_ulong = 0x2;
const KEXEC_FILE_NO_INITRAMFS: libc::c_ulong = 0x4;
/// `__NR_kexec_file_load`: libc's musl table for aarch64 lacks it; asm-generic/unistd.h has 294.
#[cfg(target_arch = "aarch64")]
const SYS_KEXEC_FILE_LOAD: libc::c_long = 294;
#[cfg(not(target_arch = "aarch64"))]
const SYS_KEXEC_FILE_LOAD: libc::c_long = libc::SYS_kexec_file_load;

/// A failed `kexec_file_load`, with the errno and what it means for kdump.
#[derive(Debug, thiserror::Error)]
// The errno is in the message, so it is no `source()`: `{:#}` would print it twice.
#[error("kexec_file_load: {meaning} ({errno})")]
pub struct KexecError {
    pub meaning: &'static str,
    pub errno: io::Error,
}

impl KexecError {
    fn from_errno(errno: io::Error) -> Self {
        let meaning = match errno.raw_os_error().unwrap_or(0) {
            libc::EPERM => {
                "not permitted: needs CAP_SYS_BOOT; kernel lockdown or kexec_load_disabled may forbid it"
            }
            libc::EKEYREJECTED => "the kernel's signature was rejected (KEXEC_SIG enforcement)",
            libc::ENOEXEC => "the running kernel cannot load this file: not a bzImage it accepts",
            libc::EBUSY => "another kexec load is in progress (kexec lock busy); retry",
            libc::ENOMEM | libc::EADDRNOTAVAIL => {
                "the images do not fit the crash kernel reservation (crashkernel=)"
            }
            libc::ENOSYS => "this kernel has no kexec_file_load (CONFIG_KEXEC_FILE unset)",
            libc::EINVAL => "invalid argument: command line too long or malformed",
            _ => "the load failed",
        };
        Self { meaning, errno }
    }
}

/// Replaces the loaded crash image with one syscall (never an unload followed by a load).
/// The kernel frees the old crash image inside this call before loading the new one, so a
/// failure can leave nothing loaded: read `kexec_crash_loaded` afterwards.
pub fn kexec_file_load(
    kernel: BorrowedFd<'_>,
    initrd: Option<BorrowedFd<'_>>,
    cmdline: &CStr,
) -> Result<(), KexecError> {
    let (initrd_fd, no_initrd) = match initrd {
        Some(fd) => (fd.as_raw_fd(), 0),
        None => (-1, KEXEC_FILE_NO_INITRAMFS),
    };
    let cmdline = cmdline.to_bytes_with_nul();
    // SAFETY: the descriptors are open for the duration of the call; the command line pointer
    // and its length (including the NUL the kernel requires) describe one live buffer.
    let ret = unsafe {
        libc::syscall(
            SYS_KEXEC_FILE_LOAD,
            kernel.as_raw_fd(),
            initrd_fd,
            cmdline.len() as libc::c_ulong,
            cmdline.as_ptr(),
            KEXEC_FILE_ON_CRASH | no_initrd,
        )
    };
    if ret == 0 {
        Ok(())
    } else {
        Err(KexecError::from_errno(io::Error::last_os_error()))
    }
}

/// The bytes of one load (kernel, initrd) in sealed memfds, plus its command line: immutable,
/// so what is loaded is what was checked, and it can be loaded again for a rollback even if
/// the files on disk have changed since.
#[derive(Debug)]
pub struct SealedImage {
    kernel: OwnedFd,
    initrd: Option<OwnedFd>,
    cmdline: CString,
    /// Total bytes held (kernel + initrd).
    pub bytes: u64,
}

fn memfd(name: &CStr) -> io::Result<OwnedFd> {
    // SAFETY: `name` is NUL-terminated; the returned descriptor is owned by us alone.
    let fd =
        unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Copies `src` into a new memfd and seals it against any change.
fn sealed_copy(name: &CStr, src: &File) -> io::Result<(OwnedFd, u64)> {
    let fd = memfd(name)?;
    let mut dst = File::from(fd);
    // Positioned reads leave the source's offset alone.
    let mut copied = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match src.read_at(&mut buf, copied) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        dst.write_all(&buf[..n])?;
        copied += n as u64;
    }
    let seals = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
    // SAFETY: fcntl on a descriptor we own, with an integer argument.
    if unsafe { libc::fcntl(dst.as_raw_fd(), libc::F_ADD_SEALS, seals) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // The kernel reads images with deny_write_access(): ETXTBSY while any descriptor may
    // write. Keep a read-only one to the same memory and close the writable one.
    let read_only = File::open(format!("/proc/self/fd/{}", dst.as_raw_fd()))?;
    drop(dst);
    Ok((OwnedFd::from(read_only), copied))
}

impl SealedImage {
    /// Copies the opened, checked recipe into sealed memory.
    pub fn copy(recipe: &OpenedRecipe, cmdline: &str) -> io::Result<Self> {
        let cmdline = CString::new(cmdline).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidInput, "command line contains NUL")
        })?;
        let (kernel, kernel_bytes) = sealed_copy(c"kdump-agent-kernel", &recipe.kernel)?;
        let initrd = recipe
            .initrd
            .as_ref()
            .map(|f| sealed_copy(c"kdump-agent-initrd", f))
            .transpose()?;
        let bytes = kernel_bytes + initrd.as_ref().map_or(0, |(_, n)| *n);
        Ok(Self {
            kernel,
            initrd: initrd.map(|(fd, _)| fd),
            cmdline,
            bytes,
        })
    }

    /// Loads these exact bytes as the crash kernel.
    pub fn load(&self) -> Result<(), KexecError> {
        kexec_file_load(
            self.kernel.as_fd(),
            self.initrd.as_ref().map(AsFd::as_fd),
            &self.cmdline,
        )
    }

    pub fn cmdline(&self) -> &CStr {
        &self.cmdline
    }

    /// The seals on the kernel copy (`F_GET_SEALS`).
    pub fn seals(&self) -> io::Result<i32> {
        // SAFETY: fcntl on a descriptor we own.
        let seals = unsafe { libc::fcntl(self.kernel.as_raw_fd(), libc::F_GET_SEALS) };
        if seals < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(seals)
        }
    }
}

/// What a `command` reload printed and how it ended.
#[derive(Debug, PartialEq, Eq)]
pub struct CommandOutcome {
    pub success: bool,
    /// `exit status 1`, `killed after 30 s (timeout)`, ...
    pub status: String,
    /// stdout then stderr, trimmed to the last few KiB.
    pub output: String,
    pub elapsed: Duration,
}

impl fmt::Display for CommandOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} after {:.3} s",
            self.status,
            self.elapsed.as_secs_f64()
        )?;
        match self.output.lines().last() {
            Some(last) => write!(f, ": {last}"),
            None => Ok(()),
        }
    }
}

/// Most output kept from a command, in bytes.
const OUTPUT_TAIL: usize = 4096;
/// How long the output is waited for once the command's group is dead: a process that left
/// the group (setsid) may hold a pipe open for ever.
const PIPE_GRACE: Duration = Duration::from_secs(1);

/// The last [`OUTPUT_TAIL`] bytes read from one pipe so far.
type Tail = Arc<Mutex<Vec<u8>>>;

/// Reads `pipe` until EOF into a bounded tail, so a chatty command costs no more memory.
fn drain(mut pipe: impl io::Read + Send + 'static) -> (thread::JoinHandle<()>, Tail) {
    let tail = Tail::default();
    let kept = tail.clone();
    let reader = thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            match pipe.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    let mut t = kept.lock().unwrap_or_else(|e| e.into_inner());
                    t.extend_from_slice(&buf[..n]);
                    let excess = t.len().saturating_sub(OUTPUT_TAIL);
                    t.drain(..excess);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
    });
    (reader, tail)
}

/// SIGKILL to the process group `group` (ESRCH, nobody left, is fine).
fn kill_group(group: libc::pid_t) {
    // SAFETY: signals the process group we created; no memory is involved.
    unsafe { libc::kill(-group, libc::SIGKILL) };
}

/// Runs `argv` (e.g. the distribution's reload) with a timeout, capturing its output.
pub fn run_command(argv: &[String], timeout: Duration) -> io::Result<CommandOutcome> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty reload command"))?;
    let start = Instant::now();
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a timeout kills what it started too (and the pipes close).
        .process_group(0)
        .spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("{program}: {e}")))?;
    let group = libc::pid_t::try_from(child.id()).map_err(io::Error::other)?;
    let (stdout, stdout_tail) = drain(child.stdout.take().expect("piped stdout"));
    let (stderr, stderr_tail) = drain(child.stderr.take().expect("piped stderr"));
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if start.elapsed() >= timeout {
            kill_group(group);
            child.wait()?;
            break None;
        }
        thread::sleep(Duration::from_millis(10));
    };
    let elapsed = start.elapsed();
    // What it left running in its group (a daemonised helper) would hold the pipes open.
    kill_group(group);
    let waited = Instant::now();
    while !(stdout.is_finished() && stderr.is_finished()) && waited.elapsed() < PIPE_GRACE {
        thread::sleep(Duration::from_millis(10));
    }
    let mut output = stdout_tail
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    output.extend(stderr_tail.lock().unwrap_or_else(|e| e.into_inner()).iter());
    let output = String::from_utf8_lossy(&output[output.len().saturating_sub(OUTPUT_TAIL)..])
        .trim()
        .to_owned();
    Ok(match status {
        Some(status) => CommandOutcome {
            success: status.success(),
            status: status.to_string(),
            output,
            elapsed,
        },
        None => CommandOutcome {
            success: false,
            status: format!("killed after {} s (timeout)", timeout.as_secs_f64()),
            output,
            elapsed,
        },
    })
}

#[cfg(test)]
mod tests {
    use std::{fs, os::unix::fs::PermissionsExt as _};

    use super::*;

    #[test]
    fn errno_meanings_name_the_cause() {
        let meaning =
            |errno| KexecError::from_errno(io::Error::from_raw_os_error(errno)).to_string();
        assert!(meaning(libc::EPERM).contains("CAP_SYS_BOOT"));
        assert!(meaning(libc::EPERM).contains("lockdown"));
        assert!(meaning(libc::ENOEXEC).contains("not a bzImage"));
        assert!(meaning(libc::EBUSY).contains("another kexec load"));
        assert!(meaning(libc::ENOMEM).contains("reservation"));
        assert!(meaning(libc::EADDRNOTAVAIL).contains("reservation"));
        assert!(meaning(libc::ENOSYS).contains("CONFIG_KEXEC_FILE"));
        assert!(meaning(libc::EIO).starts_with("kexec_file_load: the load failed ("));
        assert!(!meaning(libc::EBUSY).contains('\n'));
    }

    #[test]
    fn the_last_good_copy_is_exact_and_sealed() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        let kernel_bytes: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
        fs::write(dir.join("vmlinuz"), &kernel_bytes).unwrap();
        fs::write(dir.join("initrd"), b"initrd").unwrap();
        for name in ["vmlinuz", "initrd"] {
            fs::set_permissions(dir.join(name), fs::Permissions::from_mode(0o600)).unwrap();
        }
        let opened = OpenedRecipe {
            kernel: File::open(dir.join("vmlinuz")).unwrap(),
            initrd: Some(File::open(dir.join("initrd")).unwrap()),
            needed_bytes: 0,
        };
        let image = SealedImage::copy(&opened, "console=ttyS0").unwrap();
        assert_eq!(image.bytes, 3_000_006);
        assert_eq!(image.cmdline(), c"console=ttyS0");
        // The files on disk change; the copy does not.
        fs::write(dir.join("vmlinuz"), b"garbage").unwrap();
        // The kernel reads from offset 0 whatever the descriptor's position.
        let mut copy = vec![0; kernel_bytes.len()];
        File::from(image.kernel.try_clone().unwrap())
            .read_exact_at(&mut copy, 0)
            .unwrap();
        assert!(copy == kernel_bytes, "copy differs from the original");
        let seals = image.seals().unwrap();
        for seal in [
            libc::F_SEAL_SEAL,
            libc::F_SEAL_SHRINK,
            libc::F_SEAL_GROW,
            libc::F_SEAL_WRITE,
        ] {
            assert_ne!(seals & seal, 0, "seal {seal:#x} missing");
        }
        let path = format!("/proc/self/fd/{}", image.kernel.as_raw_fd());
        let err = fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|mut f| f.write_all(b"x"))
            .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EPERM), "{err}");
        assert!(CString::new("a\0b").is_err());
    }

    /// The access mode of every descriptor of this process open on the inode of `fd`.
    fn access_modes_of(fd: &OwnedFd) -> Vec<i32> {
        use std::os::unix::fs::MetadataExt as _;
        let ino = File::from(fd.try_clone().unwrap())
            .metadata()
            .unwrap()
            .ino();
        let mut modes = Vec::new();
        for entry in fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(Result::ok)
        {
            if fs::metadata(entry.path()).is_ok_and(|m| m.ino() == ino) {
                let name = entry.file_name().into_string().unwrap();
                let info = fs::read_to_string(format!("/proc/self/fdinfo/{name}")).unwrap();
                let flags = info
                    .lines()
                    .find_map(|l| l.strip_prefix("flags:"))
                    .map(|f| i32::from_str_radix(f.trim(), 8).unwrap())
                    .unwrap();
                modes.push(flags & libc::O_ACCMODE);
            }
        }
        modes
    }

    #[test]
    fn no_descriptor_can_write_the_sealed_copy_so_the_kernel_can_read_it() {
        // kexec_file_load reads through kernel_read_file(), which takes deny_write_access():
        // ETXTBSY while any descriptor is open for writing on the file.
        let opened = OpenedRecipe {
            kernel: File::open("/bin/true").unwrap(),
            initrd: None,
            needed_bytes: 0,
        };
        let image = SealedImage::copy(&opened, "").unwrap();
        let modes = access_modes_of(&image.kernel);
        assert!(!modes.is_empty());
        assert!(modes.iter().all(|&m| m == libc::O_RDONLY), "{modes:?}");
    }

    fn argv(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| (*w).to_owned()).collect()
    }

    #[test]
    fn a_command_reload_reports_its_status_and_output() {
        let ok = run_command(
            &argv(&["sh", "-c", "echo loading; echo done >&2"]),
            Duration::from_secs(10),
        )
        .unwrap();
        assert!(ok.success);
        assert_eq!(ok.output, "loading\ndone");
        assert!(ok.to_string().starts_with("exit status: 0 after "));
        assert!(ok.to_string().ends_with(": done"));
        let failed = run_command(
            &argv(&["sh", "-c", "echo no kexec >&2; exit 3"]),
            Duration::from_secs(10),
        )
        .unwrap();
        assert!(!failed.success);
        assert_eq!(failed.status, "exit status: 3");
        let missing =
            run_command(&argv(&["/nonexistent/kdumpctl"]), Duration::from_secs(1)).unwrap_err();
        assert!(missing.to_string().starts_with("/nonexistent/kdumpctl: "));
        assert!(run_command(&[], Duration::from_secs(1)).is_err());
    }

    #[test]
    fn what_a_command_leaves_behind_neither_holds_the_agent_nor_its_memory() {
        let start = Instant::now();
        // Left in its group: killed once the command exits.
        let left = run_command(
            &argv(&["sh", "-c", "sleep 30 & echo forked"]),
            Duration::from_secs(10),
        )
        .unwrap();
        assert!(left.success);
        assert_eq!(left.output, "forked");
        // Out of its group (setsid) with the pipe: given up on after the grace period.
        let escaped = run_command(
            &argv(&["sh", "-c", "setsid sleep 30 & echo escaped"]),
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(escaped.output, "escaped");
        assert!(
            start.elapsed() < Duration::from_secs(8),
            "waited {:?} for what the commands left",
            start.elapsed()
        );
        let chatty = run_command(
            &argv(&[
                "sh",
                "-c",
                "head -c 10000000 /dev/zero | tr '\\0' x; echo; echo end",
            ]),
            Duration::from_secs(30),
        )
        .unwrap();
        assert!(
            chatty.output.len() <= OUTPUT_TAIL,
            "{}",
            chatty.output.len()
        );
        assert!(
            chatty.output.ends_with("xx\nend"),
            "{}",
            &chatty.output[chatty.output.len() - 10..]
        );
    }

    #[test]
    fn a_hung_command_and_what_it_started_are_killed_at_the_timeout() {
        let start = Instant::now();
        let hung = run_command(
            &argv(&["sh", "-c", "echo started; sleep 30 & sleep 30"]),
            Duration::from_millis(300),
        )
        .unwrap();
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "waited for the grandchild"
        );
        assert!(!hung.success);
        assert_eq!(hung.status, "killed after 0.3 s (timeout)");
        assert_eq!(hung.output, "started");
    }
}
