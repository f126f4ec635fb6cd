//! The packages' systemd unit in a guest: its exact `ExecStart=` command line, read from
//! `deploy/systemd/` (so a change to the unit changes what runs here), after the
//! distribution's load, as systemd would start it on a bare-metal node; and the unit itself
//! run by Debian's systemd as PID 1, under its own sandbox.
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use kdump_agent::model::elfcorehdr::LoadPath;

use super::agent::{SUCCESS, crash_and_expect, expect_reloads, metric, wait_metric, wait_ready};
use crate::{
    lab::{
        guests::Boot,
        image::{
            CAPTURE_CMDLINE, GUEST_AGENT, GUEST_CAPTURE_INITRD, GUEST_KERNEL, KERNEL_6_1,
            KERNEL_6_1_SYSTEMD, LAB_LOAD_UNIT, SYSTEMD_BOOT_TARGET,
        },
        machine::Machine,
        scenario::{Online, Run, Scenario},
    },
    paths,
    support::unit,
};

pub const ALL: &[Scenario] = &[
    Scenario {
        name: "systemd-unit-command-6.1",
        about: "6.1, kexec -s -p, then the unit's ExecStart= (with its default arguments): up, ready; dump whole",
        kernel: KERNEL_6_1,
        fixture: false,
        benchmark: false,
        body: unit_command_6_1,
    },
    Scenario {
        name: "systemd-service-6.1",
        about: "6.1, Debian's systemd as PID 1, boot-time kexec -s -p, `systemctl enable --now` of the shipped unit (its sandbox applied), +128 MiB: one reload, ready, no restart; dump whole",
        kernel: KERNEL_6_1_SYSTEMD,
        fixture: false,
        benchmark: false,
        body: systemd_service_6_1,
    },
];

const SERVICE: &str = "kdump-agent.service";
/// Under TCG the agent's first start (probes, a read-back) takes seconds.
const SERVICE_TIMEOUT: Duration = Duration::from_secs(90);

