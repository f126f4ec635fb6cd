//! The memory the agent's own cgroup (v2) leaves it: sealed images are memfd pages, charged to
//! that cgroup, so a copy that does not fit would get the agent OOM-killed mid-reload.
use std::path::{Path, PathBuf};

/// `memory.max` and `memory.current` of the cgroup, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryRoom {
    pub limit: u64,
    pub current: u64,
}

impl MemoryRoom {
    /// Bytes that can still be charged before the limit.
    pub fn free(&self) -> u64 {
        self.limit.saturating_sub(self.current)
    }
}

/// The cgroup v2 path of this process (`0::/path` in `/proc/self/cgroup`).
fn own_cgroup(proc_self_cgroup: &str) -> Option<PathBuf> {
    proc_self_cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(|p| PathBuf::from(p.trim().trim_start_matches('/')))
}

/// The room of the cgroup at `dir`; `None` without a limit (`max`) or without cgroup v2 files.
pub fn room_at(dir: &Path) -> Option<MemoryRoom> {
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).ok();
    let limit = read("memory.max")?.trim().parse().ok()?;
    let current = read("memory.current")?.trim().parse().ok()?;
    Some(MemoryRoom { limit, current })
}

/// The room of this process' own cgroup, as mounted at `/sys/fs/cgroup` (the runtime mounts the
/// container's cgroup namespace there, so its path is `/`).
pub fn own_room() -> Option<MemoryRoom> {
    let path = own_cgroup(&std::fs::read_to_string("/proc/self/cgroup").ok()?)?;
    room_at(&Path::new("/sys/fs/cgroup").join(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_own_cgroup_and_its_room() {
        assert_eq!(
            own_cgroup("0::/kubepods/pod1/abc\n"),
            Some("kubepods/pod1/abc".into())
        );
        assert_eq!(own_cgroup("0::/\n"), Some("".into()));
        assert_eq!(own_cgroup("1:name=systemd:/\n"), None);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("memory.max"), "134217728\n").unwrap();
        std::fs::write(dir.path().join("memory.current"), "4194304\n").unwrap();
        let room = room_at(dir.path()).unwrap();
        assert_eq!(room.free(), 124 << 20);
        std::fs::write(dir.path().join("memory.max"), "max\n").unwrap();
        assert_eq!(room_at(dir.path()), None);
    }
}
