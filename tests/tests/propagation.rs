//! W3C trace context across a three-service chain on loopback: front -> middle -> leaf, each a
//! hyper server wrapped in SeerLayer, calling the next through SeerClientLayer.
#![allow(clippy::unwrap_used)]

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use seer_sdk::record::SpanKind;
use seer_sdk::testing::InMemoryExporter;
use seer_sdk::{Builder, ExportWorker, FinishedSpan};
use seer_tower::{SeerClientLayer, SeerLayer};
use tower::{Layer, ServiceExt, service_fn};

struct Svc {
    worker: ExportWorker<InMemoryExporter>,
    exporter: InMemoryExporter,
    url: String,
}

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

/// Starts a service named `name` that calls `next` (if any) and returns what it got.
async fn start(name: &str, next: Option<String>) -> Svc {
    let exporter = InMemoryExporter::new();
    let (recorder, worker) = Builder::new(name)
        .with_sample_ratio(1.0)
        .build_with(exporter.clone());
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let client = SeerClientLayer::new(recorder).layer(client);
    let handler = service_fn(move |_req: Request<Incoming>| {
        let client = client.clone();
        let next = next.clone();
        async move {
            let body = match next {
                Some(url) => {
                    let resp = client
                        .oneshot(
                            Request::get(format!("{url}/hop"))
                                .body(Full::default())
                                .unwrap(),
                        )
                        .await
                        .unwrap();
                    resp.into_body().collect().await.unwrap().to_bytes()
                }
                None => Bytes::from_static(b"leaf"),
            };
            Ok::<_, Infallible>(Response::new(Full::new(body)))
        }
    });
    let svc = SeerLayer::new(recorder).layer(handler);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let (io, _) = listener.accept().await.unwrap();
            let svc = TowerToHyperService::new(svc.clone());
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(io), svc)
                    .await;
            });
        }
    });
    Svc {
        worker,
        exporter,
        url,
    }
}

fn spans(svc: &mut Svc) -> Vec<FinishedSpan> {
    svc.worker
        .flush(std::time::Instant::now() + Duration::from_secs(1));
    let s = svc.exporter.spans();
    svc.exporter.clear();
    s
}

fn one(spans: &[FinishedSpan], kind: SpanKind) -> FinishedSpan {
    let v: Vec<_> = spans.iter().filter(|s| s.kind == kind).collect();
    assert_eq!(v.len(), 1, "{spans:?}");
    v[0].clone()
}

async fn get(url: &str, traceparent: Option<&str>) -> (u16, Bytes) {
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let mut req = Request::get(format!("{url}/start"));
    if let Some(tp) = traceparent {
        req = req.header("traceparent", tp);
    }
    let resp = client
        .request(req.body(Full::default()).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.into_body().collect().await.unwrap().to_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_services_share_one_trace() {
    let mut leaf = start("leaf", None).await;
    let mut middle = start("middle", Some(leaf.url.clone())).await;
    let mut front = start("front", Some(middle.url.clone())).await;

    let (status, body) = get(&front.url, None).await;
    assert_eq!(status, 200);
    assert_eq!(body, "leaf");

    let (f, m, l) = (spans(&mut front), spans(&mut middle), spans(&mut leaf));
    let f_server = one(&f, SpanKind::Server);
    let f_client = one(&f, SpanKind::Client);
    let m_server = one(&m, SpanKind::Server);
    let m_client = one(&m, SpanKind::Client);
    let l_server = one(&l, SpanKind::Server);
    let trace = f_server.trace_id;
    for s in [&f_client, &m_server, &m_client, &l_server] {
        assert_eq!(s.trace_id, trace, "one trace across the chain");
    }
    assert!(
        !f_server.parent_span_id.is_valid(),
        "the front starts the trace"
    );
    assert_eq!(f_client.parent_span_id, f_server.span_id);
    assert_eq!(m_server.parent_span_id, f_client.span_id);
    assert!(m_server.has_remote_parent());
    assert_eq!(m_client.parent_span_id, m_server.span_id);
    assert_eq!(l_server.parent_span_id, m_client.span_id);
    // Each hop's self time excludes its downstream wait.
    assert!(f_server.self_ns < f_server.duration_ns());
    assert!(f_server.self_ns <= f_server.duration_ns() - f_client.duration_ns() + 1_000_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_traceparent_starts_a_fresh_trace() {
    let mut leaf = start("leaf", None).await;
    let mut front = start("front", Some(leaf.url.clone())).await;
    for bad in [
        "00-not-a-trace-01",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "zz-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    ] {
        let (status, _) = get(&front.url, Some(bad)).await;
        assert_eq!(status, 200, "a malformed header never fails the request");
        let f = spans(&mut front);
        let l = spans(&mut leaf);
        let f_server = one(&f, SpanKind::Server);
        assert!(!f_server.parent_span_id.is_valid(), "fresh root for {bad}");
        assert!(f_server.trace_id.is_valid());
        assert_eq!(one(&l, SpanKind::Server).trace_id, f_server.trace_id);
    }
}