/// One word for the guest's shell.
fn quoted(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

fn unit_command_6_1(run: &mut Run) -> Result<()> {
    let argv = unit::shipped_exec_start(&paths::root())?;
    let mut m = run.boot(&Boot::default())?;
    run.load_kdump(&mut m, LoadPath::KexecFileLoad)?;
    // The packages install the binary where the unit says; the image carries it elsewhere.
    m.sh(&format!(
        "mkdir -p $(dirname {bin}) && ln -sf {GUEST_AGENT} {bin}",
        bin = quoted(&argv[0])
    ))?;
    let command: Vec<String> = argv.iter().map(|w| quoted(w)).collect();
    run.note("exec_start", argv.join(" "));
    m.sh(&format!(
        "{} >>/tmp/kdump-agent.log 2>&1 &",
        command.join(" ")
    ))?;
    if let Err(e) = m.wait_until(
        "wget -q -O /dev/null http://127.0.0.1:10864/readyz",
        Duration::from_secs(60),
    ) {
        let log = m.sh("tail -20 /tmp/kdump-agent.log").unwrap_or_default();
        bail!("the unit's command line did not come up: {e:#}; its log ends:\n{log}");
    }
    wait_ready(&mut m)?;
    crash_and_expect(run, &mut m, 0)
}

/// The unit's `CapabilityBoundingSet=` as a capability mask (include/uapi/linux/capability.h).
fn bounding_set(unit_text: &str) -> Result<u64> {
    let line = unit_text
        .lines()
        .find_map(|l| l.trim().strip_prefix("CapabilityBoundingSet="))
        .with_context(|| format!("{}: no CapabilityBoundingSet=", unit::UNIT))?;
    line.split_whitespace().try_fold(0, |mask, name| {
        let bit = match name {
            "CAP_SYS_RAWIO" => 17,
            "CAP_SYS_ADMIN" => 21,
            "CAP_SYS_BOOT" => 22,
            other => bail!(
                "{}: CapabilityBoundingSet= names {other}, which the lab does not know",
                unit::UNIT
            ),
        };
        Ok(mask | 1u64 << bit)
    })
}

/// The service's state, restarts and recent journal, for a failure message.
fn service_log(m: &mut Machine) -> String {
    m.sh(&format!(
        "systemctl status --no-pager {SERVICE}; journalctl --no-pager -u {SERVICE} | tail -25"
    ))
    .unwrap_or_default()
}

/// The packages' unit as users run it: the guest boots Debian's systemd, a lab unit loads the
/// capture kernel at boot (`kexec -s -p`), the admin names that kernel in the agent's default
/// arguments (as `/etc/default/kdump-agent` says to) and runs `systemctl enable --now`.
fn systemd_service_6_1(run: &mut Run) -> Result<()> {
    let root = paths::root();
    let unit_text = std::fs::read_to_string(root.join(unit::UNIT))
        .with_context(|| format!("reading {}", unit::UNIT))?;
    let argv = unit::shipped_exec_start(&root)?;
    let boot = Boot {
        extra: SYSTEMD_BOOT_TARGET,
        ..Boot::default()
    };
    let mut m = run.boot(&boot)?;
    let version = m.sh("systemctl --version | head -1")?;
    run.note("pid1", version.trim());
    let state = m.run("systemctl is-system-running --wait")?.text();
    run.check(
        state.trim() == "running",
        format!(
            "the system is {}: failed units:\n{}",
            state.trim(),
            m.sh("systemctl --failed --no-pager --no-legend")
                .unwrap_or_default()
        ),
    );
    run.note("system_running_seconds", m.elapsed());
    let times = m.sh(&format!(
        "systemctl show -p ExecMainStartTimestampMonotonic,ExecMainExitTimestampMonotonic --value {LAB_LOAD_UNIT}"
    ))?;
    let micros: Vec<f64> = times
        .split_whitespace()
        .filter_map(|t| t.parse().ok())
        .collect();
    if let [start, exit] = micros[..] {
        run.note("boot_load_seconds", (exit - start) / 1e6);
    }
    run.load_kdump_with(
        &mut m,
        &format!("systemctl is-active {LAB_LOAD_UNIT}"),
        LoadPath::KexecFileLoad,
    )?;
    m.sh(&format!(
        "sed -i 's|^KDUMP_AGENT_ARGS=\"\\(.*\\)\"$|KDUMP_AGENT_ARGS=\"\\1 --kernel {GUEST_KERNEL} --initrd {GUEST_CAPTURE_INITRD}\"|' /etc/default/kdump-agent && grep -q -- '--kernel {GUEST_KERNEL}' /etc/default/kdump-agent"
    ))
    .context("naming the capture kernel in /etc/default/kdump-agent")?;
    // Its command line has spaces: the variable the default file offers for it.
    m.sh(&format!(
        "echo 'KDUMP_AGENT_CMDLINE=\"{CAPTURE_CMDLINE}\"' >>/etc/default/kdump-agent"
    ))?;
    let started = Instant::now();
    m.sh(&format!(
        "systemctl enable --now {SERVICE} && [ \"$(systemctl is-enabled {SERVICE})\" = enabled ]"
    ))?;
    if let Err(e) = m.wait_until(
        "wget -q -O /dev/null http://127.0.0.1:10864/readyz",
        SERVICE_TIMEOUT,
    ) {
        let log = service_log(&mut m);
        bail!("{SERVICE} did not say ready: {e:#}\n{log}");
    }
    run.note(
        "seconds_from_enable_to_ready",
        started.elapsed().as_secs_f64(),
    );
    wait_ready(&mut m)?;
    let pid = m.sh(&format!("systemctl show -p MainPID --value {SERVICE}"))?;
    let pid = pid.trim();
    run.check(
        argv[0] == m.sh(&format!("readlink /proc/{pid}/exe"))?.trim(),
        format!("the service's process is not {}", argv[0]),
    );
    let status = m.sh(&format!("cat /proc/{pid}/status"))?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .map(|v| v.trim().to_owned())
            .unwrap_or_default()
    };
    let want = bounding_set(&unit_text)?;
    let got = u64::from_str_radix(&field("CapBnd"), 16).unwrap_or(u64::MAX);
    run.check(
        got == want,
        format!("CapBnd {got:#x}, the unit's CapabilityBoundingSet= is {want:#x}"),
    );
    run.check(field("NoNewPrivs") == "1", "NoNewPrivileges= not applied");
    // 2: a seccomp filter (SystemCallFilter=).
    run.check(field("Seccomp") == "2", "SystemCallFilter= not applied");
    let own_mounts = m.sh(&format!(
        "[ \"$(readlink /proc/{pid}/ns/mnt)\" != \"$(readlink /proc/1/ns/mnt)\" ] && grep -E ' / / ro[ ,]' /proc/{pid}/mountinfo"
    ));
    run.check(
        own_mounts.is_ok(),
        "the service does not run in its own mount namespace with / read-only (ProtectSystem=strict)",
    );
    // The probes (bpf(), perf_event_open()) and the read-back (/proc/kcore) under the sandbox.
    for (series, want) in [
        (r#"kdump_agent_event_source{source="ebpf"}"#, 1.0),
        ("kdump_header_verified", 1.0),
    ] {
        let got = metric(&mut m, series)?;
        run.check(
            got == want,
            format!("{series} is {got} under the unit's sandbox, want {want}"),
        );
    }
    let dimm = run.hot_add(&mut m, 128, Online::Write("online"))?;
    let online = Instant::now();
    if let Err(e) = wait_metric(&mut m, SUCCESS, 1.0) {
        let log = service_log(&mut m);
        bail!("{e:#}\n{log}");
    }
    wait_ready(&mut m)?;
    run.note(
        "seconds_from_online_to_ready",
        online.elapsed().as_secs_f64(),
    );
    run.note("dimm_bytes", dimm.size);
    expect_reloads(run, &mut m, 1, "for one DIMM")?;
    let status: serde_json::Value =
        serde_json::from_str(&m.sh(&format!("{GUEST_AGENT} status --json"))?)
            .context("kdump-agent status --json")?;
    let last = status["reload"]["last"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    run.check(
        last.contains(&format!("command line \"{CAPTURE_CMDLINE}\"")),
        format!("the reload did not use KDUMP_AGENT_CMDLINE from /etc/default/kdump-agent: {last}"),
    );
    let show = m.sh(&format!(
        "systemctl show -p ActiveState,NRestarts,FragmentPath {SERVICE}"
    ))?;
    run.note("systemctl_show", show.trim());
    run.check(
        show.lines().any(|l| l == "ActiveState=active") && show.lines().any(|l| l == "NRestarts=0"),
        format!("{SERVICE}: {}", show.trim()),
    );
    // Where users read the agent's log: journald, from the service's stderr.
    let journal = m.sh(&format!(
        "journalctl --no-pager -o cat _SYSTEMD_UNIT={SERVICE}"
    ))?;
    run.check(
        journal.contains("the loaded crash header is stale"),
        format!("the journal has not the agent's stale-header line:\n{journal}"),
    );
    let warnings: Vec<&str> = journal
        .lines()
        .filter(|l| l.contains("WARN"))
        .take(10)
        .collect();
    run.note("journal_warnings", warnings.join("\n"));
    crash_and_expect(run, &mut m, 0)
}
