//! `kdump-agent run`: the daemon.
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use clap::Args;

use super::{StateDirArgs, SystemArgs};
use crate::{
    daemon,
    export::web_config::WebConfig,
    observe::SourceChoice,
    reconcile::Timing,
    reload::{ReloadChoice, ReloadOptions, distro::KDUMPCTL_LOCK, recipe::RecipeFlags},
    sys::{groups, rootfs::Rootfs},
};

/// Default `--listen`: loopback, on a port outside Prometheus' exporter range (9100-9999 is full).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:10864";

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub system: SystemArgs,
    #[command(flatten)]
    pub state: StateDirArgs,
    /// Address for /metrics, /healthz and /readyz.
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// Also write kdump_agent.prom here for node_exporter's textfile collector.
    #[arg(long, value_name = "DIR")]
    pub textfile_dir: Option<PathBuf>,
    /// Seconds between full rescans of /proc and /sys (catches anything the events missed).
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0)]
    pub rescan_interval: f64,
    /// Where the agent hears about changes: auto (probes, else uevents, else rescans), ebpf
    /// (probes or refuse to start), uevent (no probes), poll (rescans alone).
    #[arg(long, value_enum, value_name = "SOURCE", default_value_t)]
    pub event_source: SourceChoice,
    /// On SIGTERM or SIGINT, seconds to wait for a load in flight (and the rollback a failed
    /// one needs) before exiting; keep it below the pod's terminationGracePeriodSeconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 30.0)]
    pub stop_timeout: f64,
    #[command(flatten)]
    pub reload: ReloadArgs,
    /// TLS and basic auth for the HTTP endpoint, in the Prometheus exporter-toolkit format
    /// (`tls_server_config`, `basic_auth_users`; check it with `promtool check web-config`).
    #[arg(long = "web.config.file", value_name = "FILE")]
    pub web_config_file: Option<PathBuf>,
    /// A group whose members may ask the control socket for `status` and `show` (root only
    /// without it; `reload` is always root's).
    #[arg(long, value_name = "GROUP")]
    pub control_group: Option<String>,
}

/// How and when the agent reloads the crash kernel.
#[derive(Args, Debug)]
pub struct ReloadArgs {
    /// kexec-file: call kexec_file_load; command: run --reload-command; off: report only.
    /// Default: kexec-file when a recipe is known (flags, state dir, distribution config), else off.
    #[arg(long, value_enum, value_name = "HOW")]
    pub reload: Option<ReloadChoice>,
    /// The reload command for `--reload command`, split on whitespace (e.g. "kdumpctl reload").
    #[arg(long, value_name = "COMMAND")]
    pub reload_command: Option<String>,
    /// Seconds before a reload command is killed.
    #[arg(long, value_name = "SECONDS", default_value_t = 120.0)]
    pub reload_timeout: f64,
    /// Capture kernel (bzImage) to load.
    #[arg(long, value_name = "FILE")]
    pub kernel: Option<PathBuf>,
    /// Initramfs of the capture kernel.
    #[arg(long, value_name = "FILE")]
    pub initrd: Option<PathBuf>,
    /// Capture kernel command line (default: this kernel's, without crashkernel=, plus
    /// "irqpoll nr_cpus=1 reset_devices"). The variable is for the systemd unit's environment
    /// file, where `$KDUMP_AGENT_ARGS` is split on every space, quotes included.
    #[arg(long, value_name = "TEXT", env = "KDUMP_AGENT_CMDLINE")]
    pub cmdline: Option<String>,
    /// Seconds without a memory event before the agent acts on a burst.
    #[arg(long, value_name = "SECONDS", default_value_t = 0.25)]
    pub quiet_period: f64,
    /// Longest wait, in seconds, from a burst's first event to acting on it.
    #[arg(long, value_name = "SECONDS", default_value_t = 5.0)]
    pub max_delay: f64,
    /// Within a streak of bursts (a scale-up: each begins sooner than this after the last
    /// change), the quiet period grows by twice its longest recent gap, up to this many seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 2.0)]
    pub quiet_period_max: f64,
    /// Within a streak, the max delay in seconds: a scale-up is acted on when it pauses, or
    /// this long after a burst began; no change waits longer to be acted on.
    #[arg(long, value_name = "SECONDS", default_value_t = 30.0)]
    pub max_delay_bound: f64,
    /// kdumpctl's lock file, flocked around the agent's own loads (with kdump-config's
    /// `$KDUMP_COREDIR/kdump_lock` when kdump-tools is configured). "none": take neither.
    #[arg(long, value_name = "FILE", default_value = KDUMPCTL_LOCK)]
    pub distro_lock: PathBuf,
    /// The host's root filesystem: the distribution's kdump configuration, its locks and
    /// every kernel and initrd path (flags, config, adopted, persisted) are resolved under it.
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub rootfs: PathBuf,
}

