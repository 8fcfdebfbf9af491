//! Agent mode: windows, spans and node samples reach the central collector, services mapped
//! to the agent's node.

use prost::Message;
use seer_collector::Collector;
use seer_collector::internal_events::DropStage;

use crate::common::*;

const PB: &str = "application/x-protobuf";

/// An agent on 127.0.0.1:0 forwarding to `central`, with `tweak` applied to its config (the
/// returned directory must outlive it).
async fn agent_of(
    central: std::net::SocketAddr,
    tweak: impl FnOnce(&mut seer_collector::config::Config),
) -> (seer_collector::RunningCollector, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.upstream = Some(format!("http://{central}"));
    tweak(&mut cfg);
    (Collector::new(cfg).agent().start().await.unwrap(), dir)
}

/// The agent's answer when its upstream refused it with `status`: a retryable 503 naming it.
fn assert_refused_upstream(r: &Resp, status: u16) {
    let body = String::from_utf8_lossy(&r.body);
    assert_eq!(r.status, 503, "{body}");
    assert_eq!(r.headers["retry-after"], "1");
    assert!(
        body.contains(&format!("upstream answered {status}")),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_forwards_windows_spans_and_node_samples() {
    let central = start(|c| {
        c.tick_ms = 50;
        c.watermark_ms = 100;
    })
    .await;
    let (agent, _adir) = agent_of(central.addr, |c| {
        c.sampler = true;
        c.tick_ms = 50;
        c.node = Some("node-a".into());
    })
    .await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_refusing_the_agent_is_a_retryable_503() {
    // The central collector wants a token the agent does not have: its 401 is the agent's
    // misconfiguration, so the agent's clients get 503 + Retry-After (and keep their data),
    // not a 400 that makes exporters drop it.
    let central = start(|c| c.ingest_token = Some("central-secret".into())).await;
    let (agent, adir) = agent_of(central.addr, |_| {}).await;
    let aaddr = agent.local_addr();
    let req = request_of(
        "edge",
        vec![span([0x43; 16], 1, 0, 2, "GET /", now_ns(), 1000)],
    );
    let r = post(aaddr, "/v1/traces", PB, req.encode_to_vec()).await;
    assert_refused_upstream(&r, 401);
    // The same for a wrong upstream path (404).
    agent.shutdown().await.unwrap();
    let mut acfg = config(adir.path());
    acfg.upstream = Some(format!("http://{}/not-a-collector", central.addr));
    acfg.upstream_token = Some("central-secret".into());
    let agent = Collector::new(acfg).agent().start().await.unwrap();
    let r = post(agent.local_addr(), "/v1/traces", PB, req.encode_to_vec()).await;
    assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
    agent.shutdown().await.unwrap();
    central.running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_or_malformed_upstream_is_refused_at_start() {
    for (url, says) in [
        ("https://central:4318", "https is not supported"),
        ("central:4318", "scheme"),
    ] {
        let adir = tempfile::tempdir().unwrap();
        let mut acfg = config(adir.path());
        acfg.upstream = Some(url.into());
        let err = match Collector::new(acfg).agent().start().await {
            Ok(_) => panic!("{url} accepted"),
            Err(e) => e,
        };
        let msg = format!("{err} {:?}", std::error::Error::source(&err));
        assert!(msg.contains("--upstream"), "{url}: {msg}");
        assert!(msg.contains(says), "{url}: {msg}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_forwards_posted_labels_and_node_samples() {
    // Posted to an agent, labels and node samples reach the central collector (the agent has
    // no aggregator of its own to queue them for).
    let central = start(|c| c.tick_ms = 50).await;
    let (agent, _adir) = agent_of(central.addr, |_| {}).await;
    let aaddr = agent.local_addr();
    let label = r#"{"service":"edge","resource":"cpu","class":"step","start":1,"end":2}"#;
    let r = post(aaddr, "/v1/labels", "application/json", label).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["accepted"], 1);
    // Checked by the agent before forwarding.
    let r = post(aaddr, "/v1/labels", "application/json", r#"{"service":""}"#).await;
    assert_eq!(r.status, 400);
    let sample = serde_json::json!({
        "node": "node-b",
        "unix_ns": now_ns(),
        "features": [1.0, null],
        "services": [],
    });
    let r = post(
        aaddr,
        "/v1/seer/nodes",
        "application/json",
        serde_json::to_vec(&sample).unwrap(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(
        eventually(20, || async {
            let l = get(central.addr, "/v1/labels").await.json();
            l["labels"]
                .as_array()
                .is_some_and(|a| a.iter().any(|l| l["service"] == "edge"))
        })
        .await,
        "the label never reached the central collector"
    );
    assert!(
        eventually(20, || async {
            let n = get(central.addr, "/v1/nodes?node=node-b&from=-1m")
                .await
                .json();
            n["samples"].as_array().is_some_and(|a| !a.is_empty())
        })
        .await,
        "the node sample never reached the central collector"
    );
    agent.shutdown().await.unwrap();
    central.running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_samples_the_upstream_refuses_are_counted_as_dropped() {
    // The central collector wants a token the agent does not have: every node sample the
    // agent's sampler forwards is refused (401), and counted.
    let central = start(|c| c.ingest_token = Some("central-secret".into())).await;
    let (agent, _adir) = agent_of(central.addr, |c| {
        c.sampler = true;
        c.tick_ms = 50;
    })
    .await;
    assert!(
        eventually(20, || async {
            agent.metrics().dropped(DropStage::ForwardFailed) >= 2
        })
        .await,
        "refused node samples were not counted"
    );
    let m = String::from_utf8(get(agent.local_addr(), "/metrics").await.body.to_vec()).unwrap();
    assert!(
        m.contains("seer_dropped_total{stage=\"forward_failed\"}"),
        "{m}"
    );
    // Posted ones get the refusal as a retryable 503 instead.
    let r = post(
        agent.local_addr(),
        "/v1/seer/nodes",
        "application/json",
        r#"{"node":"x","unix_ns":1,"features":[],"services":[]}"#,
    )
    .await;
    assert_refused_upstream(&r, 401);
    agent.shutdown().await.unwrap();
    central.running.shutdown().await.unwrap();
}
