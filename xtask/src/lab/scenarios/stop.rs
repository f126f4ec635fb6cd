//! Stopping the agent in the middle of its own reload: SIGTERM must let the load (or its
//! rollback) finish before the agent exits; after SIGKILL a restarted agent must end ready.
use anyhow::{Context as _, Result, bail};
use kdump_agent::model::elfcorehdr::LoadPath;

use crate::lab::{
    guests::Boot,
    image::{GUEST_AGENT, KERNEL_6_1},
    machine::Machine,
    scenario::{Online, Run, Scenario},
    scenarios::agent::{AGENT_TIMEOUT, SUCCESS, crash_and_expect, metric, recipe, wait_ready},
};

/// The stop scenarios, in `cargo xtask lab list` order.
pub const ALL: &[Scenario] = &[
    Scenario {
        name: "sigterm-mid-reload-6.1",
        about: "6.1, agent, +512 MiB, SIGTERM while its kexec_file_load runs: the load finishes before exit, a capture kernel loaded at exit, the state file names it; dump whole",
        kernel: KERNEL_6_1,
        fixture: false,
        benchmark: false,
        body: sigterm_mid_reload_6_1,
    },
    Scenario {
        name: "sigkill-mid-reload-6.1",
        about: "6.1, agent, +512 MiB, SIGKILL while its kexec_file_load runs, restarted as a supervisor would: ready again; dump whole",
        kernel: KERNEL_6_1,
        fixture: false,
        benchmark: false,
        body: sigkill_mid_reload_6_1,
    },
];

/// The agent's state file in the guest (the default `--state-dir`).
const STATE_FILE: &str = "/run/kdump-agent/state.json";

/// A guest shell line that waits until the old image is gone (`kexec_crash_loaded` 0: the
/// agent's `kexec_file_load` has freed it and is building the new one), sends `signal` to the
/// agent, waits until the process is gone, and logs the uptime of both and what is loaded then.
fn watcher(signal: &str) -> String {
    let name = GUEST_AGENT.rsplit('/').next().unwrap_or("kdump-agent");
    format!(
        "n=0; read v < /sys/kernel/kexec_crash_loaded; \
         while [ \"$v\" = 1 ] && [ $n -lt 60000 ]; do usleep 1000; n=$((n+1)); read v < /sys/kernel/kexec_crash_loaded; done; \
         read u _ < /proc/uptime; echo \"freed $u $v\"; kill -{signal} $(pidof {name}); \
         while pidof {name} >/dev/null; do usleep 10000; done; \
         read u _ < /proc/uptime; read l < /sys/kernel/kexec_crash_loaded; echo \"exited $u $l\"; touch /tmp/stopped"
    )
}

/// What the watcher saw: guest uptime when the old image was gone and when the agent had
/// exited, and `kexec_crash_loaded` right after the exit.
struct Stopped {
    freed_at: f64,
    exited_at: f64,
    loaded_at_exit: bool,
}

fn field(log: &str, tag: &str) -> Result<Vec<String>> {
    let line = log
        .lines()
        .find(|l| l.starts_with(tag))
        .with_context(|| format!("the watcher's log has no `{tag}` line:\n{log}"))?;
    Ok(line.split_whitespace().skip(1).map(str::to_owned).collect())
}

