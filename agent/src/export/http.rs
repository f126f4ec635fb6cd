//! The HTTP endpoint: `/metrics`, `/healthz`, `/readyz`, over TLS and behind basic auth when
//! `--web.config.file` says so. Every connection is bounded in time and size, and their number
//! is capped.
use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use http_body_util::Full;
use hyper::{
    Method, Request, Response, StatusCode,
    body::Bytes,
    header::{
        ACCEPT_ENCODING, ALLOW, AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, HeaderMap,
        HeaderValue, VARY, WWW_AUTHENTICATE,
    },
    service::service_fn,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore, watch},
};
use tokio_rustls::TlsAcceptor;

use crate::{
    export::{accept::AcceptPause, metrics::Exporter, web_config::WebConfig},
    state::SharedState,
    sys::limits,
};

/// Longest wait for a request's headers, and so for the next request on an idle keep-alive
/// connection (hyper starts this timer whenever it waits for a request), and for a TLS handshake.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Request line plus headers; larger requests get 431 (a scrape sends a few hundred bytes).
const MAX_REQUEST_BYTES: usize = 16 * 1024;
/// Default connection cap: a Prometheus HA pair and probes need a handful.
pub const MAX_CONNECTIONS: usize = 4096;
/// At most one "limit reached" line per this long.
const LIMIT_LOG_EVERY: Duration = Duration::from_secs(10);

/// Binds now, so a busy or invalid address fails before the daemon reports itself running.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))
}

/// What every connection shares.
struct Server {
    state: SharedState,
    exporter: Arc<Exporter>,
    tls: Option<TlsAcceptor>,
    web: WebConfig,
}

/// Serves until `shutdown` turns true, with at most [`MAX_CONNECTIONS`] open at once (fewer
/// if the descriptor limit is lower).
pub async fn serve(
    listener: TcpListener,
    state: SharedState,
    exporter: Arc<Exporter>,
    web: WebConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    // Each connection is a descriptor; the rest of the agent needs a few dozen.
    let max_connections = match limits::raise_open_files() {
        Ok(files) => MAX_CONNECTIONS
            .min(files.saturating_sub(64) as usize)
            .max(1),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read RLIMIT_NOFILE; capping HTTP connections at 960");
            960
        }
    };
    tracing::debug!(max_connections, "HTTP connection cap");
    let server = Arc::new(Server {
        state,
        exporter,
        tls: web.tls.clone().map(TlsAcceptor::from),
        web,
    });
    let permits = Arc::new(Semaphore::new(max_connections));
    let mut pause = AcceptPause::default();
    let mut limit_logged: Option<Instant> = None;
    loop {
        let permit = match permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                if limit_logged.is_none_or(|at| at.elapsed() >= LIMIT_LOG_EVERY) {
                    tracing::warn!(
                        max_connections,
                        "HTTP connection limit reached; new connections wait in the listen backlog until one closes"
                    );
                    limit_logged = Some(Instant::now());
                }
                tokio::select! {
                    permit = permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
                    _ = shutdown.changed() => return,
                }
            }
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => {
                    pause.reset();
                    conn
                }
                Err(e) => {
                    let wait = pause.after_failure();
                    tracing::warn!(error = %e, pause_ms = wait.as_millis() as u64, "accepting an HTTP connection failed; pausing");
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = shutdown.changed() => return,
                    }
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        tokio::spawn(connection(server.clone(), stream, peer, permit));
    }
}

async fn connection(
    server: Arc<Server>,
    stream: TcpStream,
    peer: SocketAddr,
    _permit: OwnedSemaphorePermit,
) {
    // Until its first byte an idle client costs a descriptor and this small future; hyper's
    // and rustls' buffers (about 12 KiB a connection) come after.
    // peek, not readable(): readiness can be spurious, a byte in the buffer is not.
    if !matches!(
        tokio::time::timeout(HEADER_READ_TIMEOUT, stream.peek(&mut [0u8; 1])).await,
        Ok(Ok(1..))
    ) {
        tracing::debug!(%peer, "no request within the header-read timeout");
        return;
    }
    // Boxed: the connection's state machine is large and only now needed.
    Box::pin(exchange(server, stream, peer)).await;
}

