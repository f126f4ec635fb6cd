//! Scenarios with kdump-agent reloading: each changes RAM under a running agent, checks what
//! the agent did (its metrics and status in the guest), then crashes and measures the dump.
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use kdump_agent::{
    model::elfcorehdr::LoadPath,
    reload::recipe::{BZIMAGE_HEADER_LEN, BzImage},
};

use super::virtio_mem;
use crate::lab::{
    arch::Arch,
    guests::Boot,
    image::{
        GUEST_AGENT, GUEST_CAPTURE_INITRD, GUEST_KERNEL, KERNEL_6_1, KERNEL_6_1_ARM64, KERNEL_6_12,
        KERNEL_7_2, guest_metrics,
    },
    machine::{Machine, Memory},
    scenario::{CAPTURE_CMDLINE, Online, Run, Scenario, millis},
};

/// The agent scenarios, in `cargo xtask lab list` order.
pub const ALL: &[Scenario] = &[
    Scenario {
        name: "agent-fixes-6.1",
        about: "6.1, kexec -s -p, agent with a recipe, +512 MiB: stale, one reload, ready; dump whole",
        kernel: KERNEL_6_1,
        fixture: false,
        benchmark: false,
        body: agent_fixes_6_1,
    },
    Scenario {
        name: "agent-storm-6.1",
        about: "6.1, agent, four 512 MiB DIMMs back to back: exactly one reload; dump whole",
        kernel: KERNEL_6_1,
        fixture: false,
        benchmark: false,
        body: agent_storm_6_1,
    },
    Scenario {
        name: "agent-refuses-bad-kernel-6.1",
        about: "6.1, agent, kernel file replaced by garbage, +512 MiB: refused, old image kept (stale)",
        kernel: KERNEL_6_1,
        fixture: false,
        benchmark: false,
        body: agent_refuses_bad_kernel,
    },
    Scenario {
        name: "agent-refuses-bad-kernel-6.1-arm64",
        about: "arm64 6.1, kexec -p at boot, agent, Image cut in half, virtio-mem +512 MiB, `kdump-agent reload`: refused by name before any load; the boot-time image stays",
        kernel: KERNEL_6_1_ARM64,
        fixture: false,
        benchmark: false,
        body: agent_refuses_bad_kernel_arm64,
    },
    Scenario {
        name: "agent-rollback-6.1",
        about: "6.1, agent's own load, initrd grown past the reservation, +512 MiB: kernel refuses, rollback",
        kernel: KERNEL_6_1,
        fixture: false,
        benchmark: false,
        body: agent_rollback_6_1,
    },
    Scenario {
        name: "agent-upgrade-6.12",
        about: "6.12, kexec -c -p (no hotplug), agent: one kexec_file_load reload, then kernel-managed",
        kernel: KERNEL_6_12,
        fixture: false,
        benchmark: false,
        body: agent_upgrade,
    },
    Scenario {
        name: "agent-kernel-managed-6.12",
        about: "6.12, kexec -s -p, agent, +512 MiB: the kernel updates the header, zero reloads",
        kernel: KERNEL_6_12,
        fixture: false,
        benchmark: false,
        body: agent_kernel_managed,
    },
    Scenario {
        name: "agent-upgrade-7.2",
        about: "7.2, kexec -c -p (no hotplug), agent: one kexec_file_load reload, then kernel-managed",
        kernel: KERNEL_7_2,
        fixture: false,
        benchmark: false,
        body: agent_upgrade,
    },
    Scenario {
        name: "agent-kernel-managed-7.2",
        about: "7.2, kexec -s -p, agent, +512 MiB: the kernel updates the header, zero reloads",
        kernel: KERNEL_7_2,
        fixture: false,
        benchmark: false,
        body: agent_kernel_managed,
    },
    Scenario {
        name: "kernel-skipped-update-6.12",
        about: "6.12, kexec -s -p, agent; a DIMM while another load holds the kexec lock: the kernel skips its update, the agent names it and reloads once; dump whole",
        kernel: KERNEL_6_12,
        fixture: false,
        benchmark: false,
        body: kernel_skipped_update_6_12,
    },
    Scenario {
        name: "agent-hot-remove-6.1",
        about: "6.1, agent, +512 MiB then offline and device_del: excess back to 0 after a reload",
        kernel: KERNEL_6_1,
        fixture: false,
        benchmark: false,
        body: agent_hot_remove_6_1,
    },
    Scenario {
        name: "agent-restart-6.1",
        about: "6.1, agent killed -9, a storm while it is down, restarted: reads the header back, reloads, ends ready",
        kernel: KERNEL_6_1,
        fixture: false,
        benchmark: false,
        body: agent_restart_6_1,
    },
    Scenario {
        name: "agent-adopts-recipe-6.1",
        about: "6.1, agent without a recipe, then kexec -s -p: recipe adopted from the probes; +512 MiB: one reload; dump whole",
        kernel: KERNEL_6_1,
        fixture: false,
        benchmark: false,
        body: agent_adopts_recipe_6_1,
    },
    Scenario {
        name: "agent-distro-lock-6.1",
        about: "6.1, agent, /var/lock/kdump held (as kdumpctl holds it) across a +512 MiB: the reload waits, is refused, retries after release; dump whole",
        kernel: KERNEL_6_1,
        fixture: false,
        benchmark: false,
        body: agent_distro_lock_6_1,
    },
    Scenario {
        name: "fallback-uevent-6.1",
        about: "6.1, kexec -s -p, agent with --event-source uevent, +512 MiB: one reload, still ready after three rescans; dump whole",
        kernel: KERNEL_6_1,
        fixture: false,
        benchmark: false,
        body: fallback_uevent_6_1,
    },
    Scenario {
        name: "fallback-poll-6.1",
        about: "6.1, kexec -s -p, agent with --event-source poll, +512 MiB: the rescan finds it, one reload, still ready after three rescans; dump whole",
        kernel: KERNEL_6_1,
        fixture: false,
        benchmark: false,
        body: fallback_poll_6_1,
    },
];

