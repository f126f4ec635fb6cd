//! `--web.config.file` against real clients: certificates from openssl, the file checked by
//! `promtool check web-config`, a real Prometheus scraping over TLS with basic auth and a client
//! certificate, curl without credentials (401) and without a certificate (refused).
use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, Result, ensure};

use crate::support::{
    certs::certificates,
    http,
    process::{self, Running},
    prometheus,
};

const USER: &str = "prometheus";
const PASSWORD: &str = "scrape-secret";
const NODE: &str = "xtask-host-tls";

/// The web config: TLS with a required, verified client certificate, one basic-auth user.
fn web_config(dir: &Path) -> Result<PathBuf> {
    let hash = bcrypt::hash(PASSWORD, 10)?;
    let path = dir.join("web.yml");
    fs::write(
        &path,
        format!(
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\nbasic_auth_users:\n  {USER}: {hash}\n"
        ),
    )?;
    Ok(path)
}

/// curl's HTTP status for /metrics (None when the TLS handshake failed).
fn curl(dir: &Path, port: u16, extra: &[&str]) -> Result<Option<u16>> {
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "10",
            "--cacert",
        ])
        .arg(dir.join("ca.crt"))
        .args(extra)
        .arg(format!("https://127.0.0.1:{port}/metrics"))
        .current_dir(dir)
        .output()
        .context("curl: cannot start")?;
    Ok(out
        .status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().parse().ok())
        .flatten())
}

/// The checks, each named; `agent` is the debug build the live checks run.
pub fn checks(agent: &Path, work: &Path, rules: &Path) -> Vec<(String, Result<()>)> {
    let dir = work.join("tls");
    let mut results = Vec::new();
    let prepared = (|| {
        fs::create_dir_all(&dir)?;
        certificates(&dir)?;
        web_config(&dir)
    })();
    let web = match prepared {
        Ok(web) => web,
        Err(e) => return vec![("test certificates and web config".into(), Err(e))],
    };
    results.push((
        "promtool check web-config accepts the agent's TLS + basic auth file".into(),
        process::output(
            Command::new("promtool")
                .args(["check", "web-config"])
                .arg(&web),
            "promtool check web-config",
        )
        .map(drop),
    ));
    let started = (|| -> Result<(Running, u16)> {
        let port = process::free_port()?;
        let log = fs::File::create(dir.join("agent.log"))?;
        let running = Running::start(
            "kdump-agent run (TLS)",
            Command::new(agent)
                .args([
                    "run",
                    "--listen",
                    &format!("127.0.0.1:{port}"),
                    "--event-source",
                    "poll",
                ])
                .arg("--state-dir")
                .arg(dir.join("state"))
                .arg("--web.config.file")
                .arg(&web)
                .stdout(Stdio::null())
                .stderr(log),
        )?;
        process::wait_for("the TLS agent's /healthz", Duration::from_secs(30), || {
            Ok(curl(&dir, port, &["--cert", "client.crt", "--key", "client.key"])?.map(|_| ()))
        })?;
        Ok((running, port))
    })();
    let (mut running, port) = match started {
        Ok(s) => s,
        Err(e) => {
            results.push(("the agent serves TLS with --web.config.file".into(), Err(e)));
            return results;
        }
    };
    let with_cert = ["--cert", "client.crt", "--key", "client.key"];
    results.push((
        "with a client certificate and no credentials: 401".into(),
        curl(&dir, port, &with_cert).and_then(|s| {
            ensure!(s == Some(401), "got {s:?}");
            Ok(())
        }),
    ));
    let credentials = format!("{USER}:{PASSWORD}");
    let mut both = with_cert.to_vec();
    both.extend(["-u", &credentials]);
    results.push((
        "with a client certificate and credentials: 200".into(),
        curl(&dir, port, &both).and_then(|s| {
            ensure!(s == Some(200), "got {s:?}");
            Ok(())
        }),
    ));
    results.push((
        "without a client certificate: the handshake is refused".into(),
        curl(&dir, port, &["-u", &credentials]).and_then(|s| {
            ensure!(s.is_none(), "answered HTTP {s:?}");
            Ok(())
        }),
    ));
    let scraped = (|| -> Result<()> {
        let http = http::http();
        let prom_port = process::free_port()?;
        let d = dir.display();
        let job = format!(
            "scheme: https\n    tls_config:\n      ca_file: {d}/ca.crt\n      cert_file: {d}/client.crt\n      key_file: {d}/client.key\n    basic_auth:\n      username: {USER}\n      password: {PASSWORD}\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n        labels:\n          node: {NODE}\n"
        );
        let mut server =
            prometheus::start_scraping(&dir.join("prometheus"), prom_port, rules, &job)?;
        prometheus::wait_ready(&mut server, &http, prom_port, Duration::from_secs(60))?;
        prometheus::wait_up(&http, prom_port, NODE, Duration::from_secs(60))?;
        let ready =
            prometheus::query(&http, prom_port, &format!("kdump_ready{{node=\"{NODE}\"}}"))?;
        ensure!(!ready.is_empty(), "kdump_ready not scraped");
        Ok(())
    })();
    results.push((
        "a real Prometheus scrapes over TLS with a client certificate and basic auth: up".into(),
        scraped,
    ));
    results.push(("the TLS agent kept running".into(), running.alive()));
    results
}
