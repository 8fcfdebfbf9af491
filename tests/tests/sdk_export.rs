//! The exporter against a real HTTP server on loopback (a stand-in collector that records what
//! it receives and replies as scripted).
#![allow(clippy::unwrap_used)]

use std::collections::{HashSet, VecDeque};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use prost::Message;
use seer_proto::{AdviceReply, TRACES_PATH, WINDOWS_PATH, WindowBatch};
use seer_sdk::{Builder, SpanContext};
use seer_tower::SeerLayer;
use tower::{Layer, Service, service_fn};

#[derive(Clone, Debug)]
struct Post {
    path: String,
    at: Instant,
    auth: Option<String>,
    body: Bytes,
}

/// A scripted reply: status and optional `Retry-After` seconds.
type Scripted = (u16, Option<u64>);

#[derive(Clone, Default)]
struct Stub {
    posts: Arc<Mutex<Vec<Post>>>,
    /// Scripted (status, retry-after) replies to trace posts; 200 when empty.
    traces_script: Arc<Mutex<VecDeque<Scripted>>>,
    advice: Arc<Mutex<Option<AdviceReply>>>,
}

impl Stub {
    /// Serves on 127.0.0.1:0 from its own runtime thread; returns the base URL.
    fn start(&self) -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let stub = self.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                loop {
                    let (io, _) = listener.accept().await.unwrap();
                    let stub = stub.clone();
                    tokio::spawn(async move {
                        let svc = hyper::service::service_fn(move |req| stub.clone().handle(req));
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(hyper_util::rt::TokioIo::new(io), svc)
                            .await;
                    });
                }
            });
        });
        format!("http://{addr}")
    }

    async fn handle(
        self,
        req: Request<hyper::body::Incoming>,
    ) -> Result<Response<Full<Bytes>>, Infallible> {
        let path = req.uri().path().to_owned();
        let auth = req
            .headers()
            .get("authorization")
            .map(|v| v.to_str().unwrap().to_owned());
        let body = req.into_body().collect().await.unwrap().to_bytes();
        self.posts.lock().unwrap().push(Post {
            path: path.clone(),
            at: Instant::now(),
            auth,
            body,
        });
        let mut resp = Response::new(Full::new(Bytes::new()));
        if path == TRACES_PATH {
            if let Some((status, after)) = self.traces_script.lock().unwrap().pop_front() {
                *resp.status_mut() = http::StatusCode::from_u16(status).unwrap();
                if let Some(s) = after {
                    resp.headers_mut().insert("retry-after", s.into());
                }
            }
        } else if path == WINDOWS_PATH
            && let Some(a) = self.advice.lock().unwrap().clone()
        {
            *resp.body_mut() = Full::new(Bytes::from(a.encode_to_vec()));
        }
        Ok(resp)
    }

    fn posts(&self, path: &str) -> Vec<Post> {
        self.posts
            .lock()
            .unwrap()
            .iter()
            .filter(|p| p.path == path)
            .cloned()
            .collect()
    }
}

/// Polls a future to completion on the calling thread, with no async runtime at all.
fn block_on<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::yield_now();
    }
}

