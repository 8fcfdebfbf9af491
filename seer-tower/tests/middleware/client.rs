use std::convert::Infallible;
use std::time::Duration;

use http::{Request, Response};
use seer_sdk::Builder;
use seer_sdk::propagation::parse_traceparent;
use seer_sdk::record::SpanKind;
use seer_tower::{SeerClientLayer, SeerLayer};
use tower::{Layer, Service, ServiceExt, service_fn};
use tower_test::mock;

use crate::{flush, pipeline};

/// A handler that calls a downstream service through the client layer: the outgoing request
/// carries the trace, the client span is the server span's child, and the time spent waiting
/// downstream is excluded from the server's self latency.
#[tokio::test(flavor = "current_thread")]
async fn client_calls_are_children_and_blocked_time_is_not_self_time() {
    let (recorder, mut worker, exp) = pipeline(Builder::new("front").with_sample_ratio(1.0));
    let (downstream, mut handle) = mock::pair::<Request<String>, Response<String>>();
    let client = SeerClientLayer::new(recorder).layer(downstream);
    let server = SeerLayer::new(recorder).layer(service_fn(move |_req: Request<String>| {
        let client = client.clone();
        async move {
            // own work
            std::thread::sleep(Duration::from_millis(3));
            let resp = client
                .oneshot(
                    Request::get("http://back/work")
                        .body(String::new())
                        .unwrap(),
                )
                .await
                .map_err(|_| unreachable_error())?;
            Ok::<_, Infallible>(resp)
        }
    }));
    handle.allow(1);
    let call = tokio::spawn(server.oneshot(Request::get("/front").body(String::new()).unwrap()));
    let (req, send) = handle.next_request().await.unwrap();
    let tp = parse_traceparent(req.headers()["traceparent"].as_bytes()).unwrap();
    tokio::time::sleep(Duration::from_millis(30)).await; // the downstream takes 30 ms
    send.send_response(Response::new("done".to_owned()));
    let resp = call.await.unwrap().unwrap();
    assert_eq!(resp.body(), "done");

    flush(&mut worker);
    let spans = exp.spans();
    let server = spans.iter().find(|s| s.kind == SpanKind::Server).unwrap();
    let client = spans.iter().find(|s| s.kind == SpanKind::Client).unwrap();
    assert_eq!(&*client.name, "GET /work");
    assert_eq!(client.trace_id, server.trace_id);
    assert_eq!(client.parent_span_id, server.span_id);
    assert_eq!(tp.trace_id, server.trace_id);
    assert_eq!(tp.span_id, client.span_id);
    assert!(
        server.duration_ns() >= 33_000_000,
        "{}",
        server.duration_ns()
    );
    assert!(server.self_ns >= 3_000_000, "self {}", server.self_ns);
    assert!(
        server.self_ns < 20_000_000,
        "self {} includes the downstream wait",
        server.self_ns
    );
    // The window's self-latency histogram agrees.
    let w = &exp
        .windows()
        .iter()
        .flat_map(|b| b.windows.clone())
        .find(|w| w.endpoint == "GET /front")
        .unwrap();
    let self_h = seer_proto::Histogram::decode(&w.self_latency).unwrap();
    let lat_h = seer_proto::Histogram::decode(&w.latency).unwrap();
    assert!(self_h.max_ns() < lat_h.max_ns() / 2);
}

fn unreachable_error() -> Infallible {
    panic!("downstream failed")
}

/// While a request waits downstream it is not "local" in-flight.
#[tokio::test(flavor = "current_thread")]
async fn local_inflight_excludes_requests_waiting_downstream() {
    let (recorder, mut worker, exp) = pipeline(Builder::new("front").with_sample_ratio(1.0));
    let (downstream, mut handle) = mock::pair::<Request<String>, Response<String>>();
    let client = SeerClientLayer::new(recorder).layer(downstream);
    let mut server = SeerLayer::new(recorder).layer(service_fn(move |_req: Request<String>| {
        let client = client.clone();
        async move {
            Ok::<_, Infallible>(
                client
                    .oneshot(Request::get("/d").body(String::new()).unwrap())
                    .await
                    .unwrap_or_default(),
            )
        }
    }));
    handle.allow(1);
    let first = tokio::spawn(
        server
            .ready()
            .await
            .unwrap()
            .call(Request::get("/w").body(String::new()).unwrap()),
    );
    let (_req, send) = handle.next_request().await.unwrap();
    // The first request is now blocked downstream. A second arrival sees 2 in flight, 1 local.
    let probe = tokio::spawn(
        server
            .ready()
            .await
            .unwrap()
            .call(Request::get("/w").body(String::new()).unwrap()),
    );
    tokio::task::yield_now().await;
    probe.abort();
    let _ = probe.await;
    send.send_response(Response::new(String::new()));
    first.await.unwrap().unwrap();
    flush(&mut worker);
    let spans = exp.spans();
    let probe = spans
        .iter()
        .find(|s| s.kind == SpanKind::Server && s.inflight == 2)
        .unwrap();
    assert_eq!(probe.local_inflight, 1);
    assert!(probe.is_cancelled());
    let w = exp
        .windows()
        .iter()
        .flat_map(|b| b.windows.clone())
        .find(|w| w.endpoint == "GET /w")
        .unwrap();
    assert_eq!(w.inflight_max, 2);
    assert_eq!(w.local_inflight_max, 1);
}
