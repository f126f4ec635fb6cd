//! Child processes: `cargo` in the workspace, a command's output, a process killed on drop,
//! free loopback ports, polling until something holds.
use std::{
    net::TcpListener,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

/// `cargo` in the workspace root, with the project's tools on PATH.
pub fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(crate::paths::root());
    cmd
}

/// Runs `cmd` (`what` names it in errors); its stdout when it exits 0, else an error with what it
/// printed (promtool reports on stdout, most tools on stderr).
pub fn output(cmd: &mut Command, what: &str) -> anyhow::Result<String> {
    use anyhow::Context as _;
    let out = cmd
        .output()
        .with_context(|| format!("{what}: cannot start"))?;
    if !out.status.success() {
        let printed: Vec<String> = [&out.stdout, &out.stderr]
            .into_iter()
            .map(|b| String::from_utf8_lossy(b).trim().to_owned())
            .filter(|t| !t.is_empty())
            .collect();
        anyhow::bail!("{what} failed ({}): {}", out.status, printed.join("\n"));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

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

    pub fn name(&self) -> &'static str {
        self.name
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
