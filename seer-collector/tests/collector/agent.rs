//! Agent mode: windows, spans and node samples reach the central collector, services mapped
//! to the agent's node.

use prost::Message;
use seer_collector::Collector;

use crate::common::*;

const PB: &str = "application/x-protobuf";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_forwards_windows_spans_and_node_samples() {
    let central = start(|c| {
        c.tick_ms = 50;
        c.watermark_ms = 100;
    })
    .await;
    let adir = tempfile::tempdir().unwrap();
    let mut acfg = config(adir.path());
    acfg.sampler = true;
    acfg.tick_ms = 50;
    acfg.node = Some("node-a".into());
    acfg.upstream = Some(format!("http://{}", central.addr));
    let agent = Collector::new(acfg).agent().start().await.unwrap();
    let aaddr = agent.local_addr();

    let tick = 50_000_000u64;
    let mut h = seer_proto::Histogram::new_latency();
    h.record_ns(1_000_000);
    let wb = seer_proto::WindowBatch {
        version: seer_proto::WIRE_VERSION,
        service: "edge".into(),
        tick_start_unix_ns: now_ns() / tick * tick,
        tick_ns: tick,
        windows: vec![seer_proto::EndpointWindow {
            endpoint: "GET /".into(),
            arrivals: 1,
            completions: 1,
            latency: h.encode(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let r = post(aaddr, "/v1/seer/windows", PB, wb.encode_to_vec()).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let reply = seer_proto::AdviceReply::decode(r.body.as_ref()).unwrap();
    assert_eq!(reply.service, "edge");
    let trace = [0x42; 16];
    let req = request_of("edge", vec![span(trace, 1, 0, 2, "GET /", now_ns(), 1000)]);
    assert_eq!(
        post(aaddr, "/v1/traces", PB, req.encode_to_vec())
            .await
            .status,
        200
    );
    // The span is in the central store right away (the agent's 200 waited for the upstream's).
    assert_eq!(
        get(central.addr, &format!("/v1/traces/{}", hex(&trace)))
            .await
            .status,
        200
    );
    assert!(
        eventually(20, || async {
            let s = get(central.addr, "/v1/services").await.json();
            s["services"].as_array().is_some_and(|a| {
                a.iter()
                    .any(|s| s["service"] == "edge" && s["node"] == "node-a")
            })
        })
        .await
    );
    assert!(
        eventually(20, || async {
            let n = get(central.addr, "/v1/nodes?node=node-a&from=-1m")
                .await
                .json();
            n["samples"].as_array().is_some_and(|a| !a.is_empty())
        })
        .await
    );
    agent.shutdown().await.unwrap();
    central.running.shutdown().await.unwrap();
}
