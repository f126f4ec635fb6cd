//! The DaemonSet as a node runs it: kdump loaded at boot the distribution's way, then the pod
//! started by Debian's runc from the OCI config generated out of `deploy/daemonset.yaml`
//! (`image::GUEST_POD_BUNDLE`), `kdump-agent status` on the host talking to it through the
//! socket on the shared state directory. The pod starts after the load, so it must read the
//! header back before it may say ready.
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use kdump_agent::model::elfcorehdr::LoadPath;
use serde_json::Value;

use super::agent::{SUCCESS, crash_and_expect, expect_reloads, wait_metric, wait_ready};
use crate::lab::{
    image::{
        GUEST_AGENT, GUEST_CAPTURE_INITRD, GUEST_HOST_PATHS, GUEST_KERNEL, GUEST_KEXEC,
        GUEST_POD_BUNDLE, GUEST_RUNC, GUEST_RUNTIME_DEFAULT_BUNDLE, GUEST_VARIANT_BUNDLES,
        KERNEL_6_1_POD, KERNEL_6_12_POD,
    },
    machine::Machine,
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
        about: "6.12, kdumpctl's layout and kexec -s -p, the pod verifies the read-back header; +512 MiB: the kernel updates it, zero reloads; dump whole",
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
        about: "6.1, kdump-config load; the pod with each capability, then each mount, removed alone: what fails; in a pod network namespace, uevents only, +128 MiB: do the uevents arrive",
        kernel: KERNEL_6_1_POD,
        fixture: false,
        benchmark: false,
        body: deployed_least_privilege_6_1,
    },
];

/// The pod's container id under runc.
const POD: &str = "kdump-agent";
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
    let dimm = run.hot_add(m, 512, Online::Auto)?;
    // Time for a reload, if the pod wrongly started one, to show up.
    std::thread::sleep(Duration::from_secs(5));
    wait_ready(m)?;
    run.note("dimm_bytes", dimm.size);
    expect_reloads(run, m, 0, "on a kernel that updates the header itself")?;
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

/// How long a pod without one privilege gets to say ready before what it said is recorded.
const VARIANT_TIMEOUT: Duration = Duration::from_secs(40);
/// The counter of memory uevents and probe events the agent took in.
const HOTPLUG_EVENTS: &str = "kdump_memory_hotplug_events_total";

/// What one pod said: started by runc at all, still running, answering the host's `status`,
/// its verdict, and its log's first error or warning.
#[derive(Debug, Default)]
struct Outcome {
    runc_error: Option<String>,
    exited: bool,
    answered: bool,
    ready: bool,
    status: Value,
    first_problem: String,
}

impl Outcome {
    /// What differs from the control pod, in words; `None` when nothing does.
    fn what_failed(&self, control: &Outcome) -> Option<String> {
        let log = if self.first_problem.is_empty() {
            String::new()
        } else {
            format!("; log: {}", self.first_problem)
        };
        if let Some(e) = &self.runc_error {
            return Some(format!("runc run failed: {e}"));
        }
        if self.exited {
            return Some(format!("the agent exited{log}"));
        }
        if !self.answered {
            return Some(format!(
                "the host's `kdump-agent status` never reached the daemon on /run/kdump-agent/agent.sock{log}"
            ));
        }
        if !self.ready {
            return Some(format!(
                "not ready: {}{log}",
                self.status["reason"].as_str().unwrap_or("?")
            ));
        }
        let (got, want) = (
            &self.status["event_source"],
            &control.status["event_source"],
        );
        if got != want {
            return Some(format!(
                "ready, but event source {got} instead of {want}{log}"
            ));
        }
        let (got, want) = (
            &self.status["header"]["provenance"],
            &control.status["header"]["provenance"],
        );
        if got != want && control.status["header"]["provenance"] == "read-back" {
            return Some(format!(
                "ready, but header provenance {got} instead of {want}{log}"
            ));
        }
        None
    }
}

