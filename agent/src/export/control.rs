//! The daemon's control socket: a unix socket in the state directory. A client sends one request
//! line and reads one JSON document back. Root may ask anything; members of `--control-group`
//! may read (`status`, `show`); the kernel's peer credentials (SO_PEERCRED) decide.
use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::{fs::PermissionsExt as _, net::UnixStream},
    path::{Path, PathBuf},
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _},
    net::{UnixListener, UnixStream as AsyncUnixStream},
    sync::{mpsc, oneshot, watch},
};

use crate::{
    export::{accept::AcceptPause, show::ShowReport, status::StatusReport},
    state::SharedState,
    sys::groups,
};

pub const SOCKET_NAME: &str = "agent.sock";

/// How long a client waits for the daemon's answer.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `reload` waits: a burst in progress, a load, perhaps a rollback.
pub const RELOAD_TIMEOUT: Duration = Duration::from_secs(300);

/// Longest request line: the requests are single words.
const MAX_LINE: u64 = 4096;
/// How long the daemon waits for a client's request line.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// A `reload` request handed to the daemon's loop; it answers once the reconcile it caused
/// is over.
pub type ReloadRequest = oneshot::Sender<serde_json::Value>;

pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join(SOCKET_NAME)
}

/// Creates the state directory and binds the socket, replacing a stale one: root only (0700,
/// 0600), or with `--control-group` open to every local user (0711, 0666), the peer's
/// credentials deciding what each may ask (chown to the group would need CAP_CHOWN, which
/// neither the DaemonSet nor the unit grants).
pub fn bind(state_dir: &Path, group: Option<u32>) -> anyhow::Result<UnixListener> {
    let named =
        |what: &str, e: std::io::Error| anyhow::anyhow!("{what} {}: {e}", state_dir.display());
    std::fs::create_dir_all(state_dir)
        .map_err(|e| named("cannot create the state directory", e))?;
    let (dir_mode, socket_mode) = if group.is_some() {
        (0o711, 0o666)
    } else {
        (0o700, 0o600)
    };
    std::fs::set_permissions(state_dir, std::fs::Permissions::from_mode(dir_mode))
        .map_err(|e| named("cannot set the state directory's mode", e))?;
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
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(socket_mode))
        .map_err(|e| anyhow::anyhow!("cannot set the mode of {}: {e}", path.display()))?;
    Ok(listener)
}

/// What a peer may ask.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Access {
    /// Root: everything.
    All,
    /// A member of `--control-group`: `status` and `show`.
    Read,
    None,
}

/// The peer's access, from the credentials the kernel recorded when it connected.
fn access(stream: &AsyncUnixStream, group: Option<u32>) -> (Access, String) {
    let Ok(cred) = stream.peer_cred() else {
        return (Access::None, "unknown peer".into());
    };
    let who = format!(
        "uid {} gid {} pid {}",
        cred.uid(),
        cred.gid(),
        cred.pid().unwrap_or(0)
    );
    if cred.uid() == 0 {
        return (Access::All, who);
    }
    let member = group.is_some_and(|g| {
        cred.gid() == g
            || cred
                .pid()
                .and_then(|pid| groups::supplementary_groups(pid).ok())
                .is_some_and(|groups| groups.contains(&g))
    });
    (if member { Access::Read } else { Access::None }, who)
}

/// Answers requests until `shutdown` turns true, then removes the socket.
pub async fn serve(
    listener: UnixListener,
    path: PathBuf,
    state: SharedState,
    reloads: mpsc::Sender<ReloadRequest>,
    group: Option<u32>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut pause = AcceptPause::default();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    pause.reset();
                    stream
                }
                Err(e) => {
                    let wait = pause.after_failure();
                    tracing::warn!(error = %e, pause_ms = wait.as_millis() as u64, "control socket accept failed; pausing");
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = shutdown.changed() => break,
                    }
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let state = state.clone();
        let reloads = reloads.clone();
        tokio::spawn(async move {
            let (access, who) = access(&stream, group);
            let (read, mut write) = stream.into_split();
            let answer = match read_request(read).await {
                Err(why) => error_json(&why),
                Ok(line) => answer(&line, access, &who, &state, &reloads).await,
            };
            let _ = write.write_all(answer.as_bytes()).await;
            let _ = write.write_all(b"\n").await;
        });
    }
    let _ = std::fs::remove_file(path);
}

/// One request line, at most [`MAX_LINE`] bytes, within [`READ_TIMEOUT`].
async fn read_request(read: tokio::net::unix::OwnedReadHalf) -> Result<String, String> {
    let mut line = Vec::new();
    let mut limited = tokio::io::BufReader::new(read.take(MAX_LINE + 1));
    match tokio::time::timeout(READ_TIMEOUT, limited.read_until(b'\n', &mut line)).await {
        Err(_) => Err(format!(
            "no request line within {} s",
            READ_TIMEOUT.as_secs()
        )),
        Ok(Err(e)) => Err(format!("reading the request: {e}")),
        Ok(Ok(_)) if line.len() as u64 > MAX_LINE => {
            Err(format!("request line longer than {MAX_LINE} bytes"))
        }
        Ok(Ok(_)) => String::from_utf8(line).map_err(|_| "request is not UTF-8".to_owned()),
    }
}

