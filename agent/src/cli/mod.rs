//! The subcommands of `kdump-agent`, one file each.
use std::path::PathBuf;

use clap::Args;

use crate::sys::{procfs::Procfs, sysfs::Sysfs};

pub mod check;
pub mod header;
pub mod reload;
pub mod run;
pub mod show;
pub mod status;

/// Writes to stdout; a closed pipe (`| head`) ends the output quietly instead of failing.
pub fn print(text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(anyhow::anyhow!("writing to stdout: {e}"))
        }
        _ => Ok(()),
    }
}

/// Where to read the system from (node_exporter's convention: the DaemonSet mounts the host's
/// /proc and /sys elsewhere, tests point these at fixtures).
#[derive(Args, Clone, Debug)]
pub struct SystemArgs {
    /// procfs mount point.
    #[arg(long, value_name = "DIR", default_value = "/proc")]
    pub procfs: PathBuf,
    /// sysfs mount point.
    #[arg(long, value_name = "DIR", default_value = "/sys")]
    pub sysfs: PathBuf,
    /// Directory with the kernels' config-* files, read when procfs has no config.gz.
    #[arg(long, value_name = "DIR", default_value = "/boot")]
    pub boot: PathBuf,
}

/// Where the daemon keeps its state and its control socket.
#[derive(Args, Clone, Debug)]
pub struct StateDirArgs {
    /// State directory (root-only): persisted state and the control socket `agent.sock`.
    #[arg(long, value_name = "DIR", default_value = "/run/kdump-agent")]
    pub state_dir: PathBuf,
}

impl SystemArgs {
    pub fn procfs(&self) -> Procfs {
        Procfs::new(&self.procfs)
    }

    pub fn sysfs(&self) -> Sysfs {
        Sysfs::new(&self.sysfs)
    }
}
