//! `cargo xtask bench-fleet`: what one agent costs a node, measured on the shipped (release,
//! static musl) binary: RSS and CPU idle and during an event storm, and /metrics latency under
//! 50 concurrent scrapers while real kernel uevents stream in (/healthz measured alongside as the
//! baseline of the same server).
use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use base64::Engine as _;

use crate::{
    paths,
    support::{
        agent, certs,
        exposition::Catalogue,
        http,
        process::{self, cargo},
    },
    ui,
    ui::Step,
};

/// What the release build targets (deploy/Containerfile copies this binary).
const MUSL: &str = "x86_64-unknown-linux-musl";
/// Targets from issue 7.
const IDLE_RSS_TARGET_MIB: f64 = 15.0;
const IDLE_CPU_TARGET_PERCENT: f64 = 0.2;
/// Events of the storm (issue 7), and the steady rate during the scrape benchmark.
const STORM_EVENTS: u64 = 4096;
const STREAM_EVENTS_PER_SECOND: u64 = 100;

/// /metrics p50 and p99 each within this of /healthz's (issue 17).
const METRICS_RATIO_TARGET: f64 = 2.0;
const TLS_USER: &str = "bench";
const TLS_PASSWORD: &str = "bench-secret";

pub struct Options {
    pub idle_seconds: u64,
    pub scrape_seconds: u64,
    pub connections: u32,
    /// Serve over TLS with basic auth (`--web.config.file`); wrk scrapes https.
    pub tls: bool,
    /// Where to write the figures as JSON.
    pub json: Option<PathBuf>,
}

/// How the bench reaches the agent: plain HTTP, or TLS with basic auth.
struct Endpoint {
    port: u16,
    /// (CA file, `Authorization` header) when TLS is on.
    tls: Option<(PathBuf, String)>,
}

impl Endpoint {
    fn url(&self, path: &str) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}{path}", self.port)
    }

    /// /metrics' text: ureq on plain HTTP (it has no TLS here), curl over TLS.
    fn metrics(&self, http: &ureq::Agent) -> Result<String> {
        let Some((ca, authorization)) = &self.tls else {
            return Ok(http::get(http, &self.url("/metrics"))?.1);
        };
        process::output(
            Command::new("curl")
                .args(["-sf", "--cacert"])
                .arg(ca)
                .args(["-H", authorization])
                .arg(self.url("/metrics")),
            "curl /metrics",
        )
    }
}

/// Certificates and a web config (TLS, one bcrypt user) in `dir`; returns the config's path.
fn tls_setup(dir: &Path) -> Result<PathBuf> {
    fs::create_dir_all(dir)?;
    certs::certificates(dir)?;
    let hash = bcrypt::hash(TLS_PASSWORD, 10)?;
    let path = dir.join("web.yml");
    fs::write(
        &path,
        format!(
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\nbasic_auth_users:\n  {TLS_USER}: {hash}\n"
        ),
    )?;
    Ok(path)
}

/// Resident memory and cumulative CPU time of a process: RSS from /proc/<pid>/status; CPU from
/// /proc/<pid>/stat (utime + stime, in clock ticks) and, to the nanosecond, from the sum of
/// /proc/<pid>/task/*/schedstat (an idle agent uses less than one 10 ms tick a minute).
#[derive(Clone, Copy)]
struct Usage {
    rss_kib: u64,
    cpu_ticks: u64,
    cpu_ns: u64,
    at: Instant,
}

fn usage(pid: u32) -> Result<Usage> {
    let status =
        fs::read_to_string(format!("/proc/{pid}/status")).context("reading /proc/<pid>/status")?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("/proc/<pid>/status: no VmRSS")?;
    let stat =
        fs::read_to_string(format!("/proc/{pid}/stat")).context("reading /proc/<pid>/stat")?;
    // Fields after the command name (which may hold spaces): utime and stime are the 12th and 13th.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .context("/proc/<pid>/stat: no ')'")?
        .1
        .split_whitespace()
        .collect();
    let ticks = |i: usize| -> Result<u64> {
        fields
            .get(i)
            .and_then(|v| v.parse().ok())
            .context("/proc/<pid>/stat: short line")
    };
    let mut cpu_ns = 0;
    for task in fs::read_dir(format!("/proc/{pid}/task")).context("reading /proc/<pid>/task")? {
        let text = fs::read_to_string(task?.path().join("schedstat")).unwrap_or_default();
        cpu_ns += text
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    }
    Ok(Usage {
        rss_kib,
        cpu_ticks: ticks(11)? + ticks(12)?,
        cpu_ns,
        at: Instant::now(),
    })
}

