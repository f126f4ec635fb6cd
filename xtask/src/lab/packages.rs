//! Pinned Debian packages for the guests, fetched with apt through a private source list.
//!
//! apt verifies every download (signed Release, hashed Packages); the cache keeps the .debs
//! and checks each one (size and SHA-256 from the private lists, `dpkg-deb --info`) before use,
//! so a partial or corrupt entry is fetched again. The system's apt configuration is only read.
use std::{
    fs,
    io::Read as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};
use kdump_agent::model::units::bytes;
use sha2::{Digest as _, Sha256};

use super::arch::Arch;
use crate::ui::Step;

/// Which Debian release a package comes from (all from the host's mirror).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Suite {
    Bookworm,
    Trixie,
    /// Debian unstable, for the newest kernel.
    Sid,
}

impl Suite {
    fn codename(self) -> &'static str {
        match self {
            Suite::Bookworm => "bookworm",
            Suite::Trixie => "trixie",
            Suite::Sid => "sid",
        }
    }
}

/// One private apt configuration: its directory under the cache, the suites it lists and the
/// architecture of their packages. The releases share one; sid, whose lists change daily, has
/// its own, so refreshing it never invalidates the releases' lists; each architecture other
/// than the host's has its own too, so adding one leaves the others' lists valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Lists {
    unstable: bool,
    arch: Arch,
}

impl Lists {
    fn of(package: &Package) -> Self {
        Self {
            unstable: package.suite == Suite::Sid,
            arch: package.arch,
        }
    }

    fn dir(self) -> String {
        let base = if self.unstable { "apt-sid" } else { "apt" };
        match self.arch {
            Arch::X86_64 => base.to_owned(),
            other => format!("{base}-{}", other.debian()),
        }
    }

    fn suites(self) -> &'static [Suite] {
        if self.unstable {
            &[Suite::Sid]
        } else {
            &[Suite::Bookworm, Suite::Trixie]
        }
    }

    /// The `[...]` options of its `deb` lines (the host's architecture needs none).
    fn options(self, keyring: &str) -> String {
        match self.arch {
            Arch::X86_64 => format!("signed-by={keyring}"),
            other => format!("arch={} signed-by={keyring}", other.debian()),
        }
    }

    fn describe(self) -> String {
        let names: Vec<&str> = self.suites().iter().map(|s| s.codename()).collect();
        format!("{} {}", names.join(" + "), self.arch.debian())
    }
}

/// One pinned `.deb`: name, exact version and architecture.
#[derive(Clone, Copy, Debug)]
pub struct Package {
    pub name: &'static str,
    pub version: &'static str,
    pub suite: Suite,
    pub arch: Arch,
}

impl Package {
    /// The same package: name and architecture (the pins of one name differ per architecture).
    pub fn is(&self, other: &Package) -> bool {
        self.name == other.name && self.arch == other.arch
    }
}

/// An amd64 package.
const fn pkg(name: &'static str, version: &'static str, suite: Suite) -> Package {
    Package {
        name,
        version,
        suite,
        arch: Arch::X86_64,
    }
}

/// An arm64 package.
const fn arm64(name: &'static str, version: &'static str, suite: Suite) -> Package {
    Package {
        arch: Arch::Aarch64,
        ..pkg(name, version, suite)
    }
}

/// Debian 12's kernel: no in-kernel crash hotplug.
pub const LINUX_6_1: Package = pkg(
    "linux-image-6.1.0-47-amd64-unsigned",
    "6.1.170-3",
    Suite::Bookworm,
);
/// Debian 13's kernel: `CONFIG_CRASH_HOTPLUG=y`.
pub const LINUX_6_12: Package = pkg(
    "linux-image-6.12.117+deb13-amd64-unsigned",
    "6.12.117-1",
    Suite::Trixie,
);
/// Debian unstable's kernel, the newest: `linux-image-7.2.13+deb14-amd64` is only a meta
/// package; the kernel (`usr/lib/modules/<release>/vmlinuz`) is in `linux-binary-*`, its
/// config (`usr/lib/modules/<release>/config`) in `linux-base-*`.
pub const LINUX_7_2: Package = pkg("linux-binary-7.2.13+deb14-amd64", "7.2.13-1", Suite::Sid);
pub const LINUX_7_2_BASE: Package = pkg("linux-base-7.2.13+deb14-amd64", "7.2.13-1", Suite::Sid);
const BUSYBOX: Package = pkg("busybox-static", "1:1.35.0-4+deb12u1+b1", Suite::Bookworm);
/// kexec-tools 2.0.29 (has `--hotplug`), used with both kernels.
const KEXEC_TOOLS: Package = pkg("kexec-tools", "1:2.0.29-2+b2", Suite::Trixie);
/// util-linux for `flock(1)`, which busybox lacks: a scenario holds kdumpctl's lock with it.
const UTIL_LINUX: Package = pkg("util-linux", "2.41.5-0+deb13u1", Suite::Trixie);

