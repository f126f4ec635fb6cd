//! The fleet suite of `cargo xtask test`: the kustomize base, the alert rules, the dashboard, and
//! a real Prometheus scraping a running agent.
mod alertmanager;
mod dashboard;
mod image;
mod manifests;
mod promql;
mod tls;

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context as _, Result, bail, ensure};
use serde_json::Value;

pub use manifests::generate;

use crate::{
    paths,
    support::{
        agent,
        exposition::Catalogue,
        http,
        process::{self, Running},
        prometheus::{self, RULES},
        static_elf,
        tally::Tally,
    },
    ui,
};

/// Kubernetes release the manifests are validated against (kubernetes-validate's newest schema).
const KUBERNETES_VERSION: &str = "1.37.0";

/// How long the live test waits for Prometheus to scrape and evaluate.
const LIVE_TIMEOUT: Duration = Duration::from_secs(60);
/// The `node` label of the live test's scrape target (this host).
const LIVE_NODE: &str = "xtask-host";

/// The alerts the rules file must define (issue 7).
const ALERTS: &[&str] = &[
    "KdumpNotReady",
    "KdumpHeaderStale",
    "KdumpCrashKernelNotLoaded",
    "KdumpReloadFailing",
    "KdumpHeaderUnverified",
    "KdumpAgentEventsLost",
    "KdumpAgentDown",
];

const RULE_TESTS: &str = "deploy/prometheus/tests";
const DASHBOARD: &str = "dashboards/kdump-agent.json";
const RUNBOOK: &str = "docs/runbook.md";

/// Scratch space of this run (generated test files, Prometheus' data, logs); one per process,
/// as several worktrees may share a target dir.
fn work_dir() -> PathBuf {
    paths::target_dir().join(format!("xtask-fleet-{}", std::process::id()))
}

/// Records one check: pass, or fail with its error, printed on its own aligned line.
fn record(tally: &mut Tally, name: &str, outcome: Result<()>) {
    tally.record("fleet", name, outcome);
}

/// A command that passes when it exits 0; its output is shown only when it fails.
fn command_check(cmd: &mut Command) -> Result<()> {
    let what = format!("{:?}", cmd.get_program());
    process::output(cmd, &what).map(drop)
}

fn read(root: &Path, path: &str) -> Result<String> {
    fs::read_to_string(root.join(path)).with_context(|| format!("reading {path}"))
}

/// Runs the suite; its scratch dir is removed when every check passed and kept (and named)
/// for the post-mortem otherwise.
pub fn run(tally: &mut Tally) -> Result<()> {
    let failed_before = tally.failed;
    fs::create_dir_all(work_dir())?;
    let outcome = checks(tally);
    if outcome.is_ok() && tally.failed == failed_before {
        let _ = fs::remove_dir_all(work_dir());
    } else {
        println!(
            "  logs and generated files kept in {}",
            work_dir().display()
        );
    }
    outcome
}

fn checks(tally: &mut Tally) -> Result<()> {
    let root = paths::root();
    let rules: Value =
        serde_yaml_ng::from_str(&read(&root, RULES)?).with_context(|| RULES.to_owned())?;
    let dashboard: Value =
        serde_json::from_str(&read(&root, DASHBOARD)?).with_context(|| DASHBOARD.to_owned())?;

    ui::section("fleet: deploy/ kustomize base");
    manifest_checks(tally, &root, &rules, &dashboard)?;

    ui::section("fleet: alert rules");
    rule_checks(tally, &root, &rules)?;

    ui::section("fleet: Alertmanager inhibitions");
    let what = "deploy/alertmanager inhibitions in a real Alertmanager";
    if Command::new("amtool").arg("--version").output().is_err() {
        tally.skip(
            what,
            "amtool is not installed (`cargo xtask setup` installs prometheus-alertmanager)",
        );
    } else {
        let outcome = alertmanager::check(&root, &work_dir());
        if let Ok(summary) = &outcome {
            println!("  {summary}");
        }
        record(tally, what, outcome.map(drop));
    }

    ui::section("fleet: Grafana dashboard");
    for (name, outcome) in dashboard::lint(&dashboard) {
        record(tally, name, outcome);
    }

    ui::section("fleet: a running agent and a real Prometheus");
    let Some(catalogue) = live_checks(tally, &root, &rules, &dashboard)? else {
        return Ok(());
    };

    ui::section("fleet: every PromQL expression against the agent's catalogue");
    expression_checks(tally, &catalogue, &rules, &dashboard)
}

