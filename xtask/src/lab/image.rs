//! The guests' initramfs images (newc cpio), declared in one place: [`guest_image`].
use std::{
    collections::BTreeSet,
    fs,
    io::Write as _,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, bail};
use cpio::newc::{Builder, ModeFileType, trailer};

mod systemd;
pub use systemd::{LAB_LOAD_UNIT, SYSTEMD_BOOT_TARGET};

use super::{
    arch::Arch,
    machine::NIC,
    oci,
    packages::{
        self, KDUMP_TOOLS, LIBSECCOMP, Package, RUNC, SYSTEMD, SYSTEMD_LIBS, SYSVINIT_UTILS,
        Unpacked,
    },
};

const INIT: &str = include_str!("guest/init.sh");
const RUNNER: &str = include_str!("guest/runner.sh");
const NET_UP: &str = include_str!("guest/net-up.sh");
const VIRTIO_MEM_UP: &str = include_str!("guest/virtio-mem-up.sh");

/// Where the lab puts things in the guest (scenarios build their commands from these).
pub const GUEST_KERNEL: &str = "/boot/vmlinuz";
pub const GUEST_CAPTURE_INITRD: &str = "/boot/capture.cpio";
pub const GUEST_AGENT: &str = "/usr/sbin/kdump-agent";
pub const GUEST_KEXEC: &str = "/usr/sbin/kexec";
/// The x86_64 capture kernel's parameters (see [`Arch::capture_cmdline`]).
pub const CAPTURE_CMDLINE: &str = Arch::X86_64.capture_cmdline();
/// Names the serial port the runner serves (`guest/runner.sh` reads it).
const GUEST_RUNNER_PORT: &str = "/etc/lab-runner-port";
/// Brings up the guest's NIC (a networked kernel's image only; see `guest/net-up.sh`).
pub const GUEST_NET_UP: &str = "/bin/lab-net-up";
/// Loads the virtio-mem driver and waits until it drives the device (see `guest/virtio-mem-up.sh`).
pub const GUEST_VIRTIO_MEM_UP: &str = "/bin/lab-virtio-mem-up";
/// The virtio-mem driver and its dependencies, with `order` (the first kernel's image only).
const GUEST_VIRTIO_MEM_MODULES: &str = "/lib/modules/virtio-mem";
/// Debian's runc (the `deployed-*` images only).
pub const GUEST_RUNC: &str = "/usr/sbin/runc";
/// The DaemonSet's container as an OCI bundle: `config.json` generated from
/// `deploy/daemonset.yaml`, `rootfs/` laid out from `deploy/Containerfile`.
pub const GUEST_POD_BUNDLE: &str = "/var/lib/kdump-lab/pod";
/// The same container under `RuntimeDefault`, its process replaced by one `kexec -s -p` (the
/// host's kexec, run from the host root the pod mounts at /host).
pub const GUEST_RUNTIME_DEFAULT_BUNDLE: &str = "/var/lib/kdump-lab/pod-runtime-default";
/// The pod's config with one privilege removed, one bundle each (`cap-SYS_BOOT`,
/// `mount-host-proc`), and in a pod network namespace with memory uevents as its only event
/// source (`uevent-netns`), sharing the pod's rootfs.
pub const GUEST_VARIANT_BUNDLES: &str = "/var/lib/kdump-lab/variants";
/// The pod's container id under runc.
pub const GUEST_POD_ID: &str = "kdump-agent";

/// The guest command that prints the agent's /metrics: while the DaemonSet's pod runs, fetched
/// inside the pod's network namespace (where a CNI would route the scrape to it), else on the
/// guest's loopback.
pub fn guest_metrics() -> String {
    format!(
        "pid=$({GUEST_RUNC} state {GUEST_POD_ID} 2>/dev/null | sed -n 's/.*\"pid\": *\\([1-9][0-9]*\\).*/\\1/p'); ${{pid:+nsenter -t $pid -n}} wget -q -O - http://127.0.0.1:10864/metrics"
    )
}
/// What the kubelet does on the node before the pod starts (the manifest's hostPath types).
pub const GUEST_HOST_PATHS: &str = "/bin/lab-host-paths";
/// The node name the generated config gives the pod (`spec.nodeName`).
pub const POD_NODE: &str = "lab-node";
/// The NIC driver and its dependencies, with `order`, the order to load them in.
const GUEST_MODULES: &str = "/lib/modules/lab";

