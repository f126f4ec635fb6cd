//! `cargo xtask setup`: installs what the build and the tests need, idempotently.
//!
//! Each step checks first and only then installs, so a second run only checks (under 2 s).
use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

use crate::{paths, support::process::output, ui::Step};

/// bpf-linker release that builds against the preinstalled nightly's LLVM 22.
const BPF_LINKER_VERSION: &str = "0.13.0";

/// Debian packages: the VM lab (QEMU for x86_64 and arm64 guests, busybox, kexec-tools, socat, the archive keyring that
/// verifies the lab's private trixie source), promtool and the real Prometheus server
/// (prometheus), Alertmanager and amtool (prometheus-alertmanager), the HTTP load generator of
/// `cargo xtask bench-fleet` (wrk), buildah, which builds deploy/Containerfile without a
/// container engine, musl-tools (ring's C for the static build), the arm64 cross compiler and
/// its C headers (ring's C and the link of the static arm64 build), the packages' linters and
/// rpmbuild's query tool (lintian, rpmlint, rpm), systemd-analyze (systemd), and openssl and
/// curl for the TLS checks (test certificates, a client without credentials).
pub const APT_PACKAGES: &[&str] = &[
    "qemu-system-x86",
    "qemu-system-arm",
    "debian-archive-keyring",
    "busybox-static",
    "kexec-tools",
    "socat",
    "prometheus",
    "prometheus-alertmanager",
    "wrk",
    "buildah",
    "musl-tools",
    "gcc-aarch64-linux-gnu",
    "libc6-dev-arm64-cross",
    "lintian",
    "rpmlint",
    "rpm",
    "systemd",
    "openssl",
    "curl",
];

/// cargo-deb and cargo-generate-rpm, built into the tools dir like bpf-linker.
const CARGO_TOOLS: &[(&str, &str)] = &[("cargo-deb", "3.8.0"), ("cargo-generate-rpm", "0.21.1")];

/// kubernetes-validate (PyPI) release: the Kubernetes schemas the manifests are checked against.
const KUBERNETES_VALIDATE_VERSION: &str = "1.37.0";

/// npm package with the prometheus-operator CRDs' schemas (ServiceMonitor, PrometheusRule).
const PROMETHEUS_OPERATOR_MODELS: (&str, &str) =
    ("@kubernetes-models/prometheus-operator", "6.0.0");

/// Runs every step; returns true when something was installed.
pub fn run() -> Result<bool> {
    crate::ui::section("setup");
    let mut changed = false;
    changed |= rustup_component(
        "rust-src (nightly)",
        &["component", "add", "rust-src", "--toolchain", "nightly"],
        || rustup_lists("component", "list", "--toolchain", "nightly", "rust-src"),
    )?;
    for target in crate::support::agent::STATIC_TARGETS.map(|t| t.triple) {
        changed |= rustup_component(
            &format!("target {target}"),
            &["target", "add", target],
            || rustup_lists("target", "list", "--toolchain", "stable", target),
        )?;
    }
    changed |= bpf_linker()?;
    for (name, version) in CARGO_TOOLS {
        changed |= cargo_tool(name, version)?;
    }
    changed |= apt_packages()?;
    changed |= python_venv()?;
    changed |= node_modules()?;
    Ok(changed)
}

fn rustup_lists(what: &str, list: &str, flag: &str, toolchain: &str, item: &str) -> Result<bool> {
    let out = Command::new("rustup")
        .args([what, list, flag, toolchain, "--installed"])
        .output()
        .context("running rustup (is rustup on PATH?)")?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.starts_with(item)))
}

fn rustup_component(
    name: &str,
    install: &[&str],
    installed: impl Fn() -> Result<bool>,
) -> Result<bool> {
    let step = Step::start(name);
    if installed()? {
        step.done("already installed");
        return Ok(false);
    }
    step.progress("installing with rustup");
    run_quiet(Command::new("rustup").args(install), name)?;
    step.done("installed");
    Ok(true)
}