impl ReloadArgs {
    fn options(&self) -> anyhow::Result<ReloadOptions> {
        let seconds = |flag: &str, value: f64, min: f64| {
            if value.is_finite() && value >= min && value <= 86_400.0 {
                Ok(Duration::from_secs_f64(value))
            } else {
                Err(anyhow::anyhow!(
                    "{flag} {value}: must be between {min} and 86400 seconds"
                ))
            }
        };
        let quiet_period = seconds("--quiet-period", self.quiet_period, 0.0)?;
        let max_delay = seconds("--max-delay", self.max_delay, 0.0)?;
        if max_delay < quiet_period {
            anyhow::bail!(
                "--max-delay {}: must not be shorter than --quiet-period {}",
                self.max_delay,
                self.quiet_period
            );
        }
        let command: Vec<String> = self
            .reload_command
            .as_deref()
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        if !command.is_empty() && self.reload != Some(ReloadChoice::Command) {
            anyhow::bail!("--reload-command needs --reload command");
        }
        Ok(ReloadOptions {
            choice: self.reload,
            command,
            command_timeout: seconds("--reload-timeout", self.reload_timeout, 0.1)?,
            distro_lock: (self.distro_lock != Path::new("none")).then(|| self.distro_lock.clone()),
            rootfs: Rootfs::new(&self.rootfs),
            flags: RecipeFlags {
                kernel: self.kernel.clone(),
                initrd: self.initrd.clone(),
                cmdline: self.cmdline.clone(),
            },
            timing: Timing {
                quiet_period,
                max_delay,
                // Never below the lone burst's own limits: equal to them is the old rule.
                quiet_period_max: seconds("--quiet-period-max", self.quiet_period_max, 0.0)?
                    .max(quiet_period),
                max_delay_bound: seconds("--max-delay-bound", self.max_delay_bound, 0.0)?
                    .max(max_delay),
                ..Timing::default()
            },
        })
    }
}

pub fn run(args: RunArgs) -> anyhow::Result<i32> {
    if !(args.rescan_interval.is_finite() && args.rescan_interval >= 0.1) {
        anyhow::bail!(
            "--rescan-interval {}: must be at least 0.1 seconds",
            args.rescan_interval
        );
    }
    if !args.reload.rootfs.is_dir() {
        anyhow::bail!("--rootfs {}: not a directory", args.reload.rootfs.display());
    }
    if let Some(dir) = &args.textfile_dir
        && !dir.is_dir()
    {
        anyhow::bail!("--textfile-dir {}: not a directory", dir.display());
    }
    if !(args.stop_timeout.is_finite() && (0.0..=3600.0).contains(&args.stop_timeout)) {
        anyhow::bail!(
            "--stop-timeout {}: must be between 0 and 3600 seconds",
            args.stop_timeout
        );
    }
    let opts = daemon::Options {
        procfs: args.system.procfs(),
        sysfs: args.system.sysfs(),
        boot: args.system.boot.clone(),
        listen: args.listen,
        state_dir: args.state.state_dir.clone(),
        textfile_dir: args.textfile_dir,
        rescan_interval: Duration::from_secs_f64(args.rescan_interval),
        event_source: args.event_source,
        reload: args.reload.options()?,
        stop_timeout: Duration::from_secs_f64(args.stop_timeout),
        web: args
            .web_config_file
            .as_deref()
            .map(WebConfig::load)
            .transpose()?
            .unwrap_or_default(),
        control_group: args
            .control_group
            .as_deref()
            .map(|g| groups::group_id(g).map_err(|e| anyhow::anyhow!("--control-group: {e}")))
            .transpose()?,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(daemon::run(opts));
    // A load job abandoned by the watchdog or the stop timeout must not hold the exit.
    runtime.shutdown_background();
    result.map(|()| 0)
}