async fn answer(
    line: &str,
    access: Access,
    who: &str,
    state: &SharedState,
    reloads: &mpsc::Sender<ReloadRequest>,
) -> String {
    let request = line.trim();
    let needs = if request == "reload" {
        Access::All
    } else {
        Access::Read
    };
    if access == Access::None || (needs == Access::All && access != Access::All) {
        tracing::info!(peer = %who, request, "control request refused");
        let allowed = if needs == Access::All {
            "only root may ask for a reload"
        } else {
            "only root and members of --control-group may ask"
        };
        return error_json(&format!("permission denied for {who}: {allowed}"));
    }
    match request {
        "status" => {
            let report = StatusReport::from_state(&state.read().unwrap_or_else(|e| e.into_inner()));
            serde_json::to_string(&report).unwrap_or_else(|e| error_json(&e.to_string()))
        }
        "show" => {
            let report = ShowReport::from_state(&state.read().unwrap_or_else(|e| e.into_inner()));
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
    }
}

fn error_json(message: &str) -> String {
    serde_json::json!({ "error": message }).to_string()
}

/// What a client got from the daemon's socket.
#[derive(Debug)]
pub enum Reply {
    Answer(serde_json::Value),
    /// No daemon answers there; the text says why (no socket, nobody behind it, or a daemon
    /// that went away before answering).
    NoDaemon(String),
}

/// Asks the daemon, waiting up to [`CLIENT_TIMEOUT`] for the answer.
pub fn request(state_dir: &Path, request: &str) -> anyhow::Result<Reply> {
    request_within(state_dir, request, CLIENT_TIMEOUT)
}

/// [`request`], waiting up to `timeout` for the answer.
pub fn request_within(state_dir: &Path, request: &str, timeout: Duration) -> anyhow::Result<Reply> {
    let path = socket_path(state_dir);
    let mut stream = match UnixStream::connect(&path) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Reply::NoDaemon(format!("no daemon at {}", path.display())));
        }
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            return Ok(Reply::NoDaemon(format!(
                "no daemon behind {} (a socket left by one that stopped)",
                path.display()
            )));
        }
        Err(e) => anyhow::bail!("cannot connect to {}: {e}", path.display()),
    };
    // A daemon stopping or killed (a pod being replaced) drops a connection it accepted.
    let vanished = || {
        Reply::NoDaemon(format!(
            "the daemon at {} went away before answering (stopping or restarting)",
            path.display()
        ))
    };
    let gone = |e: &std::io::Error| {
        matches!(
            e.kind(),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
        )
    };
    stream.set_read_timeout(Some(timeout))?;
    match writeln!(stream, "{request}") {
        Err(e) if gone(&e) => return Ok(vanished()),
        Err(e) => anyhow::bail!("writing to {}: {e}", path.display()),
        Ok(()) => {}
    }
    let mut answer = String::new();
    match BufReader::new(stream).read_line(&mut answer) {
        Err(e) if gone(&e) => return Ok(vanished()),
        Err(e) => anyhow::bail!("reading the daemon's answer on {}: {e}", path.display()),
        Ok(0) => return Ok(vanished()),
        Ok(_) => {}
    }
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
    Ok(Reply::Answer(value))
}

#[cfg(test)]
mod tests {
    use std::{os::unix::net::UnixListener as StdListener, thread};

    use super::*;

    fn ask(dir: &Path) -> Reply {
        request_within(dir, "status", Duration::from_secs(5)).unwrap()
    }

    fn no_daemon(reply: Reply) -> String {
        match reply {
            Reply::NoDaemon(why) => why,
            Reply::Answer(v) => panic!("expected no daemon, got {v}"),
        }
    }

    #[test]
    fn without_a_socket_there_is_no_daemon() {
        let dir = tempfile::tempdir().unwrap();
        assert!(no_daemon(ask(dir.path())).starts_with("no daemon at "));
    }

    #[test]
    fn a_socket_left_behind_is_no_daemon() {
        let dir = tempfile::tempdir().unwrap();
        drop(StdListener::bind(socket_path(dir.path())).unwrap());
        assert!(no_daemon(ask(dir.path())).contains("a socket left by one that stopped"));
    }

    /// A daemon killed after the kernel queued the client's connection (reset), or after it
    /// read the request (end of file).
    #[test]
    fn a_daemon_that_goes_away_before_answering_is_no_daemon() {
        for read_request in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let listener = StdListener::bind(socket_path(dir.path())).unwrap();
            let daemon = thread::spawn(move || {
                let (stream, _) = listener.accept().unwrap();
                if read_request {
                    BufReader::new(&stream)
                        .read_line(&mut String::new())
                        .unwrap();
                }
            });
            let why = no_daemon(ask(dir.path()));
            daemon.join().unwrap();
            assert!(why.contains("went away before answering"), "{why}");
        }
    }

    #[test]
    fn an_answer_and_a_refusal() {
        for (line, refused) in [(r#"{"ready":true}"#, false), (r#"{"error":"no"}"#, true)] {
            let dir = tempfile::tempdir().unwrap();
            let listener = StdListener::bind(socket_path(dir.path())).unwrap();
            let daemon = thread::spawn(move || {
                let (stream, _) = listener.accept().unwrap();
                let mut request = String::new();
                BufReader::new(&stream).read_line(&mut request).unwrap();
                assert_eq!(request, "status\n");
                writeln!(&stream, "{line}").unwrap();
            });
            let reply = request_within(dir.path(), "status", Duration::from_secs(5));
            daemon.join().unwrap();
            match reply {
                Err(e) if refused => assert!(e.to_string().contains("refused \"status\": no")),
                Ok(Reply::Answer(v)) if !refused => assert_eq!(v["ready"], true),
                other => panic!("{line}: {other:?}"),
            }
        }
    }
}
