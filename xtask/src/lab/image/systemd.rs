//! The `systemd-*` images: Debian 12's systemd as PID 1 (`/init`), its targets and journald
//! from the package, the agent installed where the .deb installs it (binary at the unit's
//! `ExecStart=` path, the unit and its default arguments as the repository has them), and
//! three small lab units: the harness's shell, a boot-time `kexec -s -p`, and what a real
//! root has that an initramfs lacks. Units are pulled in by drop-ins (plain files: the image
//! has no symlinks), so Debian's targets stay as shipped.
use std::{fs, path::Path};

use anyhow::{Context as _, Result};

use super::{
    Arch, CAPTURE_CMDLINE, GUEST_CAPTURE_INITRD, GUEST_KERNEL, GUEST_KEXEC, Image, LIBSECCOMP,
    SYSTEMD, SYSTEMD_LIBS, Unpacked,
};
use crate::{paths, support::unit};

/// Where Debian 12's systemd package has its units (and the lab puts its own).
const GUEST_UNIT_DIR: &str = "/lib/systemd/system";
/// Where the .deb (cargo-deb's `systemd-units`) and the .rpm put the agent's unit.
const PACKAGE_UNIT_DIR: &str = "/usr/lib/systemd/system";
/// The lab's unit that runs the harness's shell (`guest/runner.sh`) once the system is up.
pub const LAB_SHELL_UNIT: &str = "lab-shell.service";
/// The lab's boot-time load: `kexec -s -p` of the lab's capture kernel, as a distribution's
/// kdump service runs it before the agent's unit.
pub const LAB_LOAD_UNIT: &str = "lab-kdump-load.service";
/// The kernel parameter that boots into the agent's `WantedBy=` target (Debian's
/// `default.target` is a symlink, which the image cannot carry).
pub const SYSTEMD_BOOT_TARGET: &str = "systemd.unit=multi-user.target";

/// What Debian's tmpfiles.d (legacy.conf, var.conf) and fstab give a real root: /run/lock and
/// /var/tmp (the unit's `ReadWritePaths=` and `PrivateTmp=` need them), tracefs, and the
/// busybox applets the lab's shell uses.
const LAB_INIT: &str = "[Unit]
Description=lab: what a real root has that the initramfs lacks
DefaultDependencies=no
Before=sysinit.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/busybox --install -s
ExecStart=/bin/busybox mkdir -p /run/lock /var/tmp /sys/kernel/tracing
ExecStart=/bin/busybox mount -t tracefs tracefs /sys/kernel/tracing
";

/// The harness's shell on ttyS1, once the boot is done (its `@@READY` is the boot time).
const LAB_SHELL: &str = "[Unit]
Description=lab: the harness's shell on ttyS1 (xtask/src/lab/machine.rs)
Requires=lab-init.service
After=lab-init.service multi-user.target

[Service]
ExecStart=/bin/lab-runner
Restart=always
RestartSec=1
StandardInput=null
";

fn lab_load() -> String {
    format!(
        "[Unit]
Description=lab: the boot-time kdump load, as the distribution's kdump service does it
Requires=lab-init.service
After=lab-init.service
Before=kdump-agent.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart={GUEST_KEXEC} -s -p {GUEST_KERNEL} --initrd={GUEST_CAPTURE_INITRD} \"--append={CAPTURE_CMDLINE}\"
"
    )
}

/// Debian's own units the guest runs: every target and slice that is a file (not an alias),
/// and journald, where `journalctl -u kdump-agent` reads the agent's log.
fn debian_units(unit_dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in
        fs::read_dir(unit_dir).with_context(|| format!("reading {}", unit_dir.display()))?
    {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let wanted = name.ends_with(".target")
            || name.ends_with(".slice")
            || name.starts_with("systemd-journald");
        if wanted && entry.file_type()?.is_file() && !name.contains('@') {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

impl Image {
    /// Drops `guest` from the image (the systemd image's `/init` replaces busybox's).
    fn without(mut self, guest: &str) -> Self {
        self.files.retain(|(path, _, _)| path != guest);
        self
    }
}

pub fn with_systemd(image: Image, unpacked: &Unpacked, agent: &Path) -> Result<Image> {
    let root = paths::root();
    let systemd = unpacked.root(&SYSTEMD);
    let mut libs: Vec<&Path> = unpacked.roots(Arch::X86_64.userland().kexec_libs).collect();
    libs.extend(unpacked.roots(SYSTEMD_LIBS));
    libs.push(unpacked.root(&LIBSECCOMP));
    let mut image = image
        .without("/init")
        .elf_with_libs("/init", systemd.join("lib/systemd/systemd"), &libs)?
        .elf_with_libs("/bin/systemctl", systemd.join("bin/systemctl"), &libs)?
        .elf_with_libs("/bin/journalctl", systemd.join("bin/journalctl"), &libs)?
        .elf_with_libs(
            "/lib/systemd/systemd-journald",
            systemd.join("lib/systemd/systemd-journald"),
            &libs,
        )?;
    let unit_dir = systemd.join("lib/systemd/system");
    for name in debian_units(&unit_dir)? {
        image = image.host(
            &format!("{GUEST_UNIT_DIR}/{name}"),
            0o644,
            unit_dir.join(name),
        );
    }
    let argv = unit::shipped_exec_start(&root)?;
    let unit_name = Path::new(unit::UNIT)
        .file_name()
        .context("the unit has no file name")?
        .to_string_lossy()
        .into_owned();
    Ok(image
        .host(&argv[0], 0o755, agent.to_path_buf())
        .host(
            &format!("{PACKAGE_UNIT_DIR}/{unit_name}"),
            0o644,
            root.join(unit::UNIT),
        )
        .host("/etc/default/kdump-agent", 0o644, root.join(unit::DEFAULTS))
        .bytes(
            &format!("{GUEST_UNIT_DIR}/lab-init.service"),
            0o644,
            LAB_INIT,
        )
        .bytes(
            &format!("{GUEST_UNIT_DIR}/{LAB_SHELL_UNIT}"),
            0o644,
            LAB_SHELL,
        )
        .bytes(
            &format!("{GUEST_UNIT_DIR}/{LAB_LOAD_UNIT}"),
            0o644,
            lab_load(),
        )
        .bytes(
            "/etc/systemd/system/sysinit.target.d/lab.conf",
            0o644,
            "[Unit]\nWants=lab-init.service systemd-journald.service\n",
        )
        .bytes(
            "/etc/systemd/system/multi-user.target.d/lab.conf",
            0o644,
            format!("[Unit]\nWants={LAB_SHELL_UNIT} {LAB_LOAD_UNIT}\n"),
        )
        // Empty, as on a first boot: systemd makes a transient machine id.
        .bytes("/etc/machine-id", 0o444, ""))
}
