//! Builds deploy/Containerfile into a real OCI image with buildah (daemonless: vfs storage,
//! chroot isolation, so no container engine or user namespaces are needed) from the static
//! agent the lab ships, and runs the binary inside it.
use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, ensure};
use serde_json::Value;

const TAG: &str = "localhost/kdump-agent:xtask";

/// buildah with its storage under `dir` (removed with the fleet's work directory).
fn buildah(dir: &Path) -> Command {
    let mut cmd = Command::new("buildah");
    cmd.arg("--storage-driver")
        .arg("vfs")
        .arg("--root")
        .arg(dir.join("root"))
        .arg("--runroot")
        .arg(dir.join("runroot"));
    cmd
}

/// buildah's stdout, trimmed.
fn run(cmd: &mut Command) -> Result<String> {
    Ok(crate::support::process::output(cmd, "buildah")?
        .trim()
        .to_owned())
}

/// Every file below `dir`, relative to it.
fn files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut queue = vec![dir.to_path_buf()];
    while let Some(d) = queue.pop() {
        for entry in fs::read_dir(&d).with_context(|| d.display().to_string())? {
            let path = entry?.path();
            if path.is_dir() {
                queue.push(path);
            } else {
                found.push(path.strip_prefix(dir)?.to_path_buf());
            }
        }
    }
    Ok(found)
}

/// Builds the image from `binary`, checks what it holds and how it starts, and runs
/// `/kdump-agent --version` in it; returns that version line.
pub fn build_and_run(root: &Path, binary: &Path, work: &Path) -> Result<String> {
    let context = work.join("image-context");
    fs::create_dir_all(&context)?;
    fs::copy(binary, context.join("kdump-agent")).context("copying the agent into the context")?;
    let storage = work.join("buildah");
    run(buildah(&storage)
        .args(["build", "--quiet", "--isolation", "chroot", "-f"])
        .arg(root.join("deploy/Containerfile"))
        .args(["-t", TAG])
        .arg(&context))?;
    let inspect: Value = serde_json::from_str(&run(buildah(&storage).args(["inspect", TAG]))?)
        .context("buildah inspect: not JSON")?;
    let config = &inspect["OCIv1"]["config"];
    ensure!(
        config["Entrypoint"] == serde_json::json!(["/kdump-agent"]),
        "entrypoint is {}",
        config["Entrypoint"]
    );
    ensure!(
        config["ExposedPorts"].get("10864/tcp").is_some(),
        "port 10864/tcp not exposed: {}",
        config["ExposedPorts"]
    );
    let container = run(buildah(&storage).args(["from", "--quiet", TAG]))?;
    let result = (|| {
        let mounted = PathBuf::from(run(buildah(&storage).args(["mount", &container]))?);
        let inside = files(&mounted)?;
        ensure!(
            inside == [PathBuf::from("kdump-agent")],
            "the image holds {inside:?}, expected the agent binary only"
        );
        run(buildah(&storage).args([
            "run",
            "--isolation",
            "chroot",
            &container,
            "--",
            "/kdump-agent",
            "--version",
        ]))
    })();
    let _ = run(buildah(&storage).args(["rm", &container]));
    let version = result?;
    ensure!(
        version.starts_with("kdump-agent "),
        "`/kdump-agent --version` in the image printed {version:?}"
    );
    Ok(version)
}
