//! Scenarios with a real Prometheus on the host: it scrapes the agent in a 6.1 guest through a
//! port QEMU forwards (user networking) and evaluates the repository's own alert rules, as a
//! fleet's Prometheus does, while RAM is hot-added under the agent.
use std::{
    fs,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, ensure};
use kdump_agent::model::elfcorehdr::LoadPath;
use serde_json::Value;

use super::agent::{SUCCESS, recipe, wait_metric};
use crate::{
    lab::{
        guests::{Boot, GUEST_AGENT_PORT},
        image::{GUEST_AGENT, GUEST_NET_UP, KERNEL_6_1},
        machine::Machine,
        scenario::{Online, Run, Scenario},
    },
    paths,
    support::{
        http,
        process::{self, Running},
        prometheus,
    },
};

/// The Prometheus scenarios, in `cargo xtask lab list` order.
pub const ALL: &[Scenario] = &[
    Scenario {
        name: "prometheus-stale-pending-6.1",
        about: "6.1, agent --reload off, host Prometheus scraping it, +512 MiB: KdumpHeaderStale pending; dump misses the DIMM",
        kernel: KERNEL_6_1,
        fixture: false,
        benchmark: false,
        body: stale_pending_6_1,
    },
    Scenario {
        name: "prometheus-reload-never-fires-6.1",
        about: "6.1, agent with a recipe, host Prometheus scraping it, +512 MiB: reload, KdumpHeaderStale inactive again, never firing; dump whole",
        kernel: KERNEL_6_1,
        fixture: false,
        benchmark: false,
        body: reload_never_fires_6_1,
    },
];

/// How long Prometheus may take to start, to scrape the guest or to evaluate a rule on what it
/// scraped (it scrapes and evaluates every second; the TCG guest answers slowly).
const PROMETHEUS_TIMEOUT: Duration = Duration::from_secs(60);
const ALERT: &str = "KdumpHeaderStale";

/// Prometheus on the host, scraping one guest's agent.
struct Watch {
    _server: Running,
    http: ureq::Agent,
    port: u16,
    /// The scrape target's `node` label: the scenario's name.
    node: &'static str,
    /// When Prometheus first had the target up.
    up_since: Instant,
}

impl Watch {
    /// A range selector's duration covering the time since the target was first up (rounded
    /// down, so that it holds no scrape from before).
    fn since_up(&self) -> String {
        format!("{}s", self.up_since.elapsed().as_secs().max(1))
    }

    /// The samples of an instant query.
    fn query(&self, promql: &str) -> Result<Vec<Value>> {
        prometheus::query(&self.http, self.port, promql)
    }

    /// The value of a query's first sample, None when its result is empty.
    fn value(&self, promql: &str) -> Result<Option<f64>> {
        self.query(promql)?
            .first()
            .map(|s| {
                let text = s["value"][1].as_str().unwrap_or_default();
                text.parse()
                    .with_context(|| format!("{promql}: `{text}` is not a number"))
            })
            .transpose()
    }

    /// `metric{job="kdump-agent",node=...}` with more label matchers in `extra`.
    fn series(&self, metric: &str, extra: &str) -> String {
        format!(
            r#"{metric}{{job="kdump-agent",node="{}"{extra}}}"#,
            self.node
        )
    }

    /// The alert's `ALERTS` series in `state` (pending or firing) for this node.
    fn alerts(&self, state: &str) -> String {
        format!(
            r#"ALERTS{{alertname="{ALERT}",alertstate="{state}",node="{}"}}"#,
            self.node
        )
    }

    /// Waits until `promql` returns a sample; returns the seconds it took.
    fn wait(&self, run: &Run, what: &str, promql: &str) -> Result<f64> {
        run.progress(&format!(
            "waiting up to {} s for Prometheus to show {what}",
            PROMETHEUS_TIMEOUT.as_secs()
        ));
        let start = Instant::now();
        process::wait_for(what, PROMETHEUS_TIMEOUT, || {
            Ok((!self.query(promql)?.is_empty()).then_some(()))
        })
        .with_context(|| format!("Prometheus: {promql}"))?;
        Ok(start.elapsed().as_secs_f64())
    }

