//! `--textfile-dir`: the metrics as `kdump_agent.prom` for node_exporter's textfile collector.
use std::{
    fs,
    io::Write as _,
    path::{Path, PathBuf},
};

pub const FILE_NAME: &str = "kdump_agent.prom";

/// Replaces `dir/kdump_agent.prom` atomically: node_exporter never reads a half-written file.
pub fn write(dir: &Path, text: &str) -> anyhow::Result<()> {
    let target = dir.join(FILE_NAME);
    let tmp: PathBuf = dir.join(format!(".{FILE_NAME}.{}.tmp", std::process::id()));
    let result = (|| -> std::io::Result<()> {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        fs::rename(&tmp, &target)?;
        fs::File::open(dir)?.sync_all()
    })();
    result.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        anyhow::anyhow!("cannot write {}: {e}", target.display())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "kdump_ready 0\n").unwrap();
        write(dir.path(), "kdump_ready 1\n").unwrap();
        assert_eq!(
            fs::read_to_string(dir.path().join(FILE_NAME)).unwrap(),
            "kdump_ready 1\n"
        );
        let leftovers: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .collect();
        assert_eq!(leftovers.len(), 1, "no temporary file is left behind");
    }

    #[test]
    fn missing_directory_is_named() {
        let err = write(Path::new("/nonexistent/textfile"), "x")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("cannot write /nonexistent/textfile/kdump_agent.prom: "),
            "{err}"
        );
    }
}
