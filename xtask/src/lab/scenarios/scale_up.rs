//! A long, steady scale-up under three policies, one fresh guest each, in one run: the agent's
//! default; the Fedora/RHEL udev throttler; Debian kdump-tools 1.8.1's udev rule. Figures from
//! the same sampler of `kexec_crash_loaded` and the same probes for all three, as ratios
//! against the throttler measured in the same run.
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use base64::Engine as _;
use kdump_agent::model::{elfcorehdr::LoadPath, iomem::Iomem};
use serde_json::{Value, json};

use super::agent::{POLLER, metric, recipe, wait_ready};
use crate::lab::{
    guests::Boot,
    image::{GUEST_AGENT, GUEST_CAPTURE_INITRD, GUEST_KERNEL, KERNEL_6_1},
    machine::{Machine, Memory},
    scenario::{CAPTURE_CMDLINE, Run, Scenario},
};

pub const BENCHMARKS: &[Scenario] = &[Scenario {
    name: "bench-scale-up-6.1",
    about: "6.1, 48 x 128 MiB DIMMs one every 0.5 s (24 s), blocks onlined as they come, under the agent, the udev throttler and Debian's kdump-tools rule: reloads, window, missing-byte-seconds, time to fresh",
    kernel: KERNEL_6_1,
    fixture: false,
    benchmark: true,
    body: bench_scale_up_6_1,
}];

/// 24 s of plugging: long enough that the throttler's 1 s sleep, settle and reload cycle repeats
/// ~10 times, as it does (21 to 105 times) on a real scale-up; 48 block events as before.
const DIMMS: u64 = 48;
const DIMM_MIB: u64 = 128;
const PACE: Duration = Duration::from_millis(500);
const GIB: f64 = (1u64 << 30) as f64;
/// Bounds the wait for a policy's header to be fresh for good after the last block: (c) runs
/// one unload-and-load per block, and its 48 took 4-17 s each on this host (240 s was too short).
const FRESH_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Policy {
    Agent,
    Throttler,
    Debian,
}

impl Policy {
    fn name(self) -> &'static str {
        match self {
            Policy::Agent => "agent",
            Policy::Throttler => "throttler",
            Policy::Debian => "kdump_tools",
        }
    }

    /// What udev runs for each memory block online event (a script in the guest), if any.
    fn hook(self) -> Option<String> {
        let load = format!("{GUEST_KERNEL} --initrd={GUEST_CAPTURE_INITRD}");
        let done = "trap 'echo x >> /tmp/hook.done' EXIT";
        match self {
            Policy::Agent => None,
            // kdump-udev-throttler: the first instance takes the throttle lock (others exit),
            // sleeps 1 s, waits for udev to settle (here: no offline block), releases it, then
            // `kdumpctl reload` under kdumpctl's lock (a later instance waits for it there).
            Policy::Throttler => Some(format!(
                "{done}\nexec 9>/var/lock/kdump-udev-throttle\nflock -n 9 || exit 0\nsleep 1\n\
                 while grep -qx offline /sys/devices/system/memory/memory*/state; do sleep 0.1; done\n\
                 exec 9>&-\nexec 8>/var/lock/kdump\nflock 8\n\
                 kexec -p -u && kexec -s -p {load} --append='{CAPTURE_CMDLINE}'\n"
            )),
            // kdump-tools 1.8.1: `kdump-config try-reload` = condreload under
            // flock $KDUMP_COREDIR/kdump_lock (blocking): if loaded, unload, then its load
            // command, `kexec -p` without -s (no Secure Boot), which Debian 12's kexec-tools
            // 2.0.25 runs as kexec_load: `-c` makes the lab's 2.0.29 do the same.
            Policy::Debian => Some(format!(
                "{done}\nexec 9>/var/crash/kdump_lock\nflock 9\n\
                 if [ -e /sys/kernel/kexec_crash_loaded ] && [ \"$(cat /sys/kernel/kexec_crash_loaded)\" -eq 1 ]; then\n\
                 kexec -p -u\nkexec -c -p --command-line=\"{CAPTURE_CMDLINE}\" --initrd={GUEST_CAPTURE_INITRD} {GUEST_KERNEL}\nfi\n"
            )),
        }
    }
}

