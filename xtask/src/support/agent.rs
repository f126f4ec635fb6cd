//! The agent built by cargo and run on this host.
use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use kdump_agent::model::units::bytes;

use super::{
    http,
    process::{self, Running},
};
use crate::ui::Step;

/// A shipped static build: its Rust target, its image's OCI architecture, its ELF machine, and
/// where its kernel's `struct pt_regs` keeps the first two arguments (what its probes read).
pub struct StaticTarget {
    pub triple: &'static str,
    pub oci_arch: &'static str,
    pub e_machine: u16,
    pub pt_regs_arg_offsets: [i16; 2],
}

/// x86_64 (`rdi`, `rsi`), then arm64 (`regs[0]`, `regs[1]`), cross-built here with the tools of
/// `cargo xtask setup` (.cargo/config.toml names them).
pub const STATIC_TARGETS: [StaticTarget; 2] = [
    StaticTarget {
        triple: "x86_64-unknown-linux-musl",
        oci_arch: "amd64",
        e_machine: goblin::elf::header::EM_X86_64,
        pt_regs_arg_offsets: [112, 104],
    },
    StaticTarget {
        triple: "aarch64-unknown-linux-musl",
        oci_arch: "arm64",
        e_machine: goblin::elf::header::EM_AARCH64,
        pt_regs_arg_offsets: [0, 8],
    },
];

/// The target of the static binary the lab's (x86_64) guests and the packages ship.
pub const STATIC_TARGET: &str = STATIC_TARGETS[0].triple;

/// `cargo build --release -p kdump-agent --target x86_64-unknown-linux-musl` (with probes).
pub fn build_static() -> Result<PathBuf> {
    build_static_for(&STATIC_TARGETS[0])
}

/// `cargo build --release -p kdump-agent --target TARGET` (with probes built for its
/// architecture: aya-build passes the target's `bpf_target_arch`).
pub fn build_static_for(target: &StaticTarget) -> Result<PathBuf> {
    let triple = target.triple;
    let step = Step::start(format!("kdump-agent {triple} (static, with probes)"));
    step.progress(&format!("cargo build --release --target {triple}"));
    let out = process::cargo()
        .args([
            "build",
            "--release",
            "-p",
            "kdump-agent",
            "--target",
            triple,
        ])
        .env_remove("AYA_BUILD_SKIP")
        .output()
        .context("cargo build: cannot start")?;
    if !out.status.success() {
        let text = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = text.lines().rev().take(20).collect();
        for line in tail.iter().rev() {
            eprintln!("    {line}");
        }
        bail!(
            "building the static kdump-agent for {triple} failed ({})",
            out.status
        );
    }
    let bin = crate::paths::target_dir()
        .join(triple)
        .join("release/kdump-agent");
    let size = fs::metadata(&bin)
        .with_context(|| format!("{}: not built", bin.display()))?
        .len();
    step.done(&format!("{} ({})", bin.display(), bytes(size)));
    Ok(bin)
}

/// Builds the agent (debug, host target) and returns its path.
pub fn build_debug() -> Result<PathBuf> {
    let status = process::cargo()
        .args([
            "build",
            "--quiet",
            "-p",
            "kdump-agent",
            "--bin",
            "kdump-agent",
        ])
        .status()
        .context("cargo build -p kdump-agent")?;
    if !status.success() {
        bail!("cargo build -p kdump-agent failed ({status})");
    }
    Ok(crate::paths::target_dir().join("debug/kdump-agent"))
}

/// The agent's daemon on `127.0.0.1:port`, reading this host's /proc and /sys, writing its
/// textfile into `textfile_dir` if given; its log goes to `log`.
pub fn start(binary: &Path, port: u16, textfile_dir: Option<&Path>, log: &Path) -> Result<Running> {
    let log_file = fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let mut cmd = Command::new(binary);
    cmd.args([
        "run",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--procfs",
        "/proc",
        "--sysfs",
        "/sys",
    ]);
    if let Some(dir) = textfile_dir {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        cmd.arg("--textfile-dir").arg(dir);
    }
    Running::start(
        "kdump-agent run",
        cmd.stdout(log_file.try_clone()?).stderr(log_file),
    )
}

/// Waits for the agent's /metrics and returns its text.
pub fn scrape(port: u16, agent: &mut Running) -> Result<String> {
    let http = http::http();
    let url = format!("http://127.0.0.1:{port}/metrics");
    // An exited agent ends the wait at once rather than at the timeout.
    process::wait_for("the agent's /metrics", Duration::from_secs(30), || {
        if let Err(e) = agent.alive() {
            return Ok(Some(Err(e)));
        }
        match http::get(&http, &url) {
            Ok((200, body)) => Ok(Some(Ok(body))),
            Ok((status, _)) => bail!("HTTP {status}"),
            Err(e) => Err(e),
        }
    })?
}
