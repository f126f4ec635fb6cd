//! The PromQL of the rules and the dashboard: extraction, the selectors and label names each
//! expression uses, and the promtool test that evaluates it against the agent's catalogue.
use std::collections::BTreeSet;

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use crate::support::exposition::Catalogue;

/// Labels every scraped series carries besides the agent's own: the target's labels
/// (`node` comes from the ServiceMonitor's relabeling) and the metric name.
pub const TARGET_LABELS: &[&str] = &["job", "instance", "node", "__name__"];

/// The series Prometheus adds for every target, besides what the agent exports.
const SYNTHETIC_SERIES: &[&str] = &["up"];

/// Samples per test series, one a minute; expressions are evaluated at minute 30.
const SAMPLES: usize = 61;

/// Grafana variables and what the test puts in their place: every node, a 1m rate window.
const DASHBOARD_VARIABLES: &[(&str, &str)] = &[
    ("${node}", ".*"),
    ("$node", ".*"),
    ("${__rate_interval}", "1m"),
    ("$__rate_interval", "1m"),
    ("$__interval", "1m"),
    ("$__range", "1h"),
];

/// One PromQL expression and where it comes from (for error messages).
#[derive(Debug, Clone)]
pub struct Expression {
    pub origin: String,
    pub expr: String,
}

/// Every alert and recording rule expression of a rules file (`groups:` document).
pub fn rule_expressions(rules: &Value) -> Result<Vec<Expression>> {
    let mut out = Vec::new();
    let groups = rules["groups"]
        .as_array()
        .context("rules: no `groups` list")?;
    for group in groups {
        for rule in group["rules"]
            .as_array()
            .context("rules: group without `rules`")?
        {
            let name = rule["alert"]
                .as_str()
                .or(rule["record"].as_str())
                .context("rule without alert/record name")?;
            let expr = rule["expr"]
                .as_str()
                .with_context(|| format!("rule {name}: no expr"))?;
            out.push(Expression {
                origin: format!("rule {name}"),
                expr: expr.trim().to_owned(),
            });
        }
    }
    Ok(out)
}

/// Every panel target's expression and every query variable of a Grafana dashboard, with the
/// dashboard variables substituted.
pub fn dashboard_expressions(dashboard: &Value) -> Result<Vec<Expression>> {
    let mut out = Vec::new();
    let mut stack: Vec<&Value> = dashboard["panels"]
        .as_array()
        .context("dashboard: no `panels`")?
        .iter()
        .collect();
    while let Some(panel) = stack.pop() {
        if let Some(inner) = panel["panels"].as_array() {
            stack.extend(inner);
        }
        let title = panel["title"].as_str().unwrap_or("(untitled)");
        for target in panel["targets"].as_array().into_iter().flatten() {
            let Some(expr) = target["expr"].as_str() else {
                continue;
            };
            let ref_id = target["refId"].as_str().unwrap_or("?");
            let origin = format!("dashboard panel {title:?} target {ref_id}");
            out.push(Expression {
                expr: substitute(expr).with_context(|| origin.clone())?,
                origin,
            });
        }
    }
    for var in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if var["type"] != "query" {
            continue;
        }
        let name = var["name"].as_str().unwrap_or("?");
        let query = var["query"]["query"]
            .as_str()
            .or(var["query"].as_str())
            .with_context(|| format!("dashboard variable {name}: no query"))?;
        let origin = format!("dashboard variable {name}");
        out.push(Expression {
            expr: label_values_expr(query).with_context(|| origin.clone())?,
            origin,
        });
    }
    out.sort_by(|a, b| a.origin.cmp(&b.origin));
    Ok(out)
}

/// Replaces the dashboard's variables; any other `$` is an unknown variable.
fn substitute(expr: &str) -> Result<String> {
    let mut out = expr.to_owned();
    for (var, value) in DASHBOARD_VARIABLES {
        out = out.replace(var, value);
    }
    if let Some(at) = out.find('$') {
        bail!("unknown dashboard variable at {:?}", &out[at..]);
    }
    Ok(out)
}

