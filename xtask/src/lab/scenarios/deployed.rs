//! The DaemonSet as a node runs it: kdump loaded at boot the distribution's way, then the pod
//! started by Debian's runc from the OCI config generated out of `deploy/daemonset.yaml`
//! (`image::GUEST_POD_BUNDLE`), `kdump-agent status` on the host talking to it through the
//! socket on the shared state directory. The pod starts after the load, so it must read the
//! header back before it may say ready.
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use kdump_agent::model::elfcorehdr::LoadPath;
use serde_json::Value;

use super::agent::{SUCCESS, crash_and_expect, expect_reloads, metric, wait_metric, wait_ready};
use crate::lab::{
    image::{
        GUEST_AGENT, GUEST_CAPTURE_INITRD, GUEST_HOST_PATHS, GUEST_KERNEL, GUEST_KEXEC,
        GUEST_POD_BUNDLE, GUEST_POD_ID, GUEST_RUNC, GUEST_RUNTIME_DEFAULT_BUNDLE,
        GUEST_VARIANT_BUNDLES, KERNEL_6_1_POD, KERNEL_6_12_POD,
    },
    machine::{Dimm, Machine},
    oci,
    scenario::{Online, Run, Scenario},
};

/// The deployed scenarios, in `cargo xtask lab list` order.
pub const ALL: &[Scenario] = &[
    Scenario {
        name: "deployed-debian-6.1",
        about: "6.1, kdump-config load (kdump-tools' layout), RuntimeDefault's EPERM shown, the pod under runc reads the header back; +512 MiB: one reload; dump whole",
        kernel: KERNEL_6_1_POD,
        fixture: false,
        benchmark: false,
        body: deployed_debian_6_1,
    },
    Scenario {
        name: "deployed-fedora-6.1",
        about: "6.1, kdumpctl's layout and kexec -s -p, the pod under runc reads the header back; +512 MiB: one reload; dump whole",
        kernel: KERNEL_6_1_POD,
        fixture: false,
        benchmark: false,
        body: deployed_fedora_6_1,
    },
    Scenario {
        name: "deployed-kernel-managed-6.12",
        about: "6.12, kdumpctl's layout and kexec -s -p, the pod verifies the read-back header; +512 MiB: the kernel updates it, zero reloads; the pod with uevents only, +128 MiB: the uevent reaches its network namespace; dump whole",
        kernel: KERNEL_6_12_POD,
        fixture: false,
        benchmark: false,
        body: deployed_kernel_managed_6_12,
    },
    Scenario {
        name: "deployed-sigkill-mid-reload-6.1",
        about: "6.1, kdump-config load, pod; +512 MiB: the pod SIGKILLed inside its kexec_file_load (old image freed), deleted and run again: loaded, fresh; dump whole",
        kernel: KERNEL_6_1_POD,
        fixture: false,
        benchmark: false,
        body: deployed_sigkill_mid_reload_6_1,
    },
    Scenario {
        name: "deployed-least-privilege-6.1",
        about: "6.1, kdumpctl's layout, +128 MiB: the pod with each capability, then each mount, removed alone, each against what it must do; uevents only, +128 MiB: the uevent reaches the pod's network namespace, one reload; dump whole",
        kernel: KERNEL_6_1_POD,
        fixture: false,
        benchmark: false,
        body: deployed_least_privilege_6_1,
    },
];

const POD: &str = GUEST_POD_ID;
/// Waiting for the pod (probes, a read-back under TCG on a shared host).
const POD_TIMEOUT: Duration = Duration::from_secs(120);
/// The capture kernel's command line, split the way both distributions' configurations split
/// it: the base, then what they append (together: `scenario::CAPTURE_CMDLINE`).
const CMDLINE_BASE: &str = "console=ttyS0 quiet";
const CMDLINE_APPEND: &str = "irqpoll nr_cpus=1 reset_devices panic=-1";

/// The node before the kubelet starts the pod: cgroup v2 with the memory controller (runc
/// applies the manifest's memory limit), the hostPath directories, `/var/lock` as Debian and
/// Fedora have it.
fn node_up(m: &mut Machine) -> Result<()> {
    m.sh(&format!(
        "mkdir -p /sys/fs/cgroup /run /var && mount -t cgroup2 cgroup2 /sys/fs/cgroup && echo '+memory +pids' >/sys/fs/cgroup/cgroup.subtree_control && ln -sfn /run/lock /var/lock && {GUEST_HOST_PATHS}"
    ))
    .context("preparing the node for the pod")?;
    Ok(())
}

