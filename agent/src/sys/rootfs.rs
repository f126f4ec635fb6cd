//! The host's root filesystem as the agent sees it (`--rootfs`, node_exporter's
//! `--path.rootfs`): host paths (from a distribution config, a flag, an adopted load, the state
//! directory) are resolved under it, their symlinks the way the host resolves them.
use std::{
    ffi::OsString,
    fs::File,
    io,
    os::unix::fs::OpenOptionsExt as _,
    path::{Component, Path, PathBuf},
};

/// Symlinks followed in one resolution before giving up (the kernel's MAXSYMLINKS).
const MAX_SYMLINKS: usize = 40;

/// A host path that cannot be resolved under the rootfs: the path and why, on one line.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {why}")]
pub struct RootfsError {
    /// The host path as given, with the rootfs named when it is not `/`.
    pub path: String,
    pub why: String,
    /// The I/O error kind, when an I/O error is the reason.
    pub kind: Option<io::ErrorKind>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rootfs {
    root: PathBuf,
}

impl Default for Rootfs {
    fn default() -> Self {
        Self::new("/")
    }
}

impl Rootfs {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `path` as the operator knows it: the host path, with the rootfs it was read under.
    pub fn describe(&self, path: &Path) -> String {
        if self.root == Path::new("/") {
            path.display().to_string()
        } else {
            format!("{} (under {})", path.display(), self.root.display())
        }
    }

    fn error(
        &self,
        path: &Path,
        why: impl Into<String>,
        kind: Option<io::ErrorKind>,
    ) -> RootfsError {
        RootfsError {
            path: self.describe(path),
            why: why.into(),
            kind,
        }
    }

    /// The local path of the host's absolute `path`, with every symlink resolved as the host
    /// would (an absolute target starts again at the rootfs). A `..` that would climb above the
    /// rootfs is refused: the host would clamp it, a container would leave the host's tree.
    /// Components after the first missing one are kept as they are, so opening the result fails
    /// with the host's own "No such file".
    pub fn resolve(&self, path: &Path) -> Result<PathBuf, RootfsError> {
        if !path.is_absolute() {
            return Err(self.error(path, "not an absolute path", None));
        }
        let mut todo: Vec<OsString> = Vec::new();
        push_components(&mut todo, path);
        let mut done: Vec<OsString> = Vec::new();
        let mut links = 0;
        while let Some(name) = todo.pop() {
            if name == ".." {
                if done.pop().is_none() {
                    return Err(self.error(
                        path,
                        "a symlink or `..` leads outside the rootfs",
                        None,
                    ));
                }
                continue;
            }
            let local = self.local(&done).join(&name);
            let meta = match std::fs::symlink_metadata(&local) {
                Ok(meta) => meta,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    done.push(name);
                    done.extend(todo.into_iter().rev());
                    return Ok(self.local(&done));
                }
                Err(e) => return Err(self.error(path, e.to_string(), Some(e.kind()))),
            };
            if !meta.file_type().is_symlink() {
                done.push(name);
                continue;
            }
            links += 1;
            if links > MAX_SYMLINKS {
                return Err(self.error(path, "too many levels of symbolic links", None));
            }
            let target = std::fs::read_link(&local)
                .map_err(|e| self.error(path, e.to_string(), Some(e.kind())))?;
            if target.is_absolute() {
                done.clear();
            }
            push_components(&mut todo, &target);
        }
        Ok(self.local(&done))
    }

    fn local(&self, components: &[OsString]) -> PathBuf {
        let mut out = self.root.clone();
        out.extend(components);
        out
    }

    /// Opens the host's `path` read-only. The resolved path has no symlink left, so the last
    /// component is opened with `O_NOFOLLOW` (a link swapped in after the resolution is
    /// refused) and `O_NONBLOCK` (a FIFO does not hang the open; regular files ignore it).
    pub fn open(&self, path: &Path) -> Result<File, RootfsError> {
        let local = self.resolve(path)?;
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(&local)
            .map_err(|e| self.error(path, e.to_string(), Some(e.kind())))
    }

