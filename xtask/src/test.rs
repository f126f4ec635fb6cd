//! `cargo xtask test`: format, lint, every test; ends with one `N passed, N failed` line.
use std::{
    io::{BufRead as _, BufReader},
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

use crate::{
    support::{process::cargo, tally::Tally},
    ui,
};

pub fn run() -> Result<()> {
    crate::setup::run()?;
    let mut tally = Tally::default();

    ui::section("cargo fmt --check");
    check(
        &mut tally,
        "cargo fmt",
        cargo().args(["fmt", "--all", "--", "--check"]),
    )?;

    ui::section("cargo clippy --all-targets -- -D warnings");
    check(
        &mut tally,
        "cargo clippy",
        cargo().args(["clippy", "--all-targets", "--", "-D", "warnings"]),
    )?;

    ui::section("cargo test");
    cargo_test(
        &mut tally,
        // --show-output: a test's `SKIP: why` line must reach the tally even when it passes;
        // --no-fail-fast: one failing test binary must not hide the ones after it.
        cargo().args([
            "test",
            "--no-fail-fast",
            "--workspace",
            "--exclude",
            "kdump-agent-ebpf",
            "--",
            "--show-output",
        ]),
    )?;

    crate::architecture::run(&mut tally);

    crate::fleet::run(&mut tally)?;

    crate::package::checks(&mut tally);

    ui::section("VM lab: every scenario but the benchmarks (cargo xtask lab list)");
    lab_scenarios(&mut tally);

    println!();
    for failure in &tally.failures {
        println!("FAILED: {failure}");
    }
    println!(
        "xtask test: {} passed, {} failed, {} skipped",
        tally.passed, tally.failed, tally.skipped
    );
    if tally.failed > 0 {
        bail!("{} test(s) failed", tally.failed);
    }
    Ok(())
}

/// Each lab scenario counts as one test; a lab that cannot start (no QEMU, no packages) is one
/// failure naming the step.
fn lab_scenarios(tally: &mut Tally) {
    let all: Vec<_> = crate::lab::scenarios::every()
        .filter(|s| !s.benchmark)
        .collect();
    let result = crate::lab::run_scenarios(&all, Default::default(), &mut |scenario, report| {
        if report.pass {
            tally.pass();
        } else {
            tally.fail(format!(
                "lab {}: {}",
                scenario.name,
                report.failures.join("; ")
            ));
        }
    });
    if let Err(e) = result {
        tally.fail(format!("lab: {e:#}"));
    }
}

/// A command that is one check: it passes or fails as a whole.
fn check(tally: &mut Tally, name: &str, cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("{name}: cannot start"))?;
    if status.success() {
        tally.pass();
    } else {
        tally.fail(format!("{name} ({status})"));
    }
    Ok(())
}

/// Runs `cargo test`, echoing its output and adding up its `test result:` lines. A test that
/// could not run here prints a line starting with `SKIP: ` and the reason; it counts as skipped,
/// not passed.
fn cargo_test(tally: &mut Tally, cmd: &mut Command) -> Result<()> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .context("cargo test: cannot start")?;
    let (mut skips, mut current) = (0, String::new());
    let stdout = child.stdout.take().context("cargo test: no stdout")?;
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading cargo test output")?;
        println!("{line}");
        if let Some(name) = line
            .strip_prefix("---- ")
            .and_then(|l| l.strip_suffix(" stdout ----"))
        {
            current = name.to_string();
        }
        if let Some(why) = line.strip_prefix("SKIP: ") {
            tally.skip(&format!("cargo test: {current}"), why);
            skips += 1;
        }
        if let Some(name) = line
            .strip_prefix("test ")
            .and_then(|l| l.strip_suffix(" ... FAILED"))
        {
            tally.failures.push(format!("cargo test: {name}"));
        }
        if let Some(counts) = line.strip_prefix("test result: ") {
            let count = |label: &str| -> u64 {
                counts
                    .split([';', '.'])
                    .find_map(|part| {
                        part.trim()
                            .strip_suffix(label)
                            .and_then(|n| n.trim().parse().ok())
                    })
                    .unwrap_or(0)
            };
            tally.passed += count("passed");
            tally.failed += count("failed");
            tally.skipped += count("ignored");
        }
    }
    let status = child.wait().context("waiting for cargo test")?;
    // Skipped tests were also reported "ok" by cargo; count them once, as skipped.
    tally.passed = tally.passed.saturating_sub(skips);
    if !status.success() && tally.failures.is_empty() {
        tally.fail(format!("cargo test ({status})"));
    }
    Ok(())
}