/// TLS (if configured) and HTTP/1.1 on one connection that has sent its first byte.
async fn exchange(server: Arc<Server>, stream: TcpStream, peer: SocketAddr) {
    let service = {
        let server = server.clone();
        service_fn(move |req| {
            let server = server.clone();
            async move { Ok::<_, Infallible>(server.respond(req).await) }
        })
    };
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_REQUEST_BYTES);
    let served = match &server.tls {
        None => http.serve_connection(TokioIo::new(stream), service).await,
        Some(acceptor) => {
            match tokio::time::timeout(HEADER_READ_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => http.serve_connection(TokioIo::new(tls), service).await,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            }
        }
    };
    if let Err(e) = served {
        tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
    }
}

fn response(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

const PLAIN: &str = "text/plain; charset=utf-8";

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    response(status, PLAIN, Bytes::from(body))
}

/// Whether `Accept-Encoding` lists gzip with a non-zero weight.
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.split(';').map(str::trim);
            let gzip = parts
                .next()
                .is_some_and(|name| name.eq_ignore_ascii_case("gzip"));
            let refused = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    == Some(0.0)
            });
            gzip && !refused
        })
}

impl Server {
    async fn respond(&self, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n".into());
            r.headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            return r;
        }
        let path = req.uri().path();
        // Health probes (the kubelet's) carry no credentials; they tell nothing about the node.
        if let Some(auth) = &self.web.auth
            && !matches!(path, "/healthz" | "/readyz")
        {
            let header = req
                .headers()
                .get(AUTHORIZATION)
                .and_then(|v| v.to_str().ok());
            if !auth.allows(header).await {
                let mut r = text(StatusCode::UNAUTHORIZED, "Unauthorized\n".into());
                r.headers_mut().insert(
                    WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"kdump-agent\""),
                );
                return r;
            }
        }
        match path {
            "/metrics" => self.metrics(&req),
            "/healthz" => response(StatusCode::OK, PLAIN, Bytes::from_static(b"ok\n")),
            "/readyz" => {
                // Ready once the first refresh has read the node's state and an event source runs.
                let s = self.state.read().unwrap_or_else(|e| e.into_inner());
                match s.node.refreshed_at {
                    Some(_) => text(
                        StatusCode::OK,
                        format!("ready: event source {}\n", s.observe.event_source),
                    ),
                    None => text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "not ready: node state not read yet\n".into(),
                    ),
                }
            }
            "/" => text(
                StatusCode::OK,
                "kdump-agent: /metrics /healthz /readyz\n".into(),
            ),
            _ => text(StatusCode::NOT_FOUND, "not found\n".into()),
        }
    }

    /// The last published rendering: no lock on the state, no rendering per scrape.
    fn metrics(&self, req: &Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
        const EXPOSITION: &str = "text/plain; version=0.0.4; charset=utf-8";
        let Some(rendered) = self.exporter.current() else {
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                "metrics not rendered yet\n".into(),
            );
        };
        if !accepts_gzip(req.headers()) {
            return response(StatusCode::OK, EXPOSITION, rendered.text.clone());
        }
        let mut r = response(StatusCode::OK, EXPOSITION, rendered.gzip().clone());
        r.headers_mut()
            .insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        r.headers_mut()
            .insert(VARY, HeaderValue::from_static("Accept-Encoding"));
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_only_when_accepted_with_weight() {
        let with = |value: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(ACCEPT_ENCODING, HeaderValue::from_static(value));
            accepts_gzip(&h)
        };
        assert!(with("gzip"));
        assert!(with("deflate, GZIP;q=0.5"));
        assert!(!with("gzip;q=0"));
        assert!(!with("gzip; q=0.0, br"));
        assert!(!with("identity"));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }
}