/// The agent's benchmark (listed after the Prometheus scenarios).
pub const BENCHMARKS: &[Scenario] = &[Scenario {
    name: "bench-reload-vs-throttler-6.1",
    about: "6.1, one burst of 2 DIMMs under the agent, one under the udev-throttler policy: time to fresh, reloads, unprotected window",
    kernel: KERNEL_6_1,
    fixture: false,
    benchmark: true,
    body: bench_reload_vs_throttler_6_1,
}];

/// Reloads under TCG take seconds; this bounds waiting for the agent to act.
pub(crate) const AGENT_TIMEOUT: Duration = Duration::from_secs(90);
pub const SUCCESS: &str = r#"kdump_reloads_total{result="success"}"#;
const FAILURE: &str = r#"kdump_reloads_total{result="failure"}"#;
const ROLLED_BACK: &str = r#"kdump_reloads_total{result="rolled_back"}"#;

/// The agent's recipe for the x86_64 guests ([`recipe_for`]).
pub fn recipe() -> String {
    recipe_for(Arch::X86_64)
}

/// [`recipe`] for a guest of `arch` (its capture console).
pub fn recipe_for(arch: Arch) -> String {
    format!(
        "--kernel {GUEST_KERNEL} --initrd {GUEST_CAPTURE_INITRD} --cmdline '{}'",
        arch.capture_cmdline()
    )
}

/// One series of the agent's /metrics in the guest (0 when absent, as Prometheus reads it).
pub(crate) fn metric(m: &mut Machine, series: &str) -> Result<f64> {
    let text = m.sh(&guest_metrics())?;
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.trim().parse())
        .transpose()
        .with_context(|| format!("{series}: not a number"))?
        .unwrap_or(0.0))
}

pub(super) fn reloads(m: &mut Machine) -> Result<f64> {
    Ok(metric(m, SUCCESS)? + metric(m, FAILURE)? + metric(m, ROLLED_BACK)?)
}

