//! The systemd unit the packages ship, read the way systemd reads it: `ExecStart=` with the
//! variables of its default environment file expanded and split on whitespace.
use std::{collections::BTreeMap, fs, path::Path};

use anyhow::{Context as _, Result, bail};

/// The unit and the default arguments the packages install.
pub const UNIT: &str = "deploy/systemd/kdump-agent.service";
pub const DEFAULTS: &str = "deploy/systemd/kdump-agent.default";

/// `ExecStart=` of `unit`, with `$VAR` and `${VAR}` taken from `env` (`KEY="value"` lines, as
/// `EnvironmentFile=` reads them): an unquoted `$VAR` splits into words, as in systemd.
pub fn exec_start(unit: &str, env: &str) -> Result<Vec<String>> {
    let vars = environment(env)?;
    let line = unit
        .lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix("ExecStart="))
        .context("no ExecStart= line")?;
    let mut argv = Vec::new();
    for word in line.split_whitespace() {
        match word.strip_prefix('$') {
            Some(name) => {
                let name = name.trim_start_matches('{').trim_end_matches('}');
                let value = vars.get(name).with_context(|| {
                    format!("ExecStart= uses ${name}, which {DEFAULTS} does not set")
                })?;
                argv.extend(value.split_whitespace().map(str::to_owned));
            }
            None => argv.push(word.to_owned()),
        }
    }
    Ok(argv)
}

fn environment(text: &str) -> Result<BTreeMap<String, String>> {
    let mut vars = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            bail!("{DEFAULTS} line {}: not KEY=value: {line:?}", i + 1);
        };
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        vars.insert(key.trim().to_owned(), value.to_owned());
    }
    Ok(vars)
}

/// The shipped unit's command line, from the repository's files.
pub fn shipped_exec_start(root: &Path) -> Result<Vec<String>> {
    let read = |p: &str| fs::read_to_string(root.join(p)).with_context(|| format!("reading {p}"));
    exec_start(&read(UNIT)?, &read(DEFAULTS)?).with_context(|| UNIT.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_the_environment_file() {
        let argv = exec_start(
            "[Service]\nExecStart=/usr/bin/a run --x 1 $ARGS ${MORE}\n",
            "# c\nARGS=\"--listen 0.0.0.0:1 --y\"\nMORE=z\n",
        )
        .unwrap();
        assert_eq!(
            argv,
            [
                "/usr/bin/a",
                "run",
                "--x",
                "1",
                "--listen",
                "0.0.0.0:1",
                "--y",
                "z"
            ]
        );
        let err = exec_start("ExecStart=/a $NOPE\n", "").unwrap_err();
        assert!(err.to_string().contains("$NOPE"), "{err}");
    }

    #[test]
    fn the_shipped_unit_runs_the_agent() {
        let argv = shipped_exec_start(&crate::paths::root()).unwrap();
        assert_eq!(argv[..2], ["/usr/bin/kdump-agent", "run"]);
    }
}
