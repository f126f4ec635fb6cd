//! The named lab scenarios, one list per file: `baseline` (no agent), `agent` (the agent
//! reloading), `prometheus` (a host Prometheus scraping the guest's agent), `probes` (what the
//! eBPF probes report), `readback` (the header read back from the kernel against vmcore), `check` (a one-shot
//! `check`, an agent started after RAM changed), `cpu_hotplug` (a CPU plugged after the load), `scale_up` (a long scale-up under the agent and the
//! distributions' policies), `stop` (the agent signalled mid-reload), `package`
//! (the systemd unit's command line, and the unit run by systemd as PID 1), `deployed` (the DaemonSet's pod under runc), `virtio_mem`
//! (RAM resized through a virtio-mem device). Adding one is a function and an entry in its file's list.
pub mod agent;
pub mod baseline;
pub mod check;
pub mod cpu_hotplug;
pub mod deployed;
pub mod package;
pub mod probes;
pub mod prometheus;
pub mod readback;
pub mod scale_up;
pub mod stop;
pub mod virtio_mem;

use anyhow::{Result, anyhow, bail};

use super::scenario::Scenario;

/// Every scenario, in `cargo xtask lab list` order: each file's list, concatenated.
pub fn every() -> impl Iterator<Item = &'static Scenario> {
    [
        baseline::ALL,
        agent::ALL,
        virtio_mem::ALL,
        check::ALL,
        cpu_hotplug::ALL,
        prometheus::ALL,
        agent::BENCHMARKS,
        scale_up::BENCHMARKS,
        probes::ALL,
        readback::ALL,
        stop::ALL,
        package::ALL,
        deployed::ALL,
    ]
    .into_iter()
    .flatten()
}

/// The scenarios named, or all of them.
pub fn select(names: &[String], all: bool) -> Result<Vec<&'static Scenario>> {
    if all {
        return Ok(every().collect());
    }
    if names.is_empty() {
        bail!("name scenarios or pass --all (see `cargo xtask lab list`)");
    }
    names
        .iter()
        .map(|n| {
            every()
                .find(|s| s.name == n)
                .ok_or_else(|| anyhow!("no scenario `{n}` (see `cargo xtask lab list`)"))
        })
        .collect()
}