/// Debian 12's OCI runtime, for the `deployed-*` guests: it runs the DaemonSet's container from
/// the config generated out of `deploy/daemonset.yaml`. Links libseccomp (and glibc).
pub const RUNC: Package = pkg("runc", "1.1.5+ds1-1+deb12u1", Suite::Bookworm);
pub const LIBSECCOMP: Package = pkg("libseccomp2", "2.5.4-1+deb12u1", Suite::Bookworm);
/// Debian 12's kdump-tools: `kdump-config load`, the distribution's own boot-time load (a
/// POSIX sh script; busybox runs it). It sources `/lib/lsb/init-functions`, from
/// sysvinit-utils.
pub const KDUMP_TOOLS: Package = pkg("kdump-tools", "1:1.8.1", Suite::Bookworm);
pub const SYSVINIT_UTILS: Package = pkg("sysvinit-utils", "3.06-4", Suite::Bookworm);

/// Debian 12's systemd, PID 1 of the `systemd-*` guests: it runs the packages' unit under
/// its own sandbox. `systemd` and `systemctl` link libsystemd-shared and these (their
/// DT_NEEDED closure, glibc from [`KEXEC_LIBS`]); libseccomp is [`LIBSECCOMP`].
pub const SYSTEMD: Package = pkg("systemd", SYSTEMD_VERSION, Suite::Bookworm);
const SYSTEMD_VERSION: &str = "252.39-1~deb12u2";
pub const SYSTEMD_LIBS: &[Package] = &[
    pkg("libsystemd-shared", SYSTEMD_VERSION, Suite::Bookworm),
    pkg("libacl1", "2.3.1-3", Suite::Bookworm),
    pkg("libapparmor1", "3.0.8-3", Suite::Bookworm),
    pkg("libaudit1", "1:3.0.9-1", Suite::Bookworm),
    pkg("libblkid1", "2.38.1-5+deb12u3", Suite::Bookworm),
    pkg("libcap-ng0", "0.8.3-1+b3", Suite::Bookworm),
    pkg("libcap2", "1:2.66-4+deb12u3+b1", Suite::Bookworm),
    pkg("libcrypt1", "1:4.4.33-2", Suite::Bookworm),
    pkg("libssl3", "3.0.20-1~deb12u2", Suite::Bookworm),
    pkg("libgcrypt20", "1.10.1-3+deb12u1", Suite::Bookworm),
    pkg("libgpg-error0", "1.46-1", Suite::Bookworm),
    pkg("libip4tc2", "1.8.9-2", Suite::Bookworm),
    pkg("libkmod2", "30+20221128-1", Suite::Bookworm),
    pkg("liblz4-1", "1.9.4-1", Suite::Bookworm),
    pkg("liblzma5", "5.4.1-1+deb12u1", Suite::Bookworm),
    pkg("libmount1", "2.38.1-5+deb12u3", Suite::Bookworm),
    pkg("libpam0g", "1.5.2-6+deb12u2", Suite::Bookworm),
    pkg("libpcre2-8-0", "10.42-1", Suite::Bookworm),
    pkg("libselinux1", "3.4-1+b6", Suite::Bookworm),
    pkg("libzstd1", "1.5.4+dfsg2-5", Suite::Bookworm),
];

