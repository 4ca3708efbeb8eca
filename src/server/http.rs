//! The HTTP port (`--http-listen`): metrics for Prometheus, health for probes, and the store
//! for curl (docs/HTTP.md). HTTP/1.1 with hyper, TLS with the node's own certificate when the
//! node has one.
//!
//! The store endpoints are a client of the node's own client port (`raftd::client`), pooled:
//! a follower's writes and linearizable reads are forwarded to the leader by the same
//! `NotLeader` hints every client follows, with the same exactly-once sessions, limits and
//! errors; stale reads and watches are served by this node.

use super::http_kv::{self, Body};
use super::metrics::Metrics;
use crate::client::{Client, ClientOptions};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// A node loop silent for this long is not alive (`/livez`).
const LIVENESS_LIMIT_MS: u64 = 5_000;

/// Clients kept for reuse (each holds a connection to the node and knows the leader).
const POOL: usize = 32;

/// What every HTTP request can use.
pub struct HttpContext {
    pub metrics: Arc<Metrics>,
    /// The node's own client address (loopback when it listens on every interface).
    pub local: SocketAddr,
    pub client_options: ClientOptions,
    /// Largest request body taken (the node's frame limit).
    pub max_body: usize,
    pool: Mutex<Vec<Client>>,
}

impl HttpContext {
    pub fn new(
        metrics: Arc<Metrics>,
        listen: SocketAddr,
        client_options: ClientOptions,
        max_body: usize,
    ) -> HttpContext {
        let mut local = listen;
        if local.ip().is_unspecified() {
            local.set_ip(if local.is_ipv4() {
                std::net::Ipv4Addr::LOCALHOST.into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            });
        }
        HttpContext {
            metrics,
            local,
            client_options,
            max_body,
            pool: Mutex::new(Vec::new()),
        }
    }

    /// A client of this node (from the pool, or new).
    pub fn client(&self) -> Client {
        self.pool
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop()
            .unwrap_or_else(|| Client::new(vec![self.local], self.client_options.clone()))
    }

    /// Gives a client back for the next request.
    pub fn release(&self, client: Client) {
        let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < POOL {
            pool.push(client);
        }
    }
}

/// Serves HTTP on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    ctx: Arc<HttpContext>,
    shutdown: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors, say: back off rather than spin.
                ::log::warn!("http: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let ctx = ctx.clone();
        let shutdown = shutdown.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream));
                    match handshake.await {
                        Ok(Ok(s)) => serve_connection(s, ctx, shutdown).await,
                        Ok(Err(e)) => ::log::debug!("http: TLS handshake with {peer}: {e}"),
                        Err(_) => ::log::debug!("http: TLS handshake with {peer} timed out"),
                    }
                }
                None => serve_connection(stream, ctx, shutdown).await,
            }
        });
    }
}

async fn serve_connection<I>(io: I, ctx: Arc<HttpContext>, shutdown: CancellationToken)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let ctx = ctx.clone();
        async move { Ok::<_, std::convert::Infallible>(route(&ctx, req).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                ::log::debug!("http: connection ended: {e}");
            }
        }
        _ = shutdown.cancelled() => {}
    }
}

async fn route(ctx: &HttpContext, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    match (&method, path.as_str()) {
        (&Method::GET, "/metrics") => text(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            ctx.metrics.encode(),
        ),
        (&Method::GET, "/livez") => livez(ctx),
        (&Method::GET, "/readyz") => readyz(ctx),
        (_, p) if p.starts_with("/v1/kv/") => http_kv::kv(ctx, req).await,
        (&Method::POST, "/v1/txn") => http_kv::txn(ctx, req).await,
        (&Method::GET, p) if p.starts_with("/v1/watch/") => http_kv::watch(ctx, req).await,
        (_, "/metrics" | "/livez" | "/readyz" | "/v1/txn") => http_kv::error(
            StatusCode::METHOD_NOT_ALLOWED,
            &format!("{method} is not served on {path}"),
        ),
        _ => http_kv::error(
            StatusCode::NOT_FOUND,
            &format!("no endpoint {path}: see docs/HTTP.md (/metrics, /livez, /readyz, /v1/kv/KEY, /v1/txn, /v1/watch/KEY)"),
        ),
    }
}

/// Alive: the node loop ran within the last five seconds.
fn livez(ctx: &HttpContext) -> Response<Body> {
    let last = u64::try_from(ctx.metrics.last_turn_ms.get()).unwrap_or(0);
    let now = super::node::wall_clock_ms();
    let silent = now.saturating_sub(last);
    if last > 0 && silent < LIVENESS_LIMIT_MS {
        text(StatusCode::OK, "text/plain", "ok\n".into())
    } else {
        text(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            format!("the node loop has not run for {silent} ms\n"),
        )
    }
}

/// Ready: a leader is known and everything committed here is applied.
fn readyz(ctx: &HttpContext) -> Response<Body> {
    let m = &ctx.metrics;
    let (leader, commit, applied) = (
        m.leader_id.get(),
        m.commit_index.get(),
        m.applied_index.get(),
    );
    if leader == 0 {
        text(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "no leader known\n".into(),
        )
    } else if applied < commit {
        text(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            format!("applied index {applied} is behind the commit index {commit}\n"),
        )
    } else {
        text(StatusCode::OK, "text/plain", "ok\n".into())
    }
}

pub(super) fn text(status: StatusCode, content_type: &str, body: String) -> Response<Body> {
    let mut r = Response::new(
        http_body_util::Full::new(bytes::Bytes::from(body))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *r.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}