fn bpf_linker() -> Result<bool> {
    let step = Step::start(format!("bpf-linker {BPF_LINKER_VERSION}"));
    let prefix = paths::bpf_linker_prefix();
    let bin = prefix.join("bin/bpf-linker");
    if bin.is_file()
        && Command::new(&bin).arg("--version").output().is_ok_and(|o| {
            o.status.success() && String::from_utf8_lossy(&o.stdout).contains(BPF_LINKER_VERSION)
        })
    {
        step.done(&format!("already built in {}", prefix.display()));
        return Ok(false);
    }
    // bpf-linker links the nightly toolchain's own libLLVM (no other LLVM can be fetched here).
    let sysroot = output(
        Command::new("rustc").args(["+nightly", "--print", "sysroot"]),
        "rustc +nightly --print sysroot",
    )?;
    let llvm_dir = Path::new(sysroot.trim()).join("lib");
    let llvm = fs::read_dir(&llvm_dir)
        .with_context(|| format!("reading {}", llvm_dir.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("libLLVM.so."))
        .with_context(|| {
            format!(
                "no libLLVM.so.* in {} (is the nightly toolchain complete?)",
                llvm_dir.display()
            )
        })?;
    let lib = prefix.join("lib");
    fs::create_dir_all(&lib).with_context(|| format!("creating {}", lib.display()))?;
    for link in [lib.join("libLLVM.so"), lib.join(&llvm)] {
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink(llvm_dir.join(&llvm), &link)
            .with_context(|| format!("linking {}", link.display()))?;
    }
    step.progress(&format!(
        "building from crates.io against {llvm} (about 1 min)"
    ));
    run_quiet(
        Command::new("cargo")
            .args([
                "install",
                "--locked",
                "--force",
                "--no-default-features",
                "--features",
                "llvm-22",
            ])
            .arg(format!("bpf-linker@{BPF_LINKER_VERSION}"))
            .arg("--root")
            .arg(&prefix)
            .env("LLVM_PREFIX", &prefix),
        "cargo install bpf-linker",
    )?;
    step.done(&format!("built into {}", prefix.display()));
    Ok(true)
}

fn cargo_tool_bin(name: &str) -> PathBuf {
    paths::tools().join(name).join("bin").join(name)
}

pub fn cargo_deb() -> PathBuf {
    cargo_tool_bin("cargo-deb")
}

pub fn cargo_generate_rpm() -> PathBuf {
    cargo_tool_bin("cargo-generate-rpm")
}

/// `cargo install NAME@VERSION` into the tools dir, unless that version is there.
fn cargo_tool(name: &str, version: &str) -> Result<bool> {
    let step = Step::start(format!("{name} {version}"));
    let prefix = paths::tools().join(name);
    // `cargo install --list` for this root names what it installed, with the version.
    let listed = Command::new("cargo")
        .args(["install", "--list", "--root"])
        .arg(&prefix)
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(&format!("{name} v{version}:")));
    if listed && cargo_tool_bin(name).is_file() {
        step.done(&format!("already built in {}", prefix.display()));
        return Ok(false);
    }
    step.progress("building from crates.io (a few minutes)");
    run_quiet(
        Command::new("cargo")
            .args(["install", "--locked", "--force"])
            .arg(format!("{name}@{version}"))
            .arg("--root")
            .arg(&prefix),
        &format!("cargo install {name}"),
    )?;
    step.done(&format!("built into {}", prefix.display()));
    Ok(true)
}

fn apt_packages() -> Result<bool> {
    let step = Step::start("apt packages");
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .copied()
        .filter(|p| !dpkg_installed(p))
        .collect();
    if missing.is_empty() {
        step.done(&format!("already installed: {}", APT_PACKAGES.join(" ")));
        return Ok(false);
    }
    step.progress(&format!("apt-get install {}", missing.join(" ")));
    run_quiet(Command::new("apt-get").arg("update"), "apt-get update")?;
    run_quiet(
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
        "apt-get install",
    )?;
    step.done(&format!("installed: {}", missing.join(" ")));
    Ok(true)
}

/// The project's Python venv (under the target dir) for the Python tools the tests use.
fn venv() -> PathBuf {
    paths::target_dir().join("venv")
}

/// `kubernetes-validate` in the project's venv.
pub fn kubernetes_validate() -> PathBuf {
    venv().join("bin/kubernetes-validate")
}

fn python_venv() -> Result<bool> {
    let step = Step::start(format!("kubernetes-validate {KUBERNETES_VALIDATE_VERSION}"));
    let tool = kubernetes_validate();
    if Command::new(&tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| {
            o.status.success()
                && String::from_utf8_lossy(&o.stdout).contains(KUBERNETES_VALIDATE_VERSION)
        })
    {
        step.done(&format!("already in {}", venv().display()));
        return Ok(false);
    }
    step.progress(&format!("pip install into {}", venv().display()));
    run_quiet(
        Command::new("python3").args(["-m", "venv"]).arg(venv()),
        "python3 -m venv",
    )?;
    run_quiet(
        Command::new(venv().join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .arg(format!(
                "kubernetes-validate=={KUBERNETES_VALIDATE_VERSION}"
            )),
        "pip install kubernetes-validate",
    )?;
    step.done(&format!("installed into {}", venv().display()));
    Ok(true)
}

/// The project's npm prefix (under the target dir) for the Node tools the tests use.
pub fn node_tools() -> PathBuf {
    paths::target_dir().join("node-tools")
}

fn node_modules() -> Result<bool> {
    let (package, version) = PROMETHEUS_OPERATOR_MODELS;
    let step = Step::start(format!("{package} {version}"));
    let manifest = node_tools()
        .join("node_modules")
        .join(package)
        .join("package.json");
    let installed = fs::read_to_string(&manifest)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .is_some_and(|m| m["version"] == version);
    if installed {
        step.done(&format!("already in {}", node_tools().display()));
        return Ok(false);
    }
    if Command::new("npm").arg("--version").output().is_err() {
        step.done("npm not found: the CRD schema checks will be skipped");
        return Ok(false);
    }
    step.progress(&format!("npm install into {}", node_tools().display()));
    fs::create_dir_all(node_tools())?;
    run_quiet(
        Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--silent", "--prefix"])
            .arg(node_tools())
            .arg(format!("{package}@{version}")),
        "npm install",
    )?;
    step.done(&format!("installed into {}", node_tools().display()));
    Ok(true)
}

fn dpkg_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).ends_with("install ok installed"))
}

/// Runs a command, keeping its output unless it fails; then prints the tail and names the step.
fn run_quiet(cmd: &mut Command, what: &str) -> Result<()> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("{what}: cannot start"))?;
    if !out.status.success() {
        let text = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = text.lines().rev().take(20).collect();
        for line in tail.iter().rev() {
            eprintln!("    {line}");
        }
        bail!("{what} failed ({})", out.status);
    }
    Ok(())
}
