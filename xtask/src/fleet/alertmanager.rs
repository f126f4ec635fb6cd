//! deploy/alertmanager/kdump-agent.inhibit.yaml in a real Alertmanager (Debian's): amtool checks
//! the configuration, then alerts posted to its API show each inhibition suppressing exactly its
//! targets, and the explaining warnings suppressing nothing.
use std::{fs, path::Path, process::Command, time::Duration};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use crate::support::{
    http,
    process::{self, Running},
    prometheus,
};

pub const INHIBIT: &str = "deploy/alertmanager/kdump-agent.inhibit.yaml";

/// (node, alerts firing there, the ones the inhibitions must suppress).
const CASES: &[(&str, &[&str], &[&str])] = &[
    (
        "no-crash-kernel",
        &["KdumpCrashKernelNotLoaded", "KdumpNotReady"],
        &["KdumpNotReady"],
    ),
    (
        "stale-header",
        &["KdumpHeaderStale", "KdumpReloadFailing", "KdumpNotReady"],
        &[],
    ),
    (
        "agent-down",
        &["KdumpAgentDown", "KdumpHeaderStale", "KdumpNotReady"],
        &["KdumpHeaderStale", "KdumpNotReady"],
    ),
    ("only-the-source", &["KdumpCrashKernelNotLoaded"], &[]),
];

/// A minimal Alertmanager configuration around the shipped inhibition rules.
fn config(inhibit: &str) -> String {
    format!("route:\n  receiver: discard\nreceivers:\n  - name: discard\n{inhibit}")
}

/// Runs the check; returns a one-line summary.
pub fn check(root: &Path, work: &Path) -> Result<String> {
    let dir = work.join("alertmanager");
    fs::create_dir_all(dir.join("data"))?;
    let inhibit = fs::read_to_string(root.join(INHIBIT)).context(INHIBIT)?;
    let config_path = dir.join("alertmanager.yml");
    fs::write(&config_path, config(&inhibit))?;
    process::output(
        Command::new("amtool").arg("check-config").arg(&config_path),
        "amtool check-config",
    )?;

    let port = process::free_port()?;
    let log = fs::File::create(dir.join("alertmanager.log"))?;
    let mut server = Running::start(
        "alertmanager",
        Command::new("prometheus-alertmanager")
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!("--storage.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            // No gossip: a single instance on loopback.
            .arg("--cluster.listen-address=")
            .stdout(log.try_clone()?)
            .stderr(log),
    )?;
    let http = http::http();
    let base = format!("http://127.0.0.1:{port}");
    prometheus::wait_ready(&mut server, &http, port, Duration::from_secs(30))?;

    let alerts: Vec<Value> = CASES
        .iter()
        .flat_map(|(node, firing, _)| {
            firing.iter().map(move |name| {
                json!({"labels": {"alertname": name, "node": node, "job": "kdump-agent"}})
            })
        })
        .collect();
    let body = serde_json::to_string(&alerts)?;
    let mut response = http
        .post(format!("{base}/api/v2/alerts"))
        .header("Content-Type", "application/json")
        .send(&body)
        .context("POST /api/v2/alerts")?;
    if response.status().as_u16() != 200 {
        bail!(
            "POST /api/v2/alerts: HTTP {}: {}",
            response.status(),
            response.body_mut().read_to_string().unwrap_or_default()
        );
    }
    let mut last = String::new();
    let checked = process::wait_for(
        "every alert suppressed or active as the inhibitions say",
        Duration::from_secs(30),
        || {
            let (_, text) = http::get(&http, &format!("{base}/api/v2/alerts"))?;
            let seen: Vec<Value> = serde_json::from_str(&text).context("alerts: not JSON")?;
            last = mismatches(&seen);
            Ok((seen.len() == alerts.len() && last.is_empty()).then_some(seen.len()))
        },
    );
    checked
        .map(|n| {
            format!(
                "{n} alerts on {} nodes, each suppressed or not as expected",
                CASES.len()
            )
        })
        .with_context(|| format!("last answer: {last}"))
}

/// The alerts whose state differs from the expectation, one phrase each ("" when none).
fn mismatches(seen: &[Value]) -> String {
    let mut wrong = Vec::new();
    for (node, firing, suppressed) in CASES {
        for name in *firing {
            let alert = seen
                .iter()
                .find(|a| a["labels"]["alertname"] == *name && a["labels"]["node"] == *node);
            let state = alert.map_or("absent", |a| a["status"]["state"].as_str().unwrap_or("?"));
            let want = if suppressed.contains(name) {
                "suppressed"
            } else {
                "active"
            };
            if state != want {
                wrong.push(format!("{name} on {node} is {state}, expected {want}"));
            }
        }
    }
    wrong.join("; ")
}
