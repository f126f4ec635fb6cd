//! `cargo xtask package`: the .deb (cargo-deb) and the .rpm (cargo-generate-rpm) of the static
//! agent, its systemd unit and default arguments, into `target/packages/`; and their checks in
//! `cargo xtask test`: lintian, rpmlint, `systemd-analyze verify` and `security`.
use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::{
    paths, setup,
    support::{agent, process, tally::Tally, unit::UNIT},
    ui,
};

pub struct Packages {
    pub deb: PathBuf,
    pub rpm: PathBuf,
}

pub fn dir() -> PathBuf {
    paths::target_dir().join("packages")
}

/// Builds the static agent, then both packages from it.
pub fn build() -> Result<Packages> {
    agent::build_static()?;
    let out = dir();
    let _ = fs::remove_dir_all(&out);
    fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let root = paths::root();
    let release = paths::target_dir()
        .join(agent::STATIC_TARGET)
        .join("release");
    // cargo-generate-rpm maps target/release/ to this directory; it ships files as given.
    process::output(
        Command::new("sh").arg("-c").arg(format!(
            "gzip -9n < {} > {}/kdump-agent.8.gz",
            root.join("deploy/packaging/kdump-agent.8").display(),
            release.display()
        )),
        "gzip kdump-agent.8",
    )?;
    process::output(
        Command::new(setup::cargo_deb())
            .args(["deb", "-p", "kdump-agent", "--no-build", "--target"])
            .arg(agent::STATIC_TARGET)
            .arg("--output")
            .arg(&out)
            .current_dir(&root),
        "cargo-deb",
    )?;
    process::output(
        Command::new(setup::cargo_generate_rpm())
            .args(["generate-rpm", "-p", "agent", "--target"])
            .arg(agent::STATIC_TARGET)
            .arg("--target-dir")
            .arg(paths::target_dir())
            .arg("--output")
            .arg(&out)
            .current_dir(&root),
        "cargo-generate-rpm",
    )?;
    let find = |ext: &str| -> Result<PathBuf> {
        fs::read_dir(&out)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|e| e == ext))
            .with_context(|| format!("no .{ext} in {}", out.display()))
    };
    Ok(Packages {
        deb: find("deb")?,
        rpm: find("rpm")?,
    })
}

/// `cargo xtask package`.
pub fn run() -> Result<()> {
    setup::run()?;
    ui::section("packages");
    let p = build()?;
    for file in [&p.deb, &p.rpm] {
        println!("  {} ({} bytes)", file.display(), fs::metadata(file)?.len());
    }
    Ok(())
}

/// The checks of `cargo xtask test`.
pub fn checks(tally: &mut Tally) {
    ui::section("packages: .deb and .rpm, their linters, the systemd unit");
    let packages = match build() {
        Ok(p) => p,
        Err(e) => {
            tally.record("package", "cargo xtask package", Err(e));
            return;
        }
    };
    tally.record(
        "package",
        "cargo xtask package builds the .deb and the .rpm",
        Ok(()),
    );
    tally.record(
        "package",
        "lintian (no error or warning)",
        process::output(
            Command::new("lintian")
                .args(["--fail-on", "error,warning", "--tag-display-limit", "0"])
                .arg(&packages.deb),
            "lintian",
        )
        .map(|out| print_indented(&out)),
    );
    tally.record(
        "package",
        "rpmlint (no error or warning)",
        rpmlint(&packages.rpm),
    );
    tally.record(
        "package",
        "the .deb and the .rpm hold the binary, the unit and the default arguments",
        contents(&packages),
    );
    tally.record(
        "package",
        &format!("systemd-analyze verify {UNIT}"),
        verify_unit(),
    );
    let security = security_score();
    if let Ok(score) = &security {
        println!("  systemd-analyze security: {score}");
    }
    tally.record(
        "package",
        "systemd-analyze security rates the unit OK or better",
        security.and_then(|score| {
            let exposure: f64 = score
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .context("no exposure figure")?;
            anyhow::ensure!(exposure < 5.0, "exposure {score}");
            Ok(())
        }),
    );
}

fn print_indented(text: &str) {
    for line in text.lines() {
        println!("    {line}");
    }
}

