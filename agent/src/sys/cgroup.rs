//! The memory the agent's own cgroup (v2) leaves it: sealed images are memfd pages, charged to
//! that cgroup, so a copy that does not fit would get the agent OOM-killed mid-reload.
use std::path::{Path, PathBuf};

/// `memory.max` and `memory.current` of the cgroup, and the clean page cache in it (from
/// `memory.stat`), in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryRoom {
    pub limit: u64,
    pub current: u64,
    /// Clean file pages the kernel reclaims before it OOM-kills: reading the kernel and initrd
    /// charges their page cache, which must not count against the copy.
    pub reclaimable: u64,
}

impl MemoryRoom {
    /// Bytes that can still be charged before the limit.
    pub fn free(&self) -> u64 {
        self.limit
            .saturating_sub(self.current.saturating_sub(self.reclaimable))
    }
}

/// Clean page cache in a `memory.stat`: file LRU pages (memfd pages are shmem, on the anon
/// lists) less the dirty and writeback ones; 0 when the keys are missing.
fn reclaimable(memory_stat: &str) -> u64 {
    let value = |key: &str| {
        memory_stat
            .lines()
            .find_map(|l| {
                l.strip_prefix(key)?
                    .strip_prefix(' ')?
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .unwrap_or(0)
    };
    (value("active_file") + value("inactive_file"))
        .saturating_sub(value("file_dirty") + value("file_writeback"))
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
    let reclaimable = read("memory.stat").map_or(0, |s| reclaimable(&s));
    Some(MemoryRoom {
        limit,
        current,
        reclaimable,
    })
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
        assert_eq!(
            room.free(),
            124 << 20,
            "without memory.stat nothing is reclaimable"
        );
        std::fs::write(
            dir.path().join("memory.stat"),
            "anon 1048576\nfile 3145728\nshmem 1048576\nfile_dirty 4096\nfile_writeback 4096\n\
             active_file 1048576\ninactive_file 1048576\n",
        )
        .unwrap();
        let room = room_at(dir.path()).unwrap();
        assert_eq!(room.reclaimable, (2 << 20) - 8192);
        assert_eq!(room.free(), (126 << 20) - 8192);
        assert_eq!(
            MemoryRoom {
                limit: 1,
                current: 5,
                reclaimable: 9
            }
            .free(),
            1,
            "reclaimable beyond the charge frees at most the charge"
        );
        std::fs::write(dir.path().join("memory.max"), "max\n").unwrap();
        assert_eq!(room_at(dir.path()), None);
    }
}