    /// The text of the host's `path`; `Ok(None)` when it does not exist.
    pub fn read_optional(&self, path: &Path) -> Result<Option<String>, RootfsError> {
        use std::io::Read as _;
        let mut file = match self.open(path) {
            Ok(file) => file,
            Err(e) if e.kind == Some(io::ErrorKind::NotFound) => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut text = String::new();
        file.read_to_string(&mut text)
            .map_err(|e| self.error(path, e.to_string(), Some(e.kind())))?;
        Ok(Some(text))
    }

    /// The size of the host's file at `path`, if it is one.
    pub fn file_bytes(&self, path: &Path) -> Option<u64> {
        let meta = std::fs::metadata(self.resolve(path).ok()?).ok()?;
        meta.is_file().then_some(meta.len())
    }

    /// Whether the host's `path` exists (after its symlinks).
    pub fn exists(&self, path: &Path) -> bool {
        self.resolve(path).is_ok_and(|p| p.exists())
    }
}

/// Pushes `path`'s components on a stack, the first on top; `.` and the root vanish.
fn push_components(stack: &mut Vec<OsString>, path: &Path) {
    let names: Vec<OsString> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_owned()),
            Component::ParentDir => Some("..".into()),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
        })
        .collect();
    stack.extend(names.into_iter().rev());
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    fn tree() -> (tempfile::TempDir, Rootfs) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("boot")).unwrap();
        std::fs::create_dir_all(root.join("var/lib/kdump")).unwrap();
        std::fs::create_dir_all(root.join("run/lock")).unwrap();
        std::fs::write(root.join("boot/vmlinuz-6.1.0-47-amd64"), b"kernel").unwrap();
        // Debian's own layout: absolute links, and /var/lock -> ../run/lock.
        symlink(
            "/boot/vmlinuz-6.1.0-47-amd64",
            root.join("var/lib/kdump/vmlinuz"),
        )
        .unwrap();
        symlink("../run/lock", root.join("var/lock")).unwrap();
        symlink("vmlinuz-6.1.0-47-amd64", root.join("boot/vmlinuz")).unwrap();
        symlink("../../../../etc/shadow", root.join("boot/escape")).unwrap();
        symlink("loop", root.join("boot/loop")).unwrap();
        let rootfs = Rootfs::new(root);
        (dir, rootfs)
    }

    #[test]
    fn absolute_and_relative_links_resolve_inside_the_rootfs() {
        let (dir, rootfs) = tree();
        let root = dir.path();
        let kernel = root.join("boot/vmlinuz-6.1.0-47-amd64");
        for host in [
            "/var/lib/kdump/vmlinuz",
            "/boot/vmlinuz",
            "/boot/../boot/./vmlinuz",
        ] {
            assert_eq!(rootfs.resolve(Path::new(host)).unwrap(), kernel, "{host}");
        }
        assert_eq!(
            rootfs.resolve(Path::new("/var/lock/kdump")).unwrap(),
            root.join("run/lock/kdump")
        );
        assert_eq!(
            rootfs.file_bytes(Path::new("/var/lib/kdump/vmlinuz")),
            Some(6)
        );
        assert_eq!(
            rootfs.read_optional(Path::new("/boot/vmlinuz")).unwrap(),
            Some("kernel".into())
        );
        assert_eq!(
            rootfs
                .read_optional(Path::new("/etc/default/kdump-tools"))
                .unwrap(),
            None
        );
    }

    #[test]
    fn escapes_loops_and_relative_paths_are_refused_naming_the_path() {
        let (dir, rootfs) = tree();
        let under = format!("(under {})", dir.path().display());
        let err = |p: &str| rootfs.resolve(Path::new(p)).unwrap_err().to_string();
        assert_eq!(
            err("/boot/escape"),
            format!("/boot/escape {under}: a symlink or `..` leads outside the rootfs")
        );
        assert_eq!(
            err("/boot/loop"),
            format!("/boot/loop {under}: too many levels of symbolic links")
        );
        assert_eq!(
            err("boot/vmlinuz"),
            format!("boot/vmlinuz {under}: not an absolute path")
        );
        let missing = rootfs.open(Path::new("/boot/missing")).unwrap_err();
        assert_eq!(missing.kind, Some(io::ErrorKind::NotFound));
        assert!(
            missing
                .to_string()
                .ends_with("No such file or directory (os error 2)"),
            "{missing}"
        );
    }

    #[test]
    fn the_default_root_names_paths_as_they_are() {
        let rootfs = Rootfs::default();
        assert_eq!(
            rootfs.describe(Path::new("/etc/sysconfig/kdump")),
            "/etc/sysconfig/kdump"
        );
        assert_eq!(rootfs.resolve(Path::new("/")).unwrap(), Path::new("/"));
    }
}
