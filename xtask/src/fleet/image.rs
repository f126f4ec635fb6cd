//! Builds deploy/Containerfile into a real multi-architecture OCI image with buildah
//! (daemonless: vfs storage, chroot isolation, so no container engine or user namespaces are
//! needed): one image per shipped static build (amd64, arm64), each from a build context
//! holding that build's binary, and a manifest list over them; runs the binary of this host's
//! architecture inside its image.
use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, ensure};
use serde_json::Value;

const TAG: &str = "localhost/kdump-agent:xtask";

use crate::support::agent::StaticTarget;

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

/// Builds one image per `(target, binary)` and the manifest list `TAG` over them, checks what
/// each holds, for which platform, and how it starts, and runs `/kdump-agent --version` in the
/// image whose architecture is this host's; returns that version line.
pub fn build_and_run(
    root: &Path,
    builds: &[(&StaticTarget, PathBuf)],
    host_arch: &str,
    work: &Path,
) -> Result<String> {
    let storage = work.join("buildah");
    run(buildah(&storage).args(["manifest", "create", TAG]))?;
    let mut version = None;
    for (target, binary) in builds {
        let arch = target.oci_arch;
        let tag = format!("{TAG}-{arch}");
        // The Containerfile COPYs `kdump-agent` from its context: each platform's own binary.
        let context = work.join(format!("image-context-{arch}"));
        fs::create_dir_all(&context)?;
        fs::copy(binary, context.join("kdump-agent"))
            .context("copying the agent into the context")?;
        run(buildah(&storage)
            .args(["build", "--quiet", "--isolation", "chroot"])
            .arg(format!("--platform=linux/{arch}"))
            .arg("-f")
            .arg(root.join("deploy/Containerfile"))
            .args(["-t", &tag])
            .arg(&context))?;
        run(buildah(&storage).args(["manifest", "add", TAG, &tag]))?;
        let inspect: Value = serde_json::from_str(&run(buildah(&storage).args(["inspect", &tag]))?)
            .context("buildah inspect: not JSON")?;
        check_config(&inspect, arch).with_context(|| format!("the {arch} image"))?;
        let built = fs::read(binary)?;
        let ran = in_container(
            &storage,
            &tag,
            |mounted| {
                let inside = files(mounted)?;
                ensure!(
                    inside == [PathBuf::from("kdump-agent")],
                    "the {arch} image holds {inside:?}, expected the agent binary only"
                );
                ensure!(
                    fs::read(mounted.join("kdump-agent"))? == built,
                    "the {arch} image's /kdump-agent is not the {} build",
                    target.triple
                );
                Ok(())
            },
            arch == host_arch,
        )?;
        if let Some(v) = ran {
            version = Some(v);
        }
    }
    let list: Value =
        serde_json::from_str(&run(buildah(&storage).args(["manifest", "inspect", TAG]))?)
            .context("buildah manifest inspect: not JSON")?;
    let mut platforms: Vec<&str> = list["manifests"]
        .as_array()
        .context("the manifest list has no manifests")?
        .iter()
        .filter_map(|m| m["platform"]["architecture"].as_str())
        .collect();
    platforms.sort_unstable();
    let mut want: Vec<&str> = builds.iter().map(|(t, _)| t.oci_arch).collect();
    want.sort_unstable();
    ensure!(
        platforms == want,
        "the manifest list covers {platforms:?}, expected {want:?}"
    );
    let version = version.with_context(|| format!("no image for this host's {host_arch}"))?;
    ensure!(
        version.starts_with("kdump-agent "),
        "`/kdump-agent --version` in the image printed {version:?}"
    );
    Ok(version)
}

/// The image's platform, entrypoint and port.
fn check_config(inspect: &Value, arch: &str) -> Result<()> {
    let oci = &inspect["OCIv1"];
    ensure!(
        oci["architecture"] == arch && oci["os"] == "linux",
        "platform {}/{}",
        oci["os"],
        oci["architecture"]
    );
    let config = &oci["config"];
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
    Ok(())
}

/// Mounts a container of `tag`, runs `check` on its root, and when `run_it`, runs
/// `/kdump-agent --version` in it (only this host's architecture runs here: no emulator).
fn in_container(
    storage: &Path,
    tag: &str,
    check: impl FnOnce(&Path) -> Result<()>,
    run_it: bool,
) -> Result<Option<String>> {
    let container = run(buildah(storage).args(["from", "--quiet", tag]))?;
    let result = (|| {
        let mounted = PathBuf::from(run(buildah(storage).args(["mount", &container]))?);
        check(&mounted)?;
        if !run_it {
            return Ok(None);
        }
        run(buildah(storage).args([
            "run",
            "--isolation",
            "chroot",
            &container,
            "--",
            "/kdump-agent",
            "--version",
        ]))
        .map(Some)
    })();
    let _ = run(buildah(storage).args(["rm", &container]));
    result
}