fn clock_ticks_per_second() -> Result<f64> {
    let out = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .context("getconf CLK_TCK")?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .context("getconf CLK_TCK: not a number")
}

/// CPU used between two readings, in percent of one core: (schedstat, stat ticks).
fn cpu_percent(from: Usage, to: Usage, hz: f64) -> (f64, f64) {
    let wall = to.at.duration_since(from.at).as_secs_f64();
    (
        (to.cpu_ns - from.cpu_ns) as f64 / 1e9 / wall * 100.0,
        (to.cpu_ticks - from.cpu_ticks) as f64 / hz / wall * 100.0,
    )
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Samples usage every second for `seconds`; returns (first, last, peak RSS in KiB).
fn observe(pid: u32, seconds: u64, step: &Step) -> Result<(Usage, Usage, u64)> {
    let first = usage(pid)?;
    let mut last = first;
    let mut peak = first.rss_kib;
    for elapsed in 1..=seconds {
        thread::sleep(Duration::from_secs(1));
        last = usage(pid)?;
        peak = peak.max(last.rss_kib);
        if elapsed % 15 == 0 && elapsed < seconds {
            step.progress(&format!("{elapsed} of {seconds} s"));
        }
    }
    Ok((first, last, peak))
}

/// Memory blocks whose `uevent` file makes the kernel broadcast a synthetic memory uevent: a real
/// netlink event the agent's uevent source receives, with no change to the RAM.
fn uevent_files() -> Result<Vec<PathBuf>> {
    let dir = Path::new("/sys/devices/system/memory");
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("memory"))
        .map(|e| e.path().join("uevent"))
        .collect();
    files.sort();
    ensure!(!files.is_empty(), "no memory blocks in {}", dir.display());
    Ok(files)
}

/// One `online` uevent for the n-th block (round robin).
fn emit(files: &[PathBuf], n: u64) -> Result<()> {
    let file = &files[(n % files.len() as u64) as usize];
    fs::write(file, "online").with_context(|| format!("writing online to {}", file.display()))
}

fn hotplug_events(http: &ureq::Agent, endpoint: &Endpoint) -> Result<f64> {
    let text = endpoint.metrics(http)?;
    let catalogue = Catalogue::parse(&text)?;
    Ok(catalogue
        .samples
        .iter()
        .filter(|s| s.name == "kdump_memory_hotplug_events_total")
        .map(|s| s.value)
        .sum())
}

/// wrk's latency percentiles (ms) and requests per second.
struct Load {
    p50_ms: f64,
    p99_ms: f64,
    requests_per_second: f64,
    errors: u64,
}

fn parse_duration_ms(text: &str) -> Option<f64> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().ok()?;
    Some(match unit {
        "us" => value / 1000.0,
        "ms" => value,
        "s" => value * 1000.0,
        "m" => value * 60_000.0,
        _ => return None,
    })
}

fn parse_wrk(output: &str) -> Result<Load> {
    let percentile = |p: &str| {
        output
            .lines()
            .find_map(|l| l.trim().strip_prefix(p).map(str::trim))
            .and_then(parse_duration_ms)
            .with_context(|| format!("wrk output has no {p} latency line"))
    };
    let requests_per_second = output
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .context("wrk output has no Requests/sec line")?;
    // "Non-2xx or 3xx responses: N" and "Socket errors: connect N, read N, write N, timeout N".
    let errors = output
        .lines()
        .filter_map(|l| {
            l.trim()
                .strip_prefix("Non-2xx or 3xx responses:")
                .or_else(|| l.trim().strip_prefix("Socket errors:"))
        })
        .flat_map(|l| {
            l.split(|c: char| !c.is_ascii_digit())
                .filter_map(|n| n.parse::<u64>().ok())
        })
        .sum();
    Ok(Load {
        p50_ms: percentile("50%")?,
        p99_ms: percentile("99%")?,
        requests_per_second,
        errors,
    })
}

