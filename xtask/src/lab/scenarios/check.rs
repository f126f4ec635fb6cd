//! Scenarios for the shapes that start after the load: a one-shot `check` from cron (no
//! daemon), and an agent started after RAM changed. Both must learn what is loaded by reading
//! it back, never by assuming it.
use std::time::Instant;

use anyhow::{Context as _, Result};
use kdump_agent::model::elfcorehdr::LoadPath;
use serde_json::Value;

use super::agent::{SUCCESS, crash_and_expect, expect_reloads, recipe, wait_metric, wait_ready};
use crate::lab::{
    guests::Boot,
    image::{GUEST_AGENT, KERNEL_6_1, KERNEL_6_12},
    machine::Machine,
    scenario::{Online, Run, Scenario},
};

/// The check scenarios, in `cargo xtask lab list` order.
pub const ALL: &[Scenario] = &[
    Scenario {
        name: "check-stale-6.1",
        about: "6.1, kexec -s -p, no daemon: check exits 0; +512 MiB: check exits 3 naming 512 MiB missing, read back; dump misses it",
        kernel: KERNEL_6_1,
        fixture: false,
        benchmark: false,
        body: check_stale_6_1,
    },
    Scenario {
        name: "check-stale-6.12-kexec-load",
        about: "6.12, kexec -c -p (not kept current), no daemon: check exits 0; +512 MiB: exits 3 naming 512 MiB missing; dump misses it",
        kernel: KERNEL_6_12,
        fixture: false,
        benchmark: false,
        body: check_stale_6_12_kexec_load,
    },
    Scenario {
        name: "late-start-6.1",
        about: "6.1, kexec -s -p, +512 MiB, then the agent starts: reads the header back, stale, one reload; dump whole",
        kernel: KERNEL_6_1,
        fixture: false,
        benchmark: false,
        body: late_start_6_1,
    },
];

/// `kdump-agent check --json` in the guest: its exit code and report.
fn check(run: &mut Run, m: &mut Machine, step: &str) -> Result<(i32, Value)> {
    let out = m.run(&format!("{GUEST_AGENT} check --json"))?;
    let report: Value = serde_json::from_str(&out.text())
        .with_context(|| format!("check --json {step}: {}", out.text()))?;
    run.note(&format!("check_{step}_exit"), out.code);
    run.note(&format!("check_{step}_reason"), report["reason"].clone());
    Ok((out.code, report))
}

/// No daemon: `check` is ready before the DIMM and not ready after it, from what it read back.
fn check_before_and_after(run: &mut Run, load: LoadPath, online: Online) -> Result<()> {
    let mut m = run.boot(&Boot::default())?;
    run.load_kdump(&mut m, load)?;
    let started = Instant::now();
    let (code, before) = check(run, &mut m, "before")?;
    run.note("check_seconds", started.elapsed().as_secs_f64());
    run.check(
        code == 0 && before["header"]["provenance"] == "read-back",
        format!(
            "before the DIMM: check exit {code}, header {}: {}",
            before["header"], before["reason"]
        ),
    );
    let dimm = run.hot_add(&mut m, 512, online)?;
    let (code, after) = check(run, &mut m, "after")?;
    let reason = after["reason"].as_str().unwrap_or_default();
    run.check(
        code == 3
            && after["header"]["provenance"] == "read-back"
            && after["header"]["missing_bytes"] == dimm.size
            && reason.contains("512.0 MiB of RAM missing"),
        format!(
            "after the DIMM: check exit {code}, header {}: {reason}",
            after["header"]
        ),
    );
    run.crash(&mut m)?;
    run.expect(dimm.size, 0);
    Ok(())
}

fn check_stale_6_1(run: &mut Run) -> Result<()> {
    check_before_and_after(run, LoadPath::KexecFileLoad, Online::Write("online"))
}

fn check_stale_6_12_kexec_load(run: &mut Run) -> Result<()> {
    check_before_and_after(run, LoadPath::KexecLoad, Online::Auto)
}

/// The agent starts after RAM changed: an inferred header would look fresh; the read-back one
/// misses the DIMM, and the agent's start-up survey reloads.
fn late_start_6_1(run: &mut Run) -> Result<()> {
    let mut m = run.boot(&Boot::default())?;
    run.load_kdump(&mut m, LoadPath::KexecFileLoad)?;
    let dimm = run.hot_add(&mut m, 512, Online::Write("online"))?;
    let started = Instant::now();
    run.start_agent(&mut m, &recipe())?;
    wait_metric(&mut m, SUCCESS, 1.0)?;
    wait_ready(&mut m)?;
    run.note(
        "seconds_from_start_to_ready",
        started.elapsed().as_secs_f64(),
    );
    let log = m.sh("cat /tmp/kdump-agent.log")?;
    run.check(
        log.contains("the loaded crash header is stale"),
        "the agent never said the header it read back was stale",
    );
    run.note("dimm_bytes", dimm.size);
    expect_reloads(run, &mut m, 1, "after a late start")?;
    crash_and_expect(run, &mut m, 0)
}
