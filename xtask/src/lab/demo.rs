//! `cargo xtask demo`: the whole story in one guest, on a machine without kdump of its own.
//!
//! A Debian 12 (6.1) guest loads kdump, runs kdump-agent with a reload recipe, gets a DIMM (the
//! loaded header goes stale; 6.1 cannot update it), the agent reloads, the guest crashes; the
//! capture kernel's /proc/vmcore header says whether the dump covers all RAM.

use anyhow::{Result, bail};
use kdump_agent::model::{elfcorehdr::LoadPath, units::bytes};

use super::{
    guests::{Boot, Lab},
    image::{GUEST_AGENT, KERNEL_6_1},
    machine::{Accel, Machine},
    scenario::{self, Online, Run, Scenario},
    scenarios::agent::{SUCCESS, recipe, wait_metric},
};
use crate::ui::{self, Step};

const DEMO: Scenario = Scenario {
    name: "demo-6.1",
    about: "6.1 guest with kdump-agent: hot-add 512 MiB, crash, check the dump",
    kernel: KERNEL_6_1,
    fixture: false,
    benchmark: false,
    body: demo,
};

pub fn main(accel: Accel) -> Result<()> {
    crate::setup::run()?;
    let lab = Lab::prepare(&[DEMO.kernel], accel)?;
    ui::section(&format!(
        "demo: Debian 12 kernel {} under QEMU ({}), no in-kernel crash hotplug",
        DEMO.kernel.release,
        accel.as_str()
    ));
    let report = scenario::run(&lab, &DEMO);
    ui::section("the dump: capture kernel's /proc/vmcore header vs the RAM just before the crash");
    let (Some(ram), Some(missing), Some(excess)) = (
        report.system_ram_bytes,
        report.missing_bytes,
        report.excess_bytes,
    ) else {
        bail!("demo: {}", report.failures.join("; "));
    };
    let in_header: u64 = report.vmcore_ranges.iter().map(|r| r.size()).sum();
    let figure = |n: u64| format!("{:>10} ({n} bytes)", bytes(n));
    ui::fact("System RAM before the crash", &figure(ram));
    ui::fact(
        &format!("RAM in the header ({} ranges)", report.vmcore_ranges.len()),
        &figure(in_header),
    );
    ui::fact("missing from the dump", &figure(missing));
    ui::fact("in the header, not RAM", &figure(excess));
    ui::fact(
        "verdict",
        &if missing == 0 && excess == 0 {
            "the dump covers all RAM".to_owned()
        } else {
            format!(
                "STALE header: the dump misses {} of RAM (hot-added after kdump was loaded)",
                bytes(missing)
            )
        },
    );
    if !report.pass {
        bail!("demo: {}", report.failures.join("; "));
    }
    Ok(())
}

fn demo(run: &mut Run) -> Result<()> {
    let step = Step::start("boot the guest (1 GiB)");
    step.progress("qemu-system-x86_64");
    let mut m = run.boot(&Boot::default())?;
    step.done(&format!("booted in {:.1} s", m.elapsed()));

    let step = Step::start("load kdump: kexec -s -p");
    run.load_kdump(&mut m, LoadPath::KexecFileLoad)?;
    step.done("capture kernel loaded");

    let step = Step::start("start kdump-agent run");
    run.start_agent(&mut m, &recipe())?;
    step.done("serving on 127.0.0.1:10864 in the guest, with a reload recipe");
    guest_status(&mut m, "kdump-agent status (before the hot-add)")?;

    let step = Step::start("hot-add a 512 MiB DIMM");
    step.progress("device_add pc-dimm, online its blocks");
    let dimm = run.hot_add(&mut m, 512, Online::Write("online"))?;
    step.done(&format!("{} at {:#x}", bytes(dimm.size), dimm.addr));

    let step = Step::start("kdump-agent reloads");
    step.progress("the header no longer covers RAM; waiting for the agent's one reload");
    wait_metric(&mut m, SUCCESS, 1.0)?;
    step.done("kdump_reloads_total{result=\"success\"} is 1");
    ui::section("kdump-agent log (stale, reload)");
    for line in m
        .sh("grep -E 'stale|reload' /tmp/kdump-agent.log | tail -6")?
        .lines()
    {
        println!("  | {line}");
    }
    guest_status(&mut m, "kdump-agent status (after the reload)")?;

    let step = Step::start("crash (echo c > sysrq-trigger)");
    step.progress("waiting for the capture kernel");
    run.crash(&mut m)?;
    step.done("capture kernel up, /proc/vmcore read");
    // The agent's reload put the DIMM in the header: nothing missing, nothing in excess.
    run.expect(0, 0);
    Ok(())
}

fn guest_status(m: &mut Machine, title: &str) -> Result<()> {
    ui::section(title);
    let out = m.run(&format!("{GUEST_AGENT} status"))?;
    for line in out.text().lines() {
        println!("  | {line}");
    }
    println!("  (exit {})", out.code);
    Ok(())
}
