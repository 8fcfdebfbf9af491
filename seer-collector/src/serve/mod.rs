//! The HTTP server: ingest and the JSON API on one port, with bearer-token scopes.
//!
//! [`serve`] runs hyper's HTTP/1 connections itself (rather than `axum::serve`) to bound what
//! a flood can pin in memory: at most `max_connections` connections (more wait in the kernel's
//! accept backlog) and a 64 KiB read buffer per connection (hyper's default grows to ~400 KiB).

pub mod api;
pub mod auth;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::routing::{get, post};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tower::ServiceExt as _;

use crate::pipeline::AppState;

/// The full router: ingest routes (ingest token), API routes (admin token), health (open).
pub fn router(state: AppState) -> Router {
    let ingest = Router::new()
        .route(seer_proto::TRACES_PATH, post(crate::ingest::traces))
        .route(seer_proto::WINDOWS_PATH, post(crate::ingest::windows))
        .route(api::NODES_PATH, post(api::post_node))
        .route("/v1/labels", post(api::post_labels))
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
        .route("/v1/labels", get(api::labels))
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

/// Serves `router` on `listener` until `shutdown` turns true, then lets open connections finish
/// their requests (at most 10 s).
///
/// # Errors
///
/// An error from `accept` other than a per-connection one.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    max_connections: usize,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let permits = Arc::new(Semaphore::new(max_connections.max(1)));
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let permit = tokio::select! {
            p = Arc::clone(&permits).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = async { let _ = shutdown.wait_for(|v| *v).await; } => break,
        };
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
            builder.max_buf_size(MAX_BUF).keep_alive(true);
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
