//! Builds the eBPF probes (ebpf/) with aya-build and leaves the object in OUT_DIR for
//! `include_bytes_aligned!`. `AYA_BUILD_SKIP=1` or building without the `probes` feature skips it
//! (clippy, docs, xtask's use of the library): the agent then carries an empty object and says so.
use std::{env, fs, path::PathBuf};

use anyhow::{Context as _, anyhow};

const PROBES_BIN: &str = "kdump-agent-probes";

fn main() -> anyhow::Result<()> {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").context("OUT_DIR not set")?);
    let object = out_dir.join(PROBES_BIN);
    let skip = env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
        || env::var_os("CARGO_FEATURE_PROBES").is_none();
    if skip {
        println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
        fs::write(&object, []).context("writing the empty probe object")?;
        return Ok(());
    }
    let root =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR not set")?)
            .join("..");
    put_bpf_linker_on_path(&root)?;
    let ebpf = root.join("ebpf");
    let ebpf = ebpf
        .to_str()
        .ok_or_else(|| anyhow!("non-UTF-8 path {}", ebpf.display()))?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "kdump-agent-ebpf",
            root_dir: ebpf,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
    .context("building the eBPF probes (run `cargo xtask setup` first, or set AYA_BUILD_SKIP=1)")
}

/// bpf-linker lives in the project's tools directory (`cargo xtask setup` builds it there).
fn put_bpf_linker_on_path(root: &std::path::Path) -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=KDUMP_AGENT_TOOLS");
    let tools =
        env::var_os("KDUMP_AGENT_TOOLS").map_or_else(|| root.join("target/tools"), PathBuf::from);
    let bin = tools.join("bpf-linker/bin");
    let path = env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = env::split_paths(&path).collect();
    if bin.join("bpf-linker").is_file() {
        dirs.insert(0, bin);
    } else if !dirs.iter().any(|d| d.join("bpf-linker").is_file()) {
        return Err(anyhow!(
            "bpf-linker not found in {} nor on PATH: run `cargo xtask setup` (or set AYA_BUILD_SKIP=1 to build without probes)",
            bin.display()
        ));
    }
    // SAFETY: build scripts are single-threaded; the child cargo inherits this PATH.
    unsafe { env::set_var("PATH", env::join_paths(dirs)?) };
    Ok(())
}