/// Starts the pod from `bundle`, waits until it says ready, exits, or `VARIANT_TIMEOUT`
/// passes, records what it said, and deletes it.
fn attempt(m: &mut Machine, bundle: &str) -> Result<Outcome> {
    let mut out = Outcome::default();
    let started = m.run(&format!(
        ": >/tmp/kdump-agent.log; {GUEST_RUNC} run -d --no-pivot -b {bundle} {POD} >>/tmp/kdump-agent.log 2>&1 </dev/null"
    ))?;
    if started.code != 0 {
        let log = m.sh("tail -3 /tmp/kdump-agent.log")?;
        out.runc_error = Some(log.trim().replace('\n', " | "));
        m.run(&format!("{GUEST_RUNC} delete -f {POD} >/dev/null 2>&1"))?;
        return Ok(out);
    }
    let begun = Instant::now();
    loop {
        if let Some((code, json)) = pod_status(m)? {
            out.answered = true;
            out.ready = code == 0;
            out.status = json;
            if out.ready {
                break;
            }
        }
        let state = m.run(&format!(
            "{GUEST_RUNC} state {POD} | grep -q '\"status\": *\"stopped\"'"
        ))?;
        if state.code == 0 {
            out.exited = true;
            break;
        }
        if begun.elapsed() > VARIANT_TIMEOUT {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    out.first_problem = m
        .sh("grep -m1 -iE '\"level\": *\"(error|warn)' /tmp/kdump-agent.log || grep -m1 -iv '\"level\": *\"(info|debug)' /tmp/kdump-agent.log || true")?
        .trim()
        .chars()
        .take(400)
        .collect();
    Ok(out)
}

fn delete_pod(m: &mut Machine) -> Result<()> {
    m.sh(&format!(
        "{GUEST_RUNC} delete -f {POD} >/dev/null 2>&1; true"
    ))?;
    Ok(())
}

/// One variant: started, compared with the control, noted as `{"without", "what_failed"}`; a
/// removal that changes nothing is a failed check naming the privilege as not needed.
fn measure(
    run: &mut Run,
    m: &mut Machine,
    without: &str,
    bundle: &str,
    control: &Outcome,
) -> Result<()> {
    run.progress(&format!("the pod without {without}"));
    let outcome = attempt(m, bundle)?;
    delete_pod(m)?;
    let failed = outcome.what_failed(control);
    run.note(
        &format!("without_{without}"),
        serde_json::json!({
            "without": without,
            "what_failed": failed.clone().unwrap_or_else(|| "nothing: not needed, propose removing it from the manifest".into()),
            "status_reason": outcome.status["reason"],
            "event_source": outcome.status["event_source"],
            "ready": outcome.ready,
        }),
    );
    run.check(
        failed.is_some(),
        format!("without {without} the pod behaves as with it: not needed, propose removing it"),
    );
    Ok(())
}

/// The sum of a counter's series in the textfile the netns pod writes on the state directory.
fn textfile_counter(m: &mut Machine, name: &str) -> Result<f64> {
    let out = m.sh(&format!(
        "grep '^{name}' /run/kdump-agent/kdump_agent.prom 2>/dev/null | awk '{{s += $NF}} END {{print s + 0}}'"
    ))?;
    out.trim()
        .parse()
        .with_context(|| format!("{name} in the textfile: `{}`", out.trim()))
}

fn deployed_least_privilege_6_1(run: &mut Run) -> Result<()> {
    let mut m = run.boot(&Default::default())?;
    with_pod_log(&mut m, |m| least_privilege(run, m))
}

fn least_privilege(run: &mut Run, m: &mut Machine) -> Result<()> {
    node_up(m)?;
    load_debian(run, m)?;
    let path = crate::paths::root().join("deploy/daemonset.yaml");
    let ds = oci::daemonset(
        &std::fs::read_to_string(&path).with_context(|| path.display().to_string())?,
    )?;
    let (caps, mounts) = oci::privileges(&ds);
    run.progress("the control: the pod as the manifest has it");
    let control = attempt(m, GUEST_POD_BUNDLE)?;
    delete_pod(m)?;
    run.note(
        "control",
        serde_json::json!({"ready": control.ready, "event_source": control.status["event_source"], "header": control.status["header"]["provenance"]}),
    );
    if !control.ready {
        bail!(
            "the control pod (the full manifest) never said ready: {:?}",
            control
        );
    }
    // What shows only when the pod must reload: measured after a DIMM made the boot-time header
    // stale, so the pod's first reconcile reloads.
    let after_reload = ["SYS_BOOT", "host-lock"];
    let variants: Vec<(String, String)> = caps
        .iter()
        .map(|c| (c.clone(), format!("cap-{c}")))
        .chain(mounts.iter().map(|v| (v.clone(), format!("mount-{v}"))))
        .collect();
    for (without, bundle) in variants
        .iter()
        .filter(|(w, _)| !after_reload.contains(&w.as_str()))
    {
        measure(
            run,
            m,
            without,
            &format!("{GUEST_VARIANT_BUNDLES}/{bundle}"),
            &control,
        )?;
    }
    let dimm = run.hot_add(m, 128, Online::Write("online"))?;
    run.note("stale_header_dimm_bytes", dimm.size);
    for (without, bundle) in variants
        .iter()
        .filter(|(w, _)| after_reload.contains(&w.as_str()))
    {
        measure(
            run,
            m,
            without,
            &format!("{GUEST_VARIANT_BUNDLES}/{bundle}"),
            &control,
        )?;
    }
    pod_network_namespace(run, m)
}

/// The pod in a network namespace of its own, uevents its only event source: one DIMM, and
/// whether its hotplug-event counter rose.
fn pod_network_namespace(run: &mut Run, m: &mut Machine) -> Result<()> {
    run.progress("the pod in its own network namespace, --event-source uevent");
    let netns = attempt(m, &format!("{GUEST_VARIANT_BUNDLES}/netns"))?;
    if !netns.ready {
        delete_pod(m)?;
        bail!(
            "in a pod network namespace the pod never said ready: {:?}",
            netns
        );
    }
    let pid = m.sh(&format!(
        "{GUEST_RUNC} state {POD} | sed -n 's/.*\"pid\": *\\([0-9]*\\).*/\\1/p'"
    ))?;
    let netns_differs = m.run(&format!(
        "test \"$(readlink /proc/{}/ns/net)\" != \"$(readlink /proc/self/ns/net)\"",
        pid.trim()
    ))?;
    run.check(
        netns_differs.code == 0,
        "the netns pod shares the host's network namespace",
    );
    let before = textfile_counter(m, HOTPLUG_EVENTS)?;
    let dimm = run.hot_add(m, 128, Online::Write("online"))?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut after = textfile_counter(m, HOTPLUG_EVENTS)?;
    while after <= before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        after = textfile_counter(m, HOTPLUG_EVENTS)?;
    }
    let reloads = m.sh("grep '^kdump_reloads_total{result=\"success\"}' /run/kdump-agent/kdump_agent.prom | awk '{print $NF}'")?;
    run.note(
        "netns_uevents",
        serde_json::json!({
            "event_source": netns.status["event_source"],
            "hotplug_events_before": before,
            "hotplug_events_after": after,
            "reloads_success": reloads.trim(),
            "dimm_bytes": dimm.size,
            "arrived": after > before,
        }),
    );
    delete_pod(m)?;
    run.check(
        after > before,
        format!("in a pod network namespace no memory uevent reached the agent ({HOTPLUG_EVENTS} {before} -> {after})"),
    );
    Ok(())
}