/// `label_values(selector, label)` as the PromQL Grafana runs for it: the label over the selector.
fn label_values_expr(query: &str) -> Result<String> {
    let inner = query
        .trim()
        .strip_prefix("label_values(")
        .and_then(|q| q.strip_suffix(')'))
        .with_context(|| {
            format!("only label_values(selector, label) variables are supported, not {query:?}")
        })?;
    let (selector, label) = inner
        .rsplit_once(',')
        .with_context(|| format!("label_values without a selector: {query:?}"))?;
    Ok(format!(
        "count by ({}) ({})",
        label.trim(),
        substitute(selector.trim())?
    ))
}

/// What an expression reads: its vector selectors and every label name it matches or groups on.
#[derive(Debug, Default, PartialEq)]
pub struct Reads {
    /// `metric{matchers}` texts, each one a valid PromQL selector on its own.
    pub selectors: BTreeSet<String>,
    pub metrics: BTreeSet<String>,
    pub labels: BTreeSet<String>,
}

const GROUPING: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];
/// Operators and aggregations (`sum by (x) (...)` puts a grouping between the name and its `(`).
const KEYWORDS: &[&str] = &[
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "atan2",
    "inf",
    "nan",
    "start",
    "end",
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];

/// Scans an expression (strings, ranges and comments skipped); an error names the position.
pub fn reads(expr: &str) -> Result<Reads> {
    let mut reads = Reads::default();
    let chars: Vec<char> = expr.chars().collect();
    let mut i = 0;
    let ident_start = |c: char| c.is_ascii_alphabetic() || c == '_' || c == ':';
    let ident_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let skip_space = |mut i: usize| {
        while i < chars.len() && chars[i].is_whitespace() {
            i += 1;
        }
        i
    };
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            i = skip_string(&chars, i)?;
        } else if c == '#' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '[' {
            i = close(&chars, i, '[', ']')? + 1;
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            while i < chars.len() && (ident_char(chars[i]) || chars[i] == '.') {
                i += 1;
            }
        } else if c == '{' {
            let end = close(&chars, i, '{', '}')?;
            let block: String = chars[i..=end].iter().collect();
            reads.labels.extend(matcher_labels(&block)?);
            reads.selectors.insert(block);
            i = end + 1;
        } else if ident_start(c) {
            let start = i;
            while i < chars.len() && ident_char(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let next = skip_space(i);
            let opens = chars.get(next) == Some(&'(');
            if GROUPING.contains(&word.as_str()) {
                if opens {
                    let end = close(&chars, next, '(', ')')?;
                    let list: String = chars[next + 1..end].iter().collect();
                    reads.labels.extend(
                        list.split(',')
                            .map(str::trim)
                            .filter(|l| !l.is_empty())
                            .map(str::to_owned),
                    );
                    i = end + 1;
                }
            } else if KEYWORDS.contains(&word.to_ascii_lowercase().as_str()) || opens {
                // An operator, or a function / aggregation name.
            } else if chars.get(next) == Some(&'{') {
                let end = close(&chars, next, '{', '}')?;
                let block: String = chars[next..=end].iter().collect();
                reads.labels.extend(matcher_labels(&block)?);
                reads.selectors.insert(format!("{word}{block}"));
                reads.metrics.insert(word);
                i = end + 1;
            } else {
                reads.selectors.insert(word.clone());
                reads.metrics.insert(word);
            }
        } else {
            i += 1;
        }
    }
    Ok(reads)
}

fn skip_string(chars: &[char], open: usize) -> Result<usize> {
    let quote = chars[open];
    let mut i = open + 1;
    while i < chars.len() {
        match chars[i] {
            '\\' if quote != '`' => i += 2,
            c if c == quote => return Ok(i + 1),
            _ => i += 1,
        }
    }
    bail!("unterminated string at character {}", open + 1)
}

