//! The lab prepared for guests (packages unpacked, the static agent built, one initramfs per
//! kernel) and how one guest boots.
use std::{collections::BTreeMap, fs, path::PathBuf};

use anyhow::{Context as _, Result, bail};
use kdump_agent::model::units::bytes;

use super::{
    arch::Arch,
    image::{self, Kernel},
    machine::{self, Accel, Cpus, Forward, Machine, MachineSpec, Memory},
    packages,
};
use crate::{paths, support::agent, ui::Step};

/// Everything prepared for guests: unpacked packages, the agent, one image per kernel.
pub struct Lab {
    pub(super) unpacked: packages::Unpacked,
    images: BTreeMap<String, PathBuf>,
    accel: Accel,
    pub(super) runs: PathBuf,
}

impl Lab {
    /// Fetches packages, builds the agent and the images for `kernels`.
    pub fn prepare(kernels: &[Kernel], accel: Accel) -> Result<Self> {
        crate::ui::section("lab: prepare");
        let mut arches: Vec<Arch> = Vec::new();
        for kernel in kernels {
            if !arches.contains(&kernel.arch) {
                qemu_present(kernel.arch)?;
                arches.push(kernel.arch);
            }
        }
        let mut wanted = Vec::new();
        for kernel in kernels {
            for p in image::packages_for(kernel) {
                if !wanted.iter().any(|w: &packages::Package| w.is(&p)) {
                    wanted.push(p);
                }
            }
        }
        let unpacked = packages::fetch(&wanted).context("lab step `debian packages`")?;
        // One static agent per guest architecture, with probes built for it.
        let mut agents = BTreeMap::new();
        for arch in &arches {
            agents.insert(arch.debian(), agent::build_static_for(arch.agent_target())?);
        }
        let dir = paths::target_dir().join("lab");
        let mut images = BTreeMap::new();
        for kernel in kernels {
            let name = kernel.image_name();
            if images.contains_key(&name) {
                continue;
            }
            let step = Step::start(format!("image {name}"));
            fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let path = dir.join(format!("initrd-{name}.cpio"));
            let agent = &agents[kernel.arch.debian()];
            let size = image::guest_image(kernel, &unpacked, agent)
                .and_then(|image| image.write(&path))
                .with_context(|| format!("lab step `image {name}`"))?;
            step.done(&format!("{} ({})", path.display(), bytes(size)));
            images.insert(name, path);
        }
        Ok(Self {
            unpacked,
            images,
            accel,
            runs: dir.join("runs"),
        })
    }

    /// Boots `kernel` with `boot`; the console log goes to `target/lab/runs/<log>.log`.
    pub fn boot(&self, kernel: &Kernel, boot: &Boot, log: &str) -> Result<Machine> {
        let vmlinuz = kernel.vmlinuz(&self.unpacked);
        let initrd = &self.images[&kernel.image_name()];
        if boot.forward_agent.is_some() && !kernel.networked {
            bail!(
                "{}: its image has no {} driver (set `networked` on the kernel in lab/image.rs)",
                kernel.release,
                machine::NIC
            );
        }
        Machine::boot(&MachineSpec {
            arch: kernel.arch,
            vmlinuz: &vmlinuz,
            initrd,
            cmdline: format!(
                "console={} {} panic=-1 {}",
                kernel.arch.console(),
                boot.crashkernel,
                boot.extra
            ),
            memory: boot.memory,
            cpus: boot.cpus,
            accel: self.accel,
            console_log: self.runs.join(format!("{log}.log")),
            forward: boot.forward_agent.map(|host_port| Forward {
                host_port,
                guest_port: GUEST_AGENT_PORT,
            }),
            virtio_mem_mib: boot.virtio_mem_mib,
        })
    }
}

/// The port of the guest agent's /metrics (its default `--listen` port).
pub const GUEST_AGENT_PORT: u16 = 10864;

/// How a guest boots: RAM layout, the crashkernel= reservation(s), extra kernel parameters,
/// and whether the host reaches the guest agent's port.
pub struct Boot {
    pub memory: Memory,
    pub cpus: Cpus,
    pub crashkernel: &'static str,
    pub extra: &'static str,
    /// A host loopback port forwarded to [`GUEST_AGENT_PORT`] over a NIC on QEMU user
    /// networking (the guest brings it up with `image::GUEST_NET_UP`); None: no NIC.
    pub forward_agent: Option<u16>,
    /// A virtio-mem device of this many MiB, nothing plugged at boot (the guest loads its
    /// driver with `image::GUEST_VIRTIO_MEM_UP`); None: no device.
    pub virtio_mem_mib: Option<u64>,
}

impl Default for Boot {
    /// 1 GiB with room for three more GiB of DIMMs, 2 CPUs, 256 MiB reserved for the capture
    /// kernel.
    fn default() -> Self {
        Self {
            memory: Memory {
                boot_mib: 1024,
                slots: 4,
                max_mib: 4096,
            },
            cpus: Cpus { boot: 2, max: 2 },
            crashkernel: "crashkernel=256M",
            extra: "",
            forward_agent: None,
            virtio_mem_mib: None,
        }
    }
}

/// Fails early, naming the fix, when QEMU for `arch` is not installed.
fn qemu_present(arch: Arch) -> Result<()> {
    let qemu = arch.qemu();
    let step = Step::start(qemu);
    let out = std::process::Command::new(qemu).arg("--version").output();
    match out {
        Ok(out) if out.status.success() => {
            let version = String::from_utf8_lossy(&out.stdout);
            step.done(version.lines().next().unwrap_or("").trim());
            Ok(())
        }
        _ => bail!(
            "lab step `{qemu}`: not installed or not runnable (run `cargo xtask setup`, which installs {})",
            arch.qemu_package()
        ),
    }
}
