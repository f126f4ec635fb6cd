//! `kdump-agent run` and `status` as a user runs them: the real binary, real sockets, the real
//! kernel's uevents, and sysfs fixtures where a kdump state must be staged.
use std::{
    fs,
    net::TcpListener,
    path::Path,
    process::{Child, Command, Output, Stdio},
    thread::sleep,
    time::{Duration, Instant},
};

mod common;
use common::get;

const BIN: &str = env!("CARGO_BIN_EXE_kdump-agent");

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running daemon, stopped with SIGTERM when dropped.
struct Daemon {
    child: Child,
    port: u16,
    state_dir: tempfile::TempDir,
}

impl Daemon {
    fn start(extra: &[&str]) -> Self {
        let port = free_port();
        let state_dir = tempfile::tempdir().unwrap();
        let child = Command::new(BIN)
            .args([
                "run",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--rescan-interval",
                "0.5",
            ])
            .arg("--state-dir")
            .arg(state_dir.path())
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let d = Self {
            child,
            port,
            state_dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while get(port, "/readyz").is_none_or(|(code, _)| code != 200) {
            assert!(
                Instant::now() < deadline,
                "daemon never became ready on port {port}"
            );
            sleep(Duration::from_millis(50));
        }
        d
    }

    fn metrics(&self) -> String {
        get(self.port, "/metrics").expect("scrape").1
    }

    fn stop(mut self) -> Output {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "daemon ignored SIGTERM");
            sleep(Duration::from_millis(20));
        }
        let child = std::mem::replace(&mut self.child, Command::new("true").spawn().unwrap());
        child.wait_with_output().unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn value<'a>(metrics: &'a str, series: &str) -> Option<&'a str> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')))
}

/// A sysfs tree with kdump files, for states this host cannot reach (it has no kexec).
fn sysfs_fixture(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (rel, content) in files {
        let p = dir.path().join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, content).unwrap();
    }
    dir
}

/// `status` with no daemon behind its state directory: the one-shot path.
fn status(args: &[&str]) -> Output {
    let no_daemon = tempfile::tempdir().unwrap();
    Command::new(BIN)
        .arg("status")
        .arg("--state-dir")
        .arg(no_daemon.path())
        .args(args)
        .output()
        .unwrap()
}

fn host_has_kexec() -> bool {
    Path::new("/sys/kernel/kexec_crash_loaded").exists()
}