/// Index of the bracket closing the one at `open` (strings inside are skipped).
fn close(chars: &[char], open: usize, left: char, right: char) -> Result<usize> {
    let mut depth = 0;
    let mut i = open;
    while i < chars.len() {
        match chars[i] {
            '"' | '\'' | '`' => {
                i = skip_string(chars, i)?;
                continue;
            }
            c if c == left => depth += 1,
            c if c == right => {
                depth -= 1;
                if depth == 0 {
                    return Ok(i);
                }
            }
            _ => {}
        }
        i += 1;
    }
    bail!("unclosed {left:?} at character {}", open + 1)
}

/// Label names of a `{a="x", b=~"y"}` block.
fn matcher_labels(block: &str) -> Result<Vec<String>> {
    let chars: Vec<char> = block.chars().collect();
    let mut labels = Vec::new();
    let mut i = 1;
    let mut expect_name = true;
    while i + 1 < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            i = skip_string(&chars, i)?;
            continue;
        }
        if c == ',' {
            expect_name = true;
        } else if expect_name && (c.is_ascii_alphabetic() || c == '_') {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            labels.push(chars[start..i].iter().collect());
            expect_name = false;
            continue;
        }
        i += 1;
    }
    Ok(labels)
}

/// Names the expression reads that the agent does not export (metrics) or never sets (labels).
pub fn unknown_names(reads: &Reads, catalogue: &Catalogue) -> Vec<String> {
    let series = catalogue.series_names();
    let labels = catalogue.label_names();
    let mut unknown: Vec<String> = reads
        .metrics
        .iter()
        .filter(|m| !series.contains(m.as_str()) && !SYNTHETIC_SERIES.contains(&m.as_str()))
        .map(|m| format!("metric {m}"))
        .collect();
    unknown.extend(
        reads
            .labels
            .iter()
            .filter(|l| !labels.contains(l.as_str()) && !TARGET_LABELS.contains(&l.as_str()))
            .map(|l| format!("label {l}")),
    );
    unknown
}

