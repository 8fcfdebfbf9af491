//! The HTTP server: ingest and the JSON API on one port, with bearer-token scopes.
//!
//! [`serve`] runs hyper's HTTP/1 connections itself (rather than `axum::serve`) to bound what
//! a flood can pin in memory: at most `max_connections` connections (more wait in the kernel's
//! accept backlog) and a 64 KiB read buffer per connection (hyper's default grows to ~400 KiB).
//!
//! A connection must deliver each request head within [`HEADER_READ_TIMEOUT`] of the server
//! starting to wait for it (an idle keep-alive connection waits for its next request the same
//! way), else it is closed: a slow or silent client cannot hold a connection slot for long.
//! Request bodies have their own deadline where they are read (`body_read_timeout_ms`).

pub mod api;
pub mod auth;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::routing::{get, post};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tower::ServiceExt as _;

use crate::internal_events::{Metrics, RequestRejected};

use crate::pipeline::AppState;

/// The full router: ingest routes (ingest token), API routes (admin token), health (open).
pub fn router(state: AppState) -> Router {
    let ingest = Router::new()
        .route(seer_proto::TRACES_PATH, post(crate::ingest::traces))
        .route(seer_proto::WINDOWS_PATH, post(crate::ingest::windows))
        .route(api::NODES_PATH, post(api::post_node))
        .route(api::LABELS_PATH, post(api::post_labels))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::ingest,
        ));
    let admin = Router::new()
        .route("/v1/advice/{service}", get(api::advice))
        .route("/v1/predictions", get(api::predictions))
        .route("/v1/services", get(api::services))
        .route("/v1/graph", get(api::graph))
        .route("/v1/windows", get(api::windows))
        .route("/v1/traces", get(api::trace_list))
        .route("/v1/traces/{trace_id}", get(api::trace))
        .route("/v1/alerts", get(api::alerts))
        .route(api::LABELS_PATH, get(api::labels))
        .route("/v1/nodes", get(api::nodes))
        .route("/v1/status", get(api::status))
        .route("/metrics", get(api::metrics))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::admin,
        ));
    Router::new()
        .merge(ingest)
        .merge(admin)
        .route("/healthz", get(api::healthz))
        .route("/readyz", get(api::readyz))
        .fallback(api::not_found)
        .with_state(state)
}

/// Per-connection read buffer cap.
pub const MAX_BUF: usize = 64 << 10;

/// How long a connection may take to send a request head (or stay idle between requests)
/// before it is closed.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Connection limits of [`serve_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most open connections; more are answered 503 at once.
    pub max_connections: usize,
    /// How long a connection may take to send a request head, or stay idle between requests.
    pub header_read_timeout: Duration,
}

impl Limits {
    /// `max_connections` connections, the default [`HEADER_READ_TIMEOUT`].
    pub fn new(max_connections: usize) -> Self {
        Self {
            max_connections,
            header_read_timeout: HEADER_READ_TIMEOUT,
        }
    }
}

/// Connections over the cap answered 503 at once (more are closed unanswered).
pub const MAX_SHED: usize = 4096;

const SHED_RESPONSE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nretry-after: 1\r\ncontent-type: text/plain\r\ncontent-length: 34\r\nconnection: close\r\n\r\ncollector overloaded, retry later\n";

/// Answers a connection over the cap with a canned 503 + `Retry-After`: reads the request head
/// (at most 16 KiB) into a stack buffer, answers, then reads and discards what the client still
/// sends (at most 1 MiB) so that closing does not reset the connection before the client read
/// the answer. At most 2 s in all.
async fn shed(stream: tokio::net::TcpStream) {
    async fn read_some(stream: &tokio::net::TcpStream, buf: &mut [u8]) -> Option<usize> {
        loop {
            stream.readable().await.ok()?;
            match stream.try_read(buf) {
                Ok(0) => return None,
                Ok(n) => return Some(n),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return None,
            }
        }
    }
    let work = async {
        let mut buf = [0u8; 4096];
        let mut tail = [0u8; 4];
        let mut seen = 0usize;
        // 1. The request head.
        loop {
            let n = read_some(&stream, &mut buf).await?;
            seen += n;
            let found = buf[..n].windows(4).any(|w| w == b"\r\n\r\n") || {
                let mut joined = [0u8; 7];
                joined[..4].copy_from_slice(&tail);
                let k = n.min(3);
                joined[4..4 + k].copy_from_slice(&buf[..k]);
                joined[..4 + k].windows(4).any(|w| w == b"\r\n\r\n")
            };
            if n >= 4 {
                tail.copy_from_slice(&buf[n - 4..n]);
            }
            if found || seen > 16 << 10 {
                break;
            }
        }
        // 2. The answer.
        let mut sent = 0;
        while sent < SHED_RESPONSE.len() {
            stream.writable().await.ok()?;
            match stream.try_write(&SHED_RESPONSE[sent..]) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return None,
            }
        }
        // 3. Whatever body follows.
        while seen < 1 << 20 {
            seen += read_some(&stream, &mut buf).await?;
        }
        Some(())
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), work).await;
}