/// A Debian kernel package and the files the lab uses from it.
#[derive(Clone, Copy, Debug)]
pub struct Kernel {
    /// The package with the kernel image.
    pub package: Package,
    /// Its architecture, which every other package of its image shares.
    pub arch: Arch,
    pub layout: Layout,
    /// `uname -r`, e.g. `6.1.0-47-amd64`.
    pub release: &'static str,
    /// Its image carries the driver of [`NIC`], so its guests can be networked.
    pub networked: bool,
    /// Its image carries the DaemonSet's pod: runc, the bundles, kdump-tools (`deployed-*`).
    pub pod: bool,
    /// Its image carries the virtio-mem driver ([`GUEST_VIRTIO_MEM_UP`] loads it).
    pub virtio_mem: bool,
    /// Its image boots Debian's systemd as PID 1 with the packages' unit installed
    /// (`systemd-*`; see `image/systemd.rs`).
    pub systemd: bool,
}

/// Where a kernel's files are in its packages.
#[derive(Clone, Copy, Debug)]
pub enum Layout {
    /// Debian 12 and 13: one `linux-image-*` package with `boot/vmlinuz-<release>`,
    /// `boot/config-<release>` and `lib/modules/<release>/`.
    Image,
    /// Debian 14: `usr/lib/modules/<release>/vmlinuz` in `linux-binary-*`, the config beside it
    /// in `base` (`linux-base-*`), the modules in `linux-modules-*` (not fetched).
    Split { base: Package },
}

pub const KERNEL_6_1: Kernel = Kernel {
    package: packages::LINUX_6_1,
    arch: Arch::X86_64,
    layout: Layout::Image,
    release: "6.1.0-47-amd64",
    networked: true,
    pod: false,
    virtio_mem: true,
    systemd: false,
};
/// Not networked: no scenario needs it.
pub const KERNEL_6_12: Kernel = Kernel {
    package: packages::LINUX_6_12,
    arch: Arch::X86_64,
    layout: Layout::Image,
    release: "6.12.117+deb13-amd64",
    networked: false,
    pod: false,
    virtio_mem: true,
    systemd: false,
};
/// Debian unstable's kernel (`CONFIG_CRASH_HOTPLUG=y`). Not networked: its modules are in a
/// third package the lab does not fetch.
pub const KERNEL_7_2: Kernel = Kernel {
    package: packages::LINUX_7_2,
    arch: Arch::X86_64,
    layout: Layout::Split {
        base: packages::LINUX_7_2_BASE,
    },
    release: "7.2.13+deb14-amd64",
    networked: false,
    pod: false,
    // virtio_mem.ko is in linux-modules-*, which the lab does not fetch.
    virtio_mem: false,
    systemd: false,
};
/// The arm64 builds, not networked.
/// 6.1 needs the virtio-pci modules under virtio_mem; 6.12 has virtio_pci built in.
pub const KERNEL_6_1_ARM64: Kernel = Kernel {
    package: packages::LINUX_6_1_ARM64,
    arch: Arch::Aarch64,
    release: "6.1.0-47-arm64",
    ..KERNEL_6_1
};
pub const KERNEL_6_12_ARM64: Kernel = Kernel {
    package: packages::LINUX_6_12_ARM64,
    arch: Arch::Aarch64,
    release: "6.12.117+deb13-arm64",
    ..KERNEL_6_12
};
/// The kernels with the pod in their image; other guests stay lean.
pub const KERNEL_6_1_POD: Kernel = Kernel {
    pod: true,
    ..KERNEL_6_1
};
pub const KERNEL_6_12_POD: Kernel = Kernel {
    pod: true,
    ..KERNEL_6_12
};
/// 6.1 with systemd as PID 1 and the agent installed as the packages install it.
pub const KERNEL_6_1_SYSTEMD: Kernel = Kernel {
    systemd: true,
    ..KERNEL_6_1
};