/// What the probes and the sampler saw of one policy's scale-up.
struct Figures {
    /// From the probes: each window they timed is one reload.
    reloads: u32,
    /// What the sampler saw of them: a loaded spell between two windows shorter than one of
    /// its polls (under TCG and host load, tens of ms) merges two into one.
    sampled_windows: u32,
    unprotected_seconds_sampled: f64,
    unprotected_seconds_probed: f64,
    missing_byte_seconds: f64,
    missing_byte_seconds_stale: f64,
    missing_byte_seconds_unprotected: f64,
    seconds_to_fresh: f64,
    scale_up_seconds: f64,
    fresh: bool,
    serial_resends: u32,
    /// Each window without a capture kernel, seconds from the first block online.
    windows: Vec<(f64, f64)>,
    /// The longest pause between two blocks coming online (the guest's pace under load).
    longest_online_gap: f64,
}

impl Figures {
    fn json(&self, policy: Policy, base: &Figures) -> Value {
        let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
        json!({
            "bench": "bench-scale-up-6.1",
            "policy": policy.name(),
            "fresh_for_good": self.fresh,
            "reloads": self.reloads,
            "unprotected_seconds": self.unprotected_seconds_probed,
            "unprotected_seconds_sampled": self.unprotected_seconds_sampled,
            "sampled_windows": self.sampled_windows,
            "missing_byte_seconds": self.missing_byte_seconds,
            "missing_byte_seconds_stale": self.missing_byte_seconds_stale,
            "missing_byte_seconds_unprotected": self.missing_byte_seconds_unprotected,
            "seconds_last_online_to_fresh": self.seconds_to_fresh,
            "scale_up_seconds": self.scale_up_seconds,
            "serial_resends": self.serial_resends,
            "windows_from_first_online_s": self.windows,
            "longest_online_gap_s": self.longest_online_gap,
            "vs_throttler": {
                "reloads": ratio(f64::from(self.reloads), f64::from(base.reloads)),
                "unprotected_seconds": ratio(self.unprotected_seconds_probed, base.unprotected_seconds_probed),
                "missing_byte_seconds": ratio(self.missing_byte_seconds, base.missing_byte_seconds),
                "seconds_last_online_to_fresh": ratio(self.seconds_to_fresh, base.seconds_to_fresh),
            },
        })
    }
}

fn uptime(m: &mut Machine) -> Result<f64> {
    m.sh("cut -d' ' -f1 /proc/uptime")?
        .trim()
        .parse()
        .context("/proc/uptime")
}

/// `(uptime, value)` lines of a guest log.
fn pairs(text: &str) -> Vec<(f64, String)> {
    text.lines()
        .filter_map(|l| {
            let (t, v) = l.split_once(' ')?;
            Some((t.parse().ok()?, v.trim().to_owned()))
        })
        .collect()
}