fn wrk(endpoint: &Endpoint, path: &str, connections: u32, seconds: u64) -> Result<Load> {
    let mut cmd = Command::new("wrk");
    if let Some((_, authorization)) = &endpoint.tls {
        cmd.args(["-H", authorization]);
    }
    let out = cmd
        .args([
            "--latency",
            "-t2",
            &format!("-c{connections}"),
            &format!("-d{seconds}s"),
            &endpoint.url(path),
        ])
        .output()
        .context("running wrk (cargo xtask setup installs it)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "wrk failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    parse_wrk(&text)
}

fn build_release() -> Result<PathBuf> {
    let step = Step::start(format!("cargo build --release --target {MUSL}"));
    step.progress("building the shipped binary");
    let status = cargo()
        .args([
            "build",
            "--quiet",
            "--release",
            "--target",
            MUSL,
            "-p",
            "kdump-agent",
            "--bin",
            "kdump-agent",
        ])
        .status()
        .context("cargo build --release")?;
    ensure!(
        status.success(),
        "cargo build --release --target {MUSL} failed ({status})"
    );
    let binary = paths::target_dir().join(MUSL).join("release/kdump-agent");
    let size = fs::metadata(&binary)
        .with_context(|| format!("{}", binary.display()))?
        .len();
    let ldd = Command::new("ldd").arg(&binary).output().context("ldd")?;
    let linkage =
        String::from_utf8_lossy(&ldd.stdout).to_string() + &String::from_utf8_lossy(&ldd.stderr);
    let is_static =
        linkage.contains("not a dynamic executable") || linkage.contains("statically linked");
    step.done(&format!(
        "{:.1} MiB, {}",
        mib(size / 1024),
        if is_static { "static" } else { "DYNAMIC" }
    ));
    ensure!(is_static, "{} is not static: {linkage}", binary.display());
    Ok(binary)
}

pub fn run(options: &Options) -> Result<()> {
    ui::section("bench-fleet");
    let hz = clock_ticks_per_second()?;
    let binary = build_release()?;
    let work = paths::target_dir().join("xtask-bench-fleet");
    fs::create_dir_all(&work)?;
    let port = process::free_port()?;
    let log = work.join("agent.log");
    let (mut agent, endpoint) = if options.tls {
        let web = tls_setup(&work.join("tls"))?;
        let log_file = fs::File::create(&log)?;
        let agent = process::Running::start(
            "kdump-agent run (TLS)",
            Command::new(&binary)
                .args(["run", "--listen", &format!("127.0.0.1:{port}")])
                .args(["--procfs", "/proc", "--sysfs", "/sys", "--state-dir"])
                .arg(work.join("state"))
                .arg("--web.config.file")
                .arg(&web)
                .stdout(log_file.try_clone()?)
                .stderr(log_file),
        )?;
        let token =
            base64::engine::general_purpose::STANDARD.encode(format!("{TLS_USER}:{TLS_PASSWORD}"));
        let tls = Some((
            work.join("tls/ca.crt"),
            format!("Authorization: Basic {token}"),
        ));
        (agent, Endpoint { port, tls })
    } else {
        (
            agent::start(&binary, port, None, &log)?,
            Endpoint { port, tls: None },
        )
    };
    let http = http::http();
    process::wait_for("the agent's /metrics", Duration::from_secs(30), || {
        agent.alive()?;
        Ok(endpoint.metrics(&http).ok().map(drop))
    })?;
    let pid = agent.pid();
    let files = uevent_files()?;
    println!(
        "  agent pid {pid} on {}; events: synthetic `online` uevents on {} memory blocks; log {}",
        endpoint.url(""),
        files.len(),
        log.display()
    );

    // Idle: nothing scrapes, nothing happens; the agent's own periodic rescans still run. With
    // TLS the first scrape's bcrypt check ran on a blocking thread, which tokio keeps 10 s: its
    // CPU leaves the per-thread schedstat sum when it exits, so the idle window starts after.
    thread::sleep(Duration::from_secs(if options.tls { 12 } else { 3 }));
    let step = Step::start(format!("idle {} s", options.idle_seconds));
    let (first, last, peak) = observe(pid, options.idle_seconds, &step)?;
    let (idle_cpu, idle_cpu_ticks) = cpu_percent(first, last, hz);
    let idle_rss = mib(last.rss_kib);
    step.done(&format!(
        "RSS {idle_rss:.2} MiB (peak {:.2} MiB), CPU {idle_cpu:.4}% of one core ({idle_cpu_ticks:.3}% by stat ticks)",
        mib(peak)
    ));

    // Storm: 4,096 events as fast as the kernel takes them.
    let step = Step::start(format!("storm of {STORM_EVENTS} uevents"));
    let counted_before = hotplug_events(&http, &endpoint)?;
    let before = usage(pid)?;
    let started = Instant::now();
    for n in 0..STORM_EVENTS {
        emit(&files, n)?;
    }
    let emitted_in = started.elapsed();
    let counted = process::wait_for(
        "the agent to count the storm",
        Duration::from_secs(30),
        || {
            let n = hotplug_events(&http, &endpoint)? - counted_before;
            Ok((n >= STORM_EVENTS as f64).then_some(n))
        },
    )
    .or_else(|_| hotplug_events(&http, &endpoint).map(|n| n - counted_before))?;
    let after = usage(pid)?;
    let storm_cpu_ms = (after.cpu_ns - before.cpu_ns) as f64 / 1e6;
    step.done(&format!(
        "{counted} of {STORM_EVENTS} counted; sent in {:.2} s; agent CPU {storm_cpu_ms:.1} ms ({:.1}% of one core over {:.2} s); RSS {:.2} MiB",
        emitted_in.as_secs_f64(),
        cpu_percent(before, after, hz).0,
        after.at.duration_since(before.at).as_secs_f64(),
        mib(after.rss_kib)
    ));

    // Scrapers: 50 connections on /metrics while 100 events/s stream in; /healthz as baseline.
    let stream_counted_before = hotplug_events(&http, &endpoint)?;
    let streaming = Arc::new(AtomicBool::new(true));
    let streamed = Arc::new(AtomicU64::new(0));
    let stream = {
        let (streaming, streamed, files) = (streaming.clone(), streamed.clone(), files.clone());
        thread::spawn(move || -> Result<()> {
            let period = Duration::from_secs(1) / STREAM_EVENTS_PER_SECOND as u32;
            let mut next = Instant::now();
            while streaming.load(Ordering::Relaxed) {
                emit(&files, streamed.fetch_add(1, Ordering::Relaxed))?;
                next += period;
                thread::sleep(next.saturating_duration_since(Instant::now()));
            }
            Ok(())
        })
    };
    let mut results = Vec::new();
    for path in ["/healthz", "/metrics"] {
        let step = Step::start(format!(
            "wrk -c{} {}s {path}",
            options.connections, options.scrape_seconds
        ));
        let before = usage(pid)?;
        let load = wrk(&endpoint, path, options.connections, options.scrape_seconds);
        let after = usage(pid)?;
        let load = load?;
        step.done(&format!(
            "p50 {:.2} ms, p99 {:.2} ms, {:.0} req/s, {} errors; agent CPU {:.0}%, RSS {:.2} MiB",
            load.p50_ms,
            load.p99_ms,
            load.requests_per_second,
            load.errors,
            cpu_percent(before, after, hz).0,
            mib(after.rss_kib)
        ));
        results.push((load, cpu_percent(before, after, hz).0, after.rss_kib));
    }
    streaming.store(false, Ordering::Relaxed);
    stream
        .join()
        .map_err(|_| anyhow::anyhow!("event stream thread panicked"))??;
    let streamed = streamed.load(Ordering::Relaxed);
    let stream_counted = process::wait_for(
        "the agent to count the streamed events",
        Duration::from_secs(10),
        || {
            let n = hotplug_events(&http, &endpoint)? - stream_counted_before;
            Ok((n >= streamed as f64).then_some(n))
        },
    )
    .or_else(|_| hotplug_events(&http, &endpoint).map(|n| n - stream_counted_before))?;
    agent.alive()?;

    let ((health, health_cpu, _), (metrics, metrics_cpu, rss_after_kib)) =
        (&results[0], &results[1]);
    let (p50_ratio, p99_ratio) = (
        metrics.p50_ms / health.p50_ms,
        metrics.p99_ms / health.p99_ms,
    );
    println!();
    println!("  {:<44} {:>12} {:>12}", "figure", "measured", "target");
    let row =
        |name: &str, value: String, target: &str| println!("  {name:<44} {value:>12} {target:>12}");
    row(
        "idle RSS (MiB)",
        format!("{idle_rss:.2}"),
        &format!("<= {IDLE_RSS_TARGET_MIB}"),
    );
    row(
        &format!("idle CPU over {} s (% of one core)", options.idle_seconds),
        format!("{idle_cpu:.4}"),
        &format!("<= {IDLE_CPU_TARGET_PERCENT}"),
    );
    row(
        "  the same by /proc/<pid>/stat ticks",
        format!("{idle_cpu_ticks:.3}"),
        "",
    );
    row(
        &format!("storm: events counted of {STORM_EVENTS}"),
        format!("{counted}"),
        "",
    );
    row("storm: agent CPU (ms)", format!("{storm_cpu_ms:.1}"), "");
    row(
        &format!("/metrics p50 (ms), {} scrapers", options.connections),
        format!("{:.2}", metrics.p50_ms),
        "",
    );
    row(
        &format!("/metrics p99 (ms), {} scrapers", options.connections),
        format!("{:.2}", metrics.p99_ms),
        "",
    );
    row(
        "/metrics throughput (req/s)",
        format!("{:.0}", metrics.requests_per_second),
        "",
    );
    row(
        "/metrics p50 / /healthz p50 (ratio)",
        format!("{p50_ratio:.2}"),
        &format!("<= {METRICS_RATIO_TARGET}"),
    );
    row(
        "/metrics p99 / /healthz p99 (ratio)",
        format!("{p99_ratio:.2}"),
        &format!("<= {METRICS_RATIO_TARGET}"),
    );
    row(
        "events streamed during the scrapes",
        format!("{streamed}"),
        "",
    );
    row(
        "  of which the agent counted",
        format!("{stream_counted}"),
        "",
    );
    if let Some(path) = &options.json {
        let load = |l: &Load, cpu: f64| {
            serde_json::json!({
                "p50_ms": l.p50_ms, "p99_ms": l.p99_ms,
                "requests_per_second": l.requests_per_second, "errors": l.errors,
                "agent_cpu_percent": cpu,
            })
        };
        let figures = serde_json::json!({
            "tls_and_basic_auth": options.tls,
            "connections": options.connections,
            "scrape_seconds": options.scrape_seconds,
            "events_per_second": STREAM_EVENTS_PER_SECOND,
            "idle": {
                "seconds": options.idle_seconds,
                "rss_mib": idle_rss, "peak_rss_mib": mib(peak),
                "cpu_percent_schedstat": idle_cpu, "cpu_percent_stat_ticks": idle_cpu_ticks,
            },
            "storm": { "events": STORM_EVENTS, "counted": counted, "agent_cpu_ms": storm_cpu_ms },
            "healthz": load(health, *health_cpu),
            "metrics": load(metrics, *metrics_cpu),
            "metrics_over_healthz": { "p50": p50_ratio, "p99": p99_ratio },
            "rss_after_scrapes_mib": mib(*rss_after_kib),
            "events_streamed": streamed,
            "events_counted": stream_counted,
        });
        fs::write(path, serde_json::to_string_pretty(&figures)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
        println!("  figures written to {}", path.display());
    }
    let mut missed = Vec::new();
    for (which, ratio) in [("p50", p50_ratio), ("p99", p99_ratio)] {
        if ratio > METRICS_RATIO_TARGET {
            missed.push(format!(
                "/metrics {which} is {ratio:.2}x /healthz's > {METRICS_RATIO_TARGET}x"
            ));
        }
    }
    if idle_rss > IDLE_RSS_TARGET_MIB {
        missed.push(format!(
            "idle RSS {idle_rss:.2} MiB > {IDLE_RSS_TARGET_MIB} MiB"
        ));
    }
    if idle_cpu > IDLE_CPU_TARGET_PERCENT {
        missed.push(format!(
            "idle CPU {idle_cpu:.3}% > {IDLE_CPU_TARGET_PERCENT}%"
        ));
    }
    if metrics.errors > 0 || health.errors > 0 {
        missed.push(format!(
            "{} failed requests",
            metrics.errors + health.errors
        ));
    }
    if !missed.is_empty() {
        bail!("targets missed: {}", missed.join("; "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_wrk_latency_output() {
        let text = "Running 10s test @ http://127.0.0.1:1/metrics\n  2 threads and 50 connections\n  Latency Distribution\n     50%  812.00us\n     75%    1.20ms\n     90%    2.01ms\n     99%    1.05s\n  1000 requests in 10.00s, 1.00MB read\n  Socket errors: connect 0, read 2, write 0, timeout 1\nRequests/sec:   4321.50\nTransfer/sec:      1.00MB\n";
        let load = parse_wrk(text).unwrap();
        assert_eq!(load.p50_ms, 0.812);
        assert_eq!(load.p99_ms, 1050.0);
        assert_eq!(load.requests_per_second, 4321.5);
        assert_eq!(load.errors, 3);
        assert!(parse_wrk("Requests/sec: 1\n").is_err());
    }
}
