//! What a lab scenario is: a plain function over a [`Run`], ending in one JSON [`Report`].
//!
//! A scenario boots a kernel, loads kdump, changes RAM, crashes, and states what the dump
//! should miss; [`Run::crash`] measures it from the capture kernel's /proc/vmcore header with
//! the agent's own parser. The scenarios themselves are in `lab/scenarios/`.
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use kdump_agent::{
    model::{
        elfcorehdr::{
            ElfCoreHeader, HeaderError, LoadPath, NT_PRSTATUS, SegmentKind, diff, expected_ram,
            parse_notes,
        },
        iomem::Iomem,
        ranges::PhysRange,
    },
    observe::probe_table,
};
use serde::Serialize;
use serde_json::{Map, Value};

use super::{
    arch::Arch,
    guests::{Boot, Lab},
    image::{GUEST_AGENT, GUEST_CAPTURE_INITRD, GUEST_KERNEL, GUEST_VIRTIO_MEM_UP, Kernel},
    machine::{Dimm, Machine},
};

pub struct Scenario {
    pub name: &'static str,
    pub about: &'static str,
    pub kernel: Kernel,
    /// Its dump is written to agent/tests/fixtures/lab/ by `cargo xtask lab fixtures`.
    pub fixture: bool,
    /// Measures speed; `cargo xtask test` leaves it out (speed is measured, not asserted).
    pub benchmark: bool,
    pub body: fn(&mut Run) -> Result<()>,
}

/// Bytes in a MiB.
const MIB: u64 = 1 << 20;

/// What brings a hot-added DIMM's blocks online.
pub enum Online {
    /// The kernel does (6.12's default policy, or `memhp_default_state=`).
    Auto,
    /// The scenario writes this state to each block (6.1 leaves them offline).
    Write(&'static str),
}

/// One scenario's figures, printed as one JSON line.
#[derive(Serialize, Default)]
pub struct Report {
    pub scenario: String,
    pub pass: bool,
    pub kernel: String,
    pub load: Option<&'static str>,
    pub boot_seconds: Option<f64>,
    /// From QEMU start until `/sys/kernel/kexec_crash_loaded` reads 1.
    pub ready_seconds: Option<f64>,
    /// From the panic until the capture kernel's runner answers.
    pub capture_boot_seconds: Option<f64>,
    pub hotplugged_bytes: u64,
    /// The first kernel's System RAM just before the crash.
    pub system_ram_bytes: Option<u64>,
    /// Size of /proc/vmcore in the capture kernel.
    pub vmcore_bytes: Option<u64>,
    /// RAM `PT_LOAD`s of the capture kernel's header (inclusive ends).
    pub vmcore_ranges: Vec<PhysRange>,
    pub missing_bytes: Option<u64>,
    pub excess_bytes: Option<u64>,
    pub expect_missing_bytes: Option<u64>,
    pub expect_excess_bytes: Option<u64>,
    pub notes: Map<String, Value>,
    /// Every named check of this run and whether it held (a benchmark's JSON says which failed).
    pub checks: Map<String, Value>,
    pub failures: Vec<String>,
    pub seconds: f64,
    #[serde(skip)]
    pub fixture: Option<Fixture>,
}

/// What a fixture directory holds, straight from the guest.
pub struct Fixture {
    pub(super) iomem: String,
    pub(super) vmcore_head: Vec<u8>,
    pub(super) command: String,
}

/// A scenario in progress: the lab, the figures so far.
pub struct Run<'a> {
    pub(super) lab: &'a Lab,
    pub(super) scenario: &'a Scenario,
    pub(super) report: Report,
    boots: u32,
    pub(super) load: Option<LoadPath>,
    kexec_command: String,
    vmcore_header: Option<ElfCoreHeader>,
    excess: Vec<PhysRange>,
    /// Bytes the virtio-mem device has plugged now.
    virtio_mem_bytes: u64,
}

/// Capture kernel parameters (declared with the image, whose RuntimeDefault probe loads them).
pub use super::image::CAPTURE_CMDLINE;
/// The most of /proc/vmcore the lab copies back: the ELF header, program headers and notes.
pub const VMCORE_HEAD_BYTES: u64 = 64 * 1024;
/// /proc/vmcore pads its header and notes to a page: this much never holds the old memory.
const VMCORE_FIRST_PAGE: u64 = 4096;
const CRASH_TIMEOUT: Duration = Duration::from_secs(180);
/// How long the guest's virtio-mem driver may take to plug or unplug a resize.
const VIRTIO_MEM_TIMEOUT: Duration = Duration::from_secs(60);