impl Kernel {
    /// The name of its image: one per release, and one more for the pod's or systemd's extras.
    pub fn image_name(&self) -> String {
        let pod = if self.pod { "-deployed" } else { "" };
        let systemd = if self.systemd { "-systemd" } else { "" };
        format!("{}{pod}{systemd}", self.release)
    }

    pub fn vmlinuz(&self, unpacked: &Unpacked) -> PathBuf {
        let root = unpacked.root(&self.package);
        match self.layout {
            Layout::Image => root.join(format!("boot/vmlinuz-{}", self.release)),
            Layout::Split { .. } => root.join(format!("usr/lib/modules/{}/vmlinuz", self.release)),
        }
    }

    /// The kernel's config, which the agent reads to learn what the kernel supports.
    pub fn config(&self, unpacked: &Unpacked) -> PathBuf {
        match self.layout {
            Layout::Image => unpacked
                .root(&self.package)
                .join(format!("boot/config-{}", self.release)),
            Layout::Split { base } => unpacked
                .root(&base)
                .join(format!("usr/lib/modules/{}/config", self.release)),
        }
    }

    /// Where the guest has the config: where the package installs it.
    fn guest_config(&self) -> String {
        match self.layout {
            Layout::Image => format!("/boot/config-{}", self.release),
            Layout::Split { .. } => format!("/usr/lib/modules/{}/config", self.release),
        }
    }

    /// Every package the lab takes this kernel's files from.
    fn packages(&self) -> Vec<Package> {
        match self.layout {
            Layout::Image => vec![self.package],
            Layout::Split { base } => vec![self.package, base],
        }
    }

    /// The module `name` and the modules it needs (each `.modinfo`'s `depends=`), dependencies
    /// first, as (module name, uncompressed bytes). The package has no modules.dep (depmod
    /// writes it at install time), so files are found through its `modules.order`; trixie's
    /// merged /usr puts them under usr/lib/modules.
    fn modules_with_deps(
        &self,
        unpacked: &Unpacked,
        names: &[&str],
    ) -> Result<Vec<(String, Vec<u8>)>> {
        if let Layout::Split { .. } = self.layout {
            bail!(
                "{}: its modules are in linux-modules-*, which the lab does not fetch",
                self.release
            );
        }
        let root = unpacked.root(&self.package);
        let modules = format!("lib/modules/{}", self.release);
        let dir = [root.join(&modules), root.join("usr").join(&modules)]
            .into_iter()
            .find(|d| d.is_dir())
            .with_context(|| format!("{}: no {modules} in the package", root.display()))?;
        let order_path = dir.join("modules.order");
        let order = fs::read_to_string(&order_path)
            .with_context(|| format!("reading {}", order_path.display()))?;
        let builtin_path = dir.join("modules.builtin");
        let builtin = fs::read_to_string(&builtin_path)
            .with_context(|| format!("reading {}", builtin_path.display()))?;
        let modules = Modules {
            dir: &dir,
            order: &order,
            builtin: &builtin,
        };
        let mut loaded = Vec::new();
        for name in names {
            modules.add(name, &mut Vec::new(), &mut loaded)?;
        }
        Ok(loaded)
    }
}

/// A kernel package's modules: its directory, `modules.order` and `modules.builtin`.
struct Modules<'a> {
    dir: &'a Path,
    order: &'a str,
    builtin: &'a str,
}

/// The line of a `modules.order` or `modules.builtin` that names module `name` (module names
/// use `_` where file names may use `-`).
fn module_line<'a>(list: &'a str, name: &str) -> Option<&'a str> {
    list.lines().map(str::trim).find(|l| {
        l.rsplit('/')
            .next()
            .and_then(|f| f.strip_suffix(".ko"))
            .is_some_and(|f| f.replace('-', "_") == name)
    })
}