/// Boots, loads kdump, starts the agent with a recipe, plugs a DIMM and sends `signal` to the
/// agent while its reload runs.
fn signal_mid_reload(run: &mut Run, signal: &str) -> Result<(Machine, u64, Stopped)> {
    let mut m = run.boot(&Boot::default())?;
    run.load_kdump(&mut m, LoadPath::KexecFileLoad)?;
    run.start_agent(&mut m, &recipe())?;
    wait_ready(&mut m)?;
    m.sh(&format!("({}) >/tmp/stop.log 2>&1 &", watcher(signal)))?;
    let dimm = run.hot_add(&mut m, 512, Online::Write("online"))?;
    m.wait_until("[ -e /tmp/stopped ]", AGENT_TIMEOUT)
        .context("the agent did not exit after the signal")?;
    let log = m.sh("cat /tmp/stop.log")?;
    let freed = field(&log, "freed")?;
    if freed.get(1).map(String::as_str) != Some("0") {
        bail!("the agent's reload never freed the old image while watched:\n{log}");
    }
    let exited = field(&log, "exited")?;
    let uptime = |v: Option<&String>| -> Result<f64> {
        v.context("uptime missing")?
            .parse()
            .context("the watcher's uptime")
    };
    let stopped = Stopped {
        freed_at: uptime(freed.first())?,
        exited_at: uptime(exited.first())?,
        loaded_at_exit: exited.get(1).map(String::as_str) == Some("1"),
    };
    run.note(
        "seconds_from_freed_to_exit",
        stopped.exited_at - stopped.freed_at,
    );
    run.note("crash_kernel_loaded_at_exit", stopped.loaded_at_exit);
    Ok((m, dimm.addr, stopped))
}

/// The agent's log from the first line that mentions the signal on.
fn log_since(m: &mut Machine, signal: &str) -> Result<Vec<String>> {
    let log = m.sh(&format!(
        "sed -n '/{signal}/,$p' /tmp/kdump-agent.log | head -20"
    ))?;
    Ok(log.lines().map(str::to_owned).collect())
}

fn sigterm_mid_reload_6_1(run: &mut Run) -> Result<()> {
    let (mut m, dimm_addr, stopped) = signal_mid_reload(run, "TERM")?;
    run.check(
        stopped.loaded_at_exit,
        "no capture kernel was loaded when the agent had exited after SIGTERM",
    );
    let logged = log_since(&mut m, "SIGTERM")?;
    let waited = logged
        .iter()
        .any(|l| l.contains("stopping once the load in flight is over"));
    let over = logged
        .iter()
        .any(|l| l.contains("the load in flight is over; shutting down"));
    run.check(
        waited && over,
        format!("the agent did not log waiting for its load before exiting: {logged:?}"),
    );
    run.note("agent_log_during_stop", logged);
    let text = m.sh(&format!("cat {STATE_FILE}"))?;
    let state: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{STATE_FILE}: {text}"))?;
    let result = state["last_load"]["result"].as_str().unwrap_or_default();
    run.note("state_file_last_load", result);
    let covers_dimm = state["loaded_header"].as_array().is_some_and(|ranges| {
        ranges.iter().any(|r| {
            r["start"].as_u64().is_some_and(|s| s <= dimm_addr)
                && r["end"].as_u64().is_some_and(|e| e >= dimm_addr)
        })
    });
    run.check(
        (result == "success" && covers_dimm) || result == "rolled_back",
        format!(
            "the state file's last load is `{result}`, its header covers the DIMM: {covers_dimm}"
        ),
    );
    // Restarted as the DaemonSet would; after a rollback it still has the DIMM to fix.
    run.start_agent(&mut m, &recipe())?;
    wait_ready(&mut m)?;
    run.note("reloads_after_restart", metric(&mut m, SUCCESS)?);
    crash_and_expect(run, &mut m, 0)
}

fn sigkill_mid_reload_6_1(run: &mut Run) -> Result<()> {
    let (mut m, _, _) = signal_mid_reload(run, "KILL")?;
    // A supervisor restarts it: the survey finds no capture kernel, or one whose header it
    // reads back, and reloads if that one is stale.
    let before: usize = m.sh("wc -l < /tmp/kdump-agent.log")?.trim().parse()?;
    run.start_agent(&mut m, &recipe())?;
    wait_ready(&mut m)?;
    run.note("reloads_after_restart", metric(&mut m, SUCCESS)?);
    let survey = m.sh(&format!(
        "tail -n +{} /tmp/kdump-agent.log | grep -v 'probe attached' | head -8",
        before + 1
    ))?;
    run.note("restart_log", survey.lines().collect::<Vec<_>>());
    crash_and_expect(run, &mut m, 0)
}