#[test]
fn serves_metrics_health_and_shuts_down_on_sigterm() {
    let empty = sysfs_fixture(&[]);
    let d = Daemon::start(&["--sysfs", empty.path().to_str().unwrap()]);
    let m = d.metrics();
    assert_eq!(value(&m, "kdump_ready"), Some("0"));
    assert_eq!(value(&m, r#"kdump_mode{mode="unsupported"}"#), Some("1"));
    assert_eq!(value(&m, "kdump_crash_kernel_loaded"), Some("0"));
    assert!(m.contains("# HELP kdump_ready "), "{m}");
    assert_eq!(get(d.port, "/healthz").unwrap(), (200, "ok\n".to_string()));
    assert_eq!(get(d.port, "/nope").unwrap().0, 404);
    let out = d.stop();
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("SIGTERM: shutting down"));
}

#[test]
fn on_this_host_it_says_what_it_cannot_do() {
    if host_has_kexec() {
        println!(
            "SKIP part: this host has kexec; the no-kexec wording is covered by the fixture tests"
        );
        return;
    }
    let d = Daemon::start(&[]);
    let m = d.metrics();
    assert_eq!(value(&m, "kdump_ready"), Some("0"));
    assert_eq!(value(&m, r#"kdump_mode{mode="unsupported"}"#), Some("1"));
    let sources: Vec<_> = ["ebpf", "uevent", "poll"]
        .iter()
        .filter(|s| value(&m, &format!(r#"kdump_agent_event_source{{source="{s}"}}"#)) == Some("1"))
        .collect();
    assert_eq!(sources.len(), 1, "exactly one active event source:\n{m}");
    let out = d.stop();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("reason=this kernel has no kexec support (CONFIG_KEXEC is not set)"),
        "{log}"
    );
}

#[test]
fn the_operator_picks_the_event_source() {
    for source in ["uevent", "poll"] {
        let empty = sysfs_fixture(&[]);
        let d = Daemon::start(&[
            "--sysfs",
            empty.path().to_str().unwrap(),
            "--event-source",
            source,
        ]);
        let m = d.metrics();
        assert_eq!(
            value(
                &m,
                &format!(r#"kdump_agent_event_source{{source="{source}"}}"#)
            ),
            Some("1"),
            "{m}"
        );
        assert_eq!(
            value(&m, r#"kdump_agent_event_source{source="ebpf"}"#),
            Some("0")
        );
        let log = String::from_utf8_lossy(&d.stop().stderr).into_owned();
        assert!(
            log.contains(&format!("turned off by --event-source {source}")),
            "{log}"
        );
    }
}

#[test]
fn kernel_memory_uevents_are_counted() {
    let Some(block) = fs::read_dir("/sys/devices/system/memory")
        .ok()
        .and_then(|d| {
            d.filter_map(|e| e.ok())
                .find(|e| e.file_name().to_string_lossy().starts_with("memory"))
        })
    else {
        println!("SKIP: no /sys/devices/system/memory blocks on this host");
        return;
    };
    let d = Daemon::start(&["--log-format", "json"]);
    let m = d.metrics();
    if value(&m, r#"kdump_agent_event_source{source="uevent"}"#) != Some("1") {
        println!("SKIP: the uevent source is not the active one here (probes attached?)");
        return;
    }
    // A synthetic uevent: the kernel sends ACTION=online for this block over netlink.
    for _ in 0..3 {
        fs::write(block.path().join("uevent"), "online").unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = d.metrics();
        // At least ours: other processes on a shared host may send memory uevents too.
        let counted: u64 = value(&m, r#"kdump_memory_hotplug_events_total{action="online"}"#)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if counted >= 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "3 online uevents not counted:\n{m}"
        );
        sleep(Duration::from_millis(50));
    }
    let out = d.stop();
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .all(|l| l.starts_with('{')),
        "JSON logs only"
    );
}

#[test]
fn textfile_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(&["--textfile-dir", dir.path().to_str().unwrap()]);
    let text = fs::read_to_string(dir.path().join("kdump_agent.prom")).unwrap();
    assert!(text.contains("\nkdump_ready 0\n"), "{text}");
    d.stop();
}

#[test]
fn busy_listen_address_is_one_clear_error() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = Command::new(BIN)
        .args(["run", "--listen", &addr])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err.lines().last().unwrap();
    assert!(
        last.starts_with(&format!("kdump-agent: error: cannot listen on {addr}: ")),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn invalid_listen_address_is_rejected() {
    let out = Command::new(BIN)
        .args(["run", "--listen", "localhost:port"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("invalid value 'localhost:port' for '--listen <ADDR>'")
    );
}

#[test]
fn without_capabilities_run_names_the_missing_ones() {
    if !Path::new("/usr/bin/setpriv").exists() {
        println!("SKIP: setpriv (util-linux) is not installed, cannot drop capabilities");
        return;
    }
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
            BIN,
            "run",
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("missing capabilities CAP_SYS_ADMIN, CAP_SYS_BOOT"),
        "{err}"
    );
}

#[test]
fn status_without_kexec_exits_3_with_the_reason() {
    let empty = sysfs_fixture(&[]);
    let out = status(&["--sysfs", empty.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3));
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.lines().next(),
        Some("kdump: not ready: this kernel has no kexec support (CONFIG_KEXEC is not set)")
    );
    assert!(text.contains("  mode             unsupported\n"), "{text}");
}

#[test]
fn status_on_this_host() {
    let out = status(&[]);
    let text = String::from_utf8_lossy(&out.stdout);
    if host_has_kexec() {
        assert!(text.starts_with("kdump: "), "{text}");
    } else {
        assert_eq!(out.status.code(), Some(3), "{text}");
        assert_eq!(
            text.lines().next(),
            Some("kdump: not ready: this kernel has no kexec support (CONFIG_KEXEC is not set)")
        );
    }
    let json = status(&["--json"]);
    let v: serde_json::Value =
        serde_json::from_slice(&json.stdout).expect("status --json is one JSON object");
    for key in [
        "ready",
        "reason",
        "mode",
        "crash_kernel_loaded",
        "reserved_bytes",
        "event_source",
        "capabilities",
    ] {
        assert!(v.get(key).is_some(), "status --json lacks {key}: {v}");
    }
    assert_eq!(v["ready"].as_bool(), Some(json.status.code() == Some(0)));
}

/// A crash kernel is loaded, but its header can be neither captured (no daemon) nor read back
/// (this host's /proc/iomem has no reservation): `status` must not say ready.
#[test]
fn status_with_a_loaded_crash_kernel_it_cannot_read_is_not_ready() {
    let sysfs = sysfs_fixture(&[
        ("kernel/kexec_crash_loaded", "1\n"),
        ("kernel/kexec_crash_size", "268435456\n"),
        ("devices/system/memory/crash_hotplug", "1\n"),
    ]);
    let out = status(&["--sysfs", sysfs.path().to_str().unwrap(), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(3), "{v}");
    assert_eq!(v["mode"], "kernel-managed");
    assert_eq!(v["reserved_bytes"], 268435456);
    assert_eq!(v["header"]["provenance"], "inferred", "{v}");
    let reason = v["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("what the loaded crash header lists is not known: not captured by a probe, and not read back: "),
        "{reason}"
    );
}

#[test]
fn malformed_sysfs_file_is_named_with_its_line() {
    let sysfs = sysfs_fixture(&[
        ("kernel/kexec_crash_loaded", "1\n"),
        ("kernel/kexec_crash_size", "256M\n"),
    ]);
    let out = status(&["--sysfs", sysfs.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    let expected = format!(
        "kdump-agent: error: {}/kernel/kexec_crash_size line 1: expected an unsigned integer, found \"256M\"",
        sysfs.path().display()
    );
    assert_eq!(err.trim_end(), expected);
}

/// A procfs fixture holding a copy of this host's iomem (the rest of /proc is not needed).
fn procfs_with_iomem(text: &[u8]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("iomem"), text).unwrap();
    dir
}

#[test]
fn malformed_iomem_is_named_with_its_line() {
    let procfs = procfs_with_iomem(b"00000000-00000fff : Reserved\nnot a resource line\n");
    let out = status(&["--procfs", procfs.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.trim_end(),
        format!(
            "kdump-agent: error: {}/iomem line 2: expected \"start-end : name\", found \"not a resource line\"",
            procfs.path().display()
        )
    );
}

#[test]
fn iomem_that_turns_bad_while_running_keeps_the_daemon_and_its_last_facts() {
    let procfs = procfs_with_iomem(&fs::read("/proc/iomem").unwrap());
    let d = Daemon::start(&["--procfs", procfs.path().to_str().unwrap()]);
    let before = value(&d.metrics(), "kdump_system_ram_bytes")
        .unwrap()
        .to_string();
    assert_ne!(before, "NaN");
    fs::write(procfs.path().join("iomem"), b"\xff\xfe binary garbage\n").unwrap();
    sleep(Duration::from_millis(1500)); // three rescans at 0.5 s
    assert_eq!(
        value(&d.metrics(), "kdump_system_ram_bytes"),
        Some(before.as_str())
    );
    let out = d.stop();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("rescan failed; keeping the last good state"),
        "{log}"
    );
    assert!(log.contains("iomem line 1: not UTF-8 text"), "{log}");
}

#[test]
fn status_asks_the_running_daemon_and_check_works_without_one() {
    let d = Daemon::start(&["--sysfs", sysfs_fixture(&[]).path().to_str().unwrap()]);
    let state_dir = d.state_dir.path().to_str().unwrap().to_string();
    let socket = d.state_dir.path().join("agent.sock");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        fs::metadata(&socket).unwrap().permissions().mode() & 0o777,
        0o600,
        "root-only socket"
    );
    let out = Command::new(BIN)
        .args(["status", "--state-dir", &state_dir])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("(from the running daemon)"), "{text}");
    let json = Command::new(BIN)
        .args(["status", "--json", "--state-dir", &state_dir])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["event_source"], "uevent");
    assert_eq!(v["answered_by"], "daemon", "{v}");
    let second = Command::new(BIN)
        .args([
            "run",
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
            "--state-dir",
            &state_dir,
        ])
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(2));
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(
        err.contains("another kdump-agent is already serving"),
        "{err}"
    );
    let check = Command::new(BIN).args(["check"]).output().unwrap();
    assert!(String::from_utf8_lossy(&check.stdout).contains("(computed in one shot"));
    let check = Command::new(BIN)
        .args(["check", "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&check.stdout).unwrap();
    assert_eq!(v["answered_by"], "one-shot", "{v}");
    d.stop();
    assert!(!socket.exists(), "the socket is removed on shutdown");
}