/// One policy in a fresh guest: boot, `kexec -s -p`, an agent (acting, or watching with
/// `--reload off` so that its probes time the policy's windows), the scale-up, the wait for a
/// fresh header. Leaves the guest running for the caller.
fn scale_up(run: &mut Run, policy: Policy) -> Result<(Figures, Machine)> {
    run.progress(&format!("{}: booting", policy.name()));
    let boot = Boot {
        memory: Memory {
            boot_mib: 1024,
            slots: DIMMS as u32,
            max_mib: 1024 + DIMMS * DIMM_MIB,
        },
        ..Boot::default()
    };
    let mut m = run.boot(&boot)?;
    run.load_kdump(&mut m, LoadPath::KexecFileLoad)?;
    let args = match policy {
        Policy::Agent => recipe(),
        Policy::Throttler | Policy::Debian => "--reload off".to_owned(),
    };
    run.start_agent(&mut m, &args)?;
    wait_ready(&mut m)?;
    m.sh("mkdir -p /var/lock /var/crash; : > /tmp/hook.done; : > /tmp/online.log")?;
    let hook = match policy.hook() {
        Some(script) => {
            let encoded = base64::engine::general_purpose::STANDARD.encode(script);
            m.sh(&format!("echo {encoded} | base64 -d > /tmp/hook.sh"))?;
            "(sh /tmp/hook.sh </dev/null >>/tmp/hook.log 2>&1 &);"
        }
        None => "",
    };
    let base_ram = Iomem::parse(&m.sh("cat /proc/iomem")?)
        .map_err(|e| anyhow::anyhow!("guest /proc/iomem: {e}"))?
        .system_ram()
        .total_bytes() as f64;
    let block = m.block_size()?;
    m.sh(&format!("({POLLER}) > /tmp/poll.log 2>&1 &"))?;
    std::thread::sleep(Duration::from_millis(300));

    // The scale-up: one DIMM every PACE over QMP; in the guest, a loop stands in for a udev
    // auto-online rule: each block is onlined as it appears, and the policy's udev hook is
    // started for its online event.
    run.progress(&format!("{}: {DIMMS} x {DIMM_MIB} MiB", policy.name()));
    let first = m.plug_dimm(DIMM_MIB)?;
    let first_block = first.addr / block;
    let last_block = first_block + DIMMS * DIMM_MIB * (1 << 20) / block - 1;
    let udev = format!(
        "b={first_block}; while [ $b -le {last_block} ]; do f=/sys/devices/system/memory/memory$b/state; \
         while [ ! -e $f ]; do usleep 5000; done; echo online > $f; read u _ < /proc/uptime; \
         echo \"$u {block}\" >> /tmp/online.log; {hook} b=$((b+1)); done; echo done > /tmp/online.done\n"
    );
    let encoded = base64::engine::general_purpose::STANDARD.encode(udev);
    m.sh(&format!("echo {encoded} | base64 -d > /tmp/udev.sh"))?;
    m.sh("(sh /tmp/udev.sh </dev/null >/tmp/udev.log 2>&1 &)")?;
    run.report.hotplugged_bytes += first.size;
    let start = Instant::now();
    for i in 1..DIMMS {
        let at = start + PACE * u32::try_from(i)?;
        if let Some(wait) = at.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let dimm = m.plug_dimm(DIMM_MIB)?;
        run.report.hotplugged_bytes += dimm.size;
    }
    m.wait_until("[ -e /tmp/online.done ]", FRESH_TIMEOUT)
        .context("the guest did not online every block")?;
    let hooks = DIMMS * DIMM_MIB * (1 << 20) / block;

    // Fresh for good: every hook has exited (or, for the agent, it says ready) and the
    // watching agent judges the loaded header current, within the timeout.
    run.progress(&format!("{}: waiting for a fresh header", policy.name()));
    let settled = match policy {
        Policy::Agent => m.wait_until(&format!("{GUEST_AGENT} status >/dev/null"), FRESH_TIMEOUT),
        Policy::Throttler | Policy::Debian => m
            .wait_until(
                &format!("[ $(wc -l < /tmp/hook.done) -ge {hooks} ]"),
                FRESH_TIMEOUT,
            )
            .and_then(|()| {
                m.wait_until(
                    &format!("{GUEST_AGENT} status >/dev/null"),
                    Duration::from_secs(30),
                )
            }),
    };
    // Any reload still to come shows up here (the agent's last one of a streak, a late hook).
    std::thread::sleep(Duration::from_secs(3));
    let fresh = settled.is_ok()
        && m.run(&format!("{GUEST_AGENT} status >/dev/null"))?.code == 0
        && m.sh("cat /sys/kernel/kexec_crash_loaded")?.trim() == "1";
    let online: Vec<(f64, f64)> = pairs(&m.sh("cat /tmp/online.log")?)
        .into_iter()
        .map(|(t, v)| (t, v.parse().unwrap_or(0.0)))
        .collect();
    let samples: Vec<(f64, bool)> = pairs(&m.sh("cat /tmp/poll.log")?)
        .into_iter()
        .map(|(t, v)| (t, v == "1"))
        .collect();
    let (first_online, last_online) = (
        online.first().map_or(0.0, |o| o.0),
        online.last().map_or(0.0, |o| o.0),
    );
    // Windows without a crash kernel: from a 0 to the next 1 of the sampler.
    let mut windows: Vec<(f64, f64)> = Vec::new();
    let mut lost = None;
    for &(t, loaded) in &samples {
        match (loaded, lost) {
            (false, None) => lost = Some(t),
            (true, Some(l)) => {
                windows.push((l, t));
                lost = None;
            }
            _ => {}
        }
    }
    let now = uptime(&mut m)?;
    if let Some(l) = lost {
        windows.push((l, now));
    }
    let windows: Vec<(f64, f64)> = windows
        .into_iter()
        .filter(|w| w.1 >= first_online)
        .collect();
    let fresh_at = if fresh {
        windows.last().map_or(last_online, |w| w.1).max(last_online)
    } else {
        now
    };
    let ram_at = |t: f64| base_ram + online.iter().filter(|o| o.0 <= t).map(|o| o.1).sum::<f64>();
    // What the loaded header covers at `t`: nothing inside a window; after one, the RAM online
    // when it began (the loader reads RAM after the old image is gone), all of it after the
    // last one once the watching agent judged it current; before the first, the boot RAM.
    let covered = |t: f64| -> f64 {
        let mut cover = base_ram;
        for (k, &(a, b)) in windows.iter().enumerate() {
            if t >= a && t < b {
                return 0.0;
            }
            if t >= b {
                cover = if fresh && k + 1 == windows.len() {
                    f64::INFINITY
                } else {
                    ram_at(a)
                };
            }
        }
        cover
    };
    let mut points: Vec<f64> = online
        .iter()
        .map(|o| o.0)
        .chain(windows.iter().flat_map(|w| [w.0, w.1]))
        .chain([first_online, fresh_at])
        .filter(|&t| t >= first_online && t <= fresh_at)
        .collect();
    points.sort_by(f64::total_cmp);
    points.dedup();
    let (mut stale, mut unprotected) = (0.0, 0.0);
    for pair in points.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        let mid = (a + b) / 2.0;
        let cover = covered(mid);
        let missing = (ram_at(mid) - cover.min(ram_at(mid))).max(0.0);
        if cover == 0.0 {
            unprotected += missing * (b - a);
        } else {
            stale += missing * (b - a);
        }
    }
    let figures = Figures {
        reloads: counted(metric(&mut m, "kdump_unprotected_window_seconds_count")?)?,
        sampled_windows: u32::try_from(windows.len())?,
        unprotected_seconds_sampled: windows.iter().map(|w| w.1 - w.0).sum(),
        unprotected_seconds_probed: metric(&mut m, "kdump_unprotected_window_seconds_sum")?,
        missing_byte_seconds: stale + unprotected,
        missing_byte_seconds_stale: stale,
        missing_byte_seconds_unprotected: unprotected,
        seconds_to_fresh: fresh_at - last_online,
        scale_up_seconds: last_online - first_online,
        fresh,
        serial_resends: m.resends(),
        windows: windows
            .iter()
            .map(|w| (w.0 - first_online, w.1 - first_online))
            .collect(),
        longest_online_gap: online
            .windows(2)
            .map(|p| p[1].0 - p[0].0)
            .fold(0.0, f64::max),
    };
    let name = policy.name();
    run.check_named(
        &format!("{name}_fresh_for_good"),
        fresh,
        format!(
            "no fresh header {} s after the last block",
            FRESH_TIMEOUT.as_secs()
        ),
    );
    // The sampler cannot see more windows than there were, and both time the same seconds
    // without a capture kernel, to within its polls.
    let drift = (figures.unprotected_seconds_probed - figures.unprotected_seconds_sampled).abs();
    run.check_named(
        &format!("{name}_probes_agree_with_sampler"),
        figures.sampled_windows <= figures.reloads
            && figures.sampled_windows > 0
            && drift <= (0.02 * figures.unprotected_seconds_probed).max(0.5),
        format!(
            "the probes timed {} windows in {:.2} s, the sampler saw {} in {:.2} s",
            figures.reloads,
            figures.unprotected_seconds_probed,
            figures.sampled_windows,
            figures.unprotected_seconds_sampled
        ),
    );
    Ok((figures, m))
}

