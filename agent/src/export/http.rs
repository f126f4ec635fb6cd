//! The HTTP endpoint: `/metrics`, `/healthz`, `/readyz`.
use std::{convert::Infallible, net::SocketAddr, sync::Arc};

use http_body_util::Full;
use hyper::{
    Request, Response, StatusCode, body::Bytes, header::CONTENT_TYPE, service::service_fn,
};
use hyper_util::rt::TokioIo;
use tokio::{net::TcpListener, sync::watch};

use crate::{export::metrics::Exporter, state::SharedState};

/// Binds now, so a busy or invalid address fails before the daemon reports itself running.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))
}

/// Serves until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    state: SharedState,
    exporter: Arc<Exporter>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting an HTTP connection failed");
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let state = state.clone();
        let exporter = exporter.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let response = respond(&req, &state, &exporter);
                async move { Ok::<_, Infallible>(response) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
            }
        });
    }
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    response
}

fn respond(
    req: &Request<hyper::body::Incoming>,
    state: &SharedState,
    exporter: &Exporter,
) -> Response<Full<Bytes>> {
    const PLAIN: &str = "text/plain; charset=utf-8";
    match req.uri().path() {
        "/metrics" => {
            let body = exporter.render(&state.read().unwrap_or_else(|e| e.into_inner()));
            text(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                body,
            )
        }
        "/healthz" => text(StatusCode::OK, PLAIN, "ok\n".into()),
        "/readyz" => {
            // Ready once the first refresh has read the node's state and an event source runs.
            let s = state.read().unwrap_or_else(|e| e.into_inner());
            match s.node.refreshed_at {
                Some(_) => text(
                    StatusCode::OK,
                    PLAIN,
                    format!("ready: event source {}\n", s.observe.event_source),
                ),
                None => text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    PLAIN,
                    "not ready: node state not read yet\n".into(),
                ),
            }
        }
        "/" => text(
            StatusCode::OK,
            PLAIN,
            "kdump-agent: /metrics /healthz /readyz\n".into(),
        ),
        _ => text(StatusCode::NOT_FOUND, PLAIN, "not found\n".into()),
    }
}