impl Run<'_> {
    /// A first kernel that dies before its runner answers is booted once more: under TCG a
    /// Debian kernel rarely panics in early boot (seen once in ~100 boots, in sched_clock_cpu),
    /// before anything the scenario tests has run. The report notes it.
    pub fn boot(&mut self, boot: &Boot) -> Result<Machine> {
        let mut failed_boot = None;
        loop {
            self.boots += 1;
            let log = format!("{}-{}", self.scenario.name, self.boots);
            match self.lab.boot(&self.scenario.kernel, boot, &log) {
                Ok(m) => {
                    self.report.boot_seconds = Some(millis(m.elapsed()));
                    if let Some(first) = failed_boot {
                        self.note("first_boot_failed", first);
                    }
                    return Ok(m);
                }
                Err(e) if failed_boot.is_none() => {
                    let why = format!("{e:#}");
                    eprintln!("  boot failed, booting once more: {why}");
                    failed_boot = Some(why);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Loads the capture kernel (the same vmlinuz) with `kexec -s -p` or `kexec -c -p`.
    pub fn load_kdump(&mut self, m: &mut Machine, load: LoadPath) -> Result<()> {
        let command = self.kdump_command(load);
        self.load_kdump_with(m, &command, load)
    }

    /// The guest command that loads the capture kernel with `load`: `kexec -s -p` or
    /// `kexec -c -p`, with the lab's options for the scenario's architecture.
    pub fn kdump_command(&self, load: LoadPath) -> String {
        let syscall = match load {
            LoadPath::KexecFileLoad => "-s",
            // kexec-tools 2.0.29 may try kexec_file_load first without an explicit -c.
            LoadPath::KexecLoad => "-c",
        };
        let arch = self.scenario.kernel.arch;
        format!(
            "kexec {syscall} -p{} {GUEST_KERNEL} --initrd={GUEST_CAPTURE_INITRD} --append='{}'",
            arch.lab_kexec_options(),
            arch.capture_cmdline()
        )
    }

    /// Loads the capture kernel with the guest command `command` (a distribution's own loader),
    /// which loads it with `load`.
    pub fn load_kdump_with(
        &mut self,
        m: &mut Machine,
        command: &str,
        load: LoadPath,
    ) -> Result<()> {
        m.sh(command).context("loading the capture kernel")?;
        let loaded = m.sh("cat /sys/kernel/kexec_crash_loaded")?;
        if loaded.trim() != "1" {
            bail!(
                "`{command}` succeeded but kexec_crash_loaded is {}",
                loaded.trim()
            );
        }
        self.report.ready_seconds = Some(millis(m.elapsed()));
        self.report.load = Some(load.as_str());
        self.load = Some(load);
        self.kexec_command = command.to_owned();
        Ok(())
    }

    /// Starts `kdump-agent run ARGS` in the background and waits for its HTTP endpoint.
    pub fn start_agent(&mut self, m: &mut Machine, args: &str) -> Result<()> {
        self.start_agent_with(m, "", args)
    }

    /// [`Run::start_agent`] with environment assignments (`RUST_LOG=...`).
    pub fn start_agent_with(&mut self, m: &mut Machine, env: &str, args: &str) -> Result<()> {
        m.sh(&format!(
            "{env} {GUEST_AGENT} run {args} >>/tmp/kdump-agent.log 2>&1 &"
        ))?;
        let up = m.wait_until(
            "wget -q -O /dev/null http://127.0.0.1:10864/healthz",
            Duration::from_secs(60),
        );
        if let Err(e) = up {
            let log = m.sh("tail -20 /tmp/kdump-agent.log").unwrap_or_default();
            bail!("kdump-agent did not come up: {e:#}; its log ends:\n{log}");
        }
        Ok(())
    }

    /// Records `/sys/devices/system/memory/crash_hotplug` and checks it reads `want`.
    pub fn check_crash_hotplug(&mut self, m: &mut Machine, want: &str) -> Result<()> {
        let value = m.sh("cat /sys/devices/system/memory/crash_hotplug")?;
        let value = value.trim();
        self.note("crash_hotplug", value);
        self.check(
            value == want,
            format!("crash_hotplug is {value}, expected {want}"),
        );
        Ok(())
    }

    /// Plugs a DIMM of `mib` MiB and waits until all its blocks are online.
    pub fn hot_add(&mut self, m: &mut Machine, mib: u64, online: Online) -> Result<Dimm> {
        let dimm = m.hot_add_dimm(mib)?;
        if let Online::Write(state) = online {
            m.set_blocks(&dimm, state)?;
        }
        let blocks = m.blocks(&dimm)?;
        m.wait_until(
            &format!(
                "! grep -l offline $(seq -f /sys/devices/system/memory/memory%g/state {} {}) >/dev/null",
                blocks.start,
                blocks.end - 1
            ),
            Duration::from_secs(60),
        )
        .with_context(|| format!("{} ({mib} MiB) did not come online", dimm.id))?;
        self.report.hotplugged_bytes += dimm.size;
        Ok(dimm)
    }

    /// Loads the guest's virtio-mem driver (the boot has `virtio_mem_mib`).
    pub fn virtio_mem_up(&mut self, m: &mut Machine) -> Result<()> {
        m.sh(GUEST_VIRTIO_MEM_UP)
            .map(drop)
            .context("loading the virtio-mem driver")
    }

    /// Resizes the virtio-mem device to `mib` MiB plugged, waits until the guest driver did it
    /// and no memory block is offline, and notes the seconds under `virtio_mem_<mib>_mib_seconds`.
    pub fn resize_virtio_mem(&mut self, m: &mut Machine, mib: u64) -> Result<()> {
        let seconds = m.resize_virtio_mem(mib * MIB, VIRTIO_MEM_TIMEOUT)?;
        m.wait_until(
            "! grep -l offline /sys/devices/system/memory/memory*/state >/dev/null",
            VIRTIO_MEM_TIMEOUT,
        )
        .with_context(|| format!("virtio-mem at {mib} MiB: a memory block stayed offline"))?;
        self.report.hotplugged_bytes =
            self.report.hotplugged_bytes - self.virtio_mem_bytes + mib * MIB;
        self.virtio_mem_bytes = mib * MIB;
        self.note(&format!("virtio_mem_{mib}_mib_seconds"), millis(seconds));
        Ok(())
    }

    /// Plugs a CPU over QMP and brings it online in the guest (the lab has no udev rule to do
    /// it); returns its number.
    pub fn hot_add_cpu(&mut self, m: &mut Machine) -> Result<u32> {
        let present = m.sh("ls -d /sys/devices/system/cpu/cpu[0-9]* | wc -l")?;
        let cpu: u32 = present
            .trim()
            .parse()
            .with_context(|| format!("counting the guest's CPUs: `{}`", present.trim()))?;
        m.plug_cpu()?;
        let online = format!("/sys/devices/system/cpu/cpu{cpu}/online");
        m.wait_until(&format!("[ -e {online} ]"), Duration::from_secs(60))
            .with_context(|| format!("the guest did not register cpu{cpu}"))?;
        self.online_cpu(m, cpu)?;
        Ok(cpu)
    }

    /// Brings present CPU `cpu` online unless the kernel already did.
    pub fn online_cpu(&mut self, m: &mut Machine, cpu: u32) -> Result<()> {
        let online = format!("/sys/devices/system/cpu/cpu{cpu}/online");
        let auto = m.sh(&format!("cat {online}"))?.trim() == "1";
        self.note("cpu_onlined_by_kernel", auto);
        if !auto {
            m.sh(&format!("echo 1 > {online}"))
                .with_context(|| format!("onlining cpu{cpu}"))?;
        }
        m.wait_until(&format!("grep -qx 1 {online}"), Duration::from_secs(30))
            .with_context(|| format!("cpu{cpu} did not come online"))
    }

    /// The first kernel's crash note buffers, `(cpu, address)` per present CPU, as
    /// `/sys/devices/system/cpu/cpuN/crash_notes` says; noted in the report.
    pub fn crash_notes(&mut self, m: &mut Machine) -> Result<Vec<(u32, u64)>> {
        let text = m.sh(
            "for d in /sys/devices/system/cpu/cpu[0-9]*; do echo ${d##*cpu} $(cat $d/crash_notes); done",
        )?;
        let notes = text
            .lines()
            .map(|l| {
                let (cpu, addr) = l.trim().split_once(' ').context("no address")?;
                Ok((cpu.parse()?, u64::from_str_radix(addr, 16)?))
            })
            .collect::<Result<Vec<(u32, u64)>>>()
            .with_context(|| format!("the guest's crash_notes: `{}`", text.trim()))?;
        let shown: Vec<String> = notes
            .iter()
            .map(|(c, a)| format!("cpu{c}={a:#x}"))
            .collect();
        self.note("crash_notes", shown.join(" "));
        Ok(notes)
    }

    /// The `PT_NOTE` addresses of the header loaded now, read back from the crash reservation
    /// by `kdump-agent header --read-back`.
    pub fn loaded_note_addrs(&mut self, m: &mut Machine) -> Result<Vec<u64>> {
        let file = "/tmp/loaded-header.bin";
        let out = m.run(&format!(
            "{GUEST_AGENT} header --read-back --format json --output {file} >/dev/null"
        ))?;
        if out.code != 0 {
            bail!("header --read-back: {}", out.text().trim());
        }
        let header = ElfCoreHeader::parse(&m.run(&format!("cat {file}"))?.output)
            .map_err(|e| anyhow!("the header read back: {e}"))?;
        Ok(header.note_addrs())
    }

    /// The capture kernel's `/proc/vmcore` notes: how many `NT_PRSTATUS` (one per CPU whose
    /// registers the dump kept) and the bytes of its merged `PT_NOTE`; noted in the report.
    pub fn vmcore_cpu_notes(&mut self) -> Result<usize> {
        let (Some(header), Some(fixture)) = (&self.vmcore_header, &self.report.fixture) else {
            bail!("vmcore_cpu_notes before crash");
        };
        let bytes = header
            .note_bytes(&fixture.vmcore_head)
            .context("the capture kernel's PT_NOTE is not in the first bytes of /proc/vmcore")?;
        let notes = parse_notes(bytes).map_err(|e| anyhow!("/proc/vmcore notes: {e}"))?;
        let prstatus = notes.iter().filter(|n| n.n_type == NT_PRSTATUS).count();
        self.note("vmcore_note_bytes", bytes.len());
        self.note("vmcore_prstatus_notes", prstatus);
        Ok(prstatus)
    }

    /// Records /proc/iomem, panics the guest, and measures the capture kernel's header against
    /// the RAM the first kernel had just before the crash.
    pub fn crash(&mut self, m: &mut Machine) -> Result<()> {
        let load = self.load.context("crash before kdump was loaded")?;
        // A panic while the kernel holds the kexec lock (loading, or rewriting the header after a
        // hotplug) skips the capture kernel; kexec_crash_size reads EBUSY until the lock is free.
        m.wait_until(
            "cat /sys/kernel/kexec_crash_size >/dev/null",
            Duration::from_secs(30),
        )
        .context("the kexec lock stayed busy before the crash")?;
        let iomem_text = m.sh("cat /proc/iomem")?;
        let iomem = Iomem::parse(&iomem_text).map_err(|e| anyhow!("guest /proc/iomem: {e}"))?;
        self.report.system_ram_bytes = Some(iomem.system_ram().total_bytes());
        // Frames of the serial protocol the host had to send again (each one is logged).
        self.note("serial_resends", m.resends());
        self.report.capture_boot_seconds = Some(millis(m.crash(CRASH_TIMEOUT)?));
        let head = read_vmcore_head(m)?;
        let size = m.sh("stat -c %s /proc/vmcore")?;
        self.report.vmcore_bytes = Some(
            size.trim()
                .parse()
                .with_context(|| format!("stat /proc/vmcore: `{}`", size.trim()))?,
        );
        let header = ElfCoreHeader::parse(&head)
            .map_err(|e| anyhow!("the capture kernel's /proc/vmcore header: {e}"))?;
        let loaded = header.ram_ranges();
        let expected = expected_ram(&iomem, load)
            .map_err(|e| anyhow!("expected RAM for {}: {e}", load.as_str()))?;
        let d = diff(&expected, &loaded);
        let arch = self.scenario.kernel.arch;
        self.check(
            header.machine == arch.elf_machine(),
            format!(
                "the header's e_machine is {}, the guest is {arch:?}",
                header.machine
            ),
        );
        let text: Vec<String> = header
            .segments
            .iter()
            .filter(|s| s.kind == SegmentKind::KernelText)
            .map(|s| format!("paddr={:#x} memsz={:#x}", s.paddr, s.memsz))
            .collect();
        self.note("vmcore_kernel_text", text.join(" "));
        if arch == Arch::X86_64 {
            let inferred = LoadPath::infer(&loaded);
            self.check(
                inferred == load,
                format!(
                    "the header looks built by {}, kdump was loaded with {}",
                    inferred.as_str(),
                    load.as_str()
                ),
            );
        } else {
            // An arm64 header bears no mark of its loader (no low 1 MiB rule); the lab's arm64
            // kernels have only kexec_load, so kexec-tools built it.
            let (_, config) = self.kernel_config()?;
            let file_load = built_with(&config, "CONFIG_KEXEC_FILE");
            self.check(
                load == LoadPath::KexecLoad && !file_load,
                format!(
                    "{arch:?}: loaded with {}, CONFIG_KEXEC_FILE {}: only kexec-tools' headers are judged there",
                    load.as_str(),
                    if file_load { "set" } else { "unset" }
                ),
            );
        }
        self.report.vmcore_ranges = loaded.iter().copied().collect();
        self.report.missing_bytes = Some(d.missing_bytes);
        self.report.excess_bytes = Some(d.excess_bytes);
        self.excess = d.excess.iter().copied().collect();
        self.vmcore_header = Some(header);
        self.report.fixture = Some(Fixture {
            iomem: iomem_text,
            vmcore_head: head,
            command: self.kexec_command.clone(),
        });
        Ok(())
    }

    /// Reads the first page of every excess range through /proc/vmcore and checks that the
    /// capture kernel survives touching RAM that is gone.
    pub fn read_excess(&mut self, m: &mut Machine) -> Result<()> {
        let mut read = 0;
        for range in self.excess.clone() {
            let page = PhysRange::from_start_size(range.start, 4096.min(range.size()))
                .context("an excess range is empty")?;
            read += u64::from(self.read_dump(m, page)?);
        }
        // The capture kernel is still serving commands after touching RAM that is gone.
        m.sh("true")?;
        self.note("capture_survived_reading_excess", read > 0);
        Ok(())
    }

    /// Reads `range` of the first kernel's RAM through the capture kernel's /proc/vmcore (in
    /// 1 MiB reads, or one page); checks the header maps it and the read succeeds. Returns
    /// whether it read (false: no `PT_LOAD` holds it, a failed check).
    pub fn read_dump(&mut self, m: &mut Machine, range: PhysRange) -> Result<bool> {
        let Some(header) = &self.vmcore_header else {
            bail!("read_dump before crash");
        };
        let offset = header.segments.iter().find_map(|s| {
            s.phys_range()
                .filter(|r| r.encloses(&range))
                .map(|_| s.offset + (range.start - s.paddr))
        });
        let Some(offset) = offset else {
            self.check(false, format!("no PT_LOAD of the dump holds {range:?}"));
            return Ok(false);
        };
        let bs = if range.size().is_multiple_of(MIB) {
            MIB
        } else {
            4096
        };
        let out = m.run(&format!(
            "dd if=/proc/vmcore of=/dev/null bs={bs} count={} skip={offset} iflag=skip_bytes",
            range.size().div_ceil(bs)
        ))?;
        self.check(
            out.code == 0,
            format!("reading /proc/vmcore at {offset:#x}: {}", out.text().trim()),
        );
        Ok(out.code == 0)
    }

    /// The scenario's kernel and its build configuration (from its package).
    pub fn kernel_config(&self) -> Result<(Kernel, String)> {
        let kernel = self.scenario.kernel;
        let path = kernel.config(&self.lab.unpacked);
        let config = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        Ok((kernel, config))
    }

    /// The scenario's kernel rewrites a kexec_file_load header on hotplug: it has the function
    /// that does (>= 6.6 with `CONFIG_CRASH_HOTPLUG`), by the probe table's facts.
    pub fn kernel_updates_header(&self) -> Result<bool> {
        let (kernel, config) = self.kernel_config()?;
        let rewrite = probe_table::find("arch_crash_handle_hotplug_event")
            .context("the probe table has no row for the in-kernel header rewrite")?;
        Ok(rewrite
            .kernels
            .has(kernel.release, kernel.arch.uname_machine(), |option| {
                built_with(&config, option)
            }))
    }

    pub fn expect(&mut self, missing: u64, excess: u64) {
        self.report.expect_missing_bytes = Some(missing);
        self.report.expect_excess_bytes = Some(excess);
    }

    /// A scenario-specific condition; a false one fails the scenario with `what`.
    pub fn check(&mut self, ok: bool, what: impl Into<String>) {
        if !ok {
            self.report.failures.push(what.into());
        }
    }

    /// A progress line under the scenario's name, for a wait that may take a while.
    pub fn progress(&self, what: &str) {
        crate::ui::Step::start(self.scenario.name).progress(what);
    }

    /// A named check: recorded in `checks` as held or not; a false one also fails the
    /// scenario with `name: what`.
    pub fn check_named(&mut self, name: &str, ok: bool, what: impl Into<String>) {
        self.report.checks.insert(name.to_owned(), ok.into());
        if !ok {
            self.report
                .failures
                .push(format!("{name}: {}", what.into()));
        }
    }

    /// An observation for the report (what the kernel did).
    pub fn note(&mut self, key: &str, value: impl Into<Value>) {
        self.report.notes.insert(key.to_owned(), value.into());
    }
}

/// The head of the capture kernel's /proc/vmcore up to where its first `PT_LOAD`'s data begins
/// (at most [`VMCORE_HEAD_BYTES`]): the first page, then as much more as its program headers
/// say the header and notes take. Reading on into the old memory is left to `read_dump`: the
/// arm64 6.1 capture kernel oopses there (SIGSEGV to the reader) with kexec-tools' header.
fn read_vmcore_head(m: &mut Machine) -> Result<Vec<u8>> {
    let mut want = VMCORE_FIRST_PAGE;
    loop {
        let head = m.run(&format!("head -c {want} /proc/vmcore"))?;
        if head.code != 0 {
            bail!(
                "reading /proc/vmcore in the capture kernel: `head -c {want}` exited with {}",
                head.code
            );
        }
        let end = match ElfCoreHeader::parse(&head.output) {
            Ok(header) => header
                .segments
                .iter()
                .filter(|s| s.kind != SegmentKind::Note)
                .map(|s| s.offset)
                .min()
                .unwrap_or(VMCORE_HEAD_BYTES),
            Err(HeaderError::Truncated { need, .. }) => u64::try_from(need).unwrap_or(u64::MAX),
            Err(e) => bail!("the capture kernel's /proc/vmcore header: {e}"),
        };
        let end = end.min(VMCORE_HEAD_BYTES);
        if end <= want {
            let mut bytes = head.output;
            bytes.truncate(usize::try_from(end).unwrap_or(usize::MAX));
            return Ok(bytes);
        }
        want = end;
    }
}

/// Whether kernel config text `config` sets `option` (`=y` or `=m`).
pub fn built_with(config: &str, option: &str) -> bool {
    config.lines().any(|l| {
        l.strip_prefix(option)
            .and_then(|v| v.strip_prefix('='))
            .is_some_and(|v| v == "y" || v == "m")
    })
}

/// Runs one scenario; errors become a failed report (with the error as a failure).
pub fn run(lab: &Lab, scenario: &Scenario) -> Report {
    let started = std::time::Instant::now();
    let mut run = Run {
        lab,
        scenario,
        report: Report {
            scenario: scenario.name.to_owned(),
            kernel: scenario.kernel.release.to_owned(),
            ..Report::default()
        },
        boots: 0,
        load: None,
        kexec_command: String::new(),
        vmcore_header: None,
        excess: Vec::new(),
        virtio_mem_bytes: 0,
    };
    let result = (scenario.body)(&mut run);
    let mut report = run.report;
    if let Err(e) = result {
        report.failures.push(format!("{e:#}"));
    }
    match (
        report.missing_bytes,
        report.expect_missing_bytes,
        report.excess_bytes,
        report.expect_excess_bytes,
    ) {
        (Some(m), Some(em), Some(x), Some(ex)) => {
            if m != em {
                report.failures.push(format!(
                    "the dump misses {m} bytes, expected {em} ({} MiB)",
                    em / MIB
                ));
            }
            if x != ex {
                report
                    .failures
                    .push(format!("the dump has {x} excess bytes, expected {ex}"));
            }
        }
        _ if report.failures.is_empty() => {
            report.failures.push("no dump was measured".to_owned());
        }
        _ => {}
    }
    report.pass = report.failures.is_empty();
    report.seconds = millis(started.elapsed().as_secs_f64());
    report
}

/// Seconds rounded to the millisecond, so JSON lines read `4.518`, not `4.5177294759999995`.
pub(crate) fn millis(seconds: f64) -> f64 {
    (seconds * 1000.0).round() / 1000.0
}
