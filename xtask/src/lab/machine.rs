//! One QEMU guest: boot, the command protocol, DIMM hot-plug over QMP, crash into the capture
//! kernel.
//!
//! The serial console (x86 ttyS0, arm64 ttyAMA0) goes to a log file. The guest's runner
//! (`guest/runner.sh`) serves a second serial port ([`Arch::runner_serial`]), a unix socket on
//! the host, with a line protocol:
//! - guest: `@@READY ROLE RELEASE` when it starts (ROLE is `guest`, or `capture` when
//!   /proc/vmcore exists);
//! - host: `@@CMD ID CRC LEN BASE64`: the command (a `sh` script) in base64, the CRC-32 of
//!   its bytes (8 hex digits, which the guest's busybox `crc32` recomputes) and the length of
//!   the base64 text (which the guest's shell checks first, without a fork);
//! - guest: `@@ACK ID CRC LEN` before it runs a command whose length and CRC matched, or
//!   `@@NAK ID-OR-? WHAT-IT-GOT` for a garbled line, then it waits for the next line; the host
//!   sends the same frame again (bounded tries, each logged) on a NAK or when no ACK comes in
//!   time, and the guest runs an ID once (a re-sent one gets the same answer again);
//! - guest: `@@BEGIN ID`, the command's output (stdout and stderr) in base64 lines,
//!   `@@END ID EXIT-CODE`.
//!
//! Lines used to lose their first bytes while the guest was busy: the runner was PID 1, every
//! orphaned background process that exited sent it SIGCHLD, and busybox ash (1.35) restarts a
//! `read` interrupted by a signal with the bytes read so far thrown away. The runner is now a
//! child of PID 1 (`guest/init.sh`); the checksum and the re-sends stay as the safety net.
//!
//! Every wait has a deadline; a guest that misses one is killed and the last 50 console lines
//! are printed.
use std::{
    fs,
    io::{ErrorKind, Read as _, Write as _},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow, bail};
use base64::Engine as _;
use serde_json::{Value, json};

use super::arch::Arch;

/// How QEMU runs the guest. KVM is opt-in: nested KVM fails on this project's hosts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Accel {
    #[default]
    Tcg,
    Kvm,
}

impl Accel {
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Tcg => "tcg",
            Accel::Kvm => "kvm",
        }
    }
}

/// Boot RAM, DIMM slots and the hot-plug ceiling, in MiB.
#[derive(Clone, Copy, Debug)]
pub struct Memory {
    pub boot_mib: u64,
    pub slots: u32,
    pub max_mib: u64,
}

/// CPUs at boot and the hot-plug ceiling (`-smp BOOT,maxcpus=MAX`).
#[derive(Clone, Copy, Debug)]
pub struct Cpus {
    pub boot: u32,
    pub max: u32,
}

/// Everything QEMU needs to start one guest.
pub struct MachineSpec<'a> {
    pub arch: Arch,
    pub vmlinuz: &'a Path,
    pub initrd: &'a Path,
    pub cmdline: String,
    pub memory: Memory,
    pub cpus: Cpus,
    pub accel: Accel,
    /// The serial console log (kept after the run for post-mortems).
    pub console_log: PathBuf,
    /// A NIC on QEMU user networking with this forward; None: no NIC at all.
    pub forward: Option<Forward>,
    /// A `virtio-mem-pci` device ([`VIRTIO_MEM`]) able to plug this many MiB, none plugged at
    /// boot; None: no device.
    pub virtio_mem_mib: Option<u64>,
}

/// A host loopback port QEMU forwards to a TCP port of the guest (10.0.2.15 on its user network).
#[derive(Clone, Copy, Debug)]
pub struct Forward {
    pub host_port: u16,
    pub guest_port: u16,
}

/// The NIC networked guests get; its Linux driver module has the same name.
pub const NIC: &str = "e1000";
/// The QOM id of a guest's virtio-mem device (its `requested-size` is what the host sets).
pub const VIRTIO_MEM: &str = "vm0";