const XEN: &str = "4.20.4+63-g7abfd2bce2-0+deb13u1";
/// The shared libraries trixie's `/usr/sbin/kexec` loads (its DT_NEEDED closure): glibc and
/// the Xen control libraries kexec links for Xen dom0 support.
const KEXEC_LIBS: &[Package] = &[
    pkg("libc6", "2.41-12+deb13u5", Suite::Trixie),
    pkg("libxenmisc4.20", XEN, Suite::Trixie),
    pkg("libxentoollog1", XEN, Suite::Trixie),
    pkg("libxentoolcore1", XEN, Suite::Trixie),
    pkg("libxencall1", XEN, Suite::Trixie),
    pkg("libxenevtchn1", XEN, Suite::Trixie),
    pkg("libxengnttab1", XEN, Suite::Trixie),
    pkg("libxenforeignmemory1", XEN, Suite::Trixie),
    pkg("libxendevicemodel1", XEN, Suite::Trixie),
];

/// The arm64 builds of the 6.1 and 6.12 kernels above: `# CONFIG_KEXEC_FILE is not set`, no
/// crash hotplug, `CONFIG_VIRTIO_MEM=m`.
pub const LINUX_6_1_ARM64: Package = arm64(
    "linux-image-6.1.0-47-arm64-unsigned",
    "6.1.170-3",
    Suite::Bookworm,
);
pub const LINUX_6_12_ARM64: Package = arm64(
    "linux-image-6.12.117+deb13-arm64-unsigned",
    "6.12.117-1",
    Suite::Trixie,
);

/// The user space of a guest image, per architecture: busybox, kexec-tools (Debian 13's
/// 2.0.29 on every kernel), util-linux for `flock(1)` (busybox lacks it; a scenario holds
/// kdumpctl's lock with it), and the shared libraries kexec loads.
pub struct Userland {
    pub busybox: Package,
    pub kexec_tools: Package,
    pub util_linux: Package,
    pub kexec_libs: &'static [Package],
}

pub const USERLAND_AMD64: Userland = Userland {
    busybox: BUSYBOX,
    kexec_tools: KEXEC_TOOLS,
    util_linux: UTIL_LINUX,
    kexec_libs: KEXEC_LIBS,
};

/// The same packages' arm64 builds (trixie's kexec-tools is a binNMU apart from amd64's); arm64
/// kexec links zlib too.
pub const USERLAND_ARM64: Userland = Userland {
    busybox: arm64("busybox-static", "1:1.35.0-4+deb12u1+b1", Suite::Bookworm),
    kexec_tools: arm64("kexec-tools", "1:2.0.29-2+b1", Suite::Trixie),
    util_linux: arm64("util-linux", "2.41.5-0+deb13u1", Suite::Trixie),
    kexec_libs: &[
        arm64("libc6", "2.41-12+deb13u5", Suite::Trixie),
        arm64("zlib1g", "1:1.3.dfsg+really1.3.1-1+deb13u1", Suite::Trixie),
        arm64("libxenmisc4.20", XEN, Suite::Trixie),
        arm64("libxentoollog1", XEN, Suite::Trixie),
        arm64("libxentoolcore1", XEN, Suite::Trixie),
        arm64("libxencall1", XEN, Suite::Trixie),
        arm64("libxenevtchn1", XEN, Suite::Trixie),
        arm64("libxengnttab1", XEN, Suite::Trixie),
        arm64("libxenforeignmemory1", XEN, Suite::Trixie),
        arm64("libxendevicemodel1", XEN, Suite::Trixie),
    ],
};

impl Arch {
    pub fn userland(self) -> &'static Userland {
        match self {
            Arch::X86_64 => &USERLAND_AMD64,
            Arch::Aarch64 => &USERLAND_ARM64,
        }
    }
}

/// Where fetched and unpacked packages live: `KDUMP_LAB_CACHE` or `target/lab-cache`.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("KDUMP_LAB_CACHE").map_or_else(
        || crate::paths::target_dir().join("lab-cache"),
        PathBuf::from,
    )
}

/// apt with a private source list, lists and package cache under the lab cache.
struct PrivateApt {
    dir: PathBuf,
    arch: Arch,
}

