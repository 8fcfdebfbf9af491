//! Shared helpers: a collector on 127.0.0.1:0 with a temp store, and a small HTTP client.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use seer_collector::config::Config;
use seer_collector::{Collector, RunningCollector};

pub(crate) struct Harness {
    pub(crate) running: RunningCollector,
    pub(crate) _dir: tempfile::TempDir,
    pub(crate) addr: SocketAddr,
}

pub(crate) fn config(dir: &std::path::Path) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.to_owned(),
        sampler: false,
        // The model has its own integration test (tests/model_predictor.rs); these tests
        // exercise the collector around the reactive baseline.
        predictor: seer_collector::config::PredictorKind::Reactive,
        ..Config::default()
    }
}

pub(crate) async fn start(tweak: impl FnOnce(&mut Config)) -> Harness {
    start_with(tweak, |c| c).await
}

pub(crate) async fn start_with(
    tweak: impl FnOnce(&mut Config),
    build: impl FnOnce(Collector) -> Collector,
) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    tweak(&mut cfg);
    let running = build(Collector::new(cfg)).start().await.unwrap();
    let addr = running.local_addr();
    Harness {
        running,
        _dir: dir,
        addr,
    }
}

pub(crate) fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

pub(crate) struct Resp {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl Resp {
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

pub(crate) async fn request(
    method: &str,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Resp {
    let mut b = http::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let req = b.body(Full::new(body.into())).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(30), client().request(req))
        .await
        .expect("request timed out")
        .expect("request failed");
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Resp {
        status,
        headers,
        body,
    }
}

pub(crate) async fn post(addr: SocketAddr, path: &str, ct: &str, body: impl Into<Bytes>) -> Resp {
    request("POST", addr, path, &[("content-type", ct)], body).await
}

pub(crate) async fn get(addr: SocketAddr, path: &str) -> Resp {
    request("GET", addr, path, &[], Bytes::new()).await
}

pub(crate) fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

pub(crate) fn span(
    trace: [u8; 16],
    id: u64,
    parent: u64,
    kind: i32,
    name: &str,
    start: u64,
    dur: u64,
) -> Span {
    Span {
        trace_id: trace.to_vec(),
        span_id: id.to_be_bytes().to_vec(),
        parent_span_id: if parent == 0 {
            vec![]
        } else {
            parent.to_be_bytes().to_vec()
        },
        name: name.into(),
        kind,
        start_time_unix_nano: start,
        end_time_unix_nano: start + dur,
        attributes: vec![kv("http.route", name)],
        ..Default::default()
    }
}

pub(crate) fn request_of(service: &str, spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", service)],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

pub(crate) fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

pub(crate) fn hex(id: &[u8]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// Polls `f` every 50 ms for up to `secs` seconds.
pub(crate) async fn eventually<F, Fut>(secs: u64, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while tokio::time::Instant::now() < deadline {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}
