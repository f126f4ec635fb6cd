//! Where the project keeps things on disk.
use std::{
    env,
    path::{Path, PathBuf},
};

/// The workspace root (xtask lives one level below it).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask has a parent directory")
        .to_path_buf()
}

/// Project-owned tools (bpf-linker). `KDUMP_AGENT_TOOLS` overrides `target/tools`.
pub fn tools() -> PathBuf {
    env::var_os("KDUMP_AGENT_TOOLS").map_or_else(|| root().join("target/tools"), PathBuf::from)
}

pub fn bpf_linker_prefix() -> PathBuf {
    tools().join("bpf-linker")
}

/// Cargo's target directory (`CARGO_TARGET_DIR` or `target/`).
pub fn target_dir() -> PathBuf {
    env::var_os("CARGO_TARGET_DIR").map_or_else(|| root().join("target"), PathBuf::from)
}

/// `path` relative to the workspace root when it is inside it (for SOURCE lines and logs).
pub fn relative(path: &Path) -> String {
    path.strip_prefix(root())
        .unwrap_or(path)
        .display()
        .to_string()
}
