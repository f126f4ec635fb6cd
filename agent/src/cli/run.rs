//! `kdump-agent run`: the daemon.
use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::Args;

use super::SystemArgs;
use crate::daemon;

/// Default `--listen`: loopback, on a port outside Prometheus' exporter range (9100-9999 is full).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:10864";

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub system: SystemArgs,
    /// Address for /metrics, /healthz and /readyz.
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// Also write kdump_agent.prom here for node_exporter's textfile collector.
    #[arg(long, value_name = "DIR")]
    pub textfile_dir: Option<PathBuf>,
    /// Seconds between full rescans of /proc and /sys (catches anything the events missed).
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0)]
    pub rescan_interval: f64,
}

pub fn run(args: RunArgs) -> anyhow::Result<i32> {
    if !(args.rescan_interval.is_finite() && args.rescan_interval >= 0.1) {
        anyhow::bail!(
            "--rescan-interval {}: must be at least 0.1 seconds",
            args.rescan_interval
        );
    }
    if let Some(dir) = &args.textfile_dir
        && !dir.is_dir()
    {
        anyhow::bail!("--textfile-dir {}: not a directory", dir.display());
    }
    let opts = daemon::Options {
        procfs: args.system.procfs(),
        sysfs: args.system.sysfs(),
        boot: args.system.boot.clone(),
        listen: args.listen,
        textfile_dir: args.textfile_dir,
        rescan_interval: Duration::from_secs_f64(args.rescan_interval),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(daemon::run(opts))?;
    Ok(0)
}
