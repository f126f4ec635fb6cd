//! The packages' systemd unit in a guest: its exact `ExecStart=` command line, read from
//! `deploy/systemd/` (so a change to the unit changes what runs here), after the
//! distribution's load, as systemd would start it on a bare-metal node.
use anyhow::{Result, bail};
use kdump_agent::model::elfcorehdr::LoadPath;

use super::agent::{crash_and_expect, wait_ready};
use crate::{
    lab::{
        guests::Boot,
        image::{GUEST_AGENT, KERNEL_6_1},
        scenario::{Run, Scenario},
    },
    paths,
    support::unit,
};

pub const ALL: &[Scenario] = &[Scenario {
    name: "systemd-unit-command-6.1",
    about: "6.1, kexec -s -p, then the unit's ExecStart= (with its default arguments): up, ready; dump whole",
    kernel: KERNEL_6_1,
    fixture: false,
    benchmark: false,
    body: unit_command_6_1,
}];

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
        std::time::Duration::from_secs(60),
    ) {
        let log = m.sh("tail -20 /tmp/kdump-agent.log").unwrap_or_default();
        bail!("the unit's command line did not come up: {e:#}; its log ends:\n{log}");
    }
    wait_ready(&mut m)?;
    crash_and_expect(run, &mut m, 0)
}
