//! A tonic 0.14 gRPC server (the standard health service) with SeerLayer, called a few times by
//! a tonic client wrapped in SeerClientLayer, then exiting.
//!
//! ```text
//! cargo run -p seer-examples --example tonic_server
//! ```

use std::time::Duration;

use seer_sdk::Builder;
use seer_tower::{SeerClientLayer, SeerLayer};
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Server};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tower::ServiceBuilder;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (recorder, exporter) = Builder::new("tonic-example")
        .with_sample_ratio(1.0)
        .with_env()?
        .install()?;

    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        Server::builder()
            .layer(SeerLayer::new(recorder))
            .add_service(health)
            .serve_with_incoming_shutdown(TcpIncoming::from(listener), async {
                let _ = stop_rx.await;
            }),
    );

    let channel = Channel::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    let channel = ServiceBuilder::new()
        .layer(SeerClientLayer::new(recorder))
        .service(channel);
    let mut client = HealthClient::new(channel);
    for _ in 0..5 {
        let resp = client
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await?;
        println!("health: {:?}", resp.into_inner().status());
    }
    // An unknown service is a gRPC error (NOT_FOUND): counted as an error, returned unchanged.
    match client
        .check(HealthCheckRequest {
            service: "nope".into(),
        })
        .await
    {
        Ok(resp) => println!("unexpected: {:?}", resp.into_inner().status()),
        Err(status) => println!("unknown service: {:?}", status.code()),
    }

    let _ = stop_tx.send(());
    server.await??;
    exporter.shutdown(Duration::from_secs(1)).ok();
    println!("seer counters: {:?}", recorder.counters());
    Ok(())
}
