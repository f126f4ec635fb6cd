//! The guest's architecture: what the lab does differently on each, in one place (Debian's
//! package architecture, the library triplet, the QEMU binary and board, the serial ports).
use crate::support::agent::{STATIC_TARGETS, StaticTarget};

/// The architecture of a lab guest, its kernel and the .debs its image is made of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    X86_64,
    /// Debian's arm64, under `qemu-system-aarch64` (TCG): `-M virt`, direct kernel boot.
    Aarch64,
}

/// The capture kernel's parameters after its console: one CPU and reset devices, as
/// distributions' kdump does.
macro_rules! capture_params {
    () => {
        "irqpoll nr_cpus=1 reset_devices panic=-1 quiet"
    };
}

impl Arch {
    /// Debian's name for it (`dpkg --print-architecture`, the `.deb` file names).
    pub fn debian(self) -> &'static str {
        match self {
            Arch::X86_64 => "amd64",
            Arch::Aarch64 => "arm64",
        }
    }

    /// Its kernels' `uname -m` (what the probe table's `arches` name).
    pub fn uname_machine(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }

    /// The `e_machine` of its ELF files, crash headers included.
    pub fn elf_machine(self) -> u16 {
        match self {
            Arch::X86_64 => goblin::elf::header::EM_X86_64,
            Arch::Aarch64 => goblin::elf::header::EM_AARCH64,
        }
    }

    /// The static agent built for its guests.
    pub fn agent_target(self) -> &'static StaticTarget {
        STATIC_TARGETS
            .iter()
            .find(|t| t.e_machine == self.elf_machine())
            .expect("a static target for every lab architecture")
    }

    /// The multiarch library directory under `/usr/lib` (and where Debian's glibc puts its
    /// dynamic loader too).
    pub fn triplet(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64-linux-gnu",
            Arch::Aarch64 => "aarch64-linux-gnu",
        }
    }

    pub fn qemu(self) -> &'static str {
        match self {
            Arch::X86_64 => "qemu-system-x86_64",
            Arch::Aarch64 => "qemu-system-aarch64",
        }
    }

    /// The Debian package that has [`Arch::qemu`] (installed by `cargo xtask setup`).
    pub fn qemu_package(self) -> &'static str {
        match self {
            Arch::X86_64 => "qemu-system-x86",
            Arch::Aarch64 => "qemu-system-arm",
        }
    }

    /// The board and CPU. arm64: GICv3 and a Cortex-A57, with the kernel booted directly (no
    /// firmware: device tree, no ACPI; memory is hot-plugged through virtio-mem).
    pub fn qemu_machine(self) -> &'static [&'static str] {
        match self {
            Arch::X86_64 => &["-machine", "pc"],
            Arch::Aarch64 => &["-machine", "virt,gic-version=3", "-cpu", "cortex-a57"],
        }
    }

    /// The kernel console: the board's first UART (x86 COM1, arm64 virt's PL011).
    pub fn console(self) -> &'static str {
        match self {
            Arch::X86_64 => "ttyS0",
            Arch::Aarch64 => "ttyAMA0",
        }
    }

    /// QEMU arguments that attach chardev `id` as the guest's second serial port, the runner's
    /// ([`Arch::runner_port`]): COM2 on x86; on arm64 virt (one UART) a PCI 16550, which
    /// Debian's arm64 kernels drive with the built-in 8250_pci as their first 8250 port.
    pub fn runner_serial(self, id: &str) -> [String; 2] {
        match self {
            Arch::X86_64 => ["-serial".into(), format!("chardev:{id}")],
            Arch::Aarch64 => ["-device".into(), format!("pci-serial,chardev={id}")],
        }
    }

    /// The guest device of [`Arch::runner_serial`].
    pub fn runner_port(self) -> &'static str {
        match self {
            Arch::X86_64 => "/dev/ttyS1",
            Arch::Aarch64 => "/dev/ttyS0",
        }
    }

    /// `kexec -p` options the lab adds: arm64 kexec-tools' purgatory hashes every segment
    /// (SHA-256, the MMU off) before it enters the capture kernel, which took 50-55 s under
    /// TCG; `--no-checks` skips that hash and nothing else (the header is the same).
    pub fn lab_kexec_options(self) -> &'static str {
        match self {
            Arch::X86_64 => "",
            Arch::Aarch64 => " --no-checks",
        }
    }

    /// The capture kernel's command line.
    pub const fn capture_cmdline(self) -> &'static str {
        match self {
            Arch::X86_64 => concat!("console=ttyS0 ", capture_params!()),
            Arch::Aarch64 => concat!("console=ttyAMA0 ", capture_params!()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_capture_kernel_talks_on_the_console() {
        for arch in [Arch::X86_64, Arch::Aarch64] {
            let cmdline = arch.capture_cmdline();
            assert!(
                cmdline.starts_with(&format!("console={} ", arch.console())),
                "{cmdline}"
            );
            assert_ne!(format!("/dev/{}", arch.console()), arch.runner_port());
        }
    }
}
