//! The endpoints under abuse, against the real binary: thousands of idle and slow HTTP clients,
//! non-root peers and an endless line on the control socket.
use std::{
    fs,
    io::{ErrorKind, Read as _, Write as _},
    net::{TcpListener, TcpStream},
    os::unix::{fs::PermissionsExt as _, net::UnixStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread::sleep,
    time::{Duration, Instant},
};

mod common;
use common::get;

const BIN: &str = env!("CARGO_BIN_EXE_kdump-agent");
/// The agent's header-read timeout (`export::http::HEADER_READ_TIMEOUT`).
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Raises this process's soft descriptor limit (the agent inherits it) to at least `want`.
fn raise_nofile(want: u64) -> bool {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write one rlimit, which `l` is.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut l);
        l.rlim_cur = l.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &l);
    }
    l.rlim_cur >= want
}

/// The agent's daemon with its own state directory (world-traversable, so that setpriv'd
/// clients can reach the socket), its log in a file, killed when dropped.
struct Agent {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Agent {
    fn start(name: &str, extra: &[&str]) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = std::env::temp_dir().join(format!("kdump-agent-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        let log = fs::File::create(dir.join("agent.log")).unwrap();
        let child = Command::new(BIN)
            .args(["run", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--event-source", "poll", "--state-dir"])
            .arg(dir.join("state"))
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let agent = Self { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        while get(port, "/readyz").is_none_or(|(code, _)| code != 200) {
            assert!(
                Instant::now() < deadline,
                "agent never ready: {}",
                agent.log()
            );
            sleep(Duration::from_millis(50));
        }
        agent
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default()
    }

    fn rss_kib(&self) -> u64 {
        let status = fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Whether the agent has closed `s` (EOF or reset), without blocking.
fn closed(mut s: &TcpStream) -> bool {
    s.set_nonblocking(true).unwrap();
    let mut byte = [0u8; 512];
    loop {
        match s.read(&mut byte) {
            Ok(0) => return true,
            // A 408 from hyper before the close: keep reading to the EOF.
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
}

#[test]
fn idle_and_slow_clients_neither_block_scrapes_nor_linger() {
    if !is_root() {
        println!("SKIP: `kdump-agent run` needs root (its capabilities)");
        return;
    }
    if !raise_nofile(4096) {
        println!("SKIP: RLIMIT_NOFILE's hard limit is below 4096 here");
        return;
    }
    let agent = Agent::start("abuse", &[]);
    let rss_before = agent.rss_kib();
    let idle: Vec<TcpStream> = (0..2000)
        .map(|_| TcpStream::connect(("127.0.0.1", agent.port)).unwrap())
        .collect();
    let mut slow: Vec<TcpStream> = (0..200)
        .map(|_| TcpStream::connect(("127.0.0.1", agent.port)).unwrap())
        .collect();
    let request = b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nUser-Agent: slowloris\r\n";
    let started = Instant::now();
    let (mut worst, mut peak_rss, mut scrapes) = (Duration::ZERO, 0, 0);
    // One header byte a second from each slow client, a scrape from another client in between.
    for second in 0..(HEADER_TIMEOUT.as_secs() as usize - 2) {
        for s in &mut slow {
            let _ = s.write_all(&request[second..second + 1]);
        }
        for _ in 0..4 {
            let t = Instant::now();
            let (code, body) = get(agent.port, "/metrics").expect("a scrape answered");
            worst = worst.max(t.elapsed());
            assert_eq!(code, 200);
            assert!(body.contains("kdump_ready "));
            scrapes += 1;
            peak_rss = peak_rss.max(agent.rss_kib());
            sleep(Duration::from_millis(250).saturating_sub(t.elapsed()));
        }
    }
    println!(
        "{scrapes} scrapes beside 2,000 idle and 200 slow clients: slowest {worst:?}; RSS {rss_before} KiB before, peak {peak_rss} KiB"
    );
    assert!(worst < Duration::from_secs(1), "a scrape took {worst:?}");
    assert!(peak_rss < 32 * 1024, "RSS reached {peak_rss} KiB");
    // Every idle and slow connection is closed once the header timeout has passed.
    let deadline = started + HEADER_TIMEOUT + Duration::from_secs(5);
    let mut open = usize::MAX;
    while Instant::now() < deadline && open > 0 {
        sleep(Duration::from_millis(500));
        open = idle
            .iter()
            .chain(slow.iter())
            .filter(|s| !closed(s))
            .count();
    }
    assert_eq!(
        open,
        0,
        "{open} connections still open after {:?}",
        started.elapsed()
    );
    println!("all 2,200 closed after {:?}", started.elapsed());
    let log = agent.log();
    assert!(
        !log.contains("accepting an HTTP connection failed"),
        "{log}"
    );
    assert!(
        log.lines().count() < 40,
        "the log grew to {} lines:\n{log}",
        log.lines().count()
    );
    assert_eq!(get(agent.port, "/healthz").map(|r| r.0), Some(200));
}

/// `kdump-agent ARGS` as uid 65534 with primary group `gid` and supplementary `groups`.
fn as_nobody(gid: u32, groups: &str, args: &[&str], state_dir: &Path) -> (bool, String) {
    let out = Command::new("setpriv")
        .args(["--reuid", "65534", "--regid", &gid.to_string()])
        .args(if groups.is_empty() {
            vec!["--clear-groups".to_owned()]
        } else {
            vec!["--groups".to_owned(), groups.to_owned()]
        })
        .arg(BIN)
        .args(args)
        .arg("--state-dir")
        .arg(state_dir)
        .output()
        .expect("setpriv");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    // status exits 3 (not ready) on this host; 2 is an error.
    (out.status.code().is_some_and(|c| c == 0 || c == 3), text)
}

#[test]
fn control_socket_checks_peers_and_bounds_lines() {
    if !is_root() {
        println!("SKIP: `kdump-agent run` needs root (its capabilities)");
        return;
    }
    if Command::new("setpriv").arg("--version").output().is_err() {
        println!("SKIP: setpriv (util-linux) is not installed");
        return;
    }
    // nogroup is 65534 on Debian and RHEL alike.
    let agent = Agent::start("control", &["--control-group", "65534"]);
    let dir = agent.state_dir();
    let (ok, text) = as_nobody(65534, "", &["status", "--json"], &dir);
    assert!(
        ok && text.contains("\"ready\""),
        "status as a member: {text}"
    );
    let (ok, text) = as_nobody(100, "65534", &["status"], &dir);
    assert!(ok, "status as a supplementary member: {text}");
    let (ok, text) = as_nobody(65534, "", &["reload"], &dir);
    assert!(
        !ok && text.contains("only root may ask for a reload"),
        "reload as a member: {text}"
    );
    let (ok, text) = as_nobody(100, "", &["status"], &dir);
    assert!(
        !ok && text.contains("only root and members of --control-group may ask"),
        "status as a stranger: {text}"
    );

    // 10 MiB without a newline: refused after 4 KiB, and nothing of it stays in memory.
    let rss_before = agent.rss_kib();
    let mut s = UnixStream::connect(dir.join("agent.sock")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let chunk = vec![b'x'; 1 << 20];
    let written = (0..10).take_while(|_| s.write_all(&chunk).is_ok()).count();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    assert!(
        answer.contains("request line longer than 4096 bytes"),
        "answer: {answer:?}"
    );
    assert!(written < 10, "the agent read all 10 MiB");
    let rss_after = agent.rss_kib();
    println!(
        "10 MiB line: refused after {written} MiB written; RSS {rss_before} -> {rss_after} KiB"
    );
    assert!(
        rss_after < rss_before + 1024,
        "RSS grew from {rss_before} to {rss_after} KiB"
    );

    // A client that sends nothing is dropped after the read timeout.
    let mut silent = UnixStream::connect(dir.join("agent.sock")).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let t = Instant::now();
    let mut answer = String::new();
    let _ = silent.read_to_string(&mut answer);
    assert!(answer.contains("no request line within 5 s"), "{answer:?}");
    assert!(t.elapsed() < Duration::from_secs(8));
    // Root may still ask for everything.
    let out = Command::new(BIN)
        .args(["status", "--state-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(matches!(out.status.code(), Some(0 | 3)), "{out:?}");
}