fn bench_scale_up_6_1(run: &mut Run) -> Result<()> {
    // The host is shared with other VMs: the load it ran under, next to its figures.
    let load = std::fs::read_to_string("/proc/loadavg").context("/proc/loadavg")?;
    run.note("host_loadavg_at_start", load.trim());
    let (throttler, m) = scale_up(run, Policy::Throttler)?;
    drop(m);
    let (debian, m) = scale_up(run, Policy::Debian)?;
    drop(m);
    let (agent, mut m) = scale_up(run, Policy::Agent)?;
    let mut lines = Vec::new();
    for (policy, f) in [
        (Policy::Agent, &agent),
        (Policy::Throttler, &throttler),
        (Policy::Debian, &debian),
    ] {
        let line = f.json(policy, &throttler);
        println!("{line}");
        lines.push(line);
    }
    run.note("policies", Value::Array(lines));
    // The goals, reported per run with the figures behind a missed one (speed is
    // measured, not asserted).
    let goals = [
        (
            "goal_reloads_third_of_throttler",
            3.0 * f64::from(agent.reloads),
            f64::from(throttler.reloads),
            format!("{} reloads, (b) {}", agent.reloads, throttler.reloads),
        ),
        (
            "goal_window_third_of_throttler",
            3.0 * agent.unprotected_seconds_probed,
            throttler.unprotected_seconds_probed,
            format!(
                "{:.2} s without a capture kernel, (b) {:.2} s",
                agent.unprotected_seconds_probed, throttler.unprotected_seconds_probed
            ),
        ),
        (
            "goal_missing_byte_seconds_at_most_throttler",
            agent.missing_byte_seconds,
            throttler.missing_byte_seconds,
            format!(
                "{:.1} GiB·s missing, (b) {:.1} GiB·s",
                agent.missing_byte_seconds / GIB,
                throttler.missing_byte_seconds / GIB
            ),
        ),
        (
            "goal_fresh_at_most_throttler",
            agent.seconds_to_fresh,
            throttler.seconds_to_fresh,
            format!(
                "{:.2} s to fresh, (b) {:.2} s",
                agent.seconds_to_fresh, throttler.seconds_to_fresh
            ),
        ),
    ];
    let mut missed = Vec::new();
    for (goal, agent_figure, bound, figures) in goals {
        let met = agent_figure <= bound;
        run.note(goal, met);
        if !met {
            missed.push(format!("{goal}: {figures}"));
        }
    }
    let better = agent.reloads < debian.reloads
        && agent.unprotected_seconds_probed < debian.unprotected_seconds_probed
        && agent.missing_byte_seconds < debian.missing_byte_seconds
        && agent.seconds_to_fresh < debian.seconds_to_fresh;
    run.note("goal_all_four_better_than_kdump_tools", better);
    if !better {
        missed.push("goal_all_four_better_than_kdump_tools".to_owned());
    }
    for goal in &missed {
        println!("missed {goal}");
    }
    run.note("goals_missed", missed);
    run.crash(&mut m)?;
    run.expect(0, 0);
    Ok(())
}

/// A counter's value as a count.
fn counted(value: f64) -> Result<u32> {
    if value.fract() != 0.0 || !(0.0..=f64::from(u32::MAX)).contains(&value) {
        anyhow::bail!("{value}: not a count");
    }
    Ok(value as u32)
}
