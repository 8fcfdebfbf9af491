use std::time::Duration;

use http::{Request, Response};
use seer_sdk::Builder;
use seer_tower::SeerLayer;
use tokio_test::{assert_pending, assert_ready_ok};
use tower_test::mock;

use crate::{flush, pipeline, total};

type Mock = mock::Mock<Request<String>, Response<String>>;
type Handle = mock::Handle<Request<String>, Response<String>>;

fn spawn(
    layer: SeerLayer,
) -> (
    mock::Spawn<seer_tower::Seer<Mock, seer_tower::MethodAndPath, (), seer_tower::DefaultOnShed>>,
    Handle,
) {
    mock::spawn_layer(layer)
}

#[tokio::test(flavor = "current_thread")]
async fn success_is_recorded_with_status_and_endpoint() {
    let (recorder, mut worker, exp) = pipeline(Builder::new("svc").with_sample_ratio(1.0));
    let (mut svc, mut handle) = spawn(SeerLayer::new(recorder));
    handle.allow(1);
    assert_ready_ok!(svc.poll_ready());
    let fut = svc.call(Request::get("/users/42").body(String::new()).unwrap());
    let (req, send) = handle.next_request().await.unwrap();
    // The request carries its span context to the handler.
    assert!(req.extensions().get::<seer_sdk::SpanContext>().is_some());
    assert_eq!(recorder.in_flight(), 1);
    send.send_response(Response::new("ok".to_owned()));
    let resp = fut.await.unwrap();
    assert_eq!(resp.body(), "ok");
    assert_eq!(recorder.in_flight(), 0);

    flush(&mut worker);
    let spans = exp.spans();
    assert_eq!(spans.len(), 1);
    assert_eq!(&*spans[0].name, "GET /users/42");
    assert_eq!(spans[0].status, 200);
    assert!(!spans[0].is_error());
    assert_eq!(total(&exp, |w| w.arrivals), 1);
    assert_eq!(total(&exp, |w| w.completions), 1);
    assert_eq!(total(&exp, |w| w.errors), 0);
    let batch = &exp.windows()[0];
    assert_eq!(batch.service, "svc");
    assert_eq!(batch.pid, std::process::id());
}

#[tokio::test(flavor = "current_thread")]
async fn inner_error_passes_through_unchanged_and_counts_as_error() {
    let (recorder, mut worker, exp) = pipeline(Builder::new("svc").with_sample_ratio(1.0));
    let (mut svc, mut handle) = spawn(SeerLayer::new(recorder));
    handle.allow(1);
    assert_ready_ok!(svc.poll_ready());
    let fut = svc.call(Request::get("/boom").body(String::new()).unwrap());
    let (_req, send) = handle.next_request().await.unwrap();
    #[derive(Debug)]
    struct MyError;
    impl std::fmt::Display for MyError {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("my error")
        }
    }
    impl std::error::Error for MyError {}
    send.send_error(MyError);
    let err = fut.await.unwrap_err();
    assert!(
        err.downcast_ref::<MyError>().is_some(),
        "error type changed: {err}"
    );
    flush(&mut worker);
    assert_eq!(total(&exp, |w| w.errors), 1);
    assert!(exp.spans()[0].is_error());
}

#[tokio::test(flavor = "current_thread")]
async fn server_errors_count_as_errors() {
    let (recorder, mut worker, exp) = pipeline(Builder::new("svc").with_sample_ratio(1.0));
    let (mut svc, mut handle) = spawn(SeerLayer::new(recorder));
    handle.allow(1);
    assert_ready_ok!(svc.poll_ready());
    let fut = svc.call(Request::get("/x").body(String::new()).unwrap());
    let (_req, send) = handle.next_request().await.unwrap();
    let mut resp = Response::new(String::new());
    *resp.status_mut() = http::StatusCode::BAD_GATEWAY;
    send.send_response(resp);
    assert_eq!(fut.await.unwrap().status(), 502);
    flush(&mut worker);
    assert_eq!(total(&exp, |w| w.errors), 1);
}