impl Modules<'_> {
    /// Appends `name` to `loaded` after its dependencies, unless it is built in; `chain` is the
    /// path from the module asked for (a cycle is an error rather than endless recursion).
    fn add(
        &self,
        name: &str,
        chain: &mut Vec<String>,
        loaded: &mut Vec<(String, Vec<u8>)>,
    ) -> Result<()> {
        if loaded.iter().any(|(n, _)| n == name) {
            return Ok(());
        }
        if chain.iter().any(|n| n == name) {
            bail!("module dependency cycle: {} -> {name}", chain.join(" -> "));
        }
        let Some(relative) = module_line(self.order, name) else {
            if module_line(self.builtin, name).is_some() {
                return Ok(());
            }
            bail!(
                "module {name}: neither in {0}/modules.order nor in {0}/modules.builtin",
                self.dir.display()
            );
        };
        let path = self.dir.join(relative);
        let data = read_module(&path).with_context(|| format!("module {name}"))?;
        chain.push(name.to_owned());
        for dep in module_depends(&data).with_context(|| format!("module {}", path.display()))? {
            self.add(&dep, chain, loaded)?;
        }
        chain.pop();
        loaded.push((name.to_owned(), data));
        Ok(())
    }
}

/// A module as busybox `insmod` takes it: `path` itself, or `path.xz` (6.12 compresses every
/// module) decompressed by `xz`, which busybox's `init_module` cannot do.
fn read_module(path: &Path) -> Result<Vec<u8>> {
    if path.is_file() {
        return fs::read(path).with_context(|| format!("reading {}", path.display()));
    }
    let xz = path.with_extension("ko.xz");
    let out = std::process::Command::new("xz")
        .arg("-dc")
        .arg(&xz)
        .output()
        .with_context(|| {
            format!(
                "xz -dc {}: cannot start xz (apt-get install xz-utils)",
                xz.display()
            )
        })?;
    if !out.status.success() {
        bail!(
            "xz -dc {}: {}",
            xz.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out.stdout)
}

/// The module names in a kernel module's `.modinfo` `depends=` entry.
fn module_depends(data: &[u8]) -> Result<Vec<String>> {
    let elf = goblin::elf::Elf::parse(data).context("not an ELF file")?;
    let modinfo = elf
        .section_headers
        .iter()
        .find(|sh| elf.shdr_strtab.get_at(sh.sh_name) == Some(".modinfo"))
        .context("no .modinfo section")?;
    let bytes = usize::try_from(modinfo.sh_offset)
        .ok()
        .zip(usize::try_from(modinfo.sh_size).ok())
        .and_then(|(offset, size)| data.get(offset..offset.checked_add(size)?))
        .context(".modinfo lies outside the file")?;
    Ok(bytes
        .split(|&b| b == 0)
        .filter_map(|field| field.strip_prefix(b"depends="))
        .flat_map(|list| list.split(|&b| b == b','))
        .filter(|dep| !dep.is_empty())
        .map(|dep| String::from_utf8_lossy(dep).into_owned())
        .collect())
}

/// Every package an image takes files from.
pub fn packages_for(kernel: &Kernel) -> Vec<Package> {
    let mut all = kernel.packages();
    let user = kernel.arch.userland();
    all.extend([user.busybox, user.kexec_tools, user.util_linux]);
    all.extend_from_slice(user.kexec_libs);
    if kernel.pod {
        all.extend([RUNC, LIBSECCOMP, KDUMP_TOOLS, SYSVINIT_UTILS]);
    }
    if kernel.systemd {
        all.extend([SYSTEMD, LIBSECCOMP]);
        all.extend_from_slice(SYSTEMD_LIBS);
    }
    all
}

/// One file of an image.
enum Content {
    Host(PathBuf),
    Bytes(Vec<u8>),
}

/// A list of (guest path, mode, content) for one architecture; parent directories are added
/// when written.
pub struct Image {
    arch: Arch,
    files: Vec<(String, u32, Content)>,
}

impl Image {
    fn new(arch: Arch) -> Self {
        Self {
            arch,
            files: Vec::new(),
        }
    }

    fn host(mut self, guest: &str, mode: u32, host: PathBuf) -> Self {
        self.files
            .push((guest.to_owned(), mode, Content::Host(host)));
        self
    }

    fn bytes(mut self, guest: &str, mode: u32, bytes: impl Into<Vec<u8>>) -> Self {
        self.files
            .push((guest.to_owned(), mode, Content::Bytes(bytes.into())));
        self
    }

    /// An ELF executable plus its interpreter and DT_NEEDED closure, found in `libs`' roots.
    fn elf_with_libs(mut self, guest: &str, host: PathBuf, libs: &[&Path]) -> Result<Self> {
        let mut queue = vec![host.clone()];
        let mut seen = BTreeSet::new();
        self = self.host(guest, 0o755, host);
        while let Some(object) = queue.pop() {
            let data =
                fs::read(&object).with_context(|| format!("reading {}", object.display()))?;
            let elf = goblin::elf::Elf::parse(&data)
                .with_context(|| format!("{}: not an ELF file", object.display()))?;
            if let Some(interp) = elf.interpreter
                && seen.insert(interp.to_owned())
            {
                let name = interp.rsplit('/').next().unwrap_or(interp);
                let found = find_library(libs, self.arch, name)?;
                self = self.host(interp, 0o755, found);
            }
            for needed in elf.libraries {
                if seen.insert(needed.to_owned()) {
                    let found = find_library(libs, self.arch, needed)?;
                    queue.push(found.clone());
                    let guest = format!("/usr/lib/{}/{needed}", self.arch.triplet());
                    self = self.host(&guest, 0o755, found);
                }
            }
        }
        Ok(self)
    }

    /// Writes the newc archive; returns its size in bytes.
    pub fn write(&self, to: &Path) -> Result<u64> {
        let bytes = self.to_cpio()?;
        let tmp = to.with_extension("tmp");
        fs::write(&tmp, &bytes).with_context(|| format!("writing {}", tmp.display()))?;
        fs::rename(&tmp, to).with_context(|| format!("renaming {}", tmp.display()))?;
        Ok(bytes.len() as u64)
    }

    fn to_cpio(&self) -> Result<Vec<u8>> {
        let mut dirs = BTreeSet::new();
        for (path, _, _) in &self.files {
            let mut parent = Path::new(path.trim_start_matches('/')).parent();
            while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
                dirs.insert(p.to_string_lossy().into_owned());
                parent = p.parent();
            }
        }
        for d in [
            "proc", "sys", "dev", "tmp", "bin", "sbin", "usr/bin", "usr/sbin",
        ] {
            dirs.insert(d.to_owned());
        }
        let mut out = Vec::new();
        let mut ino = 1;
        // BTreeSet order puts every parent before its children.
        for dir in &dirs {
            out = Builder::new(dir)
                .ino(ino)
                .mode(0o755)
                .set_mode_file_type(ModeFileType::Directory)
                .nlink(2)
                .write(out, 0)
                .finish()?;
            ino += 1;
        }
        for (path, mode, content) in &self.files {
            let data = match content {
                Content::Host(host) => {
                    fs::read(host).with_context(|| format!("reading {}", host.display()))?
                }
                Content::Bytes(b) => b.clone(),
            };
            let size = u32::try_from(data.len())
                .with_context(|| format!("{path}: too large for a cpio entry"))?;
            let mut w = Builder::new(path.trim_start_matches('/'))
                .ino(ino)
                .mode(*mode)
                .set_mode_file_type(ModeFileType::Regular)
                .write(out, size);
            w.write_all(&data)?;
            out = w.finish()?;
            ino += 1;
        }
        Ok(trailer(out)?)
    }
}

