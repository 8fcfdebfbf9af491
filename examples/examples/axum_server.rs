//! An axum 0.8 router with SeerLayer (endpoints named by route template) and the `tracing`
//! layer (spans inside handlers become child spans). Serves a few self-made requests, exits.
//!
//! ```text
//! cargo run -p seer-examples --example axum_server
//! ```

use std::time::Duration;

use axum::Router;
use axum::extract::Path;
use axum::routing::get;
use seer_sdk::{Builder, SeerTracingLayer};
use seer_tower::SeerLayer;
use seer_tower::classify::AxumRoute;
use tracing_subscriber::layer::SubscriberExt;

async fn user(Path(id): Path<u32>) -> String {
    // A `tracing` span inside the handler: exported as a child of the request's span.
    tracing::info_span!("load_user", id).in_scope(|| format!("user-{id}"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing::subscriber::set_global_default(
        tracing_subscriber::registry().with(SeerTracingLayer::new()),
    )?;
    let (recorder, exporter) = Builder::new("axum-example")
        .with_sample_ratio(1.0)
        .with_env()?
        .install()?;

    let app = Router::new()
        .route("/users/{id}", get(user))
        .layer(SeerLayer::new(recorder).with_classifier(AxumRoute));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stop_rx.await;
            })
            .await
    });

    for id in [1, 2, 3, 42, 7] {
        // One connection per request keeps the example free of an HTTP client crate.
        let body = raw_get(addr, &format!("/users/{id}")).await?;
        println!("GET /users/{id} -> {body}");
    }
    let _ = stop_tx.send(());
    server.await??;

    exporter.shutdown(Duration::from_secs(1)).ok();
    // Five requests, all named `GET /users/{id}`, each with a `load_user` child span.
    println!("seer counters: {:?}", recorder.counters());
    Ok(())
}

async fn raw_get(addr: std::net::SocketAddr, path: &str) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes())
        .await?;
    let mut out = String::new();
    s.read_to_string(&mut out).await?;
    Ok(out.rsplit("\r\n\r\n").next().unwrap_or_default().to_owned())
}
