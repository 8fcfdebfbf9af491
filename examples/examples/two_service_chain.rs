//! Two services in one process, `front` calling `back` over loopback HTTP: one trace spans both.
//! `front` calls `back` twice: once from its handler, once from a spawned task that carries the
//! request's context with `seer_sdk::context::current()`.
//!
//! ```text
//! cargo run -p seer-examples --example two_service_chain
//! ```

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use seer_sdk::testing::InMemoryExporter;
use seer_sdk::{Builder, SpanContext, SpanKind};
use seer_tower::{SeerClientLayer, SeerLayer};
use tower::{Layer, Service, ServiceExt, service_fn};

type HttpClient = Client<HttpConnector, Full<Bytes>>;

async fn serve<S>(svc: S) -> anyhow::Result<String>
where
    S: Service<Request<Incoming>, Response = Response<Full<Bytes>>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
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
    Ok(url)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Keep what each service exports in memory, to print the trace at the end. A real service
    // uses `Builder::install()` (HTTP to the collector) instead.
    let front_spans = InMemoryExporter::new();
    let back_spans = InMemoryExporter::new();
    let (back_rec, mut back_worker) = Builder::new("back")
        .with_sample_ratio(1.0)
        .build_with(back_spans.clone());
    let (front_rec, mut front_worker) = Builder::new("front")
        .with_sample_ratio(1.0)
        .build_with(front_spans.clone());

    let back = SeerLayer::new(back_rec).layer(service_fn(|req: Request<Incoming>| async move {
        let cx = req
            .extensions()
            .get::<SpanContext>()
            .copied()
            .unwrap_or_default();
        println!("back : trace {} span {}", cx.trace_id, cx.span_id);
        tokio::time::sleep(Duration::from_millis(5)).await;
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"from back"))))
    }));
    let back_url = serve(back).await?;

    let http: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let client = SeerClientLayer::new(front_rec).layer(http);
    let front = SeerLayer::new(front_rec).layer(service_fn(move |req: Request<Incoming>| {
        let client = client.clone();
        let back_url = back_url.clone();
        async move {
            let cx = req
                .extensions()
                .get::<SpanContext>()
                .copied()
                .unwrap_or_default();
            println!("front: trace {} span {}", cx.trace_id, cx.span_id);
            // Called from the handler: the client span is a child of this request.
            let a = client
                .clone()
                .oneshot(
                    Request::get(format!("{back_url}/a"))
                        .body(Full::default())
                        .unwrap_or_default(),
                )
                .await;
            // Called from a spawned task: carry the context along.
            let task = match seer_sdk::context::current() {
                Some(cx) => tokio::spawn(
                    cx.wrap(
                        client.oneshot(
                            Request::get(format!("{back_url}/b"))
                                .body(Full::default())
                                .unwrap_or_default(),
                        ),
                    ),
                ),
                None => tokio::spawn(
                    client.oneshot(
                        Request::get(format!("{back_url}/b"))
                            .body(Full::default())
                            .unwrap_or_default(),
                    ),
                ),
            };
            let b = task.await;
            let ok = a.is_ok() && matches!(b, Ok(Ok(_)));
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(if ok {
                "ok"
            } else {
                "downstream failed"
            }))))
        }
    }));
    let front_url = serve(front).await?;

    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let resp = client.get(format!("{front_url}/start").parse()?).await?;
    println!(
        "client: {} {}",
        resp.status(),
        String::from_utf8_lossy(&resp.into_body().collect().await?.to_bytes())
    );

    let deadline = std::time::Instant::now() + Duration::from_secs(1);
    front_worker.flush(deadline);
    back_worker.flush(deadline);
    let mut spans: Vec<_> = front_spans
        .spans()
        .into_iter()
        .map(|s| ("front", s))
        .chain(back_spans.spans().into_iter().map(|s| ("back", s)))
        .collect();
    spans.sort_by_key(|(_, s)| s.start_unix_ns);
    println!("\none trace, {} spans:", spans.len());
    for (svc, s) in &spans {
        let kind = match s.kind {
            SpanKind::Server => "server",
            SpanKind::Client => "client",
            _ => "internal",
        };
        println!(
            "  {svc:5} {kind:6} {:14} trace {} span {} parent {} {:>6} us (self {} us)",
            s.name,
            s.trace_id,
            s.span_id,
            s.parent_span_id,
            s.duration_ns() / 1000,
            s.self_ns / 1000
        );
    }
    let trace = spans.first().map(|(_, s)| s.trace_id);
    anyhow::ensure!(
        spans.iter().all(|(_, s)| Some(s.trace_id) == trace),
        "spans in more than one trace"
    );
    Ok(())
}