fn find_library(roots: &[&Path], arch: Arch, name: &str) -> Result<PathBuf> {
    for root in roots {
        // The last: systemd's RUNPATH, where libsystemd-shared is.
        for dir in ["usr/lib/{}", "lib/{}", "usr/lib/{}/systemd"] {
            let candidate = root.join(dir.replace("{}", arch.triplet())).join(name);
            if candidate.exists() {
                return Ok(candidate);
            }
        }
    }
    bail!(
        "{name}: not found in the {} library packages (add its package to the Userland's kexec_libs, or SYSTEMD_LIBS for systemd's)",
        arch.debian()
    )
}

/// The capture kernel's initramfs: busybox and the runner, which serves /proc/vmcore.
pub fn capture_image(arch: Arch, unpacked: &Unpacked) -> Image {
    Image::new(arch)
        .host(
            "/bin/busybox",
            0o755,
            unpacked.root(&arch.userland().busybox).join("bin/busybox"),
        )
        .bytes("/init", 0o755, INIT)
        .bytes("/bin/lab-runner", 0o755, RUNNER)
        .bytes(
            GUEST_RUNNER_PORT,
            0o644,
            format!("{}\n", arch.runner_port()),
        )
}

/// The first kernel's initramfs: the capture image's tools plus kexec, the agent built for the
/// kernel's architecture, and the capture kernel (the same vmlinuz) with the capture initramfs.
pub fn guest_image(kernel: &Kernel, unpacked: &Unpacked, agent: &Path) -> Result<Image> {
    let user = kernel.arch.userland();
    let capture = capture_image(kernel.arch, unpacked).to_cpio()?;
    let libs: Vec<&Path> = unpacked.roots(user.kexec_libs).collect();
    let image = capture_image(kernel.arch, unpacked)
        .elf_with_libs(
            GUEST_KEXEC,
            unpacked.root(&user.kexec_tools).join("usr/sbin/kexec"),
            &libs,
        )?
        .elf_with_libs(
            "/usr/bin/flock",
            unpacked.root(&user.util_linux).join("usr/bin/flock"),
            &libs,
        )?;
    let image = image
        .host(GUEST_AGENT, 0o755, agent.to_path_buf())
        .host(GUEST_KERNEL, 0o644, kernel.vmlinuz(unpacked))
        .host(&kernel.guest_config(), 0o644, kernel.config(unpacked))
        .bytes(GUEST_CAPTURE_INITRD, 0o644, capture);
    let image = if kernel.pod {
        with_pod(image, unpacked, agent)?
    } else {
        image
    };
    let image = if kernel.systemd {
        systemd::with_systemd(image, unpacked, agent)?
    } else {
        image
    };
    let image = if kernel.virtio_mem {
        // virtio_pci is the device's transport, not a dependency in virtio_mem's .modinfo.
        let modules = kernel.modules_with_deps(unpacked, &["virtio_pci", "virtio_mem"])?;
        with_modules(image, GUEST_VIRTIO_MEM_MODULES, modules).bytes(
            GUEST_VIRTIO_MEM_UP,
            0o755,
            VIRTIO_MEM_UP,
        )
    } else {
        image
    };
    if !kernel.networked {
        return Ok(image);
    }
    let modules = kernel.modules_with_deps(unpacked, &[NIC])?;
    Ok(with_modules(image, GUEST_MODULES, modules).bytes(GUEST_NET_UP, 0o755, NET_UP))
}

