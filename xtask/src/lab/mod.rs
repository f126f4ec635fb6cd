//! The VM lab: real Debian kernels under QEMU, hot-plugged DIMMs, real crashes, the dump's
//! header read back from /proc/vmcore in the capture kernel.
//!
//! `packages` fetches the pinned .debs, `image` declares and writes the initramfs images,
//! `machine` runs one QEMU guest, `guests` prepares all that and boots one, `scenario` is what
//! one experiment is and how it runs, `scenarios` are the named experiments.
pub mod arch;
pub mod demo;
pub mod guests;
pub mod image;
pub mod machine;
pub mod oci;
pub mod packages;
pub mod scenario;
pub mod scenarios;

use std::{fs, path::Path, time::Instant};

use anyhow::{Context as _, Result, bail};
use clap::Subcommand;

use crate::{paths, ui::Step};
use guests::Lab;
use image::Kernel;
use machine::Accel;
use scenario::{Fixture, Report, Scenario, VMCORE_HEAD_BYTES};

#[derive(Subcommand)]
pub enum LabCommand {
    /// List the scenarios.
    List,
    /// Run scenarios by name (or all); each prints one JSON line.
    Run {
        /// Scenario names (see `cargo xtask lab list`).
        names: Vec<String>,
        #[arg(long)]
        all: bool,
        /// QEMU accelerator: tcg (default) or kvm (nested KVM fails on many hosts).
        #[arg(long, value_enum, default_value_t)]
        accel: Accel,
    },
    /// Print the OCI config.json the lab generates from deploy/daemonset.yaml (its Localhost
    /// seccomp profile from deploy/seccomp/), and what its filter does to the agent's syscalls.
    OciConfig,
    /// Regenerate agent/tests/fixtures/lab/ from the fixture scenarios (those named, or all).
    Fixtures {
        /// Fixture scenario names; none: every fixture scenario.
        names: Vec<String>,
        #[arg(long, value_enum, default_value_t)]
        accel: Accel,
    },
}

pub fn main(command: LabCommand) -> Result<()> {
    match command {
        LabCommand::List => {
            for s in scenarios::every() {
                println!("{:<34} {}", s.name, s.about);
            }
            Ok(())
        }
        LabCommand::Run { names, all, accel } => {
            let chosen = scenarios::select(&names, all)?;
            crate::setup::run()?;
            let started = Instant::now();
            let reports = run_scenarios(&chosen, accel, &mut |_, _| {})?;
            let failed: Vec<&str> = reports
                .iter()
                .filter(|r| !r.pass)
                .map(|r| r.scenario.as_str())
                .collect();
            println!(
                "lab: {} passed, {} failed in {:.0} s",
                reports.len() - failed.len(),
                failed.len(),
                started.elapsed().as_secs_f64()
            );
            if !failed.is_empty() {
                bail!("lab scenarios failed: {}", failed.join(", "));
            }
            Ok(())
        }
        LabCommand::OciConfig => {
            let entrypoint = ["/kdump-agent".to_owned()];
            let node = oci::Node {
                name: "lab",
                entrypoint: &entrypoint,
            };
            let config = oci::from_repo(&paths::root(), &node, None)?;
            println!("{}", serde_json::to_string_pretty(&config)?);
            for syscall in ["bpf", "perf_event_open", "kexec_file_load", "kexec_load"] {
                eprintln!(
                    "seccomp {syscall}: {}",
                    oci::seccomp_action(&config["linux"]["seccomp"], syscall)
                );
            }
            Ok(())
        }
        LabCommand::Fixtures { names, accel } => {
            crate::setup::run()?;
            write_fixtures(&names, accel)
        }
    }
}