/// Debian's boot-time load: kdump-tools' layout (`/etc/default/kdump-tools` naming
/// `/var/lib/kdump/vmlinuz` and `initrd.img`, which `kdump-config` links to the running
/// kernel's) and Debian's own `kdump-config load`, under busybox sh. The kdump initrd is there
/// as kdump-tools' kernel hook leaves it, with the sysctls it was built for (`latest_sysctls-*`;
/// without them `kdump-config` deletes the initrd to rebuild it, and the image has no
/// mkinitramfs).
fn load_debian(run: &mut Run, m: &mut Machine) -> Result<()> {
    m.sh(&format!(
        "r=$(uname -r) && mkdir -p /var/lib/kdump /sbin /etc/default && cp {GUEST_KERNEL} /boot/vmlinuz-$r && cp {GUEST_CAPTURE_INITRD} /var/lib/kdump/initrd.img-$r && cp /etc/kdump/sysctl.conf /var/lib/kdump/latest_sysctls-$r && ln -sf {GUEST_KEXEC} /sbin/kexec && printf '%s\\n' USE_KDUMP=1 KDUMP_KERNEL=/var/lib/kdump/vmlinuz KDUMP_INITRD=/var/lib/kdump/initrd.img KDUMP_COREDIR=/var/crash 'KDUMP_CMDLINE=\"{CMDLINE_BASE}\"' 'KDUMP_CMDLINE_APPEND=\"{CMDLINE_APPEND}\"' >/etc/default/kdump-tools"
    ))?;
    // kdump-tools 1.8.1 runs `kexec -p` (no -s without Secure Boot); kexec-tools 2.0.29 tries
    // kexec_file_load first.
    run.load_kdump_with(m, "kdump-config load", LoadPath::KexecFileLoad)?;
    let ran = m.sh("cat /var/crash/kexec_cmd")?;
    run.note("boot_load", ran.trim());
    Ok(())
}

/// Fedora's boot-time load: kdumpctl's layout (`/etc/sysconfig/kdump`,
/// `/boot/vmlinuz-<release>`, `/boot/initramfs-<release>kdump.img`) and the command kdumpctl
/// runs on x86_64 (`KEXEC_ARGS="-s"`, `-p`) under its lock, `/var/lock/kdump`. kdumpctl itself
/// (bash, dracut) is not in the image.
fn load_fedora(run: &mut Run, m: &mut Machine) -> Result<()> {
    m.sh(&format!(
        "r=$(uname -r) && mkdir -p /etc/sysconfig && cp {GUEST_KERNEL} /boot/vmlinuz-$r && cp {GUEST_CAPTURE_INITRD} /boot/initramfs-${{r}}kdump.img && printf '%s\\n' 'KDUMP_COMMANDLINE=\"{CMDLINE_BASE}\"' 'KDUMP_COMMANDLINE_APPEND=\"{CMDLINE_APPEND}\"' 'KEXEC_ARGS=\"-s\"' KDUMP_IMG=vmlinuz >/etc/sysconfig/kdump"
    ))?;
    let command = format!(
        "r=$(uname -r) && flock /var/lock/kdump kexec -s -p --command-line='{CMDLINE_BASE} {CMDLINE_APPEND}' --initrd=/boot/initramfs-${{r}}kdump.img /boot/vmlinuz-$r"
    );
    run.load_kdump_with(m, &command, LoadPath::KexecFileLoad)?;
    run.note("boot_load", command);
    Ok(())
}

/// `runc run -d` of the generated bundle, as the kubelet's runtime starts the container;
/// `--no-pivot` because the guest's root is an initramfs, which pivot_root refuses. The
/// agent's log (its stderr) goes to /tmp/kdump-agent.log, where the agent helpers read it.
fn start_pod(m: &mut Machine) -> Result<Instant> {
    let started = Instant::now();
    m.sh(&format!(
        "{GUEST_RUNC} run -d --no-pivot -b {GUEST_POD_BUNDLE} {POD} >>/tmp/kdump-agent.log 2>&1 </dev/null"
    ))
    .context("runc run of the DaemonSet's container")?;
    Ok(started)
}

