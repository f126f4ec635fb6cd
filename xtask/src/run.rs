//! `cargo xtask run`: build the agent with its probes and run the daemon in the foreground.
use anyhow::{Context as _, Result, bail};

use crate::support::process::cargo;

pub fn run(args: &[String]) -> Result<()> {
    crate::setup::run()?;
    crate::ui::section("cargo build --release -p kdump-agent");
    let status = cargo()
        .args(["build", "--release", "-p", "kdump-agent"])
        .status()
        .context("cargo build: cannot start")?;
    if !status.success() {
        bail!("building kdump-agent failed ({status})");
    }
    let bin = crate::paths::target_dir().join("release/kdump-agent");
    crate::ui::section(&format!("{} run {}", bin.display(), args.join(" ")));
    let status = std::process::Command::new(&bin)
        .arg("run")
        .args(args)
        .status()
        .with_context(|| format!("starting {}", bin.display()))?;
    std::process::exit(status.code().unwrap_or(1));
}