    /// The alerting rule `ALERT` as /api/v1/rules reports it (state, health, duration, ...).
    fn rule(&self) -> Result<Value> {
        let data = prometheus::api(&self.http, self.port, "/api/v1/rules", None)?;
        data["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().into_iter().flatten())
            .find(|r| r["name"] == ALERT)
            .cloned()
            .with_context(|| format!("Prometheus has no rule {ALERT}"))
    }

    /// Waits until the rule has been evaluated twice more, so at least once on samples scraped
    /// after this call (an evaluation may be under way while it starts); returns the rule then.
    fn rule_after_next_evaluation(&self) -> Result<Value> {
        let mut last = self.rule()?["lastEvaluation"].clone();
        for _ in 0..2 {
            last = process::wait_for(
                &format!("an evaluation of {ALERT}"),
                PROMETHEUS_TIMEOUT,
                || {
                    let at = self.rule()?["lastEvaluation"].clone();
                    Ok((at != last).then_some(at))
                },
            )?;
        }
        self.rule()
    }
}

/// Prometheus on the host (started first, so its start-up overlaps the guest's boot), a
/// networked 6.1 guest with kdump loaded by `kexec -s -p`, and the agent run with `agent_args`
/// listening on all addresses; returns once Prometheus has scraped the agent ready and evaluated
/// `ALERT` inactive on it.
fn start(run: &mut Run, agent_args: &str) -> Result<(Machine, Watch)> {
    let node = run.scenario.name;
    let (forward, port) = (process::free_port()?, process::free_port()?);
    let dir = run.lab.runs.join(format!("{node}-prometheus"));
    let _ = fs::remove_dir_all(&dir);
    let log = dir.join("prometheus.log");
    let rules = paths::root().join(prometheus::RULES);
    let mut server = prometheus::start(&dir, port, forward, node, &rules)?;
    let http = http::http();
    let mut m = run.boot(&Boot {
        forward_agent: Some(forward),
        ..Boot::default()
    })?;
    prometheus::wait_ready(&mut server, &http, port, PROMETHEUS_TIMEOUT)
        .with_context(|| format!("Prometheus' log: {}", log.display()))?;
    run.note(
        "prometheus",
        format!("127.0.0.1:{port}, log {}", log.display()),
    );
    run.load_kdump(&mut m, LoadPath::KexecFileLoad)?;
    m.sh(GUEST_NET_UP)
        .context("bringing up the guest's network")?;
    run.start_agent(
        &mut m,
        &format!("--listen 0.0.0.0:{GUEST_AGENT_PORT} {agent_args}"),
    )?;
    let healthy = Instant::now();
    run.progress(&format!(
        "waiting up to {} s for Prometheus to scrape the guest through 127.0.0.1:{forward}",
        PROMETHEUS_TIMEOUT.as_secs()
    ));
    prometheus::wait_up(&http, port, node, PROMETHEUS_TIMEOUT)
        .with_context(|| format!("Prometheus' log: {}", log.display()))?;
    run.note(
        "seconds_from_agent_healthz_to_up",
        healthy.elapsed().as_secs_f64(),
    );
    let watch = Watch {
        _server: server,
        http,
        port,
        node,
        up_since: Instant::now(),
    };
    watch.wait(
        run,
        "the agent ready",
        &format!("{} == 1", watch.series("kdump_ready", "")),
    )?;
    let rule = watch.rule_after_next_evaluation()?;
    ensure!(
        rule["health"] == "ok",
        "{ALERT}: health {} {}",
        rule["health"],
        rule["lastError"]
    );
    ensure!(
        rule["state"] == "inactive",
        "{ALERT} is {} before any hot-add",
        rule["state"]
    );
    run.note("rule_for_seconds", rule["duration"].clone());
    Ok((m, watch))
}

/// Scrapes that failed (up == 0) once the target was up: the TCG guest may answer later than
/// the 1 s scrape timeout, and each failure marks the agent's series stale.
fn note_failed_scrapes(run: &mut Run, watch: &Watch) -> Result<()> {
    let (up, window) = (watch.series("up", ""), watch.since_up());
    let failed = watch.value(&format!(
        "count_over_time({up}[{window}]) - sum_over_time({up}[{window}])"
    ))?;
    run.note("failed_scrapes_since_up", failed.unwrap_or(0.0));
    Ok(())
}

/// `--reload off`: the DIMM leaves the header stale, and Prometheus shows the alert pending.
fn stale_pending_6_1(run: &mut Run) -> Result<()> {
    let (mut m, watch) = start(run, "--reload off")?;
    let plugged = Instant::now();
    let dimm = run.hot_add(&mut m, 512, Online::Write("online"))?;
    let online = Instant::now();
    watch.wait(run, &format!("{ALERT} pending"), &watch.alerts("pending"))?;
    run.note(
        "seconds_from_hot_add_to_pending",
        plugged.elapsed().as_secs_f64(),
    );
    run.note(
        "seconds_from_online_to_pending",
        online.elapsed().as_secs_f64(),
    );
    // What Prometheus holds while the alert is pending.
    let up = watch.value(&watch.series("up", ""))?;
    run.check(
        up == Some(1.0),
        format!("up is {up:?} while {ALERT} is pending, expected 1"),
    );
    let state = watch.rule()?["state"].clone();
    run.check(
        state == "pending",
        format!("the rules API says {ALERT} is {state}, ALERTS says pending"),
    );
    let missing = watch.value(&watch.series("kdump_header_missing_bytes", ""))?;
    run.note("prometheus_missing_bytes", missing);
    run.check(
        missing == Some(dimm.size as f64),
        format!(
            "Prometheus has kdump_header_missing_bytes {missing:?}, the DIMM is {} bytes",
            dimm.size
        ),
    );
    let reloads = watch.value(&format!("sum({})", watch.series("kdump_reloads_total", "")))?;
    run.check(
        reloads.unwrap_or(0.0) == 0.0,
        format!("{reloads:?} reloads with --reload off"),
    );
    note_failed_scrapes(run, &watch)?;
    run.crash(&mut m)?;
    // Nobody reloaded: the dump misses the DIMM, as the pending alert warned.
    run.expect(dimm.size, 0);
    Ok(())
}

/// Reload on (a recipe, kexec-file): the agent fixes the header within seconds, so the alert
/// is inactive again after the reload and its `for` (5 minutes) never elapses: it never fires.
fn reload_never_fires_6_1(run: &mut Run) -> Result<()> {
    let (mut m, watch) = start(run, &recipe())?;
    run.hot_add(&mut m, 512, Online::Write("online"))?;
    let online = Instant::now();
    let reloaded = wait_metric(&mut m, SUCCESS, 1.0)?;
    run.note("seconds_from_online_to_reload", reloaded);
    let stale = m.sh("grep -c 'the loaded crash header is stale' /tmp/kdump-agent.log || true")?;
    run.check(
        stale.trim() != "0",
        "the agent never reported the header stale: the hot-add tested nothing",
    );
    let ready_after_reload = format!(
        "{} == 1 and on(node) {} >= 1",
        watch.series("kdump_ready", ""),
        watch.series("kdump_reloads_total", r#",result="success""#)
    );
    watch.wait(run, "the agent ready after its reload", &ready_after_reload)?;
    run.note(
        "seconds_from_online_to_ready_in_prometheus",
        online.elapsed().as_secs_f64(),
    );
    // A pending alert whose expression turns false is dropped at the next evaluation: its
    // `for` clock restarts from zero at the next stale window.
    let state = watch.rule_after_next_evaluation()?["state"].clone();
    run.check(
        state == "inactive",
        format!("{ALERT} is {state} after the reload, expected inactive"),
    );
    let window = watch.since_up();
    let count = |promql: String| -> Result<f64> {
        Ok(watch
            .value(&format!("count_over_time({promql}[{window}])"))?
            .unwrap_or(0.0))
    };
    let pending = count(watch.alerts("pending"))?;
    let firing = count(watch.alerts("firing"))?;
    run.note("pending_evaluations", pending);
    run.note("seen_pending", pending > 0.0);
    run.note("firing_evaluations", firing);
    run.check(
        firing == 0.0,
        format!("{ALERT} fired in {firing} evaluations"),
    );
    let stale_scrapes = watch
        .value(&format!(
            "sum_over_time({}[{window}])",
            watch.series("kdump_header_stale", "")
        ))?
        .unwrap_or(0.0);
    run.note("stale_scrapes", stale_scrapes);
    note_failed_scrapes(run, &watch)?;
    let status = m.run(&format!("{GUEST_AGENT} status"))?;
    run.check(
        status.code == 0,
        format!(
            "kdump-agent status exit {}, expected 0 (ready)",
            status.code
        ),
    );
    run.crash(&mut m)?;
    run.expect(0, 0);
    Ok(())
}