/// Prepares the lab once and runs `chosen` in order; each report is printed as one JSON line
/// and handed to `each` (with the scenario's name) so callers can tally.
pub fn run_scenarios(
    chosen: &[&'static Scenario],
    accel: Accel,
    each: &mut dyn FnMut(&Scenario, &Report),
) -> Result<Vec<Report>> {
    let kernels: Vec<Kernel> = chosen.iter().map(|s| s.kernel).collect();
    let lab = Lab::prepare(&kernels, accel)?;
    let mut reports = Vec::new();
    crate::ui::section("lab: scenarios (one JSON line each)");
    for scenario in chosen {
        let step = Step::start(scenario.name);
        step.progress(scenario.about);
        let report = scenario::run(&lab, scenario);
        step.done(if report.pass { "pass" } else { "FAIL" });
        println!("{}", serde_json::to_string(&report)?);
        if scenario.benchmark {
            keep_bench_json(scenario, &report);
        }
        each(scenario, &report);
        reports.push(report);
    }
    Ok(reports)
}

/// Writes a benchmark's report, with the command and the git commit that ran it, to
/// `target/lab/bench/<scenario>-<unix seconds>.json` (README figures are copied from there
/// into `docs/bench/`).
fn keep_bench_json(scenario: &Scenario, report: &Report) {
    let dir = paths::target_dir().join("lab/bench");
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let path = dir.join(format!("{}-{secs}.json", scenario.name));
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(paths::root())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let doc = serde_json::json!({
        "command": format!("cargo xtask lab run {}", scenario.name),
        "commit": git(&["rev-parse", "HEAD"]),
        // Uncommitted changes to tracked files when it ran (the commit alone does not say it).
        "dirty": git(&["status", "--porcelain", "--untracked-files=no"]).map(|s| !s.is_empty()),
        "unix_seconds": secs,
        "report": report,
    });
    let written = std::fs::create_dir_all(&dir).and_then(|()| {
        std::fs::write(
            &path,
            serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n",
        )
    });
    match written {
        Ok(()) => println!("kept {}", paths::relative(&path)),
        Err(e) => eprintln!("  {}: {e}", path.display()),
    }
}

/// Runs the fixture scenarios (`names`, or all) and rewrites agent/tests/fixtures/lab/<scenario>/
/// from those that pass (a failed one keeps its old fixture and fails the command).
pub fn write_fixtures(names: &[String], accel: Accel) -> Result<()> {
    let chosen: Vec<&Scenario> = if names.is_empty() {
        scenarios::every().filter(|s| s.fixture).collect()
    } else {
        scenarios::select(names, false)?
    };
    if let Some(s) = chosen.iter().find(|s| !s.fixture) {
        bail!("`{}` is not a fixture scenario", s.name);
    }
    let root = paths::root().join("agent/tests/fixtures/lab");
    let mut failed = Vec::new();
    let mut write = |scenario: &Scenario, report: &Report| {
        let Some(fixture) = report.fixture.as_ref().filter(|_| report.pass) else {
            failed.push(scenario.name);
            return;
        };
        if let Err(e) = write_fixture(&root.join(scenario.name), scenario, report, fixture) {
            eprintln!("  {}: {e:#}", scenario.name);
            failed.push(scenario.name);
        }
    };
    run_scenarios(&chosen, accel, &mut write)?;
    if !failed.is_empty() {
        bail!("fixtures not regenerated for: {}", failed.join(", "));
    }
    println!("fixtures written to {}", paths::relative(&root));
    Ok(())
}

fn write_fixture(
    dir: &Path,
    scenario: &Scenario,
    report: &Report,
    fixture: &Fixture,
) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let expect = serde_json::json!({
        "arch": scenario.kernel.arch.debian(),
        "kernel": report.kernel,
        "load": report.load,
        "hotplugged_bytes": report.hotplugged_bytes,
        "expect_missing_bytes": report.expect_missing_bytes,
        "expect_excess_bytes": report.expect_excess_bytes,
    });
    let p = scenario.kernel.package;
    let source = format!(
        "cargo xtask lab fixtures: scenario {}, {}={} under QEMU, `{}`, then hot-plug and `echo c > /proc/sysrq-trigger`; iomem read just before the crash, vmcore-head = /proc/vmcore in the capture kernel up to its first PT_LOAD's data (at most {} bytes)\n",
        scenario.name, p.name, p.version, fixture.command, VMCORE_HEAD_BYTES
    );
    for (name, bytes) in [
        ("iomem", fixture.iomem.as_bytes().to_vec()),
        ("vmcore-head", fixture.vmcore_head.clone()),
        (
            "expect.json",
            format!("{}\n", serde_json::to_string_pretty(&expect)?).into_bytes(),
        ),
        ("SOURCE", source.into_bytes()),
    ] {
        let path = dir.join(name);
        fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
