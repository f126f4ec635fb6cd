//! Baselines without the agent: what the kernel's own header says after RAM changes.
use std::time::Duration;

use anyhow::Result;
use kdump_agent::model::elfcorehdr::LoadPath;

use crate::lab::{
    guests::Boot,
    image::{GUEST_CAPTURE_INITRD, GUEST_KERNEL, KERNEL_6_1, KERNEL_6_12, KERNEL_7_2},
    machine::Memory,
    scenario::{CAPTURE_CMDLINE, Online, Run, Scenario},
};

/// The baselines, in `cargo xtask lab list` order.
pub const ALL: &[Scenario] = &[
    Scenario {
        name: "baseline-stale-6.1",
        about: "6.1, kexec -s -p at boot, +512 MiB DIMM onlined: the dump misses the DIMM",
        kernel: KERNEL_6_1,
        fixture: true,
        benchmark: false,
        body: baseline_stale_6_1,
    },
    Scenario {
        name: "baseline-stale-kexec-load-6.12",
        about: "6.12, kexec -c -p (kexec_load, no --hotplug), +512 MiB: stale",
        kernel: KERNEL_6_12,
        fixture: true,
        benchmark: false,
        body: baseline_stale_kexec_load,
    },
    Scenario {
        name: "baseline-kernel-managed-6.12",
        about: "6.12, kexec -s -p, +512 MiB: the kernel updates the header, dump whole",
        kernel: KERNEL_6_12,
        fixture: true,
        benchmark: false,
        body: baseline_kernel_managed,
    },
    Scenario {
        name: "baseline-stale-kexec-load-7.2",
        about: "7.2, kexec -c -p (kexec_load, no --hotplug), +512 MiB: stale",
        kernel: KERNEL_7_2,
        fixture: false,
        benchmark: false,
        body: baseline_stale_kexec_load,
    },
    Scenario {
        name: "baseline-kernel-managed-7.2",
        about: "7.2, kexec -s -p, +512 MiB: the kernel updates the header, dump whole",
        kernel: KERNEL_7_2,
        fixture: false,
        benchmark: false,
        body: baseline_kernel_managed,
    },
    Scenario {
        name: "baseline-kexec-load-hotplug-7.2",
        about: "7.2, kexec -c -p --hotplug (kexec_load, KEXEC_UPDATE_ELFCOREHDR), +512 MiB: the kernel updates it, dump whole",
        kernel: KERNEL_7_2,
        fixture: false,
        benchmark: false,
        body: baseline_kexec_load_hotplug,
    },
    Scenario {
        name: "baseline-hot-remove-6.12",
        about: "6.12, kexec -s -p, +512 MiB, offline, device_del, crash: what the header says",
        kernel: KERNEL_6_12,
        fixture: true,
        benchmark: false,
        body: baseline_hot_remove_6_12,
    },
    Scenario {
        name: "crashkernel-high-low-6.12",
        about: "6.12 with 5 GiB, crashkernel=256M,high + 64M,low, kexec -s -p, +512 MiB",
        kernel: KERNEL_6_12,
        fixture: true,
        benchmark: false,
        body: crashkernel_high_low_6_12,
    },
    Scenario {
        name: "several-dimms-6.1",
        about: "6.1, kexec -c -p, DIMMs of 128, 256 and 512 MiB onlined: the dump misses all",
        kernel: KERNEL_6_1,
        fixture: true,
        benchmark: false,
        body: several_dimms_6_1,
    },
];

fn baseline_stale_6_1(run: &mut Run) -> Result<()> {
    let mut m = run.boot(&Boot::default())?;
    run.load_kdump(&mut m, LoadPath::KexecFileLoad)?;
    let dimm = run.hot_add(&mut m, 512, Online::Write("online"))?;
    run.crash(&mut m)?;
    // 6.1 has no crash hotplug: the header still describes the boot RAM.
    run.expect(dimm.size, 0);
    Ok(())
}