fn rpmlint(rpm: &Path) -> Result<()> {
    let out = Command::new("rpmlint")
        .arg("--config")
        .arg(paths::root().join("deploy/packaging/rpmlint.toml"))
        .arg("--rpmlintrc")
        .arg(paths::root().join("deploy/packaging/rpmlintrc"))
        .arg(rpm)
        .output()
        .context("rpmlint: cannot start")?;
    let text = String::from_utf8_lossy(&out.stdout);
    print_indented(&text);
    // The summary line: "1 packages and 0 specfiles checked; 0 errors, 0 warnings, ..."
    let summary = text
        .lines()
        .find(|l| l.contains("errors,") && l.contains("warnings"))
        .context("rpmlint printed no summary")?;
    let count = |what: &str| -> Option<u32> {
        summary
            .split([';', ','])
            .find_map(|p| p.trim().strip_suffix(what)?.trim().parse().ok())
    };
    if count("errors") != Some(0) || count("warnings") != Some(0) {
        bail!("rpmlint: {}", summary.trim());
    }
    Ok(())
}

fn contents(p: &Packages) -> Result<()> {
    let deb = process::output(
        Command::new("dpkg-deb").arg("--contents").arg(&p.deb),
        "dpkg-deb",
    )?;
    let rpm = process::output(Command::new("rpm").args(["-qlp"]).arg(&p.rpm), "rpm -qlp")?;
    for (what, listing, want) in [
        (
            ".deb",
            &deb,
            [
                "./usr/bin/kdump-agent",
                "kdump-agent.service",
                "./etc/default/kdump-agent",
            ],
        ),
        (
            ".rpm",
            &rpm,
            [
                "/usr/bin/kdump-agent",
                "/usr/lib/systemd/system/kdump-agent.service",
                "/etc/sysconfig/kdump-agent",
            ],
        ),
    ] {
        for path in want {
            anyhow::ensure!(listing.contains(path), "{what} has no {path}:\n{listing}");
        }
    }
    Ok(())
}

/// A root with the unit and the binary where the unit expects them (verify checks ExecStart),
/// and this host's own units (the targets it is ordered against).
fn unit_root() -> Result<PathBuf> {
    let root = paths::target_dir().join(format!("xtask-unit-{}", std::process::id()));
    let _ = fs::remove_dir_all(&root);
    let units = root.join("etc/systemd/system");
    fs::create_dir_all(&units)?;
    fs::create_dir_all(root.join("usr/lib/systemd"))?;
    process::output(
        Command::new("cp")
            .args(["-a", "/usr/lib/systemd/system"])
            .arg(root.join("usr/lib/systemd/")),
        "copying the host's systemd units",
    )?;
    fs::create_dir_all(root.join("usr/bin"))?;
    fs::copy(paths::root().join(UNIT), units.join("kdump-agent.service"))?;
    fs::copy(
        paths::target_dir()
            .join(agent::STATIC_TARGET)
            .join("release/kdump-agent"),
        root.join("usr/bin/kdump-agent"),
    )?;
    Ok(root)
}

fn verify_unit() -> Result<()> {
    let root = unit_root()?;
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", root.display()))
        .arg(root.join("etc/systemd/system/kdump-agent.service"))
        .output()
        .context("systemd-analyze: cannot start")?;
    let _ = fs::remove_dir_all(&root);
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    // Units named in After= that this host lacks are not the unit's fault.
    let complaints: Vec<&str> = text
        .lines()
        .filter(|l| {
            !l.trim().is_empty()
                && !l.contains("kdump.service")
                && !l.contains("kdump-tools.service")
        })
        .collect();
    if !out.status.success() || !complaints.is_empty() {
        bail!("{}", complaints.join("; "));
    }
    Ok(())
}

/// `systemd-analyze security`'s overall line for the unit, e.g. "1.9 OK".
fn security_score() -> Result<String> {
    let root = unit_root()?;
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(format!("--root={}", root.display()))
        .arg(root.join("etc/systemd/system/kdump-agent.service"))
        .output()
        .context("systemd-analyze: cannot start")?;
    let _ = fs::remove_dir_all(&root);
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.split_once("Overall exposure level for kdump-agent.service:"))
        .map(|(_, score)| score.trim().to_owned())
        .with_context(|| format!("no overall exposure in: {text}"))
}