/// `modules` as `dir/NAME.ko`, with `dir/order` listing them in the order to load them.
fn with_modules(mut image: Image, dir: &str, modules: Vec<(String, Vec<u8>)>) -> Image {
    let order: String = modules
        .iter()
        .map(|(name, _)| format!("{name}\n"))
        .collect();
    image = image.bytes(&format!("{dir}/order"), 0o644, order);
    for (name, data) in modules {
        image = image.bytes(&format!("{dir}/{name}.ko"), 0o644, data);
    }
    image
}

/// The pod's extras: Debian's runc with the libraries it loads, kdump-tools' `kdump-config`,
/// the container's root filesystem laid out from `deploy/Containerfile` (its `COPY`s taken
/// from the build context it names, the musl release directory of the same agent binary the
/// guest runs; no image builder in between), the OCI configs generated from
/// `deploy/daemonset.yaml`, and the kubelet's hostPath set-up.
fn with_pod(image: Image, unpacked: &Unpacked, agent: &Path) -> Result<Image> {
    let root = crate::paths::root();
    let mut libs: Vec<&Path> = unpacked.roots(Arch::X86_64.userland().kexec_libs).collect();
    libs.push(unpacked.root(&LIBSECCOMP));
    let mut image = image
        .elf_with_libs(
            GUEST_RUNC,
            unpacked.root(&RUNC).join("usr/sbin/runc"),
            &libs,
        )?
        .host(
            "/usr/sbin/kdump-config",
            0o755,
            unpacked.root(&KDUMP_TOOLS).join("usr/sbin/kdump-config"),
        )
        .host(
            "/etc/kdump/sysctl.conf",
            0o644,
            unpacked.root(&KDUMP_TOOLS).join("etc/kdump/sysctl.conf"),
        )
        .host(
            "/lib/lsb/init-functions",
            0o644,
            unpacked
                .root(&SYSVINIT_UTILS)
                .join("lib/lsb/init-functions"),
        );
    let containerfile = root.join("deploy/Containerfile");
    let container = oci::container_image(
        &fs::read_to_string(&containerfile)
            .with_context(|| format!("reading {}", containerfile.display()))?,
    )?;
    let context = agent
        .parent()
        .context("the agent binary has no directory")?;
    for (src, dst) in &container.copies {
        image = image.host(
            &format!("{GUEST_POD_BUNDLE}/rootfs{dst}"),
            0o755,
            context.join(src),
        );
    }
    let node = oci::Node {
        name: POD_NODE,
        entrypoint: &container.entrypoint,
    };
    let pod = oci::from_repo(&root, &node, None)?;
    let mut probe = oci::from_repo(
        &root,
        &node,
        Some(serde_json::json!({"type": "RuntimeDefault"})),
    )?;
    probe["root"]["path"] = format!("{GUEST_POD_BUNDLE}/rootfs").into();
    probe["process"]["args"] = serde_json::json!([
        "/host/lib64/ld-linux-x86-64.so.2",
        "--library-path",
        "/host/usr/lib/x86_64-linux-gnu",
        format!("/host{GUEST_KEXEC}"),
        "-s",
        "-p",
        format!("/host{GUEST_KERNEL}"),
        format!("--initrd=/host{GUEST_CAPTURE_INITRD}"),
        format!("--append={CAPTURE_CMDLINE}"),
    ]);
    let ds = oci::daemonset(&fs::read_to_string(root.join("deploy/daemonset.yaml"))?)?;
    for (name, variant) in least_privilege_variants(&ds)? {
        let mut config = oci::config_in_repo(&root, &variant, &node)?;
        config["root"]["path"] = format!("{GUEST_POD_BUNDLE}/rootfs").into();
        image = image.bytes(
            &format!("{GUEST_VARIANT_BUNDLES}/{name}/config.json"),
            0o644,
            serde_json::to_vec_pretty(&config)?,
        );
    }
    Ok(image
        .bytes(
            &format!("{GUEST_POD_BUNDLE}/config.json"),
            0o644,
            serde_json::to_vec_pretty(&pod)?,
        )
        .bytes(
            &format!("{GUEST_RUNTIME_DEFAULT_BUNDLE}/config.json"),
            0o644,
            serde_json::to_vec_pretty(&probe)?,
        )
        .bytes(
            GUEST_HOST_PATHS,
            0o755,
            format!(
                "#!/bin/sh\n# Generated from deploy/daemonset.yaml: the kubelet's hostPath set-up.\nset -e\n{}",
                oci::host_paths(&ds)?
            ),
        ))
}