fn baseline_stale_kexec_load(run: &mut Run) -> Result<()> {
    let mut m = run.boot(&Boot::default())?;
    run.load_kdump(&mut m, LoadPath::KexecLoad)?;
    run.check_crash_hotplug(&mut m, "0")?;
    let dimm = run.hot_add(&mut m, 512, Online::Auto)?;
    run.crash(&mut m)?;
    // kexec_load without --hotplug: the kernel may not touch a header it did not build.
    run.expect(dimm.size, 0);
    Ok(())
}

fn baseline_kernel_managed(run: &mut Run) -> Result<()> {
    let mut m = run.boot(&Boot::default())?;
    run.load_kdump(&mut m, LoadPath::KexecFileLoad)?;
    run.check_crash_hotplug(&mut m, "1")?;
    run.hot_add(&mut m, 512, Online::Auto)?;
    run.crash(&mut m)?;
    run.expect(0, 0);
    Ok(())
}

fn baseline_kexec_load_hotplug(run: &mut Run) -> Result<()> {
    let mut m = run.boot(&Boot::default())?;
    // kexec-tools' --hotplug: kexec_load with KEXEC_UPDATE_ELFCOREHDR, the header's segment sized
    // by crash_elfcorehdr_size and left out of purgatory's digest.
    let command = format!(
        "kexec -c -p --hotplug {GUEST_KERNEL} --initrd={GUEST_CAPTURE_INITRD} --append='{CAPTURE_CMDLINE}'"
    );
    run.load_kdump_with(&mut m, &command, LoadPath::KexecLoad)?;
    run.check_crash_hotplug(&mut m, "1")?;
    run.hot_add(&mut m, 512, Online::Auto)?;
    // The kernel rebuilt kexec-tools' header by its own rules (prepare_elf_headers: the low
    // 1 MiB left out), so the dump is judged as a kernel-built header.
    run.load = Some(LoadPath::KexecFileLoad);
    run.crash(&mut m)?;
    run.expect(0, 0);
    Ok(())
}

fn baseline_hot_remove_6_12(run: &mut Run) -> Result<()> {
    // Movable blocks can always be offlined (kernel allocations never land there).
    let boot = Boot {
        extra: "memhp_default_state=online_movable",
        ..Boot::default()
    };
    let mut m = run.boot(&boot)?;
    run.load_kdump(&mut m, LoadPath::KexecFileLoad)?;
    let dimm = run.hot_add(&mut m, 512, Online::Auto)?;
    m.set_blocks(&dimm, "offline")?;
    m.hot_remove_dimm(&dimm, Duration::from_secs(60))?;
    run.note("dimm_released", true);
    run.crash(&mut m)?;
    // x86 rebuilds the header at MEM_OFFLINE from the System RAM resources, which still hold
    // the offlined blocks then; removing the DIMM sends no memory notifier, so the header keeps
    // it: the dump has the whole DIMM in excess.
    run.expect(0, dimm.size);
    run.read_excess(&mut m)?;
    Ok(())
}

fn crashkernel_high_low_6_12(run: &mut Run) -> Result<()> {
    let boot = Boot {
        memory: Memory {
            boot_mib: 5120,
            slots: 4,
            max_mib: 8192,
        },
        crashkernel: "crashkernel=256M,high crashkernel=64M,low",
        ..Boot::default()
    };
    let mut m = run.boot(&boot)?;
    run.load_kdump(&mut m, LoadPath::KexecFileLoad)?;
    let reservations = m.sh("grep -c 'Crash kernel' /proc/iomem")?;
    run.check(
        reservations.trim() == "2",
        format!(
            "expected 2 crash kernel reservations, /proc/iomem has {}",
            reservations.trim()
        ),
    );
    run.hot_add(&mut m, 512, Online::Auto)?;
    run.crash(&mut m)?;
    run.expect(0, 0);
    Ok(())
}

fn several_dimms_6_1(run: &mut Run) -> Result<()> {
    let mut m = run.boot(&Boot::default())?;
    run.load_kdump(&mut m, LoadPath::KexecLoad)?;
    let mut added = 0;
    for mib in [128, 256, 512] {
        added += run.hot_add(&mut m, mib, Online::Write("online"))?.size;
    }
    run.crash(&mut m)?;
    run.expect(added, 0);
    Ok(())
}
