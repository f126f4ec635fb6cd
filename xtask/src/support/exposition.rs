//! The agent's metric catalogue, read from its `/metrics` text (Prometheus exposition format 0.0.4).
use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Result, bail};

/// One sample line: `name{label="value",...} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Metric families (from `# TYPE`) and every sample the agent exported.
#[derive(Debug, Default)]
pub struct Catalogue {
    /// Family name -> type (`counter`, `gauge`, `histogram`, ...).
    pub families: BTreeMap<String, String>,
    pub samples: Vec<Sample>,
}

impl Catalogue {
    /// Parses exposition text; an error names the 1-based line and what is wrong with it.
    pub fn parse(text: &str) -> Result<Self> {
        let mut catalogue = Catalogue::default();
        for (index, line) in text.lines().enumerate() {
            let at = index + 1;
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            if let Some(comment) = line.strip_prefix('#') {
                let mut words = comment.split_whitespace();
                if words.next() == Some("TYPE") {
                    let (Some(name), Some(kind)) = (words.next(), words.next()) else {
                        bail!("/metrics line {at}: malformed TYPE line {line:?}");
                    };
                    catalogue.families.insert(name.to_owned(), kind.to_owned());
                }
                continue;
            }
            let sample = parse_sample(line)
                .map_err(|e| anyhow::anyhow!("/metrics line {at}: {e}: {line:?}"))?;
            if catalogue.family_of(&sample.name).is_none() {
                bail!(
                    "/metrics line {at}: sample {} has no # TYPE line",
                    sample.name
                );
            }
            catalogue.samples.push(sample);
        }
        Ok(catalogue)
    }

    /// The family a sample name belongs to (`x_bucket`, `x_sum`, `x_count` belong to histogram `x`).
    pub fn family_of(&self, sample_name: &str) -> Option<&str> {
        if let Some((name, _)) = self.families.get_key_value(sample_name) {
            return Some(name);
        }
        ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
            let base = sample_name.strip_suffix(suffix)?;
            let (name, kind) = self.families.get_key_value(base)?;
            matches!(kind.as_str(), "histogram" | "summary").then_some(name.as_str())
        })
    }

    /// Every sample name (series name) the agent exports.
    pub fn series_names(&self) -> BTreeSet<&str> {
        self.samples.iter().map(|s| s.name.as_str()).collect()
    }

    /// Every label name used by any sample.
    pub fn label_names(&self) -> BTreeSet<&str> {
        self.samples
            .iter()
            .flat_map(|s| s.labels.keys().map(String::as_str))
            .collect()
    }
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .ok_or("no value")?;
    let name = &line[..name_end];
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    {
        return Err(format!("invalid metric name {name:?}"));
    }
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(after) = rest.strip_prefix('{') {
        rest = after;
        loop {
            rest = rest.trim_start_matches([' ', ',']);
            if let Some(after) = rest.strip_prefix('}') {
                rest = after;
                break;
            }
            let eq = rest.find('=').ok_or("label without '='")?;
            let label = rest[..eq].trim();
            rest = rest[eq + 1..]
                .strip_prefix('"')
                .ok_or("label value not quoted")?;
            let mut value = String::new();
            let mut chars = rest.char_indices();
            let end = loop {
                match chars.next() {
                    Some((i, '"')) => break i,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, c)) => value.push(c),
                        None => return Err("unterminated escape".into()),
                    },
                    Some((_, c)) => value.push(c),
                    None => return Err("unterminated label value".into()),
                }
            };
            rest = &rest[end + 1..];
            labels.insert(label.to_owned(), value);
        }
    }
    let value_text = rest.split_whitespace().next().ok_or("no value")?;
    let value = match value_text {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v
            .parse()
            .map_err(|_| format!("invalid sample value {v:?}"))?,
    };
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP kdump_ready crash kernel loaded and header not stale
# TYPE kdump_ready gauge
kdump_ready 0
# TYPE kdump_mode gauge
kdump_mode{mode="observe"} 1
kdump_mode{mode="agent-managed"} 0
# TYPE kdump_reload_duration_seconds histogram
kdump_reload_duration_seconds_bucket{le="0.5"} 0
kdump_reload_duration_seconds_bucket{le="+Inf"} 0
kdump_reload_duration_seconds_sum 0
kdump_reload_duration_seconds_count 0
# TYPE kdump_agent_build_info gauge
kdump_agent_build_info{kernel="6.1 \"x\"\\y",version="0.1.0"} 1
# TYPE kdump_reloads_total counter
"#;

    #[test]
    fn reads_families_samples_and_labels() {
        let c = Catalogue::parse(TEXT).unwrap();
        assert_eq!(c.families.len(), 5);
        assert_eq!(c.samples.len(), 8);
        assert_eq!(
            c.family_of("kdump_reload_duration_seconds_bucket"),
            Some("kdump_reload_duration_seconds")
        );
        assert_eq!(c.family_of("kdump_ready_bucket"), None);
        assert_eq!(c.samples[7].labels["kernel"], "6.1 \"x\"\\y");
        assert_eq!(c.samples[4].value, 0.0);
        assert!(c.label_names().contains("le"));
    }

    #[test]
    fn bad_lines_name_their_line() {
        for (text, want) in [
            ("# TYPE a gauge\na{x=1} 1", "line 2: label value not quoted"),
            (
                "# TYPE a gauge\na{x=\"1} 1",
                "line 2: unterminated label value",
            ),
            ("# TYPE a gauge\na one", "line 2: invalid sample value"),
            ("b 1", "line 1: sample b has no # TYPE line"),
            ("# TYPE a\n", "line 1: malformed TYPE line"),
        ] {
            let err = Catalogue::parse(text).unwrap_err().to_string();
            assert!(err.contains(want), "{err:?} should contain {want:?}");
        }
    }
}
