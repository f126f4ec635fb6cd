//! Reads the files the agent needs under procfs (`--procfs`, default `/proc`).
use std::{
    io::Read as _,
    path::{Path, PathBuf},
};

use crate::{
    model::kconfig::KernelConfig,
    sys::sysfs::{ReadError, read_optional},
};

#[derive(Clone, Debug)]
pub struct Procfs {
    root: PathBuf,
}

impl Procfs {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn path(&self, relative: &str) -> PathBuf {
        self.root.join(relative)
    }

    /// The bytes of `iomem` (its addresses read as zero without CAP_SYS_ADMIN).
    pub fn iomem(&self) -> Result<Vec<u8>, ReadError> {
        let path = self.path("iomem");
        std::fs::read(&path).map_err(|cause| ReadError::Io { path, cause })
    }

    /// The kernel's configuration from `config.gz`, else `/boot/config-<release>`, else
    /// `usr/lib/modules/<release>/config` of the root that holds `boot` (Debian 14's kernel
    /// packages ship the config only there).
    pub fn kernel_config(&self, boot: &Path) -> Option<KernelConfig> {
        let gz = self.path("config.gz");
        if let Ok(file) = std::fs::File::open(&gz) {
            let mut text = String::new();
            if flate2::read::GzDecoder::new(file)
                .read_to_string(&mut text)
                .is_ok()
            {
                return Some(KernelConfig::parse(&text, gz.display().to_string()));
            }
        }
        let release = self.kernel_release().ok()?;
        let beside_modules = boot
            .parent()
            .map(|root| root.join(format!("usr/lib/modules/{release}/config")));
        [Some(boot.join(format!("config-{release}"))), beside_modules]
            .into_iter()
            .flatten()
            .find_map(|path| {
                let text = std::fs::read_to_string(&path).ok()?;
                Some(KernelConfig::parse(&text, path.display().to_string()))
            })
    }

    /// `sys/kernel/osrelease`, e.g. `6.12.57+deb13-amd64`.
    pub fn kernel_release(&self) -> Result<String, ReadError> {
        let path = self.path("sys/kernel/osrelease");
        let text = read_optional(&path)?.ok_or_else(|| ReadError::Io {
            path,
            cause: std::io::Error::from(std::io::ErrorKind::NotFound),
        })?;
        Ok(text.trim().to_string())
    }

    /// Whether this process may resolve the files of `pid` (a root process of the host, e.g.
    /// its init), as adopting another loader's `kexec_file_load` needs: the kernel's ptrace
    /// access check refuses a reader lacking capabilities that the target holds, unless the
    /// reader has CAP_SYS_PTRACE.
    pub fn may_resolve_fds_of(&self, pid: u32) -> Result<(), String> {
        let path = self.path(&format!("{pid}/cwd"));
        match std::fs::read_link(&path) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Err(format!(
                "{}: {e}: another loader's files cannot be resolved, so no recipe can be \
                 adopted (the agent needs CAP_SYS_PTRACE next to a loader holding more \
                 capabilities than the agent)",
                path.display()
            )),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    /// The effective capability set of this process, from the real `/proc/self/status` (not
    /// `--procfs`, which may be another host's or a fixture).
    pub fn effective_capabilities() -> Result<u64, ReadError> {
        let path = PathBuf::from("/proc/self/status");
        let text = read_optional(&path)?.unwrap_or_default();
        let (index, value) = text
            .lines()
            .enumerate()
            .find_map(|(i, l)| l.strip_prefix("CapEff:").map(|v| (i, v.trim())))
            .unwrap_or((text.lines().count(), ""));
        u64::from_str_radix(value, 16).map_err(|_| ReadError::Malformed {
            path,
            line: index + 1,
            expected: "a CapEff: line with a hexadecimal mask",
            found: value.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn finds_the_config_in_boot_else_beside_the_modules() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        let release = "7.2.13+deb14-amd64";
        write(
            &root.join("proc/sys/kernel/osrelease"),
            &format!("{release}\n"),
        );
        let procfs = Procfs::new(root.join("proc"));
        let boot = root.join("boot");
        assert!(procfs.kernel_config(&boot).is_none());
        let modules = root.join(format!("usr/lib/modules/{release}/config"));
        write(&modules, "CONFIG_CRASH_HOTPLUG=y\n");
        let found = procfs.kernel_config(&boot).unwrap();
        assert_eq!(found.source, modules.display().to_string());
        let in_boot = boot.join(format!("config-{release}"));
        write(&in_boot, "CONFIG_KEXEC=y\n");
        assert_eq!(
            procfs.kernel_config(&boot).unwrap().source,
            in_boot.display().to_string()
        );
    }
}