/// A DIMM the host plugged, where QEMU put it.
#[derive(Clone, Debug)]
pub struct Dimm {
    pub id: String,
    pub addr: u64,
    pub size: u64,
}

/// A command's exit code and output (stdout and stderr interleaved).
pub struct Output {
    pub code: i32,
    pub output: Vec<u8>,
}

impl Output {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.output).into_owned()
    }
}

pub const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the host waits for the guest's ACK of a frame before sending it again.
const ACK_TIMEOUT: Duration = Duration::from_secs(15);
/// Sends of one frame before the host gives up.
const SEND_TRIES: u32 = 5;
const CONSOLE_TAIL: usize = 50;

pub struct Machine {
    child: Child,
    qmp: Qmp,
    proto: LineStream,
    console_log: PathBuf,
    sockets: PathBuf,
    started: Instant,
    next_id: u64,
    resends: u32,
    dimms: u32,
    block_size: Option<u64>,
}

impl Machine {
    /// Starts QEMU and waits for the guest's runner; fails if QEMU is missing or the guest
    /// never answers.
    pub fn boot(spec: &MachineSpec) -> Result<Self> {
        static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // Sockets live in a short private directory: unix socket paths are limited to 108 bytes.
        let sockets = std::env::temp_dir().join(format!("kdump-lab-{}-{seq}", std::process::id()));
        let _ = fs::remove_dir_all(&sockets);
        fs::create_dir_all(&sockets).with_context(|| format!("creating {}", sockets.display()))?;
        if let Some(dir) = spec.console_log.parent() {
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let (qmp_sock, proto_sock) = (sockets.join("qmp"), sockets.join("proto"));
        let qemu_log_path = spec.console_log.with_extension("qemu.log");
        let qemu_log = fs::File::create(&qemu_log_path)
            .with_context(|| format!("creating {}", qemu_log_path.display()))?;
        let m = spec.memory;
        let qemu = spec.arch.qemu();
        let mut cmd = Command::new(qemu);
        cmd.args(spec.arch.qemu_machine())
            .args(["-accel", spec.accel.as_str()])
            .arg("-smp")
            .arg(format!("{},maxcpus={}", spec.cpus.boot, spec.cpus.max))
            .arg("-m")
            .arg(format!(
                "{}M,slots={},maxmem={}M",
                m.boot_mib, m.slots, m.max_mib
            ))
            .args(["-nodefaults", "-display", "none", "-no-reboot"])
            .arg("-kernel")
            .arg(spec.vmlinuz)
            .arg("-initrd")
            .arg(spec.initrd)
            .arg("-append")
            .arg(&spec.cmdline)
            .arg("-chardev")
            .arg(format!(
                "file,id=console,path={}",
                spec.console_log.display()
            ))
            .args(["-serial", "chardev:console", "-chardev"])
            .arg(format!(
                "socket,id=proto,path={},server=on,wait=off",
                proto_sock.display()
            ))
            .args(spec.arch.runner_serial("proto"))
            .arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", qmp_sock.display()));
        if let Some(f) = spec.forward {
            // restrict=on: the guest reaches nothing outside; the forward still works. No
            // option ROM: the kernel is booted directly, never from the network.
            cmd.arg("-netdev")
                .arg(format!(
                    "user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:{}-:{}",
                    f.host_port, f.guest_port
                ))
                .args(["-device", &format!("{NIC},netdev=net0,romfile=")]);
        }
        if let Some(mib) = spec.virtio_mem_mib {
            cmd.arg("-object")
                .arg(format!("memory-backend-ram,id=vmem0,size={mib}M"))
                .arg("-device")
                .arg(format!(
                    "virtio-mem-pci,id={VIRTIO_MEM},memdev=vmem0,requested-size=0"
                ));
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(qemu_log);
        let started = Instant::now();
        let mut child = cmd.spawn().map_err(|e| {
            if e.kind() == ErrorKind::NotFound {
                anyhow!(
                    "{qemu} not found: run `cargo xtask setup` (installs {})",
                    spec.arch.qemu_package()
                )
            } else {
                anyhow!("starting {qemu}: {e}")
            }
        })?;
        let connect = |path: &Path, child: &mut Child| -> Result<UnixStream> {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Ok(stream) = UnixStream::connect(path) {
                    return Ok(stream);
                }
                if let Some(status) = child.try_wait()? {
                    let mut err = String::new();
                    if let Some(mut e) = child.stderr.take() {
                        let _ = e.read_to_string(&mut err);
                    }
                    bail!("{qemu} exited at start ({status}): {}", err.trim());
                }
                if Instant::now() > deadline {
                    bail!("{qemu} did not open {}", path.display());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        };
        let proto = connect(&proto_sock, &mut child)?;
        let qmp = connect(&qmp_sock, &mut child)?;
        let mut machine = Self {
            child,
            qmp: Qmp::new(LineStream::new(qmp)),
            proto: LineStream::new(proto),
            console_log: spec.console_log.clone(),
            sockets,
            started,
            next_id: 1,
            resends: 0,
            dimms: 0,
            block_size: None,
        };
        if let Err(e) = machine.qmp.handshake() {
            return Err(machine.fail("QMP handshake", e));
        }
        machine.wait_ready("guest", BOOT_TIMEOUT)?;
        Ok(machine)
    }

    /// Seconds since QEMU was started.
    pub fn elapsed(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Waits for the runner's `@@READY ROLE`.
    fn wait_ready(&mut self, role: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.proto.next_line(deadline) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix("@@READY ") {
                        if rest.split_whitespace().next() == Some(role) {
                            return Ok(());
                        }
                        let e = anyhow!("expected the {role} runner, got `{line}`");
                        return Err(self.fail(&format!("waiting for the {role} kernel"), e));
                    }
                }
                Err(e) => return Err(self.fail(&format!("waiting for the {role} kernel"), e)),
            }
        }
    }

    /// How many frames the host had to send again in this guest's life (each one is logged).
    pub fn resends(&self) -> u32 {
        self.resends
    }

    /// Runs `command` (a `sh` script) in the guest.
    pub fn run_with_timeout(&mut self, command: &str, timeout: Duration) -> Result<Output> {
        let id = self.next_id;
        self.next_id += 1;
        let deadline = Instant::now() + timeout;
        let step = format!("guest command `{command}`");
        self.deliver(id, command, deadline, &step, true)?
            .ok_or_else(|| anyhow!("{step}: no output"))
    }

    /// Sends command `id` until the guest acknowledges it, then (with `output`) reads its
    /// answer. Without `output`, returns once the guest has it (the line that follows, if one
    /// came instead of the ACK, is left for the next reader).
    fn deliver(
        &mut self,
        id: u64,
        command: &str,
        deadline: Instant,
        step: &str,
        output: bool,
    ) -> Result<Option<Output>> {
        let frame = frame(id, command.as_bytes());
        if let Err(e) = self.proto.send(&frame) {
            return Err(self.fail(step, e));
        }
        let mut sent = 1;
        let mut ack_by = (Instant::now() + ACK_TIMEOUT).min(deadline);
        let mut acked = false;
        let mut encoded = String::new();
        let mut inside = false;
        loop {
            let (line, resend) = match self.proto.try_line(if acked { deadline } else { ack_by }) {
                Ok(Some(line)) => {
                    let garbled = !acked && Reply::parse(&line) == Reply::Nak;
                    let why = garbled.then(|| format!("the guest got it garbled (`{line}`)"));
                    (line, why)
                }
                Ok(None) if acked || Instant::now() >= deadline => {
                    return Err(self.fail(step, anyhow!("timed out")));
                }
                Ok(None) => {
                    let why = format!("no acknowledgement within {} s", ACK_TIMEOUT.as_secs());
                    (String::new(), Some(why))
                }
                Err(e) => return Err(self.fail(step, e)),
            };
            if let Some(why) = resend {
                if sent >= SEND_TRIES {
                    let e = anyhow!("{why}; gave up after sending it {sent} times");
                    return Err(self.fail(step, e));
                }
                sent += 1;
                self.resends += 1;
                eprintln!("  lab: {step}: {why}; sending it again (try {sent} of {SEND_TRIES})");
                if let Err(e) = self.proto.send(&frame) {
                    return Err(self.fail(step, e));
                }
                ack_by = (Instant::now() + ACK_TIMEOUT).min(deadline);
                continue;
            }
            match Reply::parse(&line) {
                Reply::Ack(i) if i == id => {
                    acked = true;
                    if !output {
                        return Ok(None);
                    }
                }
                Reply::Begin(i) if i == id && output => {
                    (acked, inside) = (true, true);
                }
                Reply::End(i, code) if i == id && inside => {
                    let output = base64::engine::general_purpose::STANDARD
                        .decode(encoded.as_bytes())
                        .with_context(|| format!("{step}: bad base64 from the guest"))?;
                    return Ok(Some(Output { code, output }));
                }
                Reply::Ready if !output => {
                    // The ACK was lost and the command already restarted the guest (a crash).
                    self.proto.unread(&line);
                    return Ok(None);
                }
                Reply::Ready => {
                    let e = anyhow!("the guest restarted (`{line}`)");
                    return Err(self.fail(step, e));
                }
                Reply::Other if inside => encoded.push_str(line.trim()),
                _ => {}
            }
        }
    }

    pub fn run(&mut self, command: &str) -> Result<Output> {
        self.run_with_timeout(command, COMMAND_TIMEOUT)
    }

    /// Runs `command`, which must succeed; returns its output as text.
    pub fn sh(&mut self, command: &str) -> Result<String> {
        let out = self.run(command)?;
        if out.code != 0 {
            bail!(
                "guest command `{command}` exited with {}: {}",
                out.code,
                out.text().trim()
            );
        }
        Ok(out.text())
    }

    /// Polls a guest shell condition every 100 ms until it holds (one command per try, so a
    /// slow condition cannot outlive the deadline by more than one try).
    pub fn wait_until(&mut self, condition: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.run(condition)?.code == 0 {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("`{condition}` did not hold within {} s", timeout.as_secs());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Memory block size of the running kernel, in bytes.
    pub fn block_size(&mut self) -> Result<u64> {
        if let Some(size) = self.block_size {
            return Ok(size);
        }
        let hex = self.sh("cat /sys/devices/system/memory/block_size_bytes")?;
        let size = u64::from_str_radix(hex.trim(), 16)
            .with_context(|| format!("block_size_bytes: `{}` is not hex", hex.trim()))?;
        self.block_size = Some(size);
        Ok(size)
    }

    /// The memory block numbers that cover `dimm`.
    pub fn blocks(&mut self, dimm: &Dimm) -> Result<std::ops::Range<u64>> {
        let bs = self.block_size()?;
        Ok(dimm.addr / bs..(dimm.addr + dimm.size).div_ceil(bs))
    }

    /// Plugs a DIMM of `mib` MiB and waits until the guest has registered its memory blocks.
    pub fn hot_add_dimm(&mut self, mib: u64) -> Result<Dimm> {
        let mut dimms = self.hot_add_dimms(&[mib])?;
        Ok(dimms.remove(0))
    }

    /// Plugs DIMMs back to back (no wait between them, as in a scale-up), then waits until
    /// the guest has registered all their memory blocks.
    pub fn hot_add_dimms(&mut self, mibs: &[u64]) -> Result<Vec<Dimm>> {
        let mut dimms = Vec::new();
        for &mib in mibs {
            dimms.push(self.plug_dimm(mib)?);
        }
        for dimm in &dimms {
            let last = self.blocks(dimm)?.end - 1;
            self.wait_until(
                &format!("[ -d /sys/devices/system/memory/memory{last} ]"),
                Duration::from_secs(60),
            )
            .with_context(|| format!("{}: the guest did not add the memory blocks", dimm.id))?;
        }
        Ok(dimms)
    }

    /// Plugs a DIMM over QMP and returns at once (the guest registers its blocks later).
    pub fn plug_dimm(&mut self, mib: u64) -> Result<Dimm> {
        self.dimms += 1;
        let (mem, id) = (format!("mem{}", self.dimms), format!("dimm{}", self.dimms));
        let step = format!("hot-adding {mib} MiB ({id})");
        let plugged = self
            .qmp
            .execute(
                "object-add",
                json!({"qom-type": "memory-backend-ram", "id": mem, "size": mib << 20}),
            )
            .and_then(|_| {
                self.qmp.execute(
                    "device_add",
                    json!({"driver": "pc-dimm", "id": id, "memdev": mem}),
                )
            })
            .and_then(|_| self.qmp.execute("query-memory-devices", json!({})));
        let devices = match plugged {
            Ok(devices) => devices,
            Err(e) => return Err(self.fail(&step, e)),
        };
        let data = devices
            .as_array()
            .into_iter()
            .flatten()
            .map(|d| &d["data"])
            .find(|d| d["id"] == id.as_str())
            .with_context(|| format!("{step}: QEMU does not list {id}"))?;
        Ok(Dimm {
            id,
            addr: data["addr"].as_u64().context("pc-dimm addr")?,
            size: data["size"].as_u64().context("pc-dimm size")?,
        })
    }

    /// Plugs the first free CPU slot QEMU lists (`query-hotpluggable-cpus`) and returns its
    /// QOM path's socket id; the guest registers it as the next `cpuN`.
    pub fn plug_cpu(&mut self) -> Result<u64> {
        let step = "hot-adding a CPU";
        let slots = match self.qmp.execute("query-hotpluggable-cpus", json!({})) {
            Ok(slots) => slots,
            Err(e) => return Err(self.fail(step, e)),
        };
        let free = slots
            .as_array()
            .into_iter()
            .flatten()
            .find(|s| s.get("qom-path").is_none())
            .with_context(|| format!("{step}: QEMU lists no free CPU slot (raise maxcpus)"))?
            .clone();
        let socket = free["props"]["socket-id"].as_u64().unwrap_or(0);
        let mut device = free["props"].clone();
        device["driver"] = free["type"].clone();
        device["id"] = json!(format!("cpu-socket{socket}"));
        if let Err(e) = self.qmp.execute("device_add", device) {
            return Err(self.fail(step, e));
        }
        Ok(socket)
    }

    /// Writes `state` (`online`, `online_movable`, `offline`) to each of the DIMM's blocks
    /// that is not in it yet.
    pub fn set_blocks(&mut self, dimm: &Dimm, state: &str) -> Result<()> {
        let blocks = self.blocks(dimm)?;
        let want = if state == "offline" {
            "offline"
        } else {
            "online"
        };
        self.sh(&format!(
            "for i in $(seq {} {}); do f=/sys/devices/system/memory/memory$i/state; [ \"$(cat $f)\" = {want} ] || echo {state} > $f || exit 1; done",
            blocks.start,
            blocks.end - 1
        ))
        .map(drop)
        .with_context(|| format!("setting {} blocks {blocks:?} {state}", dimm.id))
    }

    /// Asks QEMU to unplug `dimm` and waits for the guest to release it (DEVICE_DELETED).
    pub fn hot_remove_dimm(&mut self, dimm: &Dimm, timeout: Duration) -> Result<()> {
        self.qmp
            .execute("device_del", json!({"id": dimm.id}))
            .with_context(|| format!("device_del {}", dimm.id))?;
        self.qmp
            .wait_event("DEVICE_DELETED", &dimm.id, Instant::now() + timeout)
            .with_context(|| format!("the guest did not release {}", dimm.id))
    }

    /// Sets the virtio-mem device's `requested-size` and waits until the guest driver has
    /// plugged or unplugged to it (the device's `size`); returns the seconds that took.
    pub fn resize_virtio_mem(&mut self, bytes: u64, timeout: Duration) -> Result<f64> {
        let step = format!("qom-set {VIRTIO_MEM} requested-size {bytes}");
        let start = Instant::now();
        if let Err(e) = self.qmp.execute(
            "qom-set",
            json!({"path": VIRTIO_MEM, "property": "requested-size", "value": bytes}),
        ) {
            return Err(self.fail(&step, e));
        }
        loop {
            let size = self
                .qmp
                .execute("qom-get", json!({"path": VIRTIO_MEM, "property": "size"}))
                .and_then(|v| v.as_u64().context("virtio-mem size is not a number"));
            match size {
                Ok(size) if size == bytes => return Ok(start.elapsed().as_secs_f64()),
                Ok(size) if start.elapsed() > timeout => {
                    let e = anyhow!(
                        "the guest plugged {size} bytes, not {bytes}, within {} s",
                        timeout.as_secs()
                    );
                    return Err(self.fail(&step, e));
                }
                Ok(_) => std::thread::sleep(Duration::from_millis(100)),
                Err(e) => return Err(self.fail(&step, e)),
            }
        }
    }

    /// Panics the guest (`echo c > /proc/sysrq-trigger`) and waits for the capture kernel's
    /// runner. Returns the capture kernel's boot time in seconds.
    pub fn crash(&mut self, timeout: Duration) -> Result<f64> {
        let id = self.next_id;
        self.next_id += 1;
        let start = Instant::now();
        self.deliver(
            id,
            "echo c > /proc/sysrq-trigger",
            start + timeout,
            "crashing the guest",
            false,
        )?;
        self.wait_ready("capture", timeout.saturating_sub(start.elapsed()))?;
        Ok(start.elapsed().as_secs_f64())
    }

    /// Kills QEMU, prints the last console lines, and names the step.
    fn fail(&mut self, step: &str, why: anyhow::Error) -> anyhow::Error {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let console = fs::read(&self.console_log).unwrap_or_default();
        let console = String::from_utf8_lossy(&console);
        let lines: Vec<&str> = console.lines().collect();
        eprintln!(
            "  --- last {CONSOLE_TAIL} console lines ({}) ---",
            self.console_log.display()
        );
        for line in &lines[lines.len().saturating_sub(CONSOLE_TAIL)..] {
            eprintln!("  | {}", line.trim_end_matches('\r'));
        }
        let qemu =
            fs::read_to_string(self.console_log.with_extension("qemu.log")).unwrap_or_default();
        for line in qemu
            .lines()
            .rev()
            .take(10)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
        {
            eprintln!("  qemu: {line}");
        }
        anyhow!(
            "{step}: {why:#} (guest killed after {:.0} s)",
            self.elapsed()
        )
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.sockets);
    }
}

/// Newline-delimited reading with a deadline on a unix socket.
struct LineStream {
    stream: UnixStream,
    pending: Vec<u8>,
}

impl LineStream {
    fn new(stream: UnixStream) -> Self {
        Self {
            stream,
            pending: Vec::new(),
        }
    }

    fn send(&mut self, text: &str) -> Result<()> {
        self.stream
            .write_all(text.as_bytes())
            .context("writing to the guest")
    }

    /// Puts `line` back: the next read returns it first.
    fn unread(&mut self, line: &str) {
        let mut pending = format!("{line}\n").into_bytes();
        pending.append(&mut self.pending);
        self.pending = pending;
    }

    /// The next line without its `\r\n`; an error on timeout or when QEMU closes the socket.
    fn next_line(&mut self, deadline: Instant) -> Result<String> {
        self.try_line(deadline)?.ok_or_else(|| anyhow!("timed out"))
    }

    /// The next line, or None at the deadline; an error when QEMU closes the socket.
    fn try_line(&mut self, deadline: Instant) -> Result<Option<String>> {
        let mut buf = [0u8; 8192];
        loop {
            if let Some(pos) = self.pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=pos).collect();
                let text = String::from_utf8_lossy(&line);
                return Ok(Some(text.trim_end_matches(['\r', '\n']).to_owned()));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            self.stream.set_read_timeout(Some(left))?;
            match self.stream.read(&mut buf) {
                Ok(0) => bail!("QEMU closed the connection (the guest powered off or QEMU died)"),
                Ok(n) => self.pending.extend_from_slice(&buf[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Ok(None);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// CRC-32 (zlib's: reflected, polynomial 0xEDB88320), what busybox `crc32` prints in hex.
pub fn crc32(data: &[u8]) -> u32 {
    !data.iter().fold(!0u32, |crc, &b| {
        (0..8).fold(crc ^ u32::from(b), |c, _| {
            if c & 1 != 0 {
                (c >> 1) ^ 0xEDB8_8320
            } else {
                c >> 1
            }
        })
    })
}

/// The line that carries command `id` to the guest's runner.
fn frame(id: u64, command: &[u8]) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(command);
    format!(
        "@@CMD {id} {:08x} {} {encoded}\n",
        crc32(command),
        encoded.len()
    )
}

/// A line from the guest's runner.
#[derive(Debug, PartialEq, Eq)]
enum Reply {
    Ready,
    Ack(u64),
    Nak,
    Begin(u64),
    End(u64, i32),
    /// Output (base64) or noise.
    Other,
}

impl Reply {
    fn parse(line: &str) -> Self {
        let mut words = line.split_whitespace();
        let id = |w: Option<&str>| w.and_then(|w| w.parse().ok());
        match words.next() {
            Some("@@READY") => Reply::Ready,
            Some("@@NAK") => Reply::Nak,
            Some("@@ACK") => id(words.next()).map_or(Reply::Other, Reply::Ack),
            Some("@@BEGIN") => id(words.next()).map_or(Reply::Other, Reply::Begin),
            Some("@@END") => match (id(words.next()), words.next()) {
                (Some(id), Some(code)) => Reply::End(id, code.parse().unwrap_or(-1)),
                _ => Reply::Other,
            },
            _ => Reply::Other,
        }
    }
}

/// A QMP (QEMU Machine Protocol, JSON) client; events that arrive meanwhile are kept.
struct Qmp {
    lines: LineStream,
    events: Vec<Value>,
}

const QMP_TIMEOUT: Duration = Duration::from_secs(30);

impl Qmp {
    fn new(lines: LineStream) -> Self {
        Self {
            lines,
            events: Vec::new(),
        }
    }

    fn handshake(&mut self) -> Result<()> {
        let greeting = self.read(Instant::now() + QMP_TIMEOUT)?;
        if greeting.get("QMP").is_none() {
            bail!("not a QMP greeting: {greeting}");
        }
        self.execute("qmp_capabilities", json!({}))?;
        Ok(())
    }

    fn read(&mut self, deadline: Instant) -> Result<Value> {
        let line = self.lines.next_line(deadline)?;
        serde_json::from_str(&line).with_context(|| format!("QMP sent `{line}`"))
    }

    fn execute(&mut self, command: &str, arguments: Value) -> Result<Value> {
        let request = json!({"execute": command, "arguments": arguments});
        self.lines.send(&format!("{request}\n"))?;
        let deadline = Instant::now() + QMP_TIMEOUT;
        loop {
            let reply = self.read(deadline)?;
            if reply.get("event").is_some() {
                self.events.push(reply);
            } else if let Some(error) = reply.get("error") {
                bail!(
                    "QMP {command}: {}",
                    error["desc"].as_str().unwrap_or("error")
                );
            } else if let Some(ret) = reply.get("return") {
                return Ok(ret.clone());
            }
        }
    }

    fn wait_event(&mut self, name: &str, device: &str, deadline: Instant) -> Result<()> {
        let matches = |e: &Value| e["event"] == name && e["data"]["device"] == device;
        if let Some(pos) = self.events.iter().position(matches) {
            self.events.remove(pos);
            return Ok(());
        }
        loop {
            let event = self
                .read(deadline)
                .with_context(|| format!("waiting for {name} {device}"))?;
            if matches(&event) {
                return Ok(());
            }
            self.events.push(event);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_is_busybox_crc32() {
        // `printf ... | busybox crc32` (and Python's zlib.crc32).
        assert_eq!(crc32(b""), 0);
        assert_eq!(crc32(b"hello"), 0x3610_a686);
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
    }

    #[test]
    fn frames_carry_id_checksum_length_and_base64() {
        assert_eq!(frame(7, b"hello"), "@@CMD 7 3610a686 8 aGVsbG8=\n");
        // Newlines, quotes and trailing spaces travel intact, on one line.
        let script = b"a='x  y'\necho \"$a\"  \n";
        let line = frame(8, script);
        assert_eq!(line.matches('\n').count(), 1);
        let words: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(words.len(), 5);
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(words[4])
            .unwrap();
        assert_eq!(decoded, script);
        assert_eq!(words[2], format!("{:08x}", crc32(script)));
        assert_eq!(words[3], words[4].len().to_string());
    }

    #[test]
    fn replies_parse_and_garbage_is_other() {
        assert_eq!(Reply::parse("@@READY guest 6.1.0"), Reply::Ready);
        assert_eq!(Reply::parse("@@ACK 12 3610a686 8"), Reply::Ack(12));
        assert_eq!(Reply::parse("@@NAK ? 17"), Reply::Nak);
        assert_eq!(Reply::parse("@@NAK 12 1 2"), Reply::Nak);
        assert_eq!(Reply::parse("@@BEGIN 12"), Reply::Begin(12));
        assert_eq!(Reply::parse("@@END 12 3"), Reply::End(12, 3));
        assert_eq!(Reply::parse("@@END 12 x"), Reply::End(12, -1));
        assert_eq!(Reply::parse("@@END 12"), Reply::Other);
        assert_eq!(Reply::parse("@@ACK ook.done)"), Reply::Other);
        assert_eq!(Reply::parse("aGVsbG8="), Reply::Other);
        assert_eq!(Reply::parse(""), Reply::Other);
    }

    #[test]
    fn an_unread_line_comes_back_first() {
        let (host, mut guest) = UnixStream::pair().unwrap();
        let mut lines = LineStream::new(host);
        let deadline = Instant::now() + Duration::from_secs(5);
        guest.write_all(b"one\ntwo\n").unwrap();
        let one = lines.next_line(deadline).unwrap();
        lines.unread(&one);
        assert_eq!(lines.next_line(deadline).unwrap(), "one");
        assert_eq!(lines.next_line(deadline).unwrap(), "two");
        let soon = Instant::now() + Duration::from_millis(20);
        assert_eq!(lines.try_line(soon).unwrap(), None);
    }

    #[test]
    fn lines_survive_split_reads_timeouts_and_a_closed_socket() {
        let (host, mut guest) = UnixStream::pair().unwrap();
        let mut lines = LineStream::new(host);
        let deadline = Instant::now() + Duration::from_secs(5);
        guest.write_all(b"@@BEGIN 1\r\naGk=\n@@EN").unwrap();
        assert_eq!(lines.next_line(deadline).unwrap(), "@@BEGIN 1");
        assert_eq!(lines.next_line(deadline).unwrap(), "aGk=");
        let soon = Instant::now() + Duration::from_millis(50);
        assert!(
            lines
                .next_line(soon)
                .unwrap_err()
                .to_string()
                .contains("timed out")
        );
        // The partial line read before the timeout is kept.
        guest.write_all(b"D 1 0\n").unwrap();
        assert_eq!(lines.next_line(deadline).unwrap(), "@@END 1 0");
        drop(guest);
        let closed = lines.next_line(deadline).unwrap_err().to_string();
        assert!(closed.contains("closed"), "{closed}");
    }
}
