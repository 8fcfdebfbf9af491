//! seer-sdk's exporter and SeerLayer end to end against the real collector: spans are stored
//! and served back by trace id, windows arrive as native windows, and the advice in the reply
//! reaches the recorder.

use std::convert::Infallible;
use std::time::Duration;

use http::{Request, Response};
use seer_sdk::Builder;
use seer_tower::SeerLayer;
use tower::{Layer, Service, ServiceExt, service_fn};

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_exporter_end_to_end() {
    let h = start(|c| {
        c.tick_ms = 20;
        c.watermark_ms = 100;
    })
    .await;
    let (recorder, handle) = Builder::new("checkout")
        .with_endpoint(format!("http://{}", h.addr))
        .with_sample_ratio(1.0)
        .with_tick(Duration::from_millis(20))
        .install()
        .unwrap();
    let mut svc = SeerLayer::new(recorder).layer(service_fn(|_req: Request<String>| async {
        Ok::<_, Infallible>(Response::new(String::new()))
    }));
    let mut traces = Vec::new();
    for i in 0..20u64 {
        let trace = format!("{:032x}", 0xfeed_0000 + i);
        let req = Request::get("/item")
            .header("traceparent", format!("00-{trace}-{:016x}-01", 0x100 + i))
            .body(String::new())
            .unwrap();
        let resp = svc.ready().await.unwrap().call(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        traces.push(trace);
    }
    // Keep the exporter running a few ticks so a window post brings advice back.
    let got_advice = eventually(20, || async { recorder.advice().is_some() }).await;
    // The SDK's own counters ride on its window posts and show on the collector's /metrics.
    let reported = eventually(40, || async {
        h.running
            .metrics()
            .sdk_counters("checkout")
            .is_some_and(|c| c.recorded == 20 && c.exported == 20)
    })
    .await;
    let sdk = h.running.metrics().sdk_counters("checkout");
    assert!(reported, "sdk counters at the collector: {sdk:?}");
    let text = String::from_utf8(get(h.addr, "/metrics").await.body.to_vec()).unwrap();
    assert!(
        text.contains("seer_sdk_spans_total{service=\"checkout\",outcome=\"exported\"} 20"),
        "{text}"
    );
    assert!(text.contains("seer_sdk_dropped_total{service=\"checkout\",reason=\"queue_full\"} 0"));
    tokio::task::spawn_blocking(move || handle.shutdown(Duration::from_secs(3)).unwrap())
        .await
        .unwrap();
    assert!(got_advice, "the window reply's advice reached the recorder");
    for t in &traces {
        let r = get(h.addr, &format!("/v1/traces/{t}")).await;
        assert_eq!(r.status, 200, "trace {t}");
        let v = r.json();
        assert_eq!(
            v["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["name"],
            "GET /item"
        );
    }
    assert!(
        eventually(20, || async {
            let w = get(h.addr, "/v1/windows?service=checkout&from=-1m")
                .await
                .json();
            let ws = w["windows"].as_array().cloned().unwrap_or_default();
            ws.iter().all(|w| w["source"] == "sdk")
                && ws
                    .iter()
                    .map(|w| w["completions"].as_u64().unwrap())
                    .sum::<u64>()
                    == 20
        })
        .await,
        "windows: {}",
        get(h.addr, "/v1/windows?service=checkout&from=-1m")
            .await
            .json()
    );
    h.running.shutdown().await.unwrap();
}
