//! `cargo xtask fuzz --seconds N`: runs the cargo-fuzz targets in `fuzz/` on nightly, each for
//! N seconds, and reports executions and findings. Not part of `cargo xtask test`.
use std::{
    collections::BTreeSet,
    fs,
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{paths, ui};

/// Targets and their seed directories (relative to the workspace root).
const TARGETS: &[(&str, &[&str])] = &[
    ("iomem", &["agent/tests/fixtures/iomem"]),
    (
        "elfcorehdr",
        &["fuzz/seeds/elfcorehdr", "agent/tests/fixtures/lab"],
    ),
];

/// How often a long run prints where it is.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

struct Outcome {
    target: &'static str,
    execs: u64,
    seconds: f64,
    findings: Vec<PathBuf>,
}

pub fn run(seconds: u64, only: Option<&str>) -> Result<()> {
    let targets: Vec<_> = TARGETS
        .iter()
        .filter(|(name, _)| only.is_none_or(|o| o == *name))
        .collect();
    if targets.is_empty() {
        let names: Vec<_> = TARGETS.iter().map(|t| t.0).collect();
        bail!("unknown fuzz target {only:?}: expected one of {names:?}");
    }
    ui::section("cargo-fuzz");
    let cargo_fuzz = install_cargo_fuzz()?;
    let mut outcomes = Vec::new();
    for (target, seeds) in targets {
        ui::section(&format!("fuzz {target} for {seconds} s"));
        outcomes.push(fuzz_one(&cargo_fuzz, target, seeds, seconds)?);
    }
    println!();
    println!(
        "  {:<12} {:>8} {:>14} {:>12} {:>9}",
        "TARGET", "SECONDS", "EXECUTIONS", "EXECS/S", "FINDINGS"
    );
    for o in &outcomes {
        println!(
            "  {:<12} {:>8.1} {:>14} {:>12.0} {:>9}",
            o.target,
            o.seconds,
            o.execs,
            o.execs as f64 / o.seconds.max(0.001),
            o.findings.len()
        );
        for f in &o.findings {
            println!("    finding: {}", f.display());
        }
    }
    let findings: usize = outcomes.iter().map(|o| o.findings.len()).sum();
    if findings > 0 {
        bail!(
            "{findings} finding(s): reproduce with `cargo +nightly fuzz run TARGET FILE` in fuzz/"
        );
    }
    Ok(())
}

/// cargo-fuzz in the project's tools directory, installed on first use.
fn install_cargo_fuzz() -> Result<PathBuf> {
    let root = paths::tools().join("cargo-fuzz");
    let bin = root.join("bin/cargo-fuzz");
    let step = ui::Step::start("cargo-fuzz");
    if bin.is_file() {
        step.done(&format!("already installed at {}", bin.display()));
        return Ok(bin);
    }
    step.progress("installing with `cargo install --locked cargo-fuzz` (about 90 s)");
    let status = crate::support::process::cargo()
        .args(["install", "--locked", "cargo-fuzz", "--root"])
        .arg(&root)
        .status()
        .context("running cargo install")?;
    if !status.success() {
        bail!("cargo install cargo-fuzz failed ({status})");
    }
    step.done("installed");
    Ok(bin)
}

fn artifacts(dir: &Path) -> BTreeSet<PathBuf> {
    fs::read_dir(dir)
        .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default()
}

fn fuzz_one(
    cargo_fuzz: &Path,
    target: &'static str,
    seeds: &[&str],
    seconds: u64,
) -> Result<Outcome> {
    let root = paths::root();
    let fuzz_dir = root.join("fuzz");
    let corpus = fuzz_dir.join("corpus").join(target);
    fs::create_dir_all(&corpus).with_context(|| corpus.display().to_string())?;
    let artifact_dir = fuzz_dir.join("artifacts").join(target);
    let before = artifacts(&artifact_dir);

    let mut cmd = Command::new(cargo_fuzz);
    cmd.current_dir(&root)
        // The outer `cargo xtask` is stable; the rustup proxy picks nightly from this.
        .env_remove("CARGO")
        .env_remove("RUSTC")
        .env("RUSTUP_TOOLCHAIN", "nightly")
        // The fuzzers exercise pure modules: no eBPF probes needed.
        .env("AYA_BUILD_SKIP", "1")
        .args(["fuzz", "run", "--fuzz-dir"])
        .arg(&fuzz_dir)
        .arg(target)
        .arg(&corpus);
    // libFuzzer reads seed directories recursively; the lab ones may not exist yet.
    for seed in seeds.iter().map(|s| root.join(s)).filter(|p| p.is_dir()) {
        cmd.arg(seed);
    }
    cmd.args([
        "--",
        &format!("-max_total_time={seconds}"),
        "-print_final_stats=1",
    ])
    .stdout(Stdio::inherit())
    .stderr(Stdio::piped());

    let mut child = cmd.spawn().context("starting cargo fuzz")?;
    let stderr = child.stderr.take().context("cargo fuzz: no stderr")?;
    let mut execs = 0u64;
    // Fuzzing time starts at libFuzzer's first line, after the build.
    let mut started: Option<Instant> = None;
    let mut last_print = Instant::now();
    let mut tail: Vec<String> = Vec::new();
    for line in BufReader::new(stderr).lines() {
        let line = line.context("reading cargo fuzz output")?;
        if started.is_none() && (line.starts_with("INFO:") || line.starts_with('#')) {
            started = Some(Instant::now());
            last_print = Instant::now();
        }
        // libFuzzer status lines: "#12345\tpulse  cov: 321 ft: 654 corp: 40/2Kb exec/s: 9000 ..."
        if let Some(n) = line
            .strip_prefix('#')
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
        {
            execs = execs.max(n);
            if last_print.elapsed() >= PROGRESS_EVERY {
                println!(
                    "  {target:<12} {:>6.0} s  {execs:>12} executions",
                    started.map_or(0.0, |s| s.elapsed().as_secs_f64())
                );
                last_print = Instant::now();
            }
        } else if let Some(n) = line.strip_prefix("stat::number_of_executed_units:") {
            execs = n.trim().parse().unwrap_or(execs);
        } else if line.contains("Compiling") || line.starts_with("error") {
            println!("  {line}");
        }
        tail.push(line);
        if tail.len() > 40 {
            tail.remove(0);
        }
    }
    let status = child.wait().context("waiting for cargo fuzz")?;
    let findings: Vec<PathBuf> = artifacts(&artifact_dir)
        .difference(&before)
        .cloned()
        .collect();
    if !status.success() && findings.is_empty() {
        for line in &tail {
            eprintln!("  | {line}");
        }
        bail!("cargo fuzz run {target} failed ({status}) without leaving an artifact");
    }
    Ok(Outcome {
        target,
        execs,
        seconds: started.map_or(0.0, |s| s.elapsed().as_secs_f64()),
        findings,
    })
}