/// `kdump-agent status --json` run on the host, through the socket in /run/kdump-agent; `None`
/// until the pod answers. Without a daemon `status` computes the report itself, read-back
/// included, and only its text form says so (`--json` does not): so the text is asked first.
fn pod_status(m: &mut Machine) -> Result<Option<(i32, Value)>> {
    let out = m.run(&format!(
        "{GUEST_AGENT} status | grep -q '(from the running daemon)' || exit 99; {GUEST_AGENT} status --json"
    ))?;
    if out.code == 99 {
        return Ok(None);
    }
    let json = serde_json::from_str(&out.text()).unwrap_or(Value::Null);
    Ok(Some((out.code, json)))
}

/// Waits until the pod itself, asked by the host's `status`, says ready with a header that
/// `verified` accepts; returns seconds since `started`.
fn wait_pod(
    m: &mut Machine,
    started: Instant,
    verified: impl Fn(&Value) -> bool,
) -> Result<(f64, Value)> {
    loop {
        let answer = pod_status(m)?;
        if let Some((0, json)) = &answer
            && verified(&json["header"])
        {
            let seconds = (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0;
            return Ok((seconds, json.clone()));
        }
        if started.elapsed() > POD_TIMEOUT {
            let what = match answer {
                None => "the pod never answered on /run/kdump-agent/agent.sock".to_owned(),
                Some((code, json)) => format!(
                    "status exit {code}, header {}: {}",
                    json["header"], json["reason"]
                ),
            };
            bail!("{what} within {} s", POD_TIMEOUT.as_secs());
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Waits until the pod says ready with the header it read back, and notes the seconds from the
/// pod's start.
fn wait_verified(run: &mut Run, m: &mut Machine, started: Instant, key: &str) -> Result<()> {
    let (seconds, _) = wait_pod(m, started, |h| h["provenance"] == "read-back")?;
    run.note(key, seconds);
    Ok(())
}

/// RuntimeDefault (containers-common's profile, as CRI-O and Podman apply it) refuses
/// `kexec_file_load` to the very same container: the host's `kexec -s -p` run in it fails with
/// EPERM and the boot-time image stays.
fn runtime_default_refuses(run: &mut Run, m: &mut Machine) -> Result<()> {
    let out = m.run(&format!(
        "{GUEST_RUNC} run --no-pivot -b {GUEST_RUNTIME_DEFAULT_BUNDLE} runtime-default </dev/null; rc=$?; {GUEST_RUNC} delete -f runtime-default >/dev/null 2>&1; exit $rc"
    ))?;
    let text = out.text();
    run.note("runtime_default_kexec", text.trim());
    run.check(
        out.code != 0 && text.contains("Operation not permitted"),
        format!(
            "under RuntimeDefault kexec -s -p exited {}, expected EPERM: {text}",
            out.code
        ),
    );
    let loaded = m.sh("cat /sys/kernel/kexec_crash_loaded")?;
    run.check(
        loaded.trim() == "1",
        "the refused load under RuntimeDefault unloaded the boot-time image",
    );
    Ok(())
}

/// `body`'s error with what the pod left: the end of its log and runc's view of it.
fn with_pod_log<T>(m: &mut Machine, body: impl FnOnce(&mut Machine) -> Result<T>) -> Result<T> {
    body(m).map_err(|e| {
        let log = m
            .sh(&format!(
                "tail -20 /tmp/kdump-agent.log; {GUEST_RUNC} list; dmesg | tail -5"
            ))
            .unwrap_or_default();
        e.context(format!("the pod's log, runc list and dmesg end:\n{log}"))
    })
}

/// The pod started after the boot-time load verifies it; one DIMM: one reload by the pod.
fn pod_reloads_once(run: &mut Run, m: &mut Machine) -> Result<()> {
    with_pod_log(m, |m| pod_reloads_once_in(run, m))
}

fn pod_reloads_once_in(run: &mut Run, m: &mut Machine) -> Result<()> {
    let started = start_pod(m)?;
    wait_verified(run, m, started, "seconds_from_pod_start_to_verified")?;
    let dimm = run.hot_add(m, 512, Online::Write("online"))?;
    let online = Instant::now();
    wait_metric(m, SUCCESS, 1.0)?;
    wait_ready(m)?;
    run.note(
        "seconds_from_online_to_ready",
        online.elapsed().as_secs_f64(),
    );
    run.note("dimm_bytes", dimm.size);
    expect_reloads(run, m, 1, "for one DIMM")?;
    crash_and_expect(run, m, 0)
}

fn deployed_debian_6_1(run: &mut Run) -> Result<()> {
    let mut m = run.boot(&Default::default())?;
    node_up(&mut m)?;
    load_debian(run, &mut m)?;
    runtime_default_refuses(run, &mut m)?;
    pod_reloads_once(run, &mut m)
}

fn deployed_fedora_6_1(run: &mut Run) -> Result<()> {
    let mut m = run.boot(&Default::default())?;
    node_up(&mut m)?;
    load_fedora(run, &mut m)?;
    pod_reloads_once(run, &mut m)
}

fn deployed_kernel_managed_6_12(run: &mut Run) -> Result<()> {
    let mut m = run.boot(&Default::default())?;
    with_pod_log(&mut m, |m| kernel_managed(run, m))
}

fn kernel_managed(run: &mut Run, m: &mut Machine) -> Result<()> {
    node_up(m)?;
    load_fedora(run, m)?;
    run.check_crash_hotplug(m, "1")?;
    let started = start_pod(m)?;
    wait_verified(run, m, started, "seconds_from_pod_start_to_verified")?;
    // Under the manifest's capabilities the pod attaches the handler probe that names the
    // kernel's skipped updates (the skip itself is provoked in kernel-skipped-update-6.12).
    let handler = ["fentry", "kprobe"]
        .into_iter()
        .map(|how| {
            metric(
                m,
                &format!(r#"kdump_agent_probe_attached{{how="{how}",probe="crash_handle_hotplug_event"}}"#),
            )
        })
        .sum::<Result<f64>>()?;
    run.note("crash_handle_hotplug_event_attached", handler);
    run.check(
        handler == 1.0,
        "the pod did not attach the crash_handle_hotplug_event probe",
    );
    let dimm = run.hot_add(m, 512, Online::Auto)?;
    // Time for a reload, if the pod wrongly started one, to show up.
    std::thread::sleep(Duration::from_secs(5));
    wait_ready(m)?;
    run.note("dimm_bytes", dimm.size);
    expect_reloads(run, m, 0, "on a kernel that updates the header itself")?;
    m.sh(&format!("{GUEST_RUNC} delete -f {POD}"))?;
    uevents_reach_pod(run, m, Online::Auto)?;
    expect_reloads(
        run,
        m,
        0,
        "by the uevent pod on a kernel that updates the header itself",
    )?;
    crash_and_expect(run, m, 0)
}

/// SIGKILL lands while the pod's `kexec_file_load` runs: a guest loop spins on
/// `kexec_crash_loaded` (no lock taken to read it) and kills the container's init the moment
/// the kernel has freed the old image. The kubelet then deletes the container and runs it
/// again; the new pod must end with a capture kernel loaded and a fresh header.
fn deployed_sigkill_mid_reload_6_1(run: &mut Run) -> Result<()> {
    let mut m = run.boot(&Default::default())?;
    with_pod_log(&mut m, |m| sigkill_mid_reload(run, m))
}

fn sigkill_mid_reload(run: &mut Run, m: &mut Machine) -> Result<()> {
    node_up(m)?;
    load_debian(run, m)?;
    let started = start_pod(m)?;
    wait_verified(run, m, started, "seconds_from_pod_start_to_verified")?;
    let pid = m.sh(&format!(
        "{GUEST_RUNC} state {POD} | sed -n 's/.*\"pid\": *\\([0-9]*\\).*/\\1/p'"
    ))?;
    let pid: u32 = pid
        .trim()
        .parse()
        .with_context(|| format!("runc state {POD}: pid `{}`", pid.trim()))?;
    m.sh(&format!(
        "(while read v </sys/kernel/kexec_crash_loaded && [ \"$v\" = 1 ]; do :; done; kill -9 {pid}; read w </sys/kernel/kexec_crash_loaded; echo \"$v $w\" >/tmp/killed) >/dev/null 2>&1 </dev/null &"
    ))?;
    let dimm = run.hot_add(m, 512, Online::Write("online"))?;
    m.wait_until("test -s /tmp/killed", POD_TIMEOUT)
        .context("the old image was never freed: the pod did not reload")?;
    let killed = m.sh("cat /tmp/killed")?;
    // The value read just before and just after the kill: 0 0 means the load was under way.
    let killed = killed.trim();
    run.note("kexec_crash_loaded_at_kill", killed);
    run.check(
        killed.starts_with('0'),
        format!("the kill did not land with the old image freed (kexec_crash_loaded before and after: {killed})"),
    );
    m.wait_until(
        &format!("! kill -0 {pid} 2>/dev/null"),
        Duration::from_secs(30),
    )?;
    // SIGKILL is acted on when the syscall returns: 1 here means the kernel finished the load
    // the killed pod had started, 0 that it failed and nothing is loaded. Either way the pod
    // run again must end loaded and fresh.
    let after = m.sh("cat /sys/kernel/kexec_crash_loaded")?;
    run.note("kexec_crash_loaded_after_kill", after.trim());
    m.sh(&format!("{GUEST_RUNC} delete -f {POD}"))?;
    let restarted = start_pod(m)?;
    // Ready from the new pod: a capture kernel loaded and a header it knows lists all RAM.
    let (seconds, json) = wait_pod(m, restarted, |h| h["missing_bytes"] == 0)
        .context("after the restart the pod never said ready")?;
    run.note("seconds_from_restart_to_ready", seconds);
    run.note("status_after_restart", json["header"].clone());
    let loaded = m.sh("cat /sys/kernel/kexec_crash_loaded")?;
    run.check(
        loaded.trim() == "1" && json["crash_kernel_loaded"] == true,
        "after the restart no capture kernel is loaded",
    );
    run.note("dimm_bytes", dimm.size);
    crash_and_expect(run, m, 0)
}

/// What removing one privilege of the manifest alone does to the pod, as
/// `deployed-least-privilege-6.1` measures it (a stale header at the pod's start, so a working
/// pod must read it back, reload and say ready). deploy/daemonset.yaml's comments say the same.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Without {
    /// The agent exits at start; its log says why.
    Exits,
    /// It runs, cannot read the loaded header back, so never knows it and never says ready.
    NoReadBack,
    /// No recipe: `observe` mode, the stale header stays.
    Observes,
    /// Its reload is refused or fails; the stale header stays.
    ReloadFails,
    /// It works as with it, and this path in the pod is then writable: the host root's
    /// read-only bind does not reach the host's mounts under it.
    Writable(&'static str),
    /// It works as with it, but cannot create this lock on the host (the host root is
    /// read-only), so it loads without it while no distribution script has made it yet.
    Unlocked(&'static str),
}

/// Each capability and mount the manifest adds, and what removing it alone does. A privilege
/// missing here, or one the manifest no longer has, fails the scenario.
const WITHOUT: &[(&str, Without)] = &[
    ("SYS_BOOT", Without::Exits),
    ("SYS_ADMIN", Without::Exits),
    ("SYS_RAWIO", Without::NoReadBack),
    ("host-proc", Without::Writable("/host/proc")),
    ("host-sys", Without::Writable("/host/sys")),
    ("host-root", Without::ReloadFails),
    ("state", Without::Exits),
    ("host-lock", Without::Unlocked("/run/lock/kdump")),
];

/// How long a pod without one privilege gets to say ready (the full manifest's read-back and
/// reload took up to 29 s under TCG on a loaded host); only a pod that neither exits, fails its
/// reload nor says ready waits this long.
const VARIANT_TIMEOUT: Duration = Duration::from_secs(60);
/// The memory uevents (or probe events) of blocks going online the agent took in.
const ONLINE_EVENTS: &str = r#"kdump_memory_hotplug_events_total{action="online"}"#;

/// What one pod did: started by runc at all, exited, answered the host's `status` over the
/// state directory's socket, its last status, its log's first problem, seconds until it settled.
#[derive(Debug, Default)]
struct Outcome {
    runc_error: Option<String>,
    exited: bool,
    answered: bool,
    ready: bool,
    status: Value,
    first_problem: String,
    seconds: f64,
}

impl Outcome {
    /// The outcome in the terms of [`Without`] (`writable`: whether the path the expectation
    /// names is writable in the pod), or what else happened, in words.
    fn seen(&self, expected: Without, probe: Option<bool>) -> std::result::Result<Without, String> {
        if let Some(e) = &self.runc_error {
            return Err(format!("runc run failed: {e}"));
        }
        if self.exited {
            return Ok(Without::Exits);
        }
        if !self.answered {
            return Err("the host's `kdump-agent status` never reached the daemon".into());
        }
        let s = &self.status;
        if self.ready {
            let reloaded = self.reloaded();
            return match (expected, probe) {
                (Without::Writable(path), Some(true)) if reloaded => Ok(Without::Writable(path)),
                (Without::Writable(path), Some(false)) => Err(format!(
                    "works as with it and {path} stays read-only: not needed"
                )),
                (Without::Unlocked(path), Some(false)) if reloaded => Ok(Without::Unlocked(path)),
                (Without::Unlocked(path), Some(true)) => {
                    Err(format!("works as with it and creates {path}: not needed"))
                }
                _ if !reloaded => Err(format!(
                    "ready without a reload of its own (last reload: {}): the header was not stale",
                    s["reload"]["last"]
                )),
                _ => Err("works as with it: not needed".into()),
            };
        }
        if s["mode"] == "observe" {
            return Ok(Without::Observes);
        }
        if s["reload"]["failures"].as_u64().unwrap_or(0) > 0 {
            return Ok(Without::ReloadFails);
        }
        if s["header"]["provenance"] != "read-back" && s["header"]["provenance"] != "captured" {
            return Ok(Without::NoReadBack);
        }
        Err(format!("not ready: {}", s["reason"]))
    }

    /// Its own last reload succeeded.
    fn reloaded(&self) -> bool {
        self.status["reload"]["last"]
            .as_str()
            .is_some_and(|l| l.starts_with("success"))
    }

    /// Its verdict will not change by waiting: it exited, is ready, its reload failed, or it
    /// found no recipe.
    fn settled(&self) -> bool {
        let s = &self.status;
        self.exited
            || self.ready
            || s["reload"]["failures"].as_u64().unwrap_or(0) > 0
            || (s["mode"] == "observe" && !s["reload"]["recipe_refused"].is_null())
            || self.read_back_refused()
    }

    /// Start-up's read-back failed (e.g. `/proc/kcore` EPERM): with no change of RAM during
    /// the attempt, nothing will read it again.
    fn read_back_refused(&self) -> bool {
        let h = &self.status["header"];
        h["provenance"] == "inferred"
            && h["unknown"]
                .as_str()
                .is_some_and(|u| u.contains("not read back: "))
    }
}

/// Starts the pod from `bundle` and waits until it settles or `VARIANT_TIMEOUT` passes; then
/// measures whether each of `paths` is writable in it (while it runs) and deletes it.
fn attempt(m: &mut Machine, bundle: &str, paths: &[&str]) -> Result<(Outcome, Vec<bool>)> {
    let mut out = Outcome::default();
    let started = m.run(&format!(
        ": >/tmp/kdump-agent.log; {GUEST_RUNC} run -d --no-pivot -b {bundle} {POD} >>/tmp/kdump-agent.log 2>&1 </dev/null"
    ))?;
    let begun = Instant::now();
    if started.code != 0 {
        let log = m.sh("tail -3 /tmp/kdump-agent.log")?;
        out.runc_error = Some(log.trim().replace('\n', " | "));
    }
    while out.runc_error.is_none() {
        if let Some((code, json)) = pod_status(m)? {
            out.answered = true;
            out.ready = code == 0;
            out.status = json;
        }
        let stopped = m.run(&format!(
            "{GUEST_RUNC} state {POD} | grep -q '\"status\": *\"stopped\"'"
        ))?;
        out.exited = stopped.code == 0;
        if out.settled() || begun.elapsed() > VARIANT_TIMEOUT {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    out.seconds = (begun.elapsed().as_secs_f64() * 10.0).round() / 10.0;
    let mut writable = Vec::new();
    if out.answered && !out.exited {
        for path in paths {
            writable.push(writable_in_pod(m, path)?);
        }
    }
    out.first_problem = m
        .sh("grep -m1 -E '\"level\": *\"(ERROR|WARN)' /tmp/kdump-agent.log || grep -m1 -v '\"level\"' /tmp/kdump-agent.log || true")?
        .trim()
        .chars()
        .take(300)
        .collect();
    m.sh(&format!(
        "{GUEST_RUNC} delete -f {POD} >/dev/null 2>&1; true"
    ))?;
    Ok((out, writable))
}

/// Whether the mount the pod sees at `path` is read-write: its options in the pod's own
/// mountinfo, read by the host's busybox run in the pod (`runc exec`, the pod's capabilities).
fn writable_in_pod(m: &mut Machine, path: &str) -> Result<bool> {
    let options = m.sh(&format!(
        "{GUEST_RUNC} exec {POD} /host/bin/busybox awk '$5 == \"{path}\" {{ o = $6 }} END {{ print o }}' /proc/self/mountinfo"
    ))?;
    let options = options.trim();
    if options.is_empty() {
        bail!("{path} is not a mount in the pod");
    }
    Ok(options.split(',').any(|o| o == "rw"))
}

/// A capture kernel is loaded and its header is stale, as the host's one-shot `status` (no
/// daemon runs between two pods) reads it back and judges it.
fn loaded_and_stale(m: &mut Machine) -> Result<bool> {
    let out = m.run(&format!("{GUEST_AGENT} status --json"))?;
    let json: Value = serde_json::from_str(&out.text())
        .with_context(|| format!("status --json on the host: `{}`", out.text().trim()))?;
    Ok(json["crash_kernel_loaded"] == true && json["header"]["stale"] == true)
}

/// Makes the loaded header stale again, as a boot-time load before a DIMM: `dimm` offlined and
/// unplugged (an offline block is still System RAM in the header a load builds), `kexec -s -p`,
/// and a new DIMM of the same size plugged and onlined in its slot; returns it.
fn make_stale(run: &mut Run, m: &mut Machine, dimm: &Dimm) -> Result<Dimm> {
    m.set_blocks(dimm, "offline")?;
    m.hot_remove_dimm(dimm, Duration::from_secs(60))?;
    run.report.hotplugged_bytes -= dimm.size;
    run.load_kdump(m, LoadPath::KexecFileLoad)?;
    run.hot_add(m, dimm.size >> 20, Online::Write("online_movable"))
}

fn deployed_least_privilege_6_1(run: &mut Run) -> Result<()> {
    let mut m = run.boot(&Default::default())?;
    with_pod_log(&mut m, |m| least_privilege(run, m))
}

/// The manifest's privileges against [`WITHOUT`], as (name, variant bundle, expectation); an
/// error when a privilege has no expectation or an expectation no privilege.
fn expectations(ds: &Value) -> Result<Vec<(String, String, Without)>> {
    let (caps, mounts) = oci::privileges(ds);
    let named: Vec<(String, String)> = caps
        .into_iter()
        .map(|c| (format!("cap-{c}"), c))
        .chain(mounts.into_iter().map(|v| (format!("mount-{v}"), v)))
        .collect();
    let gone: Vec<&str> = WITHOUT
        .iter()
        .map(|(w, _)| *w)
        .filter(|w| !named.iter().any(|(_, n)| n == w))
        .collect();
    if !gone.is_empty() {
        bail!("deployed::WITHOUT expects {gone:?}, which deploy/daemonset.yaml no longer adds");
    }
    named
        .into_iter()
        .map(|(bundle, name)| {
            let want = WITHOUT
                .iter()
                .find(|(w, _)| *w == name)
                .with_context(|| {
                    format!("deploy/daemonset.yaml adds {name}, and deployed::WITHOUT says nothing of what removing it does")
                })?
                .1;
            Ok((name, format!("{GUEST_VARIANT_BUNDLES}/{bundle}"), want))
        })
        .collect()
}

fn least_privilege(run: &mut Run, m: &mut Machine) -> Result<()> {
    node_up(m)?;
    // kdumpctl's layout: its lock is the one under /run/lock, which the host-lock mount is for.
    load_fedora(run, m)?;
    let path = crate::paths::root().join("deploy/daemonset.yaml");
    let ds = oci::daemonset(
        &std::fs::read_to_string(&path).with_context(|| path.display().to_string())?,
    )?;
    let expected = expectations(&ds)?;
    // The boot-time header misses this DIMM: every pod below starts with a stale header.
    // Movable, so that make_stale can offline and unplug it.
    let mut dimm = run.hot_add(m, 128, Online::Write("online_movable"))?;
    let probed: Vec<&str> = expected
        .iter()
        .filter_map(|(_, _, w)| match w {
            Without::Writable(p) => Some(*p),
            _ => None,
        })
        .collect();
    let locks: Vec<&str> = expected
        .iter()
        .filter_map(|(_, _, w)| match w {
            Without::Unlocked(p) => Some(*p),
            _ => None,
        })
        .collect();
    run.progress("the control: the pod as the manifest has it");
    m.sh(&format!("rm -f {}", locks.join(" ")))?;
    let (control, read_only) = attempt(m, GUEST_POD_BUNDLE, &probed)?;
    for lock in &locks {
        let made = m.run(&format!("test -f {lock}"))?;
        run.check(
            made.code == 0,
            format!("with the full manifest the pod did not create the lock {lock}"),
        );
    }
    run.note(
        "control",
        serde_json::json!({"ready": control.ready, "seconds": control.seconds, "last_reload": control.status["reload"]["last"], "writable": probed.iter().zip(&read_only).map(|(p, w)| format!("{p}: {w}")).collect::<Vec<_>>()}),
    );
    if !control.ready || !control.reloaded() {
        bail!("the control pod (the full manifest) did not reload and say ready: {control:?}");
    }
    run.check(
        read_only.iter().all(|w| !w),
        format!("with the full manifest {probed:?} are writable in the pod: {read_only:?}"),
    );
    for (name, bundle, want) in &expected {
        if !loaded_and_stale(m)? {
            dimm = make_stale(run, m, &dimm)?;
        }
        run.progress(&format!("the pod without {name}"));
        let paths: Vec<&str> = match want {
            Without::Writable(p) => vec![p],
            _ => vec![],
        };
        if let Without::Unlocked(lock) = want {
            m.sh(&format!("rm -f {lock}"))?;
        }
        let (outcome, writable) = attempt(m, bundle, &paths)?;
        let probe = match want {
            Without::Unlocked(lock) => Some(m.run(&format!("test -f {lock}"))?.code == 0),
            _ => writable.first().copied(),
        };
        let seen = outcome.seen(*want, probe);
        run.note(
            &format!("without_{name}"),
            serde_json::json!({
                "expected": format!("{want:?}"),
                "seen": match &seen { Ok(w) => format!("{w:?}"), Err(e) => e.clone() },
                "seconds": outcome.seconds,
                "reason": outcome.status["reason"],
                "log": outcome.first_problem,
            }),
        );
        run.check(
            seen.as_ref() == Ok(want),
            format!(
                "without {name}: expected {want:?}, seen {}",
                match &seen {
                    Ok(w) => format!("{w:?}"),
                    Err(e) => e.clone(),
                }
            ),
        );
    }
    uevents_reach_pod(run, m, Online::Write("online"))?;
    crash_and_expect(run, m, 0)
}

/// The pod in a network namespace of its own, memory uevents its only event source
/// (`--event-source uevent`): it says ready, then a 128 MiB DIMM's online uevent must reach it
/// (its counter on /metrics, read inside the pod's namespace, rises) and it must say ready
/// again. Leaves the pod running.
fn uevents_reach_pod(run: &mut Run, m: &mut Machine, online: Online) -> Result<()> {
    run.progress("the pod in its own network namespace, --event-source uevent");
    let started = Instant::now();
    m.sh(&format!(
        ": >/tmp/kdump-agent.log; {GUEST_RUNC} run -d --no-pivot -b {GUEST_VARIANT_BUNDLES}/uevent-netns {POD} >>/tmp/kdump-agent.log 2>&1 </dev/null"
    ))
    .context("runc run of the pod with --event-source uevent")?;
    let (seconds, json) = wait_pod(m, started, |h| h["missing_bytes"] == 0)?;
    run.check(
        json["event_source"] == "uevent",
        format!("the uevent pod's event source is {}", json["event_source"]),
    );
    let own_netns = m.run(&format!(
        "pid=$({GUEST_RUNC} state {POD} | sed -n 's/.*\"pid\": *\\([0-9]*\\).*/\\1/p'); test \"$(readlink /proc/$pid/ns/net)\" != \"$(readlink /proc/self/ns/net)\""
    ))?;
    run.check(
        own_netns.code == 0,
        "the uevent pod shares the host's network namespace",
    );
    let before = metric(m, ONLINE_EVENTS)?;
    let dimm = run.hot_add(m, 128, online)?;
    let arrived = wait_metric(m, ONLINE_EVENTS, before + 1.0);
    let after = metric(m, ONLINE_EVENTS)?;
    run.note(
        "pod_netns_uevents",
        serde_json::json!({
            "seconds_from_pod_start_to_ready": seconds,
            "online_events_before": before,
            "online_events_after": after,
            "dimm_bytes": dimm.size,
        }),
    );
    arrived.context("in its own network namespace the pod got no memory uevent")?;
    wait_ready(m)
}