fn unix_ns_in(d: Duration) -> u64 {
    (SystemTime::now() + d)
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

#[test]
fn batches_decode_to_exactly_what_was_recorded_and_advice_comes_back() {
    let stub = Stub::default();
    *stub.advice.lock().unwrap() = Some(AdviceReply {
        service: "checkout".into(),
        risk: 0.75,
        admit_fraction: 0.5,
        expires_at_unix_ns: unix_ns_in(Duration::from_secs(60)),
        ..Default::default()
    });
    let url = stub.start();
    let (recorder, handle) = Builder::new("checkout")
        .with_endpoint(url)
        .with_token("t0k")
        .with_sample_ratio(1.0)
        .with_tick(Duration::from_millis(20))
        .install()
        .unwrap();

    // The handler reports the span context SeerLayer gave it.
    let seen: Arc<Mutex<Vec<SpanContext>>> = Arc::default();
    let s2 = Arc::clone(&seen);
    let mut svc = SeerLayer::new(recorder).layer(service_fn(move |req: Request<String>| {
        s2.lock()
            .unwrap()
            .push(*req.extensions().get::<SpanContext>().unwrap());
        async { Ok::<_, Infallible>(Response::new(String::new())) }
    }));
    let mut sent = Vec::new();
    for i in 0..20u64 {
        let tp = format!("00-{:032x}-{:016x}-01", 0xabc0 + i, 0x100 + i);
        sent.push(tp.clone());
        let req = Request::get("/item")
            .header("traceparent", tp)
            .body(String::new())
            .unwrap();
        // No async runtime on this thread.
        let resp = block_on(svc.call(req)).unwrap();
        assert_eq!(resp.status(), 200);
    }
    handle.shutdown(Duration::from_secs(3)).unwrap();

    // Spans: exactly the 20 recorded, with their ids, parents, name, kind, status, resource.
    let mut exported = HashSet::new();
    for post in stub.posts(TRACES_PATH) {
        assert_eq!(post.auth.as_deref(), Some("Bearer t0k"));
        let req = ExportTraceServiceRequest::decode(post.body.as_ref()).unwrap();
        for rs in req.resource_spans {
            let res = rs.resource.unwrap();
            let attr = |k: &str| {
                res.attributes
                    .iter()
                    .find(|a| a.key == k)
                    .and_then(|a| a.value.clone()?.value)
            };
            assert_eq!(
                attr("service.name"),
                Some(Value::StringValue("checkout".into()))
            );
            assert_eq!(
                attr("process.pid"),
                Some(Value::IntValue(i64::from(std::process::id())))
            );
            for ss in rs.scope_spans {
                for s in ss.spans {
                    assert_eq!(s.name, "GET /item");
                    assert_eq!(s.kind, 2, "server");
                    assert!(s.end_time_unix_nano >= s.start_time_unix_nano);
                    let status = s
                        .attributes
                        .iter()
                        .find(|a| a.key == "http.response.status_code")
                        .unwrap();
                    assert_eq!(
                        status.value.clone().unwrap().value,
                        Some(Value::IntValue(200))
                    );
                    exported.insert((s.trace_id, s.span_id, s.parent_span_id));
                }
            }
        }
    }
    let recorded: HashSet<_> = seen
        .lock()
        .unwrap()
        .iter()
        .zip(&sent)
        .map(|(cx, tp)| {
            let parent = seer_sdk::propagation::parse_traceparent(tp.as_bytes()).unwrap();
            assert_eq!(cx.trace_id, parent.trace_id);
            (
                cx.trace_id.to_bytes().to_vec(),
                cx.span_id.to_bytes().to_vec(),
                parent.span_id.to_bytes().to_vec(),
            )
        })
        .collect();
    assert_eq!(exported, recorded);

    // Windows: every request counted once, for this service and process.
    let batches: Vec<WindowBatch> = stub
        .posts(WINDOWS_PATH)
        .iter()
        .map(|p| WindowBatch::decode(p.body.as_ref()).unwrap())
        .collect();
    assert!(!batches.is_empty());
    assert!(
        batches
            .iter()
            .all(|b| b.service == "checkout" && b.pid == std::process::id())
    );
    let completions: u64 = batches
        .iter()
        .flat_map(|b| &b.windows)
        .map(|w| w.completions)
        .sum();
    assert_eq!(completions, 20);

    // The reply's advice is held by the recorder.
    let advice = recorder.advice().unwrap();
    assert_eq!(advice.risk, 0.75);
    let c = recorder.counters();
    assert_eq!(c.recorded, 20);
    assert_eq!(c.exported, 20);
    assert_eq!(c.dropped(), 0);
}

#[test]
fn collector_down_keeps_serving_with_bounded_memory_and_counted_drops() {
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (recorder, handle) = Builder::new("lonely")
        .with_endpoint(format!("http://127.0.0.1:{port}"))
        .with_sample_ratio(1.0)
        .with_tick(Duration::from_millis(10))
        .with_max_queue_spans(500)
        .with_max_outbox_bytes(64 << 10)
        .with_export_timeout(Duration::from_millis(200))
        .with_max_attempts(2)
        .install()
        .unwrap();
    let mut svc = SeerLayer::new(recorder).layer(service_fn(|_req: Request<String>| async {
        Ok::<_, Infallible>(Response::new(String::new()))
    }));
    const N: u64 = 30_000;
    for _ in 0..N {
        let resp = block_on(svc.call(Request::get("/x").body(String::new()).unwrap())).unwrap();
        assert_eq!(resp.status(), 200);
    }
    handle.shutdown(Duration::from_millis(500)).unwrap();
    let c = recorder.counters();
    assert_eq!(c.recorded, N);
    assert_eq!(c.exported, 0);
    // Every span is accounted for: nothing exported, everything dropped with a reason.
    assert_eq!(c.dropped(), N, "{c:?}");
    assert!(c.dropped_queue_full + c.dropped_export_failed + c.dropped_buffer_full == N);
}

#[test]
fn retry_after_on_429_is_honoured() {
    let stub = Stub::default();
    stub.traces_script.lock().unwrap().push_back((429, Some(1)));
    let url = stub.start();
    let (recorder, handle) = Builder::new("patient")
        .with_endpoint(url)
        .with_sample_ratio(1.0)
        .with_tick(Duration::from_millis(20))
        .install()
        .unwrap();
    let mut svc = SeerLayer::new(recorder).layer(service_fn(|_req: Request<String>| async {
        Ok::<_, Infallible>(Response::new(String::new()))
    }));
    for _ in 0..5 {
        block_on(svc.call(Request::get("/r").body(String::new()).unwrap())).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while recorder.counters().exported < 5 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    handle.shutdown(Duration::from_secs(1)).unwrap();
    let posts = stub.posts(TRACES_PATH);
    assert!(posts.len() >= 2, "{} trace posts", posts.len());
    let gap = posts[1].at - posts[0].at;
    assert!(
        gap >= Duration::from_millis(950),
        "retried after {gap:?}, Retry-After was 1 s"
    );
    assert!(gap < Duration::from_secs(3), "retried after {gap:?}");
    assert_eq!(posts[0].body, posts[1].body, "the same batch is retried");
    let c = recorder.counters();
    assert_eq!(c.exported, 5);
    assert!(c.retries >= 1);
}