impl PrivateApt {
    fn new(cache: &Path, lists: Lists) -> Result<Self> {
        let dir = cache.join(lists.dir());
        for sub in ["lists/partial", "cache/archives/partial"] {
            let d = dir.join(sub);
            fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
        }
        let mirror = host_debian_mirror()?;
        let keyring = "/usr/share/keyrings/debian-archive-keyring.gpg";
        if !Path::new(keyring).is_file() {
            bail!("{keyring} is missing: install debian-archive-keyring");
        }
        let list: String = lists
            .suites()
            .iter()
            .map(|s| {
                let options = lists.options(keyring);
                format!("deb [{options}] {mirror} {} main\n", s.codename())
            })
            .collect();
        let path = dir.join("sources.list");
        if fs::read_to_string(&path).ok().as_deref() != Some(list.as_str()) {
            fs::write(&path, list).with_context(|| format!("writing {}", path.display()))?;
            // New sources: the old lists no longer describe them.
            let _ = fs::remove_file(dir.join("lists/updated"));
        }
        Ok(Self {
            dir,
            arch: lists.arch,
        })
    }

    fn command(&self, tool: &str) -> Command {
        let mut cmd = Command::new(tool);
        let d = &self.dir;
        for (key, value) in [
            ("Dir::Etc::SourceList", d.join("sources.list")),
            ("Dir::Etc::SourceParts", PathBuf::from("/dev/null")),
            ("Dir::State::Lists", d.join("lists")),
            ("Dir::Cache", d.join("cache")),
            // Container images often disable apt's binary caches; ours makes warm runs fast.
            ("Dir::Cache::pkgcache", d.join("cache/pkgcache.bin")),
            ("Dir::Cache::srcpkgcache", d.join("cache/srcpkgcache.bin")),
        ] {
            cmd.arg("-o").arg(format!("{key}={}", value.display()));
        }
        if self.arch != Arch::X86_64 {
            // Lists and downloads of that architecture only (the host's apt is amd64).
            let arch = self.arch.debian();
            cmd.arg("-o").arg(format!("APT::Architecture={arch}"));
            cmd.arg("-o").arg(format!("APT::Architectures::={arch}"));
        }
        // The cache is ours (root-owned when run as root): no drop to the `_apt` user.
        cmd.args(["-o", "APT::Sandbox::User=root", "-q"]);
        cmd
    }

    fn updated(&self) -> bool {
        self.dir.join("lists/updated").is_file()
    }

    fn update(&self) -> Result<()> {
        run(
            self.command("apt-get").arg("update"),
            "apt-get update (private lists)",
        )?;
        fs::write(self.dir.join("lists/updated"), "")?;
        Ok(())
    }

    /// Size and SHA-256 of each package as the signed lists give them (one apt-cache call);
    /// `None` for a pin the lists do not have.
    fn expected(&self, packages: &[Package]) -> Result<Vec<Option<(u64, String)>>> {
        let out = self
            .command("apt-cache")
            .arg("show")
            .args(packages.iter().map(|p| format!("{}={}", p.name, p.version)))
            .output()
            .context("apt-cache: cannot start")?;
        let text = String::from_utf8_lossy(&out.stdout);
        packages
            .iter()
            .map(|p| {
                let Some(stanza) = text.split("\n\n").find(|s| {
                    s.lines().any(|l| l == format!("Package: {}", p.name))
                        && s.lines().any(|l| l == format!("Version: {}", p.version))
                }) else {
                    return Ok(None);
                };
                let field = |name: &str| {
                    stanza
                        .lines()
                        .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
                };
                let (Some(size), Some(sha)) = (field("Size:"), field("SHA256:")) else {
                    return Ok(None);
                };
                let size = size
                    .parse()
                    .with_context(|| format!("apt-cache show {}: Size {size}", p.name))?;
                Ok(Some((size, sha)))
            })
            .collect()
    }
}

/// The host's Debian mirror, from the first `deb` entry in /etc/apt that names a Debian suite.
fn host_debian_mirror() -> Result<String> {
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(dir) = fs::read_dir("/etc/apt/sources.list.d") {
        let mut more: Vec<PathBuf> = dir.filter_map(|e| e.ok().map(|e| e.path())).collect();
        more.sort();
        files.extend(more);
    }
    for file in files {
        let name = file.to_string_lossy();
        if !(name.ends_with(".list") || name.ends_with(".sources")) {
            continue;
        }
        let Ok(text) = fs::read_to_string(&file) else {
            continue;
        };
        if let Some(uri) = debian_mirror_in(&text) {
            return Ok(uri);
        }
    }
    bail!(
        "no Debian mirror (a deb entry for bookworm/trixie) in /etc/apt/sources.list or /etc/apt/sources.list.d/"
    )
}

