//! Reads the kdump-related files under sysfs (`--sysfs`, default `/sys`).
use std::{
    fs, io,
    path::{Path, PathBuf},
};

/// A file that could not be read or did not hold what it should.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    // The cause is in the message, so it is no `source()`: `{:#}` would print it twice.
    #[error("cannot read {}: {cause}", path.display())]
    Io { path: PathBuf, cause: io::Error },
    #[error("{} line {line}: expected {expected}, found {found:?}", path.display())]
    Malformed {
        path: PathBuf,
        line: usize,
        expected: &'static str,
        found: String,
    },
}

/// Reads a whole file; `Ok(None)` when it does not exist (the feature is absent).
pub(crate) fn read_optional(path: &Path) -> Result<Option<String>, ReadError> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(cause) => Err(ReadError::Io {
            path: path.to_path_buf(),
            cause,
        }),
    }
}

fn parse_u64(path: &Path, text: &str) -> Result<u64, ReadError> {
    let value = text.trim();
    value.parse().map_err(|_| ReadError::Malformed {
        path: path.to_path_buf(),
        line: 1,
        expected: "an unsigned integer",
        found: value.chars().take(40).collect(),
    })
}

fn parse_flag(path: &Path, text: &str) -> Result<bool, ReadError> {
    match text.trim() {
        "0" => Ok(false),
        "1" => Ok(true),
        other => Err(ReadError::Malformed {
            path: path.to_path_buf(),
            line: 1,
            expected: "0 or 1",
            found: other.chars().take(40).collect(),
        }),
    }
}

/// The sysfs mount the agent reads.
#[derive(Clone, Debug)]
pub struct Sysfs {
    root: PathBuf,
}

impl Sysfs {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn path(&self, relative: &str) -> PathBuf {
        self.root.join(relative)
    }

    fn flag(&self, relative: &str) -> Result<Option<bool>, ReadError> {
        let path = self.path(relative);
        read_optional(&path)?
            .map(|t| parse_flag(&path, &t))
            .transpose()
    }

    /// `kernel/kexec_crash_loaded`; `None` when the kernel has no kexec.
    pub fn kexec_crash_loaded(&self) -> Result<Option<bool>, ReadError> {
        self.flag("kernel/kexec_crash_loaded")
    }

    /// `kernel/kexec_crash_size`: bytes reserved for the crash kernel; `None` without kexec.
    pub fn kexec_crash_size(&self) -> Result<Option<u64>, ReadError> {
        let path = self.path("kernel/kexec_crash_size");
        read_optional(&path)?
            .map(|t| parse_u64(&path, &t))
            .transpose()
    }

    /// `devices/system/memory/crash_hotplug`: 1 when the kernel rewrites the header on hotplug
    /// (>= 6.6 with CONFIG_CRASH_HOTPLUG); `None` on older kernels.
    pub fn crash_hotplug(&self) -> Result<Option<bool>, ReadError> {
        self.flag("devices/system/memory/crash_hotplug")
    }

    /// `kernel/btf/vmlinux`: the kernel's BTF, needed for fentry/fexit.
    pub fn has_btf(&self) -> bool {
        self.path("kernel/btf/vmlinux").is_file()
    }

    /// The perf PMU that kprobes attach through.
    pub fn has_kprobe_pmu(&self) -> bool {
        self.path("bus/event_source/devices/kprobe/type").is_file()
    }

    /// The perf PMU that tracepoints attach through.
    pub fn has_tracepoint_pmu(&self) -> bool {
        self.path("bus/event_source/devices/tracepoint/type")
            .is_file()
    }

    /// `devices/system/memory/block_size_bytes` (hex): the memory block size.
    pub fn memory_block_size(&self) -> Result<Option<u64>, ReadError> {
        let path = self.path("devices/system/memory/block_size_bytes");
        read_optional(&path)?
            .map(|t| {
                u64::from_str_radix(t.trim(), 16).map_err(|_| ReadError::Malformed {
                    path: path.clone(),
                    line: 1,
                    expected: "a hexadecimal byte count",
                    found: t.trim().chars().take(40).collect(),
                })
            })
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(files: &[(&str, &str)]) -> (tempfile::TempDir, Sysfs) {
        let dir = tempfile::tempdir().unwrap();
        for (rel, content) in files {
            let p = dir.path().join(rel);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, content).unwrap();
        }
        let sysfs = Sysfs::new(dir.path());
        (dir, sysfs)
    }

    #[test]
    fn absent_files_mean_absent_features() {
        let (_d, s) = fixture(&[]);
        assert_eq!(s.kexec_crash_loaded().unwrap(), None);
        assert_eq!(s.kexec_crash_size().unwrap(), None);
        assert_eq!(s.crash_hotplug().unwrap(), None);
        assert!(!s.has_btf());
    }

    #[test]
    fn reads_values() {
        let (_d, s) = fixture(&[
            ("kernel/kexec_crash_loaded", "1\n"),
            ("kernel/kexec_crash_size", "268435456\n"),
            ("devices/system/memory/crash_hotplug", "0\n"),
            ("devices/system/memory/block_size_bytes", "8000000\n"),
        ]);
        assert_eq!(s.kexec_crash_loaded().unwrap(), Some(true));
        assert_eq!(s.kexec_crash_size().unwrap(), Some(256 << 20));
        assert_eq!(s.crash_hotplug().unwrap(), Some(false));
        assert_eq!(s.memory_block_size().unwrap(), Some(128 << 20));
    }

    #[test]
    fn malformed_values_name_the_file() {
        let (_d, s) = fixture(&[
            ("kernel/kexec_crash_size", "lots\n"),
            ("kernel/kexec_crash_loaded", "2"),
        ]);
        let err = s.kexec_crash_size().unwrap_err().to_string();
        assert!(
            err.ends_with(
                "kernel/kexec_crash_size line 1: expected an unsigned integer, found \"lots\""
            ),
            "{err}"
        );
        let err = s.kexec_crash_loaded().unwrap_err().to_string();
        assert!(
            err.contains("kexec_crash_loaded line 1: expected 0 or 1, found \"2\""),
            "{err}"
        );
    }
}
