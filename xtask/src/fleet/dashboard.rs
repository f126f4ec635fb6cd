//! The Grafana dashboard's structure: current schema, its variables, the panels issue 7 asks for.
use anyhow::{Context as _, Result, ensure};
use serde_json::Value;

/// Oldest schema accepted as current (Grafana 10.4+; 11 and 12 write 39-41).
const MIN_SCHEMA_VERSION: u64 = 39;

/// Panels the fleet needs (issue 7), by title.
pub const REQUIRED_PANELS: &[&str] = &[
    "Fleet readiness",
    "Nodes not ready",
    "Stale headers",
    "Missing bytes by node",
    "Agent reloads by result",
    "Reload duration",
    "Unprotected windows",
    "Event sources",
    "Probe states",
];

fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    let mut stack: Vec<&Value> = dashboard["panels"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    while let Some(panel) = stack.pop() {
        stack.extend(panel["panels"].as_array().into_iter().flatten());
        out.push(panel);
    }
    out
}

fn variable<'a>(dashboard: &'a Value, name: &str) -> Result<&'a Value> {
    dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["name"] == name)
        .with_context(|| format!("no ${name} variable"))
}

/// Each check is (name, outcome).
pub fn lint(dashboard: &Value) -> Vec<(&'static str, Result<()>)> {
    let check = |name: &'static str, f: &dyn Fn() -> Result<()>| (name, f());
    vec![
        check(
            "dashboard: current schema, unique panel ids, 24-column grid",
            &|| {
                let version = dashboard["schemaVersion"]
                    .as_u64()
                    .context("no schemaVersion")?;
                ensure!(
                    version >= MIN_SCHEMA_VERSION,
                    "schemaVersion {version} < {MIN_SCHEMA_VERSION}"
                );
                ensure!(dashboard["uid"].is_string(), "no uid");
                let all = panels(dashboard);
                let mut ids: Vec<u64> = all.iter().filter_map(|p| p["id"].as_u64()).collect();
                ensure!(ids.len() == all.len(), "a panel has no id");
                ids.sort_unstable();
                ids.dedup();
                ensure!(ids.len() == all.len(), "duplicate panel ids");
                for p in &all {
                    let g = &p["gridPos"];
                    let (x, w) = (
                        g["x"].as_u64().context("panel without gridPos")?,
                        g["w"].as_u64().unwrap_or(0),
                    );
                    ensure!(
                        w > 0 && x + w <= 24,
                        "panel {} overflows the grid",
                        p["title"]
                    );
                }
                Ok(())
            },
        ),
        check(
            "dashboard: $datasource and multi-value $node variables",
            &|| {
                let ds = variable(dashboard, "datasource")?;
                ensure!(
                    ds["type"] == "datasource" && ds["query"] == "prometheus",
                    "$datasource is not a Prometheus datasource variable"
                );
                let node = variable(dashboard, "node")?;
                ensure!(
                    node["type"] == "query" && node["multi"] == true && node["includeAll"] == true,
                    "$node is not a multi-value query variable with All"
                );
                ensure!(
                    node["datasource"]["uid"] == "${datasource}",
                    "$node does not query ${{datasource}}"
                );
                Ok(())
            },
        ),
        check(
            "dashboard: every panel and target queries ${datasource}",
            &|| {
                for p in panels(dashboard).into_iter().filter(|p| p["type"] != "row") {
                    ensure!(
                        p["datasource"]["uid"] == "${datasource}",
                        "panel {} has another datasource",
                        p["title"]
                    );
                    for t in p["targets"].as_array().into_iter().flatten() {
                        ensure!(
                            t["datasource"]["uid"] == "${datasource}",
                            "panel {} target {} has another datasource",
                            p["title"],
                            t["refId"]
                        );
                        ensure!(
                            t["expr"].as_str().is_some_and(|e| !e.is_empty()),
                            "panel {} target {} has no expr",
                            p["title"],
                            t["refId"]
                        );
                    }
                }
                Ok(())
            },
        ),
        check("dashboard: the panels issue 7 asks for", &|| {
            let titles: Vec<&str> = panels(dashboard)
                .iter()
                .filter_map(|p| p["title"].as_str())
                .collect();
            let missing: Vec<&&str> = REQUIRED_PANELS
                .iter()
                .filter(|t| !titles.contains(t))
                .collect();
            ensure!(missing.is_empty(), "missing panels {missing:?}");
            Ok(())
        }),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn failing(dashboard: &Value) -> Vec<&'static str> {
        lint(dashboard)
            .into_iter()
            .filter(|(_, r)| r.is_err())
            .map(|(n, _)| n)
            .collect()
    }

    #[test]
    fn the_project_dashboard_passes() {
        let text = include_str!("../../../dashboards/kdump-agent.json");
        assert!(failing(&serde_json::from_str(text).unwrap()).is_empty());
    }

    #[test]
    fn old_schema_foreign_datasource_and_overflow_fail() {
        let text = include_str!("../../../dashboards/kdump-agent.json");
        let good: Value = serde_json::from_str(text).unwrap();
        let mut old = good.clone();
        old["schemaVersion"] = json!(27);
        assert!(
            failing(&old).contains(&"dashboard: current schema, unique panel ids, 24-column grid")
        );
        let mut foreign = good.clone();
        foreign["panels"][1]["targets"][0]["datasource"] =
            json!({"type": "prometheus", "uid": "prod"});
        assert!(
            failing(&foreign).contains(&"dashboard: every panel and target queries ${datasource}")
        );
        let mut wide = good;
        wide["panels"][1]["gridPos"]["x"] = json!(20);
        assert!(
            failing(&wide).contains(&"dashboard: current schema, unique panel ids, 24-column grid")
        );
    }
}
