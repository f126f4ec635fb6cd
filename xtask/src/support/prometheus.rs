//! A real Prometheus server (Debian's `prometheus`) on loopback: started with the repository's
//! rules, waited for, queried. The fleet suite points it at a local agent, the VM lab's
//! Prometheus scenarios at a guest's agent through a port QEMU forwards.
use std::{fs, path::Path, process::Command, time::Duration};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use super::{
    http,
    process::{self, Running},
};

/// The alert rules every Prometheus here evaluates.
pub const RULES: &str = "deploy/prometheus/kdump-agent.rules.yaml";

/// Prometheus on `127.0.0.1:port` scraping the agent at `127.0.0.1:agent_port` every second as
/// job `kdump-agent` with the target label `node` (as the ServiceMonitor sets them: the rules
/// select on both), evaluating `rules` every second.
pub fn start(dir: &Path, port: u16, agent_port: u16, node: &str, rules: &Path) -> Result<Running> {
    let scrape = format!(
        "static_configs:\n      - targets: ['127.0.0.1:{agent_port}']\n        labels:\n          node: {node}\n"
    );
    start_scraping(dir, port, rules, &scrape)
}

/// [`start`] with the `kdump-agent` job's settings given as YAML (indented 4 spaces under the
/// job): TLS, basic auth, targets.
pub fn start_scraping(dir: &Path, port: u16, rules: &Path, job: &str) -> Result<Running> {
    fs::create_dir_all(dir.join("data")).with_context(|| format!("creating {}", dir.display()))?;
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
         rule_files:\n  - {rules}\n\
         scrape_configs:\n  - job_name: kdump-agent\n    {job}",
        rules = rules.display()
    );
    let config_path = dir.join("prometheus.yml");
    fs::write(&config_path, config)
        .with_context(|| format!("writing {}", config_path.display()))?;
    let log = fs::File::create(dir.join("prometheus.log"))?;
    Running::start(
        "prometheus",
        Command::new("prometheus")
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(log.try_clone()?)
            .stderr(log),
    )
}

/// Waits until a Prometheus or Alertmanager on `port` answers /-/ready; an exited server ends
/// the wait at once.
pub fn wait_ready(
    server: &mut Running,
    http: &ureq::Agent,
    port: u16,
    timeout: Duration,
) -> Result<()> {
    process::wait_for(&format!("{} /-/ready", server.name()), timeout, || {
        server.alive()?;
        Ok(http::get(http, &format!("http://127.0.0.1:{port}/-/ready"))
            .is_ok_and(|(status, _)| status == 200)
            .then_some(()))
    })
}

/// Waits until Prometheus has scraped the `kdump-agent` target of `node` successfully (up == 1).
pub fn wait_up(http: &ureq::Agent, port: u16, node: &str, timeout: Duration) -> Result<()> {
    let up = format!(r#"up{{job="kdump-agent",node="{node}"}}"#);
    process::wait_for(&format!("{up} == 1"), timeout, || {
        Ok(query(http, port, &up)?
            .first()
            .is_some_and(|s| s["value"][1] == "1")
            .then_some(()))
    })
}

/// An instant PromQL query: the samples of its vector result.
pub fn query(http: &ureq::Agent, port: u16, promql: &str) -> Result<Vec<Value>> {
    let data = api(http, port, "/api/v1/query", Some(promql))?;
    Ok(data["result"].as_array().cloned().unwrap_or_default())
}

/// GET a Prometheus API path and return its `data` (the error names the API's own error).
pub fn api(http: &ureq::Agent, port: u16, path: &str, query: Option<&str>) -> Result<Value> {
    let mut request = http.get(format!("http://127.0.0.1:{port}{path}"));
    if let Some(query) = query {
        request = request.query("query", query);
    }
    let mut response = request.call().with_context(|| format!("GET {path}"))?;
    let body: Value = response
        .body_mut()
        .read_json()
        .with_context(|| format!("{path}: not JSON"))?;
    if body["status"] != "success" {
        bail!(
            "{path}: {} {}",
            body["errorType"].as_str().unwrap_or("error"),
            body["error"].as_str().unwrap_or("")
        );
    }
    Ok(body["data"].clone())
}
