//! CPU hotplug: 6.1 guests boot with one CPU of two (`-smp 1,maxcpus=2`), a CPU is plugged with
//! QMP `device_add` and onlined. Each online CPU saves its registers into its `crash_notes`
//! buffer at a crash; the dump keeps them only if the header has a `PT_NOTE` there. Each
//! scenario compares the loaded header's notes with the first kernel's `crash_notes` addresses,
//! then counts the `NT_PRSTATUS` notes in the capture kernel's /proc/vmcore.
//!
//! Debian's 6.12.117 under QEMU 7.2 (TCG) counts none of the MADT's disabled LAPICs as
//! hot-pluggable ("Allowing 1 present CPUs plus 0 hotplug CPUs": `acpi_is_processor_usable`
//! on what it takes for bare metal), so `device_add` cannot add a CPU there; its scenario
//! boots two present CPUs with `maxcpus=1` and onlines the second after the load.
use std::time::Duration;

use anyhow::{Context as _, Result};
use kdump_agent::model::elfcorehdr::LoadPath;

use super::agent::{SUCCESS, expect_reloads, metric, recipe, wait_metric, wait_ready};
use crate::lab::{
    guests::Boot,
    image::{GUEST_AGENT, KERNEL_6_1, KERNEL_6_12},
    machine::{Cpus, Machine},
    scenario::{Run, Scenario},
};

/// The CPU hotplug scenarios, in `cargo xtask lab list` order.
pub const ALL: &[Scenario] = &[
    Scenario {
        name: "cpu-hotplug-stale-6.1",
        about: "6.1, 1 of 2 CPUs, kexec -s -p, +1 CPU onlined: the header has no note for it, the dump 1 prstatus of 2",
        kernel: KERNEL_6_1,
        fixture: false,
        benchmark: false,
        body: stale_6_1,
    },
    Scenario {
        name: "agent-cpu-hotplug-6.1",
        about: "6.1, 1 of 2 CPUs, kexec -s -p, agent, +1 CPU onlined: stale (cpu_note_missing), one reload; the dump has both CPUs' notes",
        kernel: KERNEL_6_1,
        fixture: false,
        benchmark: false,
        body: agent_6_1,
    },
    Scenario {
        name: "cpu-hotplug-kernel-managed-6.12",
        about: "6.12, 2 CPUs with maxcpus=1, kexec -s -p, agent, cpu1 onlined: the header already lists every possible CPU, zero reloads; both notes in the dump",
        kernel: KERNEL_6_12,
        fixture: false,
        benchmark: false,
        body: kernel_managed_6_12,
    },
];

/// One CPU at boot, room for one more.
fn boot() -> Boot {
    Boot {
        cpus: Cpus { boot: 1, max: 2 },
        ..Boot::default()
    }
}

/// Checks which of the first kernel's `notes` the loaded header lists: `listed` must be
/// exactly the CPUs it names. Returns the number of `PT_NOTE`s (CPU notes and vmcoreinfo).
fn expect_listed(
    run: &mut Run,
    m: &mut Machine,
    notes: &[(u32, u64)],
    listed: &[u32],
    step: &str,
) -> Result<usize> {
    let addrs = run.loaded_note_addrs(m)?;
    let found: Vec<u32> = notes
        .iter()
        .filter(|(_, a)| addrs.contains(a))
        .map(|(c, _)| *c)
        .collect();
    run.note(&format!("header_pt_notes_{step}"), addrs.len());
    run.check(
        found == listed,
        format!("{step}: the loaded header lists the notes of CPUs {found:?}, expected {listed:?}"),
    );
    Ok(addrs.len())
}

/// Crashes; the RAM is unchanged (nothing missing or excess) and the dump must hold `want`
/// CPUs' registers.
fn crash_expect_prstatus(run: &mut Run, m: &mut Machine, want: usize) -> Result<()> {
    let online = m.sh("cat /sys/devices/system/cpu/online")?;
    run.note("cpus_online_at_crash", online.trim());
    run.crash(m)?;
    run.expect(0, 0);
    let prstatus = run.vmcore_cpu_notes()?;
    run.check(
        prstatus == want,
        format!("/proc/vmcore holds {prstatus} NT_PRSTATUS notes, expected {want}"),
    );
    Ok(())
}

