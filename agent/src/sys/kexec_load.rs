//! The `kexec_load(KEXEC_ON_CRASH)` syscall for a crash image the agent laid out itself.
//! Thin: the segments come checked (`reload::arm64_load`), this only makes the call.
use std::io;

/// `kexec_load` flags (include/uapi/linux/kexec.h).
const KEXEC_ON_CRASH: libc::c_ulong = 0x1;
/// `KEXEC_ARCH_AARCH64` (`EM_AARCH64 << 16`): the kernel refuses an image for another machine.
const KEXEC_ARCH_AARCH64: libc::c_ulong = 183 << 16;
/// `__NR_kexec_load` in asm-generic/unistd.h (arm64); the images are arm64's only.
#[cfg(target_arch = "aarch64")]
const SYS_KEXEC_LOAD: Option<libc::c_long> = Some(104);
#[cfg(not(target_arch = "aarch64"))]
const SYS_KEXEC_LOAD: Option<libc::c_long> = None;

/// `struct kexec_segment`.
#[repr(C)]
struct KexecSegment {
    buf: *const libc::c_void,
    bufsz: libc::size_t,
    mem: libc::c_ulong,
    memsz: libc::size_t,
}

/// One segment to load: `bytes` at physical `mem`, `memsz` bytes long.
pub struct LoadSegment<'a> {
    pub bytes: &'a [u8],
    pub mem: u64,
    pub memsz: u64,
}

/// A failed `kexec_load`, with the errno and what it means for kdump.
#[derive(Debug, thiserror::Error)]
#[error("kexec_load: {meaning} ({errno})")]
pub struct KexecLoadError {
    pub meaning: &'static str,
    pub errno: io::Error,
}

impl KexecLoadError {
    fn from_errno(errno: io::Error) -> Self {
        let meaning = match errno.raw_os_error().unwrap_or(0) {
            libc::EPERM => {
                "not permitted: needs CAP_SYS_BOOT; kernel lockdown, kexec_load_disabled or a signature policy may forbid it"
            }
            libc::EBUSY => "another kexec load is in progress (kexec lock busy); retry",
            libc::EADDRNOTAVAIL => {
                "a segment is not page-aligned or lies outside the crash kernel reservation"
            }
            libc::EINVAL => {
                "invalid image: segments overlap, more than 16, or flags the kernel does not know"
            }
            libc::ENOMEM => "the kernel could not allocate the image's pages",
            libc::EFAULT => "a segment's buffer could not be read",
            libc::ENOSYS => "this kernel has no kexec_load (CONFIG_KEXEC unset)",
            _ => "the load failed",
        };
        Self { meaning, errno }
    }
}

/// Replaces the loaded crash image with `segments`, entered at physical `entry`. The kernel
/// frees the old crash image before it loads the new one, so a failure can leave nothing
/// loaded: read `kexec_crash_loaded` afterwards.
pub fn kexec_load_crash(entry: u64, segments: &[LoadSegment<'_>]) -> Result<(), KexecLoadError> {
    let Some(nr) = SYS_KEXEC_LOAD else {
        return Err(KexecLoadError {
            meaning: "the agent lays out kexec_load images for arm64 only",
            errno: io::Error::from_raw_os_error(libc::ENOSYS),
        });
    };
    let raw: Vec<KexecSegment> = segments
        .iter()
        .map(|s| KexecSegment {
            buf: s.bytes.as_ptr().cast(),
            bufsz: s.bytes.len(),
            mem: s.mem as libc::c_ulong,
            memsz: s.memsz as libc::size_t,
        })
        .collect();
    // SAFETY: each segment's buffer pointer and length describe a live slice borrowed for the
    // duration of the call; the array pointer and count describe `raw`.
    let ret = unsafe {
        libc::syscall(
            nr,
            entry as libc::c_ulong,
            raw.len() as libc::c_ulong,
            raw.as_ptr(),
            KEXEC_ON_CRASH | KEXEC_ARCH_AARCH64,
        )
    };
    if ret == 0 {
        Ok(())
    } else {
        Err(KexecLoadError::from_errno(io::Error::last_os_error()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_meanings_name_the_cause() {
        let meaning =
            |errno| KexecLoadError::from_errno(io::Error::from_raw_os_error(errno)).to_string();
        assert!(meaning(libc::EPERM).contains("CAP_SYS_BOOT"));
        assert!(meaning(libc::EADDRNOTAVAIL).contains("reservation"));
        assert!(meaning(libc::EBUSY).contains("another kexec load"));
        assert!(meaning(libc::ENOSYS).contains("CONFIG_KEXEC"));
        assert!(meaning(libc::EIO).starts_with("kexec_load: the load failed ("));
        assert_eq!(std::mem::size_of::<KexecSegment>(), 32);
    }
}
