//! A running agent and a real Prometheus server (Debian's `prometheus`), both on loopback; the
//! fleet suite uses both, the VM lab's Prometheus scenarios the server (scraping a guest's agent
//! through a port QEMU forwards).
use std::{
    fs,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use crate::{cargo, paths};

/// A child process killed (by its own pid) and reaped when dropped, so no test leaves one behind.
pub struct Running {
    name: &'static str,
    child: Child,
}

impl Running {
    pub fn start(name: &'static str, cmd: &mut Command) -> Result<Self> {
        let child = cmd
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Self { name, child })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails if the process has already exited.
    pub fn alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited early ({status})", self.name);
        }
        Ok(())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An unused loopback port (bound, then released for the child to take).
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// HTTP client for loopback: no proxy, short timeouts, non-2xx answers returned, not errors.
pub fn http() -> ureq::Agent {
    ureq::Agent::config_builder()
        .proxy(None)
        .timeout_global(Some(Duration::from_secs(10)))
        .http_status_as_error(false)
        .build()
        .into()
}

/// GET `url`: (status, body).
pub fn get(agent: &ureq::Agent, url: &str) -> Result<(u16, String)> {
    let mut response = agent
        .get(url)
        .call()
        .with_context(|| format!("GET {url}"))?;
    let body = response
        .body_mut()
        .read_to_string()
        .with_context(|| format!("reading {url}"))?;
    Ok((response.status().as_u16(), body))
}

/// Polls `probe` every 200 ms until it returns Some or `timeout` passes; the error names `what`.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let start = Instant::now();
    let mut last = String::from("no answer yet");
    loop {
        match probe() {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last = format!("{e:#}"),
        }
        if start.elapsed() > timeout {
            bail!("{what}: not within {} s ({last})", timeout.as_secs());
        }
        thread::sleep(Duration::from_millis(200));
    }
}

/// Builds the agent (debug, host target) and returns its path.
pub fn build_agent() -> Result<PathBuf> {
    let status = cargo()
        .args([
            "build",
            "--quiet",
            "-p",
            "kdump-agent",
            "--bin",
            "kdump-agent",
        ])
        .status()
        .context("cargo build -p kdump-agent")?;
    if !status.success() {
        bail!("cargo build -p kdump-agent failed ({status})");
    }
    Ok(paths::target_dir().join("debug/kdump-agent"))
}

/// The agent's daemon on `127.0.0.1:port`, reading this host's /proc and /sys, writing its
/// textfile into `textfile_dir` if given; its log goes to `log`.
pub fn start_agent(
    binary: &Path,
    port: u16,
    textfile_dir: Option<&Path>,
    log: &Path,
) -> Result<Running> {
    let log_file = fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let mut cmd = Command::new(binary);
    cmd.args([
        "run",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--procfs",
        "/proc",
        "--sysfs",
        "/sys",
    ]);
    if let Some(dir) = textfile_dir {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        cmd.arg("--textfile-dir").arg(dir);
    }
    Running::start(
        "kdump-agent run",
        cmd.stdout(log_file.try_clone()?).stderr(log_file),
    )
}

/// Waits for the agent's /metrics and returns its text.
pub fn scrape(port: u16, agent: &mut Running) -> Result<String> {
    let http = http();
    let url = format!("http://127.0.0.1:{port}/metrics");
    // An exited agent ends the wait at once rather than at the timeout.
    wait_for("the agent's /metrics", Duration::from_secs(30), || {
        if let Err(e) = agent.alive() {
            return Ok(Some(Err(e)));
        }
        match get(&http, &url) {
            Ok((200, body)) => Ok(Some(Ok(body))),
            Ok((status, _)) => bail!("HTTP {status}"),
            Err(e) => Err(e),
        }
    })?
}

/// Prometheus on `127.0.0.1:port` scraping the agent at `127.0.0.1:agent_port` every second as
/// job `kdump-agent` with the target label `node` (as the ServiceMonitor sets them: the rules
/// select on both), evaluating `rules` every second.
pub fn start_prometheus(
    dir: &Path,
    port: u16,
    agent_port: u16,
    node: &str,
    rules: &Path,
) -> Result<Running> {
    fs::create_dir_all(dir.join("data")).with_context(|| format!("creating {}", dir.display()))?;
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
         rule_files:\n  - {rules}\n\
         scrape_configs:\n  - job_name: kdump-agent\n    static_configs:\n      - targets: ['127.0.0.1:{agent_port}']\n        labels:\n          node: {node}\n",
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
    wait_for(&format!("{} /-/ready", server.name), timeout, || {
        server.alive()?;
        Ok(get(http, &format!("http://127.0.0.1:{port}/-/ready"))
            .is_ok_and(|(status, _)| status == 200)
            .then_some(()))
    })
}

/// Waits until Prometheus has scraped the `kdump-agent` target of `node` successfully (up == 1).
pub fn wait_up(http: &ureq::Agent, port: u16, node: &str, timeout: Duration) -> Result<()> {
    let up = format!(r#"up{{job="kdump-agent",node="{node}"}}"#);
    wait_for(&format!("{up} == 1"), timeout, || {
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