fn stale_6_1(run: &mut Run) -> Result<()> {
    let mut m = run.boot(&boot())?;
    run.load_kdump(&mut m, LoadPath::KexecFileLoad)?;
    let cpu = run.hot_add_cpu(&mut m)?;
    let notes = run.crash_notes(&mut m)?;
    // 6.1's kexec_file_load listed the present CPUs at load time (for_each_present_cpu).
    let pt_notes = expect_listed(run, &mut m, &notes, &[0], "after_add")?;
    run.check(
        pt_notes == 2,
        format!("{pt_notes} PT_NOTEs, expected 2 (cpu0, vmcoreinfo)"),
    );
    // The agent's one-shot judge on the same node names the CPU.
    let out = m.run(&format!("{GUEST_AGENT} check --json"))?;
    let report: serde_json::Value = serde_json::from_str(&out.text())
        .with_context(|| format!("check --json: {}", out.text()))?;
    let missing = report["header"]["missing_cpu_notes"].clone();
    run.note("check_missing_cpu_notes", missing.clone());
    run.check(
        out.code != 0 && missing == serde_json::json!([cpu]),
        format!(
            "check exit {}, missing_cpu_notes {missing}, expected not ready and [{cpu}]",
            out.code
        ),
    );
    crash_expect_prstatus(run, &mut m, 1)
}

fn agent_6_1(run: &mut Run) -> Result<()> {
    let mut m = run.boot(&boot())?;
    run.load_kdump(&mut m, LoadPath::KexecFileLoad)?;
    run.start_agent(&mut m, &recipe())?;
    wait_ready(&mut m)?;
    let added = std::time::Instant::now();
    run.hot_add_cpu(&mut m)?;
    wait_metric(&mut m, SUCCESS, 1.0)?;
    wait_ready(&mut m)?;
    run.note("seconds_from_add_to_ready", added.elapsed().as_secs_f64());
    let stale = m.sh("grep 'the loaded crash header is stale' /tmp/kdump-agent.log || true")?;
    run.check(
        stale.contains("missing_cpu_notes=[1]"),
        format!(
            "the agent never said the header lacks cpu1's note: `{}`",
            stale.trim()
        ),
    );
    let events = metric(&mut m, r#"kdump_cpu_hotplug_events_total{action="online"}"#)?;
    run.note("cpu_online_events", events);
    run.check(events >= 1.0, "the agent counted no CPU online event");
    let reason = metric(
        &mut m,
        r#"kdump_header_stale_reason{reason="cpu_note_missing"}"#,
    )?;
    run.check(reason == 0.0, "cpu_note_missing still set after the reload");
    let status = m.sh(&format!("{GUEST_AGENT} status"))?;
    run.check(
        status.contains("cpus-changed"),
        format!("the last reload is not for cpus-changed: {status}"),
    );
    expect_reloads(run, &mut m, 1, "for one CPU")?;
    let notes = run.crash_notes(&mut m)?;
    expect_listed(run, &mut m, &notes, &[0, 1], "after_reload")?;
    crash_expect_prstatus(run, &mut m, 2)
}

fn kernel_managed_6_12(run: &mut Run) -> Result<()> {
    // Two present CPUs, one brought up at boot (see the module's note on device_add and 6.12).
    let boot = Boot {
        cpus: Cpus { boot: 2, max: 2 },
        extra: "maxcpus=1",
        ..Boot::default()
    };
    let mut m = run.boot(&boot)?;
    let online = m.sh("cat /sys/devices/system/cpu/online")?;
    run.check(
        online.trim() == "0",
        format!("online CPUs at boot are {}, expected 0", online.trim()),
    );
    run.load_kdump(&mut m, LoadPath::KexecFileLoad)?;
    let cpu_hotplug = m.sh("cat /sys/devices/system/cpu/crash_hotplug")?;
    run.note("cpu_crash_hotplug", cpu_hotplug.trim());
    run.check(
        cpu_hotplug.trim() == "1",
        format!(
            "/sys/devices/system/cpu/crash_hotplug is {}",
            cpu_hotplug.trim()
        ),
    );
    // One CPU online, two possible: 6.12 lists both (for_each_possible_cpu) and vmcoreinfo.
    let before = run.loaded_note_addrs(&mut m)?;
    run.note("header_pt_notes_before_online", before.len());
    run.check(
        before.len() == 3,
        format!(
            "{} PT_NOTEs with 1 of 2 CPUs online, expected 3",
            before.len()
        ),
    );
    run.start_agent(&mut m, &recipe())?;
    wait_ready(&mut m)?;
    run.online_cpu(&mut m, 1)?;
    let notes = run.crash_notes(&mut m)?;
    run.check(
        notes.iter().all(|(_, a)| before.contains(a)),
        "a crash_notes address was not in the header loaded while its CPU was offline",
    );
    // Time for the agent to see the uevent and judge.
    std::thread::sleep(Duration::from_secs(3));
    wait_ready(&mut m)?;
    expect_reloads(run, &mut m, 0, "in kernel-managed mode")?;
    let events = metric(&mut m, r#"kdump_cpu_hotplug_events_total{action="online"}"#)?;
    run.check(events >= 1.0, "the agent counted no CPU online event");
    expect_listed(run, &mut m, &notes, &[0, 1], "after_online")?;
    crash_expect_prstatus(run, &mut m, 2)
}