#[tokio::test(flavor = "current_thread")]
async fn poll_ready_backpressure_is_queue_depth_and_queue_wait() {
    let (recorder, mut worker, exp) = pipeline(Builder::new("svc").with_sample_ratio(1.0));
    let (mut svc, mut handle) = spawn(SeerLayer::new(recorder));
    handle.allow(0);
    assert_pending!(svc.poll_ready());
    assert_eq!(recorder.queue_depth(), 1);
    // Polling again while still pending does not count twice.
    assert_pending!(svc.poll_ready());
    assert_eq!(recorder.queue_depth(), 1);
    worker.step(); // samples the gauge
    tokio::time::sleep(Duration::from_millis(5)).await;
    handle.allow(1);
    assert_ready_ok!(svc.poll_ready());
    assert_eq!(recorder.queue_depth(), 0);
    let fut = svc.call(Request::get("/q").body(String::new()).unwrap());
    let (_req, send) = handle.next_request().await.unwrap();
    send.send_response(Response::new(String::new()));
    fut.await.unwrap();
    flush(&mut worker);
    let spans = exp.spans();
    assert!(
        spans[0].queue_wait_ns >= 4_000_000,
        "queue wait {}",
        spans[0].queue_wait_ns
    );
    let max_q: u64 = exp
        .windows()
        .iter()
        .map(|b| b.service_queue_depth_max)
        .max()
        .unwrap();
    assert_eq!(max_q, 1);
}

#[tokio::test(flavor = "current_thread")]
async fn a_service_dropped_while_waiting_releases_the_queue_gauge() {
    let (recorder, _worker, _exp) = pipeline(Builder::new("svc").with_sample_ratio(1.0));
    let (mut svc, mut handle) = spawn(SeerLayer::new(recorder));
    handle.allow(0);
    assert_pending!(svc.poll_ready());
    assert_eq!(recorder.queue_depth(), 1);
    drop(svc);
    assert_eq!(recorder.queue_depth(), 0);
}

#[tokio::test(flavor = "current_thread")]
async fn dropped_future_is_recorded_as_cancelled_and_releases_gauges() {
    let (recorder, mut worker, exp) = pipeline(Builder::new("svc").with_sample_ratio(1.0));
    let (mut svc, mut handle) = spawn(SeerLayer::new(recorder));
    handle.allow(1);
    assert_ready_ok!(svc.poll_ready());
    let fut = svc.call(Request::get("/slow").body(String::new()).unwrap());
    let _pending = handle.next_request().await.unwrap();
    assert_eq!(recorder.in_flight(), 1);
    drop(fut);
    assert_eq!(recorder.in_flight(), 0);
    flush(&mut worker);
    assert_eq!(total(&exp, |w| w.cancelled), 1);
    assert_eq!(total(&exp, |w| w.completions), 0);
    assert!(exp.spans()[0].is_cancelled());
}

#[tokio::test(flavor = "current_thread")]
async fn traceparent_is_continued_and_malformed_starts_a_new_trace() {
    let (recorder, mut worker, exp) = pipeline(Builder::new("svc").with_sample_ratio(0.0));
    let (mut svc, mut handle) = spawn(SeerLayer::new(recorder));
    for tp in [
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-zzzz2f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    ] {
        handle.allow(1);
        assert_ready_ok!(svc.poll_ready());
        let fut = svc.call(
            Request::get("/t")
                .header("traceparent", tp)
                .body(String::new())
                .unwrap(),
        );
        let (_req, send) = handle.next_request().await.unwrap();
        send.send_response(Response::new(String::new()));
        assert_eq!(fut.await.unwrap().status(), 200);
    }
    flush(&mut worker);
    let spans = exp.spans();
    // Sample ratio 0: only the span whose parent was sampled is exported.
    assert_eq!(spans.len(), 1);
    assert_eq!(
        spans[0].trace_id.to_string(),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert_eq!(spans[0].parent_span_id.to_string(), "00f067aa0ba902b7");
    assert!(spans[0].has_remote_parent());
    // Both requests are in the window stats (computed before sampling).
    assert_eq!(total(&exp, |w| w.completions), 2);
}

#[tokio::test(flavor = "current_thread")]
async fn endpoint_cardinality_is_capped() {
    let (recorder, mut worker, exp) = pipeline(
        Builder::new("svc")
            .with_sample_ratio(1.0)
            .with_max_endpoints(4),
    );
    let (mut svc, mut handle) = spawn(SeerLayer::new(recorder));
    for i in 0..20 {
        handle.allow(1);
        assert_ready_ok!(svc.poll_ready());
        let fut = svc.call(
            Request::get(format!("/item/{i}"))
                .body(String::new())
                .unwrap(),
        );
        let (_req, send) = handle.next_request().await.unwrap();
        send.send_response(Response::new(String::new()));
        fut.await.unwrap();
    }
    flush(&mut worker);
    let names: std::collections::BTreeSet<String> = exp
        .windows()
        .iter()
        .flat_map(|b| b.windows.iter().map(|w| w.endpoint.clone()))
        .collect();
    assert_eq!(names.len(), 5, "{names:?}");
    assert!(names.contains(seer_sdk::OVERFLOW_NAME));
    assert_eq!(total(&exp, |w| w.completions), 20);
}