/// Serves `router` on `listener` until `shutdown` turns true, then lets open connections finish
/// their requests (at most 10 s). [`serve_with`] with [`Limits::new`].
///
/// # Errors
///
/// An error from `accept` other than a per-connection one.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    max_connections: usize,
    metrics: Arc<Metrics>,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    serve_with(
        listener,
        router,
        Limits::new(max_connections),
        metrics,
        shutdown,
    )
    .await
}

/// Serves `router` on `listener` under `limits` until `shutdown` turns true, then lets open
/// connections finish their requests (at most 10 s).
///
/// # Errors
///
/// An error from `accept` other than a per-connection one.
pub async fn serve_with(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let shed_permits = Arc::new(Semaphore::new(MAX_SHED));
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) if is_per_connection(&e) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = async { let _ = shutdown.wait_for(|v| *v).await; } => break,
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            // Over the connection cap: answer 503 without reading into memory.
            if let Ok(p) = Arc::clone(&shed_permits).try_acquire_owned() {
                RequestRejected { status: 503 }.emit(&metrics);
                tokio::spawn(async move {
                    shed(stream).await;
                    drop(p);
                });
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let mut stop = shutdown.clone();
        conns.spawn(async move {
            let svc =
                hyper::service::service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
                    let router = router.clone();
                    async move {
                        Ok::<_, Infallible>(
                            router.oneshot(req).await.unwrap_or_else(|e| match e {}),
                        )
                    }
                });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .max_buf_size(MAX_BUF)
                .keep_alive(true)
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout);
            let conn = builder.serve_connection(TokioIo::new(stream), svc);
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = async { let _ = stop.wait_for(|v| *v).await; } => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(10), conn).await;
                }
            }
            drop(permit);
        });
        while conns.try_join_next().is_some() {}
    }
    let _ = tokio::time::timeout(Duration::from_secs(11), async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    Ok(())
}

fn is_per_connection(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn write(stream: &tokio::net::TcpStream, mut data: &[u8]) {
        while !data.is_empty() {
            stream.writable().await.unwrap();
            match stream.try_write(data) {
                Ok(n) => data = &data[n..],
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("write: {e}"),
            }
        }
    }

    /// Reads until the server closes the connection; `None` if it did not within 30 s (a
    /// guard against hanging, not a timing expectation).
    async fn read_to_close(stream: &tokio::net::TcpStream) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(30), async {
            let mut buf = [0u8; 4096];
            loop {
                if stream.readable().await.is_err() {
                    return;
                }
                match stream.try_read(&mut buf) {
                    Ok(0) => return,
                    Ok(n) => out.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => return,
                }
            }
        })
        .await
        .ok()?;
        Some(out)
    }

    async fn get_ok(addr: SocketAddr) -> String {
        let s = tokio::net::TcpStream::connect(addr).await.unwrap();
        write(
            &s,
            b"GET /x HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        )
        .await;
        String::from_utf8_lossy(&read_to_close(&s).await.unwrap()).into_owned()
    }

    #[tokio::test]
    async fn slow_and_idle_connections_are_closed_and_free_their_slot() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = Router::new().route("/x", get(|| async { "ok" }));
        let (stop_tx, stop_rx) = watch::channel(false);
        let server = tokio::spawn(serve_with(
            listener,
            router,
            Limits {
                max_connections: 1,
                header_read_timeout: Duration::from_millis(200),
            },
            Arc::new(Metrics::new()),
            stop_rx,
        ));
        // A slowloris client holds the only slot with a head it never finishes...
        let slow = tokio::net::TcpStream::connect(addr).await.unwrap();
        write(&slow, b"POST /x HTTP/1.1\r\nhost: x\r\n").await;
        // ...until the header deadline closes it.
        assert!(
            read_to_close(&slow).await.is_some(),
            "a head that never ends keeps its connection"
        );
        assert!(get_ok(addr).await.starts_with("HTTP/1.1 200"));
        // A client that connects and sends nothing, or goes idle after a request, the same.
        let idle = tokio::net::TcpStream::connect(addr).await.unwrap();
        assert!(read_to_close(&idle).await.is_some(), "idle connection kept");
        let kept = tokio::net::TcpStream::connect(addr).await.unwrap();
        write(&kept, b"GET /x HTTP/1.1\r\nhost: x\r\n\r\n").await;
        let answer = read_to_close(&kept).await.expect("idle keep-alive kept");
        assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));
        assert!(get_ok(addr).await.starts_with("HTTP/1.1 200"));
        stop_tx.send(true).unwrap();
        server.await.unwrap().unwrap();
    }
}
