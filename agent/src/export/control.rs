//! The daemon's control socket: a root-only unix socket in the state directory. A client sends
//! one request line and reads one JSON document back.
use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::{fs::PermissionsExt as _, net::UnixStream},
    path::{Path, PathBuf},
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt as _, AsyncWriteExt as _},
    net::UnixListener,
    sync::{mpsc, oneshot, watch},
};

use crate::{
    export::{show::ShowReport, status::StatusReport},
    state::SharedState,
};

pub const SOCKET_NAME: &str = "agent.sock";

/// How long a client waits for the daemon's answer.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `reload` waits: a burst in progress, a load, perhaps a rollback.
pub const RELOAD_TIMEOUT: Duration = Duration::from_secs(300);

/// A `reload` request handed to the daemon's loop; it answers once the reconcile it caused
/// is over.
pub type ReloadRequest = oneshot::Sender<serde_json::Value>;

pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join(SOCKET_NAME)
}

/// Creates the state directory (0700) and binds the socket (0600), replacing a stale one.
pub fn bind(state_dir: &Path) -> anyhow::Result<UnixListener> {
    let named =
        |what: &str, e: std::io::Error| anyhow::anyhow!("{what} {}: {e}", state_dir.display());
    std::fs::create_dir_all(state_dir)
        .map_err(|e| named("cannot create the state directory", e))?;
    std::fs::set_permissions(state_dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| named("cannot restrict the state directory", e))?;
    let path = socket_path(state_dir);
    if UnixStream::connect(&path).is_ok() {
        anyhow::bail!(
            "another kdump-agent is already serving {}; stop it first",
            path.display()
        );
    }
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| anyhow::anyhow!("cannot restrict {}: {e}", path.display()))?;
    Ok(listener)
}

/// Answers requests until `shutdown` turns true, then removes the socket.
pub async fn serve(
    listener: UnixListener,
    path: PathBuf,
    state: SharedState,
    reloads: mpsc::Sender<ReloadRequest>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "control socket accept failed");
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let state = state.clone();
        let reloads = reloads.clone();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut line = String::new();
            if tokio::io::BufReader::new(read)
                .read_line(&mut line)
                .await
                .is_err()
            {
                return;
            }
            let answer = match line.trim() {
                "status" => {
                    let report =
                        StatusReport::from_state(&state.read().unwrap_or_else(|e| e.into_inner()));
                    serde_json::to_string(&report).unwrap_or_else(|e| error_json(&e.to_string()))
                }
                "show" => {
                    let report =
                        ShowReport::from_state(&state.read().unwrap_or_else(|e| e.into_inner()));
                    serde_json::to_string(&report).unwrap_or_else(|e| error_json(&e.to_string()))
                }
                "reload" => {
                    let (reply, answer) = oneshot::channel();
                    match reloads.send(reply).await {
                        Ok(()) => answer.await.map_or_else(
                            |_| error_json("the daemon stopped before answering"),
                            |v| v.to_string(),
                        ),
                        Err(_) => error_json("the daemon is shutting down"),
                    }
                }
                other => error_json(&format!(
                    "unknown request {other:?}; known: status, show, reload"
                )),
            };
            let _ = write.write_all(answer.as_bytes()).await;
            let _ = write.write_all(b"\n").await;
        });
    }
    let _ = std::fs::remove_file(path);
}

fn error_json(message: &str) -> String {
    serde_json::json!({ "error": message }).to_string()
}

/// Asks the daemon. `Ok(None)` when no daemon listens there (no socket, or nobody behind it).
pub fn request(state_dir: &Path, request: &str) -> anyhow::Result<Option<serde_json::Value>> {
    request_within(state_dir, request, CLIENT_TIMEOUT)
}

/// [`request`], waiting up to `timeout` for the answer.
pub fn request_within(
    state_dir: &Path,
    request: &str,
    timeout: Duration,
) -> anyhow::Result<Option<serde_json::Value>> {
    let path = socket_path(state_dir);
    let mut stream = match UnixStream::connect(&path) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None);
        }
        Err(e) => anyhow::bail!("cannot connect to {}: {e}", path.display()),
    };
    stream.set_read_timeout(Some(timeout))?;
    writeln!(stream, "{request}")
        .map_err(|e| anyhow::anyhow!("writing to {}: {e}", path.display()))?;
    let mut answer = String::new();
    BufReader::new(stream)
        .read_line(&mut answer)
        .map_err(|e| anyhow::anyhow!("reading the daemon's answer on {}: {e}", path.display()))?;
    let value: serde_json::Value = serde_json::from_str(&answer).map_err(|e| {
        anyhow::anyhow!(
            "the daemon on {} answered {:?}: {e}",
            path.display(),
            answer.trim()
        )
    })?;
    if let Some(error) = value.get("error").and_then(|e| e.as_str()) {
        anyhow::bail!(
            "the daemon on {} refused {request:?}: {error}",
            path.display()
        );
    }
    Ok(Some(value))
}