/// The DaemonSet with each capability, then each mount, removed alone, and in a pod network
/// namespace: (bundle name, DaemonSet).
pub fn least_privilege_variants(
    ds: &serde_json::Value,
) -> Result<Vec<(String, serde_json::Value)>> {
    let (caps, mounts) = oci::privileges(ds);
    let mut out = Vec::new();
    for cap in caps {
        out.push((format!("cap-{cap}"), oci::without_capability(ds, &cap)?));
    }
    for mount in mounts {
        out.push((format!("mount-{mount}"), oci::without_mount(ds, &mount)?));
    }
    out.push((
        "uevent-netns".into(),
        oci::with_pod_network(ds, &["--event-source", "uevent"])?,
    ));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpio_has_parents_before_children_and_a_trailer() {
        let image = Image::new(Arch::X86_64).bytes("/usr/sbin/x", 0o755, "hi");
        let bytes = image.to_cpio().unwrap();
        let mut names = Vec::new();
        let mut rest = &bytes[..];
        loop {
            let reader = cpio::NewcReader::new(rest).unwrap();
            if reader.entry().is_trailer() {
                break;
            }
            names.push(reader.entry().name().to_owned());
            rest = reader.finish().unwrap();
        }
        let pos = |n: &str| names.iter().position(|x| x == n).unwrap();
        assert!(pos("usr") < pos("usr/sbin"));
        assert!(pos("usr/sbin") < pos("usr/sbin/x"));
        assert!(names.contains(&"proc".to_owned()));
    }
}