/// A promtool unit-test file (JSON is YAML) that evaluates `expression` against two nodes
/// exporting exactly the catalogue's series: it passes when the expression evaluates without
/// error and each of its selectors matches at least one series.
pub fn promtool_test(catalogue: &Catalogue, expression: &Expression) -> Result<Value> {
    let reads = reads(&expression.expr).with_context(|| expression.origin.clone())?;
    let mut series = Vec::new();
    for node in ["node-a", "node-b"] {
        let target = format!("job=\"kdump-agent\", instance=\"{node}:10864\", node=\"{node}\"");
        series.push(
            json!({"series": format!("up{{{target}}}"), "values": format!("1x{}", SAMPLES - 1)}),
        );
        for sample in &catalogue.samples {
            let family = catalogue.family_of(&sample.name).unwrap_or(&sample.name);
            let cumulative = matches!(
                catalogue.families.get(family).map(String::as_str),
                Some("counter" | "histogram" | "summary")
            );
            let mut labels = target.clone();
            for (name, value) in &sample.labels {
                labels.push_str(&format!(
                    ", {name}=\"{}\"",
                    value.replace('\\', "\\\\").replace('"', "\\\"")
                ));
            }
            let value = sample.value;
            // Counters and histograms grow by one event per minute; gauges hold the scraped value.
            // promtool's `AxN` shorthand takes finite numbers only: NaN/Inf are written out.
            let values = if !value.is_finite() {
                let token = if value.is_nan() {
                    "NaN"
                } else if value > 0.0 {
                    "Inf"
                } else {
                    "-Inf"
                };
                vec![token; SAMPLES].join(" ")
            } else if cumulative {
                format!("{value}+1x{}", SAMPLES - 1)
            } else {
                format!("{value}x{}", SAMPLES - 1)
            };
            series
                .push(json!({"series": format!("{}{{{labels}}}", sample.name), "values": values}));
        }
    }
    let mut tests = vec![json!({
        "expr": format!("vector(1) or absent({})", expression.expr),
        "eval_time": "30m",
        "exp_samples": [{"labels": "{}", "value": 1}],
    })];
    tests.extend(reads.selectors.iter().map(|selector| {
        json!({"expr": format!("absent({selector})"), "eval_time": "30m", "exp_samples": []})
    }));
    Ok(json!({
        "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": series, "promql_expr_test": tests}],
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn reads_selectors_metrics_and_labels() {
        let r = reads(r#"histogram_quantile(0.99, sum by (le) (rate(kdump_reload_duration_seconds_bucket{job="kdump-agent", node=~".*"}[5m]))) > 0.5"#).unwrap();
        assert_eq!(r.metrics, set(&["kdump_reload_duration_seconds_bucket"]));
        assert_eq!(
            r.selectors,
            set(&[r#"kdump_reload_duration_seconds_bucket{job="kdump-agent", node=~".*"}"#])
        );
        assert_eq!(r.labels, set(&["le", "job", "node"]));

        let r = reads(r#"kdump_header_stale * on (instance) group_left (mode) (kdump_mode == 1) unless absent(up{job="x,y}"}) or vector(0) offset 5m"#).unwrap();
        assert_eq!(r.metrics, set(&["kdump_header_stale", "kdump_mode", "up"]));
        assert_eq!(r.labels, set(&["instance", "mode", "job"]));

        let r = reads(r#"sum(kdump_reloads_total) without (result) and {__name__="kdump_ready"} # kdump_fake"#).unwrap();
        assert_eq!(r.metrics, set(&["kdump_reloads_total"]));
        assert_eq!(r.labels, set(&["result", "__name__"]));
        assert!(r.selectors.contains(r#"{__name__="kdump_ready"}"#));
    }

    #[test]
    fn malformed_expressions_are_errors() {
        assert!(reads(r#"kdump_ready{node="x}"#).is_err());
        assert!(reads("sum by (node (kdump_ready)").is_err());
    }

    #[test]
    fn dashboard_variables_are_substituted_or_rejected() {
        assert_eq!(
            substitute("rate(x{node=~\"$node\"}[$__rate_interval])").unwrap(),
            "rate(x{node=~\".*\"}[1m])"
        );
        assert!(
            substitute("x{pod=\"$pod\"}")
                .unwrap_err()
                .to_string()
                .contains("$pod")
        );
        assert_eq!(
            label_values_expr("label_values(kdump_ready{job=\"a\"}, node)").unwrap(),
            "count by (node) (kdump_ready{job=\"a\"})"
        );
        assert!(label_values_expr("query_result(up)").is_err());
    }

    #[test]
    fn test_series_hold_the_scraped_values() {
        let catalogue = Catalogue::parse(
            "# TYPE g gauge\ng NaN\n# TYPE c counter\nc{r=\"x\"} 2\n# TYPE i gauge\ni -Inf\n",
        )
        .unwrap();
        let expression = Expression {
            origin: "t".into(),
            expr: "g".into(),
        };
        let test = promtool_test(&catalogue, &expression).unwrap();
        let series = test["tests"][0]["input_series"].as_array().unwrap();
        let values = |name: &str| {
            series
                .iter()
                .find(|s| s["series"].as_str().unwrap().starts_with(name))
                .map(|s| s["values"].as_str().unwrap().to_owned())
                .unwrap()
        };
        assert_eq!(
            values("g{").split(' ').filter(|v| *v == "NaN").count(),
            SAMPLES
        );
        assert_eq!(values("c{"), "2+1x60");
        assert!(values("i{").starts_with("-Inf -Inf"));
        assert_eq!(values("up{"), "1x60");
        assert!(series.iter().any(|s| s["series"]
            == "c{job=\"kdump-agent\", instance=\"node-b:10864\", node=\"node-b\", r=\"x\"}"));
    }

    #[test]
    fn names_outside_the_catalogue_are_reported() {
        let catalogue =
            Catalogue::parse("# TYPE kdump_mode gauge\nkdump_mode{mode=\"observe\"} 1\n").unwrap();
        let ok = reads("count by (mode, node) (kdump_mode{job=\"kdump-agent\"} == 1) or up == 0")
            .unwrap();
        assert!(unknown_names(&ok, &catalogue).is_empty());
        let bad = reads("sum by (reason) (kdump_modes)").unwrap();
        assert_eq!(
            unknown_names(&bad, &catalogue),
            vec!["metric kdump_modes", "label reason"]
        );
    }
}