/// Waits until `series` reaches `at_least`; returns the seconds it took.
pub fn wait_metric(m: &mut Machine, series: &str, at_least: f64) -> Result<f64> {
    let start = Instant::now();
    loop {
        let value = metric(m, series)?;
        if value >= at_least {
            return Ok(start.elapsed().as_secs_f64());
        }
        if start.elapsed() > AGENT_TIMEOUT {
            let log = m.sh("tail -15 /tmp/kdump-agent.log").unwrap_or_default();
            bail!(
                "{series} is {value}, expected {at_least} within {} s; the agent's log ends:\n{log}",
                AGENT_TIMEOUT.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits until `kdump-agent status` says ready (exit 0).
pub(crate) fn wait_ready(m: &mut Machine) -> Result<()> {
    m.wait_until(&format!("{GUEST_AGENT} status >/dev/null"), AGENT_TIMEOUT)
        .context("kdump-agent status never said ready")
}

/// The agent's figures for the report: reloads by result, durations and windows.
fn note_agent(run: &mut Run, m: &mut Machine) -> Result<()> {
    for (key, series) in [
        ("reloads_success", SUCCESS),
        ("reloads_failure", FAILURE),
        ("reloads_rolled_back", ROLLED_BACK),
        (
            "reload_duration_seconds_sum",
            "kdump_reload_duration_seconds_sum",
        ),
        (
            "unprotected_window_seconds_sum",
            "kdump_unprotected_window_seconds_sum",
        ),
        (
            "unprotected_window_seconds_count",
            "kdump_unprotected_window_seconds_count",
        ),
    ] {
        let value = metric(m, series)?;
        run.note(key, value);
    }
    let status = m.run(&format!("{GUEST_AGENT} status"))?;
    run.note("status_exit", status.code);
    let last = status.text().lines().find_map(|l| {
        l.trim()
            .strip_prefix("last reload")
            .map(|r| r.trim().to_owned())
    });
    if let Some(last) = last {
        run.note("last_reload", last);
    }
    Ok(())
}

/// Notes the agent's figures, then crashes; the dump must miss exactly `missing` bytes.
pub(crate) fn crash_and_expect(run: &mut Run, m: &mut Machine, missing: u64) -> Result<()> {
    note_agent(run, m)?;
    run.crash(m)?;
    run.expect(missing, 0);
    Ok(())
}

/// Notes the agent's reloads of every result and checks there were `want` `during` the test.
pub(super) fn expect_reloads(
    run: &mut Run,
    m: &mut Machine,
    want: u32,
    during: &str,
) -> Result<()> {
    let count = reloads(m)?;
    run.note("reloads", count);
    run.check(
        count == f64::from(want),
        format!("{count} reloads {during}, expected {want}"),
    );
    Ok(())
}

/// Boot, `kexec -s -p`, agent with a recipe, ready: the common start.
pub(super) fn start(run: &mut Run, boot: &Boot, load: LoadPath) -> Result<Machine> {
    let mut m = run.boot(boot)?;
    run.load_kdump(&mut m, load)?;
    run.start_agent(&mut m, &recipe_for(run.scenario.kernel.arch))?;
    Ok(m)
}

fn agent_fixes_6_1(run: &mut Run) -> Result<()> {
    let mut m = start(run, &Boot::default(), LoadPath::KexecFileLoad)?;
    wait_ready(&mut m)?;
    let dimm = run.hot_add(&mut m, 512, Online::Write("online"))?;
    let online = Instant::now();
    wait_metric(&mut m, SUCCESS, 1.0)?;
    wait_ready(&mut m)?;
    run.note(
        "seconds_from_online_to_ready",
        online.elapsed().as_secs_f64(),
    );
    let stale = m.sh("grep -c 'the loaded crash header is stale' /tmp/kdump-agent.log || true")?;
    run.check(
        stale.trim() != "0",
        "the agent never reported the header stale",
    );
    // `kdump-agent reload` asks the daemon over its socket: current now, nothing to do.
    let asked = m.run(&format!("{GUEST_AGENT} reload"))?;
    let answer = asked.text();
    run.check(
        asked.code == 0 && answer.starts_with("nothing to do"),
        format!("`kdump-agent reload` exit {}: {answer}", asked.code),
    );
    run.note("dimm_bytes", dimm.size);
    crash_and_expect(run, &mut m, 0)?;
    Ok(())
}

/// Seconds between the fallback scenarios' rescans: three of them fit in a lean scenario.
const FALLBACK_RESCAN_SECONDS: u64 = 2;

/// The agent without probes (`--event-source SOURCE`) fixes a DIMM with one reload, and the
/// rescans after it keep judging the header it loaded (they once judged the one inferred at
/// start, and called the fixed node stale).
fn fallback(run: &mut Run, source: &str) -> Result<()> {
    let mut m = run.boot(&Boot::default())?;
    run.load_kdump(&mut m, LoadPath::KexecFileLoad)?;
    run.start_agent(
        &mut m,
        &format!(
            "{} --event-source {source} --rescan-interval {FALLBACK_RESCAN_SECONDS}",
            recipe()
        ),
    )?;
    wait_ready(&mut m)?;
    let status = m.run(&format!("{GUEST_AGENT} status --json"))?;
    let json: serde_json::Value = serde_json::from_str(&status.text())
        .with_context(|| format!("status --json: {}", status.text()))?;
    run.check(
        json["event_source"] == source,
        format!(
            "status says event source {}, expected {source}",
            json["event_source"]
        ),
    );
    run.hot_add(&mut m, 512, Online::Write("online"))?;
    let online = Instant::now();
    wait_metric(&mut m, SUCCESS, 1.0)?;
    wait_ready(&mut m)?;
    run.note(
        "seconds_from_online_to_ready",
        online.elapsed().as_secs_f64(),
    );
    std::thread::sleep(Duration::from_secs(3 * FALLBACK_RESCAN_SECONDS + 1));
    let after = m.run(&format!("{GUEST_AGENT} status"))?;
    run.check(
        after.code == 0,
        format!(
            "three rescans after its own reload, status exit {}: {}",
            after.code,
            after.text().lines().next().unwrap_or_default()
        ),
    );
    expect_reloads(run, &mut m, 1, "for one DIMM")?;
    crash_and_expect(run, &mut m, 0)
}

fn fallback_uevent_6_1(run: &mut Run) -> Result<()> {
    fallback(run, "uevent")
}

fn fallback_poll_6_1(run: &mut Run) -> Result<()> {
    fallback(run, "poll")
}

fn agent_storm_6_1(run: &mut Run) -> Result<()> {
    let mut m = start(run, &Boot::default(), LoadPath::KexecFileLoad)?;
    wait_ready(&mut m)?;
    // All blocks of all DIMMs online in one go, as a scale-up does.
    burst(run, &mut m, 4, "")?;
    let online = Instant::now();
    wait_metric(&mut m, SUCCESS, 1.0)?;
    wait_ready(&mut m)?;
    run.note(
        "seconds_from_online_to_ready",
        online.elapsed().as_secs_f64(),
    );
    // Give a second burst, if the agent split the storm, time to show up.
    std::thread::sleep(Duration::from_secs(3));
    expect_reloads(run, &mut m, 1, "for four DIMMs back to back")?;
    crash_and_expect(run, &mut m, 0)?;
    Ok(())
}

fn agent_refuses_bad_kernel(run: &mut Run) -> Result<()> {
    let mut m = start(run, &Boot::default(), LoadPath::KexecFileLoad)?;
    wait_ready(&mut m)?;
    m.sh(&format!(
        "dd if=/dev/urandom of={GUEST_KERNEL} bs=1M count=8 2>/dev/null"
    ))?;
    let dimm = run.hot_add(&mut m, 512, Online::Write("online"))?;
    wait_metric(&mut m, FAILURE, 1.0)?;
    let loaded = m.sh("cat /sys/kernel/kexec_crash_loaded")?;
    run.check(
        loaded.trim() == "1",
        "the old crash kernel is gone after a refused reload",
    );
    let status = m.run(&format!("{GUEST_AGENT} status"))?;
    let text = status.text();
    run.check(
        status.code == 3,
        format!("status exit {}, expected 3 (stale)", status.code),
    );
    let refusal = format!("kernel {GUEST_KERNEL}: not a bzImage");
    run.check(
        text.contains(&refusal),
        format!("status does not name the refusal ({refusal}):\n{text}"),
    );
    // Refused: the old image stays, stale but present, so the dump lacks the DIMM.
    crash_and_expect(run, &mut m, dimm.size)?;
    Ok(())
}

/// arm64: the boot-time `kexec -c -p` image stays when the agent is asked to reload with its
/// kernel cut in half. kexec-tools would load such an Image, and the capture kernel would not
/// boot at the crash; the agent's Image check refuses it first, by name.
fn agent_refuses_bad_kernel_arm64(run: &mut Run) -> Result<()> {
    let arch = run.scenario.kernel.arch;
    let mut m = run.boot(&virtio_mem::boot())?;
    run.load_kdump(&mut m, LoadPath::KexecLoad)?;
    run.start_agent(&mut m, &recipe_for(arch))?;
    let len: u64 = m
        .sh(&format!("stat -c %s {GUEST_KERNEL}"))?
        .trim()
        .parse()?;
    // Rewritten in place: still root's, mode 0644, only shorter.
    m.sh(&format!(
        "head -c {} {GUEST_KERNEL} > /tmp/half && cat /tmp/half > {GUEST_KERNEL}",
        len / 2
    ))?;
    run.virtio_mem_up(&mut m)?;
    run.resize_virtio_mem(&mut m, virtio_mem::GROW_MIB)?;
    let added = virtio_mem::grown_bytes(run, &mut m)?;
    wait_metric(&mut m, "kdump_header_missing_bytes", added as f64)?;
    // No reload brings virtio-mem RAM into an arm64 header: only the operator's request loads.
    let asked = m.run(&format!("{GUEST_AGENT} reload"))?;
    run.note("reload_answer", asked.text().trim());
    wait_metric(&mut m, FAILURE, 1.0)?;
    let loaded = m.sh("cat /sys/kernel/kexec_crash_loaded")?;
    run.check(
        loaded.trim() == "1",
        "the boot-time crash kernel is gone after a refused reload",
    );
    let status = m.run(&format!("{GUEST_AGENT} status"))?;
    let text = status.text();
    let refusal = format!(
        "kernel {GUEST_KERNEL}: truncated: {} bytes, its EFI header's sections end at byte {len}",
        len / 2
    );
    let last = text
        .lines()
        .find(|l| l.trim_start().starts_with("last reload"))
        .unwrap_or_default();
    run.note("last_reload", last.trim());
    run.check(
        status.code == 3 && last.ends_with(&refusal),
        format!(
            "status (exit {}) does not end its last reload with `{refusal}`:\n{text}",
            status.code
        ),
    );
    // Refused before the loader ran: the probes (the event source) saw no load by the agent.
    let probes = metric(&mut m, r#"kdump_agent_event_source{source="ebpf"}"#)?;
    run.check(probes == 1.0, "the agent runs without its probes");
    let own_loads = m.sh(&format!(
        "{} | grep '^kdump_kexec_loads_total{{origin=\"agent\"' | awk '{{s+=$2}} END {{print s+0}}'",
        guest_metrics()
    ))?;
    run.note("own_kexec_loads", own_loads.trim());
    run.check(
        own_loads.trim() == "0",
        format!("the agent made {} kexec loads", own_loads.trim()),
    );
    // The boot-time image, untouched: its header lacks the grow, as kexec-tools built it.
    crash_and_expect(run, &mut m, added)?;
    Ok(())
}

fn agent_rollback_6_1(run: &mut Run) -> Result<()> {
    // Room in the guest for a large initrd, its sealed copy and the kernel's copy.
    let boot = Boot {
        memory: Memory {
            boot_mib: 2048,
            slots: 4,
            max_mib: 8192,
        },
        ..Boot::default()
    };
    let mut m = run.boot(&boot)?;
    // Nothing loaded: the agent loads the recipe itself, which becomes its last known good.
    run.start_agent(&mut m, &recipe())?;
    wait_metric(&mut m, SUCCESS, 1.0)?;
    run.load = Some(LoadPath::KexecFileLoad);
    // An initrd just too large for the reservation: within the agent's lower bound
    // (init_size + initrd), but with no room left for the kernel's alignment and purgatory.
    let vmlinuz = std::fs::read(run.scenario.kernel.vmlinuz(&run.lab.unpacked))?;
    let image = BzImage::parse(&vmlinuz[..BZIMAGE_HEADER_LEN], vmlinuz.len() as u64)
        .map_err(anyhow::Error::msg)?;
    let reserved: u64 = m.sh("cat /sys/kernel/kexec_crash_size")?.trim().parse()?;
    let initrd = reserved - u64::from(image.init_size).div_ceil(4096) * 4096 - 4096;
    m.sh(&format!(
        "head -c {initrd} /dev/zero > {GUEST_CAPTURE_INITRD}.big && mv {GUEST_CAPTURE_INITRD}.big {GUEST_CAPTURE_INITRD}"
    ))?;
    run.note("initrd_bytes", initrd);
    run.hot_add(&mut m, 512, Online::Write("online"))?;
    wait_metric(&mut m, ROLLED_BACK, 1.0)?;
    let loaded = m.sh("cat /sys/kernel/kexec_crash_loaded")?;
    run.check(
        loaded.trim() == "1",
        "no crash kernel loaded after the rollback",
    );
    let log = m.sh("grep -m1 'reload failed' /tmp/kdump-agent.log || true")?;
    run.note("failed_load", log.trim());
    // The last known good image, loaded again now, got a header for today's RAM.
    crash_and_expect(run, &mut m, 0)?;
    Ok(())
}

fn agent_upgrade(run: &mut Run) -> Result<()> {
    let mut m = start(run, &Boot::default(), LoadPath::KexecLoad)?;
    run.check_crash_hotplug(&mut m, "0")?;
    wait_ready(&mut m)?;
    run.hot_add(&mut m, 512, Online::Auto)?;
    wait_metric(&mut m, SUCCESS, 1.0)?;
    wait_ready(&mut m)?;
    run.load = Some(LoadPath::KexecFileLoad);
    let after = m.sh("cat /sys/devices/system/memory/crash_hotplug")?;
    run.note("crash_hotplug_after_reload", after.trim());
    run.check(
        after.trim() == "1",
        "crash_hotplug is not 1 after the agent's kexec_file_load",
    );
    run.hot_add(&mut m, 512, Online::Auto)?;
    // Kernel-managed now: the agent only verifies; wait past its quiet period and a rescan.
    std::thread::sleep(Duration::from_secs(5));
    wait_ready(&mut m)?;
    expect_reloads(run, &mut m, 1, "for two DIMMs (one upgrade, none after it)")?;
    crash_and_expect(run, &mut m, 0)?;
    Ok(())
}

fn agent_kernel_managed(run: &mut Run) -> Result<()> {
    let mut m = start(run, &Boot::default(), LoadPath::KexecFileLoad)?;
    run.check_crash_hotplug(&mut m, "1")?;
    wait_ready(&mut m)?;
    run.hot_add(&mut m, 512, Online::Auto)?;
    std::thread::sleep(Duration::from_secs(5));
    wait_ready(&mut m)?;
    expect_reloads(run, &mut m, 0, "in kernel-managed mode")?;
    let mode = metric(&mut m, r#"kdump_mode{mode="kernel-managed"}"#)?;
    run.check(mode == 1.0, "kdump_mode is not kernel-managed");
    crash_and_expect(run, &mut m, 0)?;
    Ok(())
}

/// A zero-filled initrd this large makes a `kexec_file_load` hold the kexec lock for seconds
/// under TCG (reading it, hashing it for purgatory, copying it into the reservation). Blocks
/// were seen to come online only late in such a load (0.7-0.9 s before its end with 160 MiB):
/// the copy, which grows with the initrd, is the window the skips fall in.
const LOCK_HOLDER_INITRD_MIB: u64 = 192;
/// The probe's log line for each header the kernel builds (a load, or an in-kernel rewrite).
const HEADER_BUILT: &str = "kernel built a crash header";

/// Another loader's `kexec -s -p` holds the kexec lock while a DIMM comes online: the kernel
/// logs `kexec_trylock() failed` and skips its header update, and the load's header was built
/// before the DIMM. The agent must name the skips and reload once (unless the kernel rewrote the
/// header itself for a last block that came online after the load).
fn kernel_skipped_update_6_12(run: &mut Run) -> Result<()> {
    let mut m = start(run, &Boot::default(), LoadPath::KexecFileLoad)?;
    run.check_crash_hotplug(&mut m, "1")?;
    wait_ready(&mut m)?;
    let handler = m.sh(&format!(
        "{} | grep 'probe=\"crash_handle_hotplug_event\"' || true",
        guest_metrics()
    ))?;
    run.note("handler_probe", handler.trim());
    run.check(
        handler.trim_end().ends_with(" 1"),
        format!(
            "the crash_handle_hotplug_event probe is not attached: {}",
            handler.trim()
        ),
    );
    m.sh(&format!(
        "dd if=/dev/zero of=/tmp/big-initrd bs=1M count={LOCK_HOLDER_INITRD_MIB} 2>/dev/null"
    ))?;
    let built = |m: &mut Machine| -> Result<u32> {
        let n = m.sh(&format!(
            "grep -c '{HEADER_BUILT}' /tmp/kdump-agent.log || true"
        ))?;
        n.trim().parse().context("counting the headers built")
    };
    let before = built(&mut m)?;
    let started = Instant::now();
    m.sh(&format!(
        "(kexec -s -p {GUEST_KERNEL} --initrd=/tmp/big-initrd --append='{CAPTURE_CMDLINE}'; echo $? >/tmp/holder.rc) >/tmp/holder.log 2>&1 &"
    ))?;
    // Plugged once the load has built its header (the probe logs it): the header misses the
    // DIMM, and the load still holds the lock while it hashes and copies the initrd.
    m.wait_until(
        &format!("[ $(grep -c '{HEADER_BUILT}' /tmp/kdump-agent.log) -gt {before} ]"),
        Duration::from_secs(30),
    )
    .context("the lock holder's load never built its header")?;
    run.note(
        "header_built_seconds_into_the_load",
        millis(started.elapsed().as_secs_f64()),
    );
    run.hot_add(&mut m, 512, Online::Auto)?;
    let online_inside = m.run("[ ! -e /tmp/holder.rc ]")?.code == 0;
    run.note("all_blocks_online_inside_the_load", online_inside);
    m.wait_until("[ -s /tmp/holder.rc ]", Duration::from_secs(60))
        .context("the lock holder's load never ended")?;
    run.note(
        "lock_holder_load_seconds",
        millis(started.elapsed().as_secs_f64()),
    );
    let rc = m.sh("cat /tmp/holder.rc; cat /tmp/holder.log")?;
    run.check(
        rc.trim_start().starts_with('0'),
        format!("the lock holder's load failed: {rc}"),
    );
    let skips = m.sh("dmesg | grep -c 'kexec_trylock() failed' || true")?;
    run.note("kernel_log_skips", skips.trim());
    if skips.trim() == "0" {
        bail!("the kernel never skipped an update: no block came online inside the load");
    }
    wait_ready(&mut m)?;
    let named = metric(&mut m, "kdump_kernel_header_skipped_updates_total")?;
    run.note("skipped_updates_total", named);
    run.check(
        named >= 1.0,
        "kdump_kernel_header_skipped_updates_total stayed 0 after the kernel skipped",
    );
    let said = m.sh("grep -c 'skipped its in-kernel update' /tmp/kdump-agent.log || true")?;
    run.check(
        said.trim() != "0",
        "the agent's log never named the skipped update",
    );
    // A block that comes online just after the load let go of the lock gets the kernel's own
    // rewrite, which rebuilds the whole header: then the skips are covered and a reload is
    // redundant (the agent may still have judged the load's header first and made one).
    let rewrote = metric(
        &mut m,
        r#"kdump_kernel_header_updates_total{result="success"}"#,
    )? > 0.0;
    run.note("kernel_rewrote_after_the_load", rewrote);
    if rewrote {
        let count = reloads(&mut m)?;
        run.note("reloads", count);
        run.check(
            count <= 1.0,
            format!(
                "{count} reloads after skips the kernel's own rewrite covered, expected at most 1"
            ),
        );
    } else {
        expect_reloads(run, &mut m, 1, "after the skipped updates")?;
    }
    crash_and_expect(run, &mut m, 0)?;
    Ok(())
}

fn agent_hot_remove_6_1(run: &mut Run) -> Result<()> {
    // Movable blocks can always be offlined again.
    let boot = Boot {
        extra: "memhp_default_state=online_movable",
        ..Boot::default()
    };
    let mut m = start(run, &boot, LoadPath::KexecFileLoad)?;
    wait_ready(&mut m)?;
    let dimm = run.hot_add(&mut m, 512, Online::Write("online_movable"))?;
    wait_metric(&mut m, SUCCESS, 1.0)?;
    wait_ready(&mut m)?;
    let before = metric(&mut m, SUCCESS)?;
    m.set_blocks(&dimm, "offline")?;
    m.hot_remove_dimm(&dimm, Duration::from_secs(60))?;
    run.report.hotplugged_bytes -= dimm.size;
    wait_metric(&mut m, SUCCESS, before + 1.0)?;
    wait_ready(&mut m)?;
    let excess = metric(&mut m, "kdump_header_excess_bytes")?;
    run.check(
        excess == 0.0,
        format!("kdump_header_excess_bytes is {excess} after the reload"),
    );
    crash_and_expect(run, &mut m, 0)?;
    Ok(())
}

fn agent_restart_6_1(run: &mut Run) -> Result<()> {
    let mut m = start(run, &Boot::default(), LoadPath::KexecFileLoad)?;
    wait_ready(&mut m)?;
    // First DIMM: a reload, so the state directory holds the header it loaded.
    run.hot_add(&mut m, 512, Online::Write("online"))?;
    wait_metric(&mut m, SUCCESS, 1.0)?;
    // Killed, then a storm while no agent runs. (Killed after the DIMMs were added, it raced
    // its own reload of them: on 6.1 an added block is System RAM before it is online.)
    // A killed agent exits only once the kernel has detached its ~40 probe programs
    // (trampolines wait for RCU, slow under TCG); until then it holds its lock.
    stop_agent(&mut m, "KILL")?;
    let dimms = m.hot_add_dimms(&[256, 256])?;
    for dimm in &dimms {
        m.set_blocks(dimm, "online")?;
        run.report.hotplugged_bytes += dimm.size;
    }
    run.start_agent(&mut m, &recipe())?;
    // The restarted agent reads the header back, finds it misses the storm, and reloads.
    wait_metric(&mut m, SUCCESS, 1.0)?;
    wait_ready(&mut m)?;
    let adopted =
        m.sh("grep -c 'the loaded crash header is stale' /tmp/kdump-agent.log || true")?;
    run.note("stale_reports_in_log", adopted.trim());
    crash_and_expect(run, &mut m, 0)?;
    Ok(())
}

/// Logs each change of `kexec_crash_loaded` with the guest's uptime (10 ms resolution), so both
/// policies are timed by the same clock and the same sampler. It samples every 2 ms rather
/// than spinning, so that it does not slow the loads it measures (TCG vCPUs are slow).
pub(super) const POLLER: &str = "p=; while :; do read v < /sys/kernel/kexec_crash_loaded; \
     if [ \"$v\" != \"$p\" ]; then read u _ < /proc/uptime; echo \"$u $v\"; p=$v; fi; \
     usleep 2000; done";

/// What one policy did for one burst, from the poller's log and the agent's probes.
struct Burst {
    reloads: u32,
    /// From the sampler: the time `kexec_crash_loaded` read 0.
    sampled_unprotected_seconds: f64,
    /// From the agent's probes: release of the old image to the new one in place.
    probed_unprotected_seconds: f64,
    probed_windows: f64,
    /// From the last block online until a crash kernel is loaded again for the last time.
    seconds_to_fresh: f64,
    /// The running agent's reloads, decision to loaded (0 for an agent that only watched).
    reload_seconds: f64,
}

fn uptime(m: &mut Machine) -> Result<f64> {
    let text = m.sh("cut -d' ' -f1 /proc/uptime")?;
    text.trim().parse().context("/proc/uptime")
}

/// Plugs `count` 512 MiB DIMMs back to back and onlines all their blocks in one command;
/// `before_online` runs in the guest first (the baseline's throttler starts on the first event).
fn burst(run: &mut Run, m: &mut Machine, count: usize, before_online: &str) -> Result<f64> {
    let dimms = m.hot_add_dimms(&vec![512; count])?;
    let mut blocks = Vec::new();
    for dimm in &dimms {
        let range = m.blocks(dimm)?;
        blocks.push(format!("$(seq {} {})", range.start, range.end - 1));
        run.report.hotplugged_bytes += dimm.size;
    }
    m.sh(&format!(
        "{before_online} for i in {}; do echo online > /sys/devices/system/memory/memory$i/state; done",
        blocks.join(" ")
    ))?;
    uptime(m)
}

/// Reads the poller's log from `since` (guest uptime) on, and the running agent's window
/// histogram (the agent was started fresh for this burst).
fn measure(m: &mut Machine, since: f64, last_online: f64) -> Result<Burst> {
    let log = m.sh("cat /tmp/poll.log")?;
    let mut samples = Vec::new();
    for line in log.lines() {
        let mut words = line.split_whitespace();
        if let (Some(t), Some(v)) = (words.next(), words.next()) {
            let t: f64 = t.parse().with_context(|| format!("poller line `{line}`"))?;
            if t >= since {
                samples.push((t, v == "1"));
            }
        }
    }
    let (mut reloads, mut unprotected, mut lost_at, mut fresh_at) = (0, 0.0, None, last_online);
    for (t, loaded) in samples {
        match (loaded, lost_at) {
            (false, None) => {
                reloads += 1;
                lost_at = Some(t);
            }
            (true, Some(lost)) => {
                unprotected += t - lost;
                lost_at = None;
                fresh_at = fresh_at.max(t);
            }
            _ => {}
        }
    }
    if lost_at.is_some() {
        bail!("no crash kernel loaded at the end of the burst");
    }
    Ok(Burst {
        reloads,
        sampled_unprotected_seconds: unprotected,
        probed_unprotected_seconds: metric(m, "kdump_unprotected_window_seconds_sum")?,
        probed_windows: metric(m, "kdump_unprotected_window_seconds_count")?,
        seconds_to_fresh: fresh_at - last_online,
        reload_seconds: metric(m, "kdump_reload_duration_seconds_sum")?,
    })
}

/// The agent and the distributions' udev-throttler policy, one burst each, in one guest. The
/// throttler's burst runs under a fresh agent with `--reload off`, whose probes time its window
/// the same way they timed the agent's own.
fn bench_reload_vs_throttler_6_1(run: &mut Run) -> Result<()> {
    const DIMMS: usize = 2;
    const BURSTS: usize = 3;
    let boot = Boot {
        memory: Memory {
            boot_mib: 1024,
            slots: (BURSTS * DIMMS) as u32,
            max_mib: 1024 + (BURSTS * DIMMS) as u64 * 512,
        },
        ..Boot::default()
    };
    let mut m = start(run, &boot, LoadPath::KexecFileLoad)?;
    wait_ready(&mut m)?;
    m.sh(&format!("({POLLER}) > /tmp/poll.log 2>&1 &"))?;

    let since = uptime(&mut m)?;
    let last_online = burst(run, &mut m, DIMMS, "")?;
    wait_metric(&mut m, SUCCESS, 1.0)?;
    wait_ready(&mut m)?;
    std::thread::sleep(Duration::from_secs(2));
    let agent = measure(&mut m, since, last_online)?;

    // Fedora/RHEL: udev runs kdump-udev-throttler on the first memory event; it sleeps 1 s,
    // waits for udev to settle (here: every block online), then `kdumpctl reload`, which
    // unloads and loads again.
    restart_agent(run, &mut m, "--reload off")?;
    let load_args =
        format!("{GUEST_KERNEL} --initrd={GUEST_CAPTURE_INITRD} --append='{CAPTURE_CMDLINE}'");
    let settle =
        "while grep -qx offline /sys/devices/system/memory/memory*/state; do sleep 0.1; done";
    let throttler = format!(
        "(sleep 1; {settle}; kexec -p -u && kexec -s -p {load_args}; echo done > /tmp/throttler) >/tmp/throttler.log 2>&1 &"
    );
    let since = uptime(&mut m)?;
    let last_online = burst(run, &mut m, DIMMS, &throttler)?;
    m.wait_until("[ -e /tmp/throttler ]", AGENT_TIMEOUT)
        .context("the throttler's reload did not finish")?;
    std::thread::sleep(Duration::from_secs(1));
    let baseline = measure(&mut m, since, last_online)?;

    // The agent's policy with kexec_load: kexec-tools prepares and digests every segment in
    // user space, so the kernel, between freeing the old image and placing the new one, only
    // copies them.
    m.sh(&format!(
        "echo \"exec kexec -c -p {load_args}\" > /tmp/kexec-load.sh"
    ))?;
    restart_agent(
        run,
        &mut m,
        "--reload command --reload-command 'sh /tmp/kexec-load.sh'",
    )?;
    let since = uptime(&mut m)?;
    let last_online = burst(run, &mut m, DIMMS, "")?;
    wait_metric(&mut m, SUCCESS, 1.0)?;
    wait_ready(&mut m)?;
    std::thread::sleep(Duration::from_secs(2));
    let kexec_load = measure(&mut m, since, last_online)?;
    // What the capture kernel will read now is kexec-tools' header (it keeps the low 640 KiB).
    run.load = Some(LoadPath::KexecLoad);

    for (who, b) in [
        ("agent", &agent),
        ("throttler", &baseline),
        ("agent_kexec_load", &kexec_load),
    ] {
        run.note(&format!("{who}_reloads"), b.reloads);
        run.note(&format!("{who}_seconds_to_fresh"), b.seconds_to_fresh);
        run.note(
            &format!("{who}_unprotected_seconds_sampled"),
            b.sampled_unprotected_seconds,
        );
        run.note(
            &format!("{who}_unprotected_seconds_probed"),
            b.probed_unprotected_seconds,
        );
        if b.reload_seconds > 0.0 {
            run.note(&format!("{who}_reload_seconds"), b.reload_seconds);
            // Negative: the agent decided while blocks were still coming online (the RAM is in
            // /proc/iomem, so in the header, from the DIMM's add on).
            run.note(
                &format!("{who}_reload_decided_seconds_after_last_online"),
                b.seconds_to_fresh - b.reload_seconds,
            );
        }
        run.check_named(
            &format!("{who}_one_window_per_burst"),
            b.probed_windows == 1.0,
            format!(
                "the probes timed {} windows for {who}'s burst, expected 1",
                b.probed_windows
            ),
        );
    }
    let faster = baseline.seconds_to_fresh / agent.seconds_to_fresh.max(0.01);
    let window = agent.probed_unprotected_seconds / baseline.probed_unprotected_seconds.max(1e-6);
    run.note("fresh_speedup", faster);
    run.note("window_ratio", window);
    run.note(
        "kexec_load_fresh_speedup",
        baseline.seconds_to_fresh / kexec_load.seconds_to_fresh.max(0.01),
    );
    run.note(
        "kexec_load_window_ratio",
        kexec_load.probed_unprotected_seconds / baseline.probed_unprotected_seconds.max(1e-6),
    );
    // The part of time-to-fresh each policy decides (waiting, settling, starting processes):
    // what is left once the load both pay, timed by the probes, is taken out.
    let beyond = |b: &Burst| b.seconds_to_fresh - b.probed_unprotected_seconds;
    run.note("agent_seconds_to_fresh_beyond_load", beyond(&agent));
    run.note("throttler_seconds_to_fresh_beyond_load", beyond(&baseline));
    run.note(
        "policy_speedup",
        beyond(&baseline) / beyond(&agent).max(0.01),
    );
    // The issue's targets (3x faster to fresh, at most half the window) are reported, not
    // asserted: under TCG the in-kernel kexec_file_load work, which both policies pay and
    // which runs after the kernel has freed the old image, dominates both figures, and one
    // run differs from the next by tens of percent.
    run.note("target_fresh_3x_met", faster >= 3.0);
    run.note("target_window_half_met", window <= 0.5);
    run.check_named(
        "agent_one_reload_per_burst",
        agent.reloads == 1,
        format!("the agent made {} reloads for one burst", agent.reloads),
    );
    run.crash(&mut m)?;
    run.expect(0, 0);
    Ok(())
}

/// Sends `signal` to the guest's agent and waits until it has exited.
fn stop_agent(m: &mut Machine, signal: &str) -> Result<()> {
    let name = GUEST_AGENT.rsplit('/').next().unwrap_or("kdump-agent");
    m.sh(&format!(
        "kill -{signal} $(pidof {name}); while pidof {name} >/dev/null; do sleep 0.1; done"
    ))?;
    Ok(())
}

/// Stops the running agent and starts a fresh one (new counters) with `args`.
fn restart_agent(run: &mut Run, m: &mut Machine, args: &str) -> Result<()> {
    stop_agent(m, "TERM")?;
    run.start_agent(m, args)
}

/// No recipe on the command line and no distribution config: the agent observes until the
/// distribution's `kexec -s -p` shows it what to load, then reloads with it.
fn agent_adopts_recipe_6_1(run: &mut Run) -> Result<()> {
    let mut m = run.boot(&Boot::default())?;
    run.start_agent(&mut m, "")?;
    let before = m.sh(&format!("{GUEST_AGENT} status || true"))?;
    run.check(
        reload_line(&before) == "off",
        format!("before any load the agent should not reload:\n{before}"),
    );
    run.load_kdump(&mut m, LoadPath::KexecFileLoad)?;
    let adopted = m.wait_until(
        &format!("{GUEST_AGENT} status | grep -q 'recipe from adopted from kexec'"),
        AGENT_TIMEOUT,
    );
    if let Err(e) = adopted {
        let status = m.sh(&format!("{GUEST_AGENT} status || true"))?;
        bail!("the agent never adopted the recipe of `kexec -s -p` ({e:#}); its status:\n{status}");
    }
    let recipe = reload_line(&m.sh(&format!("{GUEST_AGENT} status || true"))?);
    run.note("recipe", recipe.as_str());
    let want = format!("kernel {GUEST_KERNEL}, initrd {GUEST_CAPTURE_INITRD}");
    run.check(
        recipe.starts_with("kexec-file, recipe from adopted from kexec (pid ")
            && recipe.ends_with(&want),
        format!("adopted recipe `{recipe}`, expected kexec-file with {want}"),
    );
    wait_ready(&mut m)?;
    run.hot_add(&mut m, 512, Online::Write("online"))?;
    wait_metric(&mut m, SUCCESS, 1.0)?;
    wait_ready(&mut m)?;
    crash_and_expect(run, &mut m, 0)?;
    Ok(())
}

/// The `reload` line of `kdump-agent status`.
fn reload_line(status: &str) -> String {
    status
        .lines()
        .find_map(|l| l.trim().strip_prefix("reload "))
        .map(|r| r.trim().to_owned())
        .unwrap_or_default()
}

/// A distribution script holding kdumpctl's lock: the agent's load waits for it, gives up
/// (a failure that leaves the old image loaded), and succeeds on a retry once it is released.
fn agent_distro_lock_6_1(run: &mut Run) -> Result<()> {
    let mut m = start(run, &Boot::default(), LoadPath::KexecFileLoad)?;
    wait_ready(&mut m)?;
    m.sh("mkdir -p /var/lock && (flock /var/lock/kdump sh -c 'until [ -e /tmp/release ]; do sleep 0.1; done' &)")?;
    m.wait_until("! flock -n /var/lock/kdump true", Duration::from_secs(10))
        .context("the stand-in script never took /var/lock/kdump")?;
    run.hot_add(&mut m, 512, Online::Write("online"))?;
    wait_metric(&mut m, FAILURE, 1.0)?;
    let refused = m.sh("grep -c 'is held by another loader' /tmp/kdump-agent.log || true")?;
    run.check(
        refused.trim() != "0",
        "the agent's log never said the lock was held",
    );
    run.check(
        m.sh("cat /sys/kernel/kexec_crash_loaded")?.trim() == "1",
        "the refused reload left no crash kernel loaded",
    );
    run.check(
        metric(&mut m, SUCCESS)? == 0.0,
        "the agent loaded while another loader held the lock",
    );
    let released = Instant::now();
    m.sh("touch /tmp/release")?;
    wait_metric(&mut m, SUCCESS, 1.0)?;
    run.note(
        "seconds_from_release_to_reload",
        released.elapsed().as_secs_f64(),
    );
    wait_ready(&mut m)?;
    crash_and_expect(run, &mut m, 0)?;
    Ok(())
}