/// A mirror URI serving a main Debian suite, in one-line or deb822 syntax.
fn debian_mirror_in(text: &str) -> Option<String> {
    let is_debian = |suite: &str| {
        ["bookworm", "trixie"]
            .iter()
            .any(|s| suite == *s || suite == format!("{s}-updates"))
    };
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("deb ") {
            let words: Vec<&str> = rest
                .split_whitespace()
                .skip_while(|w| w.starts_with('['))
                .collect();
            if let [uri, suite, ..] = words[..]
                && is_debian(suite)
            {
                return Some(uri.trim_end_matches('/').to_owned());
            }
        }
    }
    for stanza in text.split("\n\n") {
        let field = |name: &str| {
            stanza
                .lines()
                .find_map(|l| l.trim().strip_prefix(name).map(str::trim))
        };
        if let (Some(uris), Some(suites)) = (field("URIs:"), field("Suites:"))
            && suites.split_whitespace().any(is_debian)
        {
            return uris
                .split_whitespace()
                .next()
                .map(|u| u.trim_end_matches('/').to_owned());
        }
    }
    None
}

/// Fetched and unpacked packages, by name.
pub struct Unpacked {
    roots: Vec<(Package, PathBuf)>,
}

impl Unpacked {
    /// The directory `dpkg-deb -x` unpacked `package` into.
    pub fn root(&self, package: &Package) -> &Path {
        self.roots
            .iter()
            .find(|(p, _)| p.is(package))
            .map(|(_, r)| r.as_path())
            .unwrap_or_else(|| panic!("package {} was not fetched", package.name))
    }

    pub fn roots<'a>(&'a self, packages: &'a [Package]) -> impl Iterator<Item = &'a Path> + 'a {
        packages.iter().map(|p| self.root(p))
    }
}

/// Makes every package present, verified and unpacked in the cache.
pub fn fetch(packages: &[Package]) -> Result<Unpacked> {
    let cache = cache_dir();
    let debs = cache.join("debs");
    fs::create_dir_all(&debs).with_context(|| format!("creating {}", debs.display()))?;
    let step = Step::start("debian packages");
    let mut fetched = 0;
    let mut roots = Vec::new();
    let mut every_lists: Vec<Lists> = Vec::new();
    for lists in packages.iter().map(Lists::of) {
        if !every_lists.contains(&lists) {
            every_lists.push(lists);
        }
    }
    for lists in every_lists {
        let wanted: Vec<Package> = packages
            .iter()
            .filter(|p| Lists::of(p) == lists)
            .copied()
            .collect();
        let apt = PrivateApt::new(&cache, lists)?;
        if !apt.updated() {
            step.progress(&format!(
                "apt-get update ({}, private lists)",
                lists.describe()
            ));
            apt.update()?;
        }
        let mut expected = apt.expected(&wanted)?;
        if expected.iter().any(Option::is_none) {
            // Lists may be older than a pin: refresh once, then give up loudly.
            apt.update()?;
            expected = apt.expected(&wanted)?;
        }
        for (package, found) in wanted.iter().zip(expected) {
            let (size, sha) = found.with_context(|| {
                format!(
                    "{}={} is not in {} on the mirror any more: update the pin in xtask/src/lab/packages.rs",
                    package.name,
                    package.version,
                    package.suite.codename()
                )
            })?;
            let deb = debs.join(format!(
                "{}_{}_{}.deb",
                package.name,
                package.version.replace(':', "%3a"),
                package.arch.debian()
            ));
            let fresh = !deb_is_intact(&deb, size, &sha)?;
            if fresh {
                step.progress(&format!(
                    "apt-get download {}={} ({})",
                    package.name,
                    package.version,
                    bytes(size)
                ));
                download(&apt, package, &deb)?;
                if !deb_is_intact(&deb, size, &sha)? {
                    bail!(
                        "{}: downloaded, but its size or SHA-256 does not match the signed lists",
                        deb.display()
                    );
                }
                fetched += 1;
            }
            roots.push((*package, unpack(&deb, &cache.join("root"), fresh)?));
        }
    }
    step.done(&format!(
        "{} packages ready, {fetched} downloaded, in {}",
        packages.len(),
        cache.display()
    ));
    Ok(Unpacked { roots })
}

