//! A hyper 1 server wrapped in SeerLayer, serving a few requests it makes to itself over
//! loopback, then exiting.
//!
//! ```text
//! cargo run -p seer-examples --example hyper_server
//! SEER_ENDPOINT=http://127.0.0.1:4318 cargo run -p seer-examples --example hyper_server
//! ```
//!
//! Without a collector it fails open: the requests are served and the export is counted as
//! failed.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use seer_sdk::Builder;
use seer_tower::SeerLayer;
use tower::ServiceBuilder;

async fn handle(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    // Waiting for a scarce worker (a pool, a lock, a CPU permit) is the service's own queue.
    let _queued = seer_sdk::context::enter_queue();
    tokio::time::sleep(Duration::from_millis(1)).await;
    drop(_queued);
    let span = seer_sdk::context::current_span().map(|s| s.trace_id.to_string());
    Ok(Response::new(Full::new(Bytes::from(format!(
        "hello from {} (trace {})",
        req.uri().path(),
        span.unwrap_or_default()
    )))))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (recorder, exporter) = Builder::new("hyper-example")
        .with_sample_ratio(1.0)
        .with_env()?
        .install()?;

    let svc = ServiceBuilder::new()
        .layer(SeerLayer::new(recorder))
        .service_fn(handle);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((io, _)) = listener.accept().await else {
                return;
            };
            let svc = TowerToHyperService::new(svc.clone());
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(io), svc)
                    .await;
            });
        }
    });

    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    for i in 0..10 {
        let resp = client
            .get(format!("http://{addr}/items/{i}").parse()?)
            .await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        println!("{status} {}", String::from_utf8_lossy(&body));
    }

    exporter.shutdown(Duration::from_secs(1)).ok();
    println!("seer counters: {:?}", recorder.counters());
    Ok(())
}