fn manifest_checks(tally: &mut Tally, root: &Path, rules: &Value, dashboard: &Value) -> Result<()> {
    for (generated, source, generator) in manifests::GENERATED {
        let outcome = (|| {
            let want = manifests::expected(root, source, *generator)?;
            ensure!(
                read(root, generated)? == want,
                "differs from {source}: run `cargo xtask fleet-gen`"
            );
            Ok(())
        })();
        record(
            tally,
            &format!("{generated} is generated from {source}"),
            outcome,
        );
    }
    let resources = match manifests::render(&root.join("deploy")) {
        Ok(r) => r,
        Err(e) => {
            record(tally, "render deploy/", Err(e));
            return Ok(());
        }
    };
    record(
        tally,
        &format!("render deploy/ ({} resources)", resources.len()),
        Ok(()),
    );
    let rendered = work_dir().join("rendered.yaml");
    let text: String = resources
        .iter()
        .map(|r| Ok(format!("---\n{}", serde_yaml_ng::to_string(r)?)))
        .collect::<Result<_>>()?;
    fs::write(&rendered, text)?;

    if Command::new("kubectl")
        .args(["kustomize", "--help"])
        .output()
        .is_ok_and(|o| o.status.success())
    {
        let outcome = (|| {
            let out = Command::new("kubectl")
                .arg("kustomize")
                .arg(root.join("deploy"))
                .output()?;
            ensure!(
                out.status.success(),
                "kubectl kustomize: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            let theirs =
                manifests::documents(&String::from_utf8_lossy(&out.stdout), "kubectl kustomize")?;
            manifests::same_resources(&resources, &theirs)
        })();
        record(
            tally,
            "kubectl kustomize renders the same resources",
            outcome,
        );
    } else {
        tally.skip(
            "kubectl kustomize renders the same resources",
            "neither kustomize nor kubectl is on PATH (not in Debian 12); rendered by concatenating the resources only",
        );
    }

    for (name, outcome) in manifests::cross_checks(&resources, rules, dashboard) {
        record(tally, name, outcome);
    }
    record(
        tally,
        "deploy/Containerfile: FROM scratch, the binary only, the DaemonSet's args",
        read(root, "deploy/Containerfile")
            .and_then(|text| manifests::containerfile_check(&text, &resources)),
    );
    kubernetes_validate(tally, &rendered)?;
    custom_resources_validate(tally, &resources)?;
    image_check(tally, root);
    Ok(())
}

/// Each shipped static build (x86_64, arm64) checked from its bytes, then deploy/Containerfile
/// built for both architectures and run with buildah, when `cargo xtask setup` could install it.
fn image_check(tally: &mut Tally, root: &Path) {
    let mut builds = Vec::new();
    for target in &agent::STATIC_TARGETS {
        let outcome = agent::build_static_for(target).and_then(|binary| {
            let summary = static_elf::check(&fs::read(&binary)?, target)?;
            println!("  {}: {summary}", target.triple);
            builds.push((target, binary));
            Ok(())
        });
        record(
            tally,
            &format!(
                "{}: a static ELF of its machine, embedding probes built for it",
                target.triple
            ),
            outcome,
        );
    }
    let what = "deploy/Containerfile builds for amd64 and arm64 (buildah) and the agent runs in this host's image";
    if Command::new("buildah").arg("--version").output().is_err() {
        tally.skip(
            what,
            "buildah is not installed (`cargo xtask setup` installs it)",
        );
        return;
    }
    let host = agent::STATIC_TARGETS
        .iter()
        .find(|t| t.triple.starts_with(std::env::consts::ARCH))
        .map_or("unknown", |t| t.oci_arch);
    let outcome = if builds.len() == agent::STATIC_TARGETS.len() {
        image::build_and_run(root, &builds, host, &work_dir())
            .map(|version| println!("  image runs: {version}"))
    } else {
        Err(anyhow::anyhow!("not every static build succeeded (above)"))
    };
    record(tally, what, outcome);
}

/// Validates the prometheus-operator resources against their CRDs' schemas (Node, npm package).
fn custom_resources_validate(tally: &mut Tally, resources: &[Value]) -> Result<()> {
    let what = "prometheus-operator CRD schemas";
    let prefix = crate::setup::node_tools();
    if !prefix.join("node_modules").is_dir() {
        tally.skip(what, "npm was not available to `cargo xtask setup`");
        return Ok(());
    }
    // ESM resolves imports next to the script, so the script lives in the npm prefix.
    let script = prefix.join("validate-crds.mjs");
    fs::write(&script, include_str!("validate-crds.mjs"))?;
    let mut child = match Command::new("node")
        .arg(&script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => {
            tally.skip(what, &format!("cannot run node: {e}"));
            return Ok(());
        }
    };
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().context("node stdin")?;
        stdin.write_all(serde_json::to_string(resources)?.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut validated = 0;
    for line in text.lines() {
        if let Some(id) = line.strip_prefix("ok ") {
            record(tally, &format!("{what}: {id}"), Ok(()));
            validated += 1;
        } else if let Some(rest) = line.strip_prefix("invalid ") {
            let (id, why) = rest.split_once(": ").unwrap_or((rest, ""));
            record(
                tally,
                &format!("{what}: {id}"),
                Err(anyhow::anyhow!("{why}")),
            );
            validated += 1;
        }
    }
    let expected = resources
        .iter()
        .filter(|r| r["apiVersion"] == "monitoring.coreos.com/v1")
        .count();
    if !out.status.success() || validated != expected {
        record(
            tally,
            what,
            Err(anyhow::anyhow!(
                "validated {validated} of {expected} resources ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )),
        );
    }
    Ok(())
}

/// Validates every rendered resource against the Kubernetes schema; custom resources have none.
fn kubernetes_validate(tally: &mut Tally, rendered: &Path) -> Result<()> {
    let tool = crate::setup::kubernetes_validate();
    let out = Command::new(&tool)
        .args(["--strict", "--kubernetes-version", KUBERNETES_VERSION])
        .arg(rendered)
        .output()
        .with_context(|| format!("running {}", tool.display()))?;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let mut seen = 0;
    for line in text.lines() {
        let rest = line
            .split_once(&rendered.display().to_string())
            .map_or(line, |(_, r)| r)
            .trim();
        if let Some(resource) = rest.strip_prefix("passed for resource ") {
            let resource = resource
                .split(" against version")
                .next()
                .unwrap_or(resource);
            record(
                tally,
                &format!("Kubernetes {KUBERNETES_VERSION} schema: {resource}"),
                Ok(()),
            );
        } else if line.starts_with("WARN") && rest.starts_with("Couldn't find schema for kind ") {
            let kind = rest
                .trim_start_matches("Couldn't find schema for kind ")
                .split_whitespace()
                .next()
                .unwrap_or("?");
            // prometheus-operator kinds are validated against their CRDs next; anything else
            // without a schema is a resource nobody validates.
            if !rest.contains("monitoring.coreos.com/") {
                record(
                    tally,
                    &format!("Kubernetes {KUBERNETES_VERSION} schema: {kind}"),
                    Err(anyhow::anyhow!("no schema for this kind")),
                );
            }
        } else if line.starts_with("ERROR") {
            record(tally, "Kubernetes schema", Err(anyhow::anyhow!("{rest}")));
        } else {
            continue;
        }
        seen += 1;
    }
    if seen == 0 || (!out.status.success() && !text.contains("ERROR")) {
        record(
            tally,
            "kubernetes-validate",
            Err(anyhow::anyhow!("{}: {}", out.status, text.trim())),
        );
    }
    Ok(())
}

fn rule_checks(tally: &mut Tally, root: &Path, rules: &Value) -> Result<()> {
    record(
        tally,
        &format!("promtool check rules {RULES}"),
        command_check(
            Command::new("promtool")
                .args(["check", "rules"])
                .arg(root.join(RULES)),
        ),
    );
    let mut tests: Vec<PathBuf> = fs::read_dir(root.join(RULE_TESTS))
        .with_context(|| format!("reading {RULE_TESTS}"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    tests.sort();
    if tests.is_empty() {
        record(
            tally,
            "promtool test rules",
            Err(anyhow::anyhow!("no unit tests in {RULE_TESTS}")),
        );
    }
    for test in &tests {
        let name = test
            .strip_prefix(root)
            .unwrap_or(test)
            .display()
            .to_string();
        record(
            tally,
            &format!("promtool test rules {name}"),
            command_check(Command::new("promtool").args(["test", "rules"]).arg(test)),
        );
    }
    let tested: String = tests
        .iter()
        .map(|t| fs::read_to_string(t).unwrap_or_default())
        .collect();
    let runbook = read(root, RUNBOOK)?;
    let anchors: BTreeSet<String> = runbook
        .lines()
        .filter_map(|l| l.strip_prefix("## "))
        .map(|h| h.trim().to_lowercase().replace(' ', "-"))
        .collect();
    for alert in ALERTS {
        let outcome = (|| {
            let rule = rules["groups"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|g| g["rules"].as_array().into_iter().flatten())
                .find(|r| r["alert"] == *alert)
                .context("missing from the rules file")?;
            ensure!(rule["for"].is_string(), "no `for:` duration");
            for key in ["summary", "description", "runbook_url"] {
                ensure!(
                    rule["annotations"][key]
                        .as_str()
                        .is_some_and(|s| !s.is_empty()),
                    "no {key} annotation"
                );
            }
            let url = rule["annotations"]["runbook_url"]
                .as_str()
                .unwrap_or_default();
            let (page, anchor) = url.rsplit_once('#').context("runbook_url has no #anchor")?;
            ensure!(
                page.ends_with(RUNBOOK),
                "runbook_url does not point into {RUNBOOK}"
            );
            ensure!(
                anchors.contains(anchor),
                "{RUNBOOK} has no section #{anchor}"
            );
            ensure!(
                tested.contains(&format!("alertname: {alert}")),
                "no promtool unit test in {RULE_TESTS}"
            );
            Ok(())
        })();
        record(
            tally,
            &format!("{alert}: for, annotations, runbook section, unit test"),
            outcome,
        );
    }
    Ok(())
}

/// Starts the agent, reads its catalogue from /metrics, and has a real Prometheus scrape it and
/// evaluate the rules and every dashboard expression. None when the agent could not be scraped.
fn live_checks(
    tally: &mut Tally,
    root: &Path,
    rules: &Value,
    dashboard: &Value,
) -> Result<Option<Catalogue>> {
    let work = work_dir();
    let Some(mut live) = start_agent(tally, &work)? else {
        return Ok(None);
    };
    let http = http::http();
    endpoint_checks(tally, &http, live.port);
    textfile_checks(tally, &live);
    if let Some((_prometheus, prom_port)) = start_prometheus(tally, &http, &live, root, &work)? {
        let at = (&http, prom_port);
        record(
            tally,
            &format!(
                "every catalogue series is in Prometheus ({} names)",
                live.catalogue.series_names().len()
            ),
            series_present(at, &live.catalogue),
        );
        record(
            tally,
            "Prometheus evaluates every alert rule on live data: health ok, states follow expressions",
            fresh_rules(at, rules).and_then(|loaded| states_follow(at, &loaded)),
        );
        let (what, outcome) = expressions_evaluate(at, rules, dashboard)?;
        record(tally, &what, outcome);
        record(
            tally,
            "the agent kept running throughout",
            live.agent.alive(),
        );
    }
    ui::section("fleet: TLS and basic auth (--web.config.file)");
    for (name, outcome) in tls::checks(&agent::build_debug()?, &work, &root.join(RULES)) {
        record(tally, &name, outcome);
    }
    Ok(Some(live.catalogue))
}

/// The agent running on this host for the live checks, and what its /metrics said first.
struct LiveAgent {
    agent: Running,
    port: u16,
    textfile_dir: PathBuf,
    text: String,
    catalogue: Catalogue,
}

/// Builds and starts the agent, scrapes and parses its /metrics. None (recorded or skipped)
/// when it has no exporter or its /metrics cannot be read.
fn start_agent(tally: &mut Tally, work: &Path) -> Result<Option<LiveAgent>> {
    let binary = agent::build_debug()?;
    let help = Command::new(&binary)
        .args(["run", "--help"])
        .output()
        .context("kdump-agent run --help")?;
    if !String::from_utf8_lossy(&help.stdout).contains("--listen") {
        tally.skip(
            "agent catalogue, real Prometheus, PromQL evaluation",
            "this agent has no exporter yet (`kdump-agent run --help` lists no --listen)",
        );
        return Ok(None);
    }
    let port = process::free_port()?;
    let textfile_dir = work.join("textfile");
    let _ = fs::remove_dir_all(&textfile_dir);
    let log = work.join("agent.log");
    let mut agent = agent::start(&binary, port, Some(&textfile_dir), &log)?;
    let text = match agent::scrape(port, &mut agent) {
        Ok(text) => text,
        Err(e) => {
            let e = e.context(format!("log: {}", log.display()));
            record(tally, "the agent serves /metrics", Err(e));
            return Ok(None);
        }
    };
    let catalogue = match Catalogue::parse(&text) {
        Ok(c) => c,
        Err(e) => {
            record(tally, "the agent's /metrics parses", Err(e));
            return Ok(None);
        }
    };
    let what = format!(
        "the agent serves /metrics ({} families, {} samples)",
        catalogue.families.len(),
        catalogue.samples.len()
    );
    record(tally, &what, Ok(()));
    Ok(Some(LiveAgent {
        agent,
        port,
        textfile_dir,
        text,
        catalogue,
    }))
}

/// /healthz and /readyz answer 200.
fn endpoint_checks(tally: &mut Tally, http: &ureq::Agent, agent_port: u16) {
    for path in ["/healthz", "/readyz"] {
        let outcome = http::get(http, &format!("http://127.0.0.1:{agent_port}{path}")).and_then(
            |(status, body)| {
                ensure!(status == 200, "HTTP {status}: {}", body.trim());
                Ok(())
            },
        );
        record(
            tally,
            &format!("the agent answers {path} with 200"),
            outcome,
        );
    }
}

/// promtool lints /metrics and the textfile, which has the same families.
fn textfile_checks(tally: &mut Tally, live: &LiveAgent) {
    record(
        tally,
        "promtool check metrics: the agent's /metrics lints clean",
        promtool_check_metrics(&live.text),
    );
    let textfile = live.textfile_dir.join("kdump_agent.prom");
    let outcome = (|| {
        let text = fs::read_to_string(&textfile)
            .with_context(|| format!("reading {}", textfile.display()))?;
        promtool_check_metrics(&text)?;
        let written = Catalogue::parse(&text)?;
        ensure!(
            written.families == live.catalogue.families,
            "families differ from /metrics"
        );
        Ok(())
    })();
    record(
        tally,
        "--textfile-dir: kdump_agent.prom lints clean, same families as /metrics",
        outcome,
    );
}

/// Prometheus scraping the agent, and its port; None (recorded) when it does not start.
fn start_prometheus(
    tally: &mut Tally,
    http: &ureq::Agent,
    live: &LiveAgent,
    root: &Path,
    work: &Path,
) -> Result<Option<(Running, u16)>> {
    let dir = work.join("prometheus");
    let _ = fs::remove_dir_all(&dir);
    let port = process::free_port()?;
    let mut server = prometheus::start(&dir, port, live.port, LIVE_NODE, &root.join(RULES))?;
    if let Err(e) = prometheus::wait_ready(&mut server, http, port, LIVE_TIMEOUT) {
        let log = dir.join("prometheus.log");
        let e = e.context(format!("log: {}", log.display()));
        record(tally, "Prometheus starts", Err(e));
        return Ok(None);
    }
    record(
        tally,
        &format!("Prometheus (127.0.0.1:{port}) scrapes the agent: up == 1"),
        prometheus::wait_up(http, port, LIVE_NODE, LIVE_TIMEOUT),
    );
    Ok(Some((server, port)))
}

/// Prometheus as the live checks reach it: the client and its port.
type At<'a> = (&'a ureq::Agent, u16);

/// Every series name of the catalogue is in Prometheus.
fn series_present((http, port): At, catalogue: &Catalogue) -> Result<()> {
    let wanted: BTreeSet<String> = catalogue
        .series_names()
        .into_iter()
        .map(str::to_owned)
        .collect();
    process::wait_for("every catalogue series in Prometheus", LIVE_TIMEOUT, || {
        let names = prometheus::api(http, port, "/api/v1/label/__name__/values", None)?;
        let have: BTreeSet<String> = names
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect();
        let missing: Vec<&String> = wanted.difference(&have).collect();
        if missing.is_empty() {
            Ok(Some(()))
        } else {
            bail!("missing {missing:?}")
        }
    })
}

/// Every rule loaded, healthy, and evaluated after the first scrape: the loaded rules.
fn fresh_rules((http, port): At, rules: &Value) -> Result<Vec<Value>> {
    // Rule evaluations from before the first scrape prove little: wait for one after it.
    let loaded_rules = || -> Result<Vec<Value>> {
        let data = prometheus::api(http, port, "/api/v1/rules", None)?;
        Ok(data["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().into_iter().flatten().cloned())
            .collect())
    };
    let before: Vec<Value> = loaded_rules()?
        .iter()
        .map(|r| r["lastEvaluation"].clone())
        .collect();
    process::wait_for(
        "every rule evaluated after the first scrape",
        LIVE_TIMEOUT,
        || {
            let loaded = loaded_rules()?;
            ensure!(
                loaded.len() == promql::rule_expressions(rules)?.len(),
                "{} rules loaded",
                loaded.len()
            );
            for rule in &loaded {
                if rule["health"] != "ok" {
                    bail!(
                        "{}: health {} {}",
                        rule["name"],
                        rule["health"],
                        rule["lastError"]
                    );
                }
            }
            let fresh = loaded.len() == before.len()
                && loaded
                    .iter()
                    .zip(&before)
                    .all(|(r, b)| r["lastEvaluation"] != *b);
            Ok(fresh.then_some(loaded))
        },
    )
}

/// Each alert's state follows its expression on the agent's live metrics.
fn states_follow((http, port): At, loaded: &[Value]) -> Result<()> {
    let mut wrong = Vec::new();
    for rule in loaded {
        let name = rule["name"].as_str().unwrap_or("?");
        let state = rule["state"].as_str().unwrap_or("-");
        let query = rule["query"].as_str().unwrap_or_default();
        let active = prometheus::api(http, port, "/api/v1/query", Some(query))
            .map(|d| d["result"].as_array().is_some_and(|r| !r.is_empty()));
        println!(
            "       {name:<28} {state:<9} expression {}",
            match &active {
                Ok(true) => "true",
                Ok(false) => "false",
                Err(_) => "error",
            }
        );
        if active.as_ref().ok() != Some(&(state != "inactive")) {
            wrong.push(format!("{name} is {state}"));
        }
    }
    ensure!(wrong.is_empty(), "{}", wrong.join(", "));
    Ok(())
}

/// Prometheus evaluates every rule and dashboard expression without an error.
fn expressions_evaluate(
    (http, port): At,
    rules: &Value,
    dashboard: &Value,
) -> Result<(String, Result<()>)> {
    let mut expressions = promql::rule_expressions(rules)?;
    expressions.extend(promql::dashboard_expressions(dashboard)?);
    let errors: Vec<String> = expressions
        .iter()
        .filter_map(|e| {
            prometheus::api(http, port, "/api/v1/query", Some(&e.expr))
                .err()
                .map(|err| format!("{}: {err:#}", e.origin))
        })
        .collect();
    let what = format!(
        "Prometheus evaluates every rule and dashboard expression ({})",
        expressions.len()
    );
    let outcome = if errors.is_empty() {
        Ok(())
    } else {
        Err(anyhow::anyhow!("{}", errors.join("; ")))
    };
    Ok((what, outcome))
}

fn expression_checks(
    tally: &mut Tally,
    catalogue: &Catalogue,
    rules: &Value,
    dashboard: &Value,
) -> Result<()> {
    let mut expressions = promql::rule_expressions(rules)?;
    expressions.extend(promql::dashboard_expressions(dashboard)?);
    let dir = work_dir().join("promql");
    fs::create_dir_all(&dir)?;
    for (index, expression) in expressions.iter().enumerate() {
        let outcome = evaluate(
            catalogue,
            expression,
            &dir.join(format!("expr-{index}.yaml")),
        );
        record(tally, &expression.origin, outcome);
    }
    // A reference to a metric the agent does not export must fail both ways, or the checks above
    // prove nothing.
    let control = promql::Expression {
        origin: "negative control".into(),
        expr: r#"sum by (node) (kdump_no_such_metric{job="kdump-agent"})"#.into(),
    };
    let reads = promql::reads(&control.expr)?;
    let names_fail = !promql::unknown_names(&reads, catalogue).is_empty();
    let promtool_fails =
        promtool_passes(catalogue, &control, &dir.join("negative-control.yaml"))?.is_err();
    record(
        tally,
        "negative control: an unknown metric fails the name check and promtool",
        if names_fail && promtool_fails {
            Ok(())
        } else {
            Err(anyhow::anyhow!(
                "name check failed: {names_fail}, promtool failed: {promtool_fails}"
            ))
        },
    );
    Ok(())
}

/// `promtool check metrics` (exposition format and naming conventions: base units, `_total`).
fn promtool_check_metrics(text: &str) -> Result<()> {
    use std::io::Write as _;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("running promtool check metrics")?;
    child
        .stdin
        .take()
        .context("promtool stdin")?
        .write_all(text.as_bytes())?;
    let out = child.wait_with_output()?;
    ensure!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// The expression names only catalogue metrics and labels, and promtool evaluates it.
fn evaluate(catalogue: &Catalogue, expression: &promql::Expression, file: &Path) -> Result<()> {
    let reads = promql::reads(&expression.expr)?;
    let unknown = promql::unknown_names(&reads, catalogue);
    ensure!(
        unknown.is_empty(),
        "{} not exported by the agent, in {}",
        unknown.join(", "),
        expression.expr
    );
    promtool_passes(catalogue, expression, file)?
}

/// Ok(Ok) when promtool's evaluation passes, Ok(Err) when it fails; Err when it cannot run.
fn promtool_passes(
    catalogue: &Catalogue,
    expression: &promql::Expression,
    file: &Path,
) -> Result<Result<()>> {
    let test = promql::promtool_test(catalogue, expression)?;
    fs::write(file, serde_json::to_string_pretty(&test)?)?;
    let out = Command::new("promtool")
        .args(["test", "rules"])
        .arg(file)
        .output()
        .context("running promtool")?;
    Ok(if out.status.success() {
        Ok(())
    } else {
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        Err(anyhow::anyhow!(
            "promtool ({}): {}",
            file.display(),
            text.trim()
        ))
    })
}