/// True when `deb` exists with the expected size and hash and dpkg-deb can read it.
fn deb_is_intact(deb: &Path, size: u64, sha: &str) -> Result<bool> {
    let Ok(meta) = fs::metadata(deb) else {
        return Ok(false);
    };
    if meta.len() != size {
        return Ok(false);
    }
    let mut file = fs::File::open(deb).with_context(|| format!("opening {}", deb.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .with_context(|| format!("reading {}", deb.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let digest: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(digest == sha
        && Command::new("dpkg-deb")
            .arg("--info")
            .arg(deb)
            .output()
            .is_ok_and(|o| o.status.success()))
}

/// `apt-get download` into a scratch directory, then renamed into place.
fn download(apt: &PrivateApt, package: &Package, deb: &Path) -> Result<()> {
    let scratch = deb.with_extension("partial");
    let _ = fs::remove_dir_all(&scratch);
    fs::create_dir_all(&scratch)?;
    run(
        apt.command("apt-get")
            .arg("download")
            .arg(format!("{}={}", package.name, package.version))
            .current_dir(&scratch),
        &format!("apt-get download {}={}", package.name, package.version),
    )?;
    let got = fs::read_dir(&scratch)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .with_context(|| format!("apt-get download {}: no .deb written", package.name))?;
    fs::rename(&got, deb).with_context(|| format!("moving {} into the cache", got.display()))?;
    fs::remove_dir_all(&scratch)?;
    Ok(())
}

/// `dpkg-deb -x` once per .deb (again when `fresh`ly fetched); a stamp marks a complete unpack.
fn unpack(deb: &Path, into: &Path, fresh: bool) -> Result<PathBuf> {
    let stem = deb.file_stem().expect("a .deb file name");
    let root = into.join(stem);
    let stamp = root.join(".unpacked");
    if stamp.is_file() && !fresh {
        return Ok(root);
    }
    let _ = fs::remove_dir_all(&root);
    fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    run(
        Command::new("dpkg-deb").arg("-x").arg(deb).arg(&root),
        &format!("dpkg-deb -x {}", deb.display()),
    )?;
    fs::write(&stamp, "").with_context(|| format!("writing {}", stamp.display()))?;
    Ok(root)
}

/// Runs a command; on failure names it and prints its last lines of stderr.
fn run(cmd: &mut Command, what: &str) -> Result<()> {
    let out = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .with_context(|| format!("{what}: cannot start"))?;
    if !out.status.success() {
        let text = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = text.lines().rev().take(10).collect();
        for line in tail.iter().rev() {
            eprintln!("    {line}");
        }
        let full = text.contains("No space left");
        bail!(
            "{what} failed ({}){}",
            out.status,
            if full { ": the disk is full" } else { "" }
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_architecture_has_its_own_lists() {
        // The amd64 lists keep their directories and lines: adding arm64 invalidates nothing.
        assert_eq!(Lists::of(&LINUX_6_1).dir(), "apt");
        assert_eq!(Lists::of(&LINUX_7_2).dir(), "apt-sid");
        assert_eq!(Lists::of(&LINUX_6_1).options("K"), "signed-by=K");
        let arm64 = Lists::of(&LINUX_6_12_ARM64);
        assert_eq!(arm64.dir(), "apt-arm64");
        assert_eq!(arm64.options("K"), "arch=arm64 signed-by=K");
        assert_eq!(arm64, Lists::of(&USERLAND_ARM64.busybox));
        assert!(!USERLAND_ARM64.busybox.is(&USERLAND_AMD64.busybox));
        for user in [&USERLAND_AMD64, &USERLAND_ARM64] {
            let arch = user.busybox.arch;
            assert!(user.kexec_libs.iter().all(|p| p.arch == arch));
            assert_eq!(user.kexec_tools.arch, arch);
        }
    }

    #[test]
    fn finds_the_mirror_in_deb822_and_one_line_sources() {
        let deb822 = "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\nTypes: deb\nURIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\n";
        assert_eq!(
            debian_mirror_in(deb822).as_deref(),
            Some("http://deb.debian.org/debian")
        );
        let one_line = "deb https://example.org/x cloud main\ndeb [arch=amd64] http://m.example/debian/ trixie main\n";
        assert_eq!(
            debian_mirror_in(one_line).as_deref(),
            Some("http://m.example/debian")
        );
        assert_eq!(debian_mirror_in("deb http://x/ubuntu noble main\n"), None);
    }
}
