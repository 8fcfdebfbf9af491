//! Native windows, advice in the reply, a plugged-in predictor, alerts, webhooks, labels and
//! the JSON API.

use std::sync::{Arc, Mutex};

use prost::Message;
use seer_collector::predict::{
    Mode, PredictionSet, Predictor, PredictorStats, ServicePrediction, TickInput, TickOutcome,
};
use seer_proto::{AdviceReply, EndpointWindow, Histogram, WindowBatch};

use crate::common::*;

const PB: &str = "application/x-protobuf";

fn batch(service: &str, tick_ns: u64, at_ns: u64, queue: f64, lat_ms: u64) -> WindowBatch {
    let mut h = Histogram::new_latency();
    for _ in 0..20 {
        h.record_ns(lat_ms * 1_000_000);
    }
    WindowBatch {
        version: seer_proto::WIRE_VERSION,
        service: service.into(),
        pid: std::process::id(),
        tick_start_unix_ns: at_ns / tick_ns * tick_ns,
        tick_ns,
        windows: vec![EndpointWindow {
            endpoint: "POST /compose".into(),
            arrivals: 20,
            completions: 20,
            queue_depth_mean: queue,
            local_inflight_mean: queue,
            latency: h.encode(),
            self_latency: h.encode(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// A predictor that names "c" with risk 0.9 once it has seen 5 ticks, and counts its calls.
struct Scripted {
    ticks: Arc<Mutex<(u64, u64)>>,
}

impl Predictor for Scripted {
    fn name(&self) -> &'static str {
        "scripted"
    }
    fn observe(&mut self, input: &TickInput<'_>) -> PredictionSet {
        let mut g = self.ticks.lock().unwrap();
        g.0 += 1;
        let hot = g.0 >= 5;
        PredictionSet {
            tick: input.tick,
            mode: Mode::Predicting,
            model_version: 7,
            global_risk: if hot { 0.9 } else { 0.0 },
            services: input
                .services
                .iter()
                .map(|s| ServicePrediction {
                    service: s.clone(),
                    risk: if hot && s == "c" { 0.9 } else { 0.05 },
                })
                .collect(),
            precision: None,
            recall: None,
        }
    }
    fn outcome(&mut self, _: &TickOutcome<'_>) {
        self.ticks.lock().unwrap().1 += 1;
    }
    fn stats(&self) -> PredictorStats {
        PredictorStats::default().with_train_steps(42)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_reply_with_advice_from_a_plugged_in_predictor() {
    // A webhook receiver.
    let hook = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_addr = hook.local_addr().unwrap();
    let received = Arc::new(Mutex::new(Vec::<serde_json::Value>::new()));
    let rec = Arc::clone(&received);
    tokio::spawn(async move {
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |body: bytes::Bytes| {
                let rec = Arc::clone(&rec);
                async move {
                    rec.lock()
                        .unwrap()
                        .push(serde_json::from_slice(&body).unwrap());
                    "ok"
                }
            }),
        );
        axum::serve(hook, app).await.unwrap();
    });

    let ticks = Arc::new(Mutex::new((0, 0)));
    let p = Scripted {
        ticks: Arc::clone(&ticks),
    };
    let h = start_with(
        |c| {
            c.tick_ms = 50;
            c.watermark_ms = 50;
            c.webhooks = vec![format!("http://{hook_addr}/hook")];
            c.qos = vec![seer_collector::config::QosSpec {
                service: "fe".into(),
                endpoint: Some("POST /compose".into()),
                percentile: 0.99,
                target_ms: 100.0,
                window_ms: 200,
            }];
        },
        |c| c.with_predictor(Box::new(p)),
    )
    .await;
    let tick = 50_000_000;
    // Unknown version: 400. Wrong type: 415. Garbage: 400.
    let mut bad = batch("c", tick, now_ns(), 0.0, 1);
    bad.version = 99;
    assert_eq!(
        post(h.addr, "/v1/seer/windows", PB, bad.encode_to_vec())
            .await
            .status,
        400
    );
    assert_eq!(
        post(h.addr, "/v1/seer/windows", "application/json", "{}")
            .await
            .status,
        415
    );
    assert_eq!(
        post(h.addr, "/v1/seer/windows", PB, b"\xff\x01".to_vec())
            .await
            .status,
        400
    );

    let mut last_c = AdviceReply::default();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut ok = false;
    while tokio::time::Instant::now() < deadline && !ok {
        for (svc, lat) in [("fe", 250), ("c", 5)] {
            let r = post(
                h.addr,
                "/v1/seer/windows",
                PB,
                batch(svc, tick, now_ns(), 0.2, lat).encode_to_vec(),
            )
            .await;
            assert_eq!(r.status, 200);
            let reply = AdviceReply::decode(r.body.as_ref()).unwrap();
            assert_eq!(reply.service, svc);
            assert_eq!(reply.version, seer_proto::WIRE_VERSION);
            if svc == "c" {
                last_c = reply;
            }
        }
        ok = last_c.culprit;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(ok, "c never became the culprit: {last_c:?}");
    assert!(last_c.admit_fraction < 1.0);
    assert_eq!(last_c.model_version, 7);
    assert!(last_c.expires_at_unix_ns > now_ns());
    let t = *ticks.lock().unwrap();
    assert!(
        t.0 >= 5 && t.1 >= 5,
        "observe and outcome called per tick: {t:?}"
    );

    let adv = get(h.addr, "/v1/advice/c").await.json();
    assert_eq!(adv["culprit"], true);
    let preds = get(h.addr, "/v1/predictions").await.json();
    assert_eq!(preds["predictor"], "scripted");
    assert_eq!(preds["latest"]["mode"], "predicting");
    assert_eq!(preds["latest"]["culprit"], "c");
    assert!(preds["latest"]["resource"].is_string());
    let range = get(h.addr, "/v1/predictions?from=-1m").await.json();
    assert!(!range["predictions"].as_array().unwrap().is_empty());
    let services = get(h.addr, "/v1/services").await.json();
    let names: Vec<&str> = services["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["service"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"fe") && names.contains(&"c"));
    assert!(services["services"][0]["node"].is_string());
    // Windows are stored.
    assert!(
        eventually(20, || async {
            let w = get(h.addr, "/v1/windows?service=fe&from=-1m").await.json();
            w["windows"].as_array().is_some_and(|a| !a.is_empty())
        })
        .await
    );
    let w = get(h.addr, "/v1/windows?service=fe&from=-1m").await.json();
    assert_eq!(w["windows"][0]["source"], "sdk");
    assert!(w["windows"][0]["latency_p99_ms"].as_f64().unwrap() > 200.0);
    // QoS: fe's p99 of 250 ms breaks its 100 ms target -> an episode.
    assert!(
        eventually(20, || async {
            let a = get(h.addr, "/v1/alerts").await.json();
            a["open_episode"].is_object() && a["alerts"].as_array().is_some_and(|x| !x.is_empty())
        })
        .await
    );
    // The webhook saw the alert start.
    assert!(
        eventually(20, || async {
            received
                .lock()
                .unwrap()
                .iter()
                .any(|v| v["event"] == "start" && v["service"] == "c")
        })
        .await
    );
    let m = String::from_utf8(get(h.addr, "/metrics").await.body.to_vec()).unwrap();
    assert!(m.contains("seer_model_version 7"));
    assert!(m.contains("seer_train_steps_total 42"));
    assert!(m.contains("seer_violation_ticks_total"));
    h.running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_graph_and_span_derived_windows() {
    let h = start(|c| {
        c.tick_ms = 50;
        c.watermark_ms = 100;
    })
    .await;
    let l = r#"{"service":"c","resource":"cpu","class":"step","start":1,"end":null}"#;
    let r = post(h.addr, "/v1/labels", "application/json", l).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let many = r#"[{"service":"d","start":5,"end":10},{"service":"e","start":7}]"#;
    assert_eq!(
        post(h.addr, "/v1/labels", "application/json", many)
            .await
            .json()["accepted"],
        2
    );
    assert_eq!(
        post(
            h.addr,
            "/v1/labels",
            "application/json",
            r#"{"service":""}"#
        )
        .await
        .status,
        400
    );
    assert_eq!(
        post(
            h.addr,
            "/v1/labels",
            "application/json",
            r#"{"service":"x","start":9,"end":1}"#
        )
        .await
        .status,
        400
    );
    assert!(
        eventually(20, || async {
            get(h.addr, "/v1/labels").await.json()["labels"]
                .as_array()
                .is_some_and(|a| a.len() == 3)
        })
        .await
    );
    // A trace fe -> c from an OTel-only app: windows are derived and the graph learned.
    let t0 = now_ns();
    let mut spans_fe = Vec::new();
    let mut spans_c = Vec::new();
    for i in 0..20u64 {
        let tr = [i as u8 + 1; 16];
        spans_fe.push(span(tr, 1, 0, 2, "GET /home", t0, 20_000_000));
        spans_fe.push(span(tr, 2, 1, 3, "GET /c", t0 + 1_000_000, 18_000_000));
        spans_c.push(span(tr, 3, 2, 2, "GET /c", t0 + 1_500_000, 17_000_000));
    }
    let mut req = request_of("fe", spans_fe);
    req.resource_spans
        .extend(request_of("c", spans_c).resource_spans);
    assert_eq!(
        post(h.addr, "/v1/traces", PB, req.encode_to_vec())
            .await
            .status,
        200
    );
    assert!(
        eventually(30, || async {
            let g = get(h.addr, "/v1/graph").await.json();
            g["edges"].as_array().is_some_and(|e| {
                e.iter()
                    .any(|e| e["caller"] == "fe" && e["callee"] == "c" && e["calls"] == 20)
            })
        })
        .await,
        "graph: {}",
        get(h.addr, "/v1/graph").await.json()
    );
    let w = get(h.addr, "/v1/windows?service=fe&from=-1m").await.json();
    let w0 = &w["windows"][0];
    assert_eq!(w0["source"], "spans");
    assert_eq!(w0["arrivals"], 20);
    h.running.shutdown().await.unwrap();
}

/// The ticks of a long poll's `since`, in order.
fn since_ticks(v: &serde_json::Value) -> Vec<u64> {
    v["since"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["tick"].as_u64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn predictions_long_poll_answers_with_each_new_tick() {
    let ticks = Arc::new(Mutex::new((0, 0)));
    let h = start_with(
        |c| {
            c.tick_ms = 50;
            c.watermark_ms = 50;
        },
        |c| {
            c.with_predictor(Box::new(Scripted {
                ticks: Arc::clone(&ticks),
            }))
        },
    )
    .await;
    // Keep ticks closing: one service reports every 20 ms.
    let addr = h.addr;
    let feeder = tokio::spawn(async move {
        loop {
            let b = batch("fe", 50_000_000, now_ns(), 0.1, 5);
            post(addr, "/v1/seer/windows", PB, b.encode_to_vec()).await;
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    });
    assert!(
        eventually(20, || async {
            !get(addr, "/v1/predictions").await.json()["latest"].is_null()
        })
        .await,
        "no prediction appeared"
    );
    // Following the predictions: every answer is a later tick than the one before.
    let mut last = get(addr, "/v1/predictions").await.json()["latest"]["tick"]
        .as_u64()
        .unwrap();
    for _ in 0..5 {
        let r = get(addr, &format!("/v1/predictions?after={last}&wait_ms=5000")).await;
        assert_eq!(r.status, 200);
        let v = r.json();
        let t = v["latest"]["tick"].as_u64().unwrap();
        assert!(t > last, "after={last} answered with tick {t}");
        // `since` holds every prediction after `last` (none skipped), ending at `latest`.
        let since = since_ticks(&v);
        assert_eq!(since.last(), Some(&t));
        // Every tick is predicted, so following `since` from answer to answer sees each one.
        assert_eq!(since[0], last + 1, "a prediction skipped");
        assert!(since.windows(2).all(|w| w[1] == w[0] + 1), "{since:?}");
        last = t;
    }
    // A client that fell behind gets what it missed, oldest first, from the recent ones kept.
    let behind = last;
    assert!(
        eventually(20, || async {
            let v = get(addr, &format!("/v1/predictions?after={behind}&wait_ms=0"))
                .await
                .json();
            let ticks = since_ticks(&v);
            assert!(ticks.len() <= seer_collector::pipeline::RECENT_PREDICTIONS);
            assert!(ticks.iter().all(|t| *t > behind));
            assert!(ticks.windows(2).all(|w| w[1] == w[0] + 1), "{ticks:?}");
            assert_eq!(
                ticks.last().copied(),
                v["latest"]["tick"].as_u64().filter(|_| !ticks.is_empty())
            );
            ticks.len() >= 2
        })
        .await,
        "a client two ticks behind was not given both"
    );
    let v = get(addr, "/v1/predictions").await.json();
    // Nothing newer within the wait: the latest is returned as it is, for the caller to
    // compare, and `since` is empty.
    let far = v["latest"]["tick"].as_u64().unwrap() + 1_000_000;
    let r = get(addr, &format!("/v1/predictions?after={far}&wait_ms=100")).await;
    assert_eq!(r.status, 200);
    assert!(r.json()["latest"]["tick"].as_u64().unwrap() <= far);
    assert_eq!(r.json()["since"], serde_json::json!([]));
    // `wait_ms` alone is a mistake, not a silent no-op; so is a long poll over a range.
    let r = get(addr, "/v1/predictions?wait_ms=100").await;
    assert_eq!(r.status, 400);
    assert!(r.json()["error"].as_str().unwrap().contains("after"));
    let r = get(addr, "/v1/predictions?after=1&from=-1s").await;
    assert_eq!(r.status, 400);
    assert!(r.json()["error"].as_str().unwrap().contains("from"));
    feeder.abort();
    // A poll still waiting when the collector shuts down is answered, and does not hold the
    // shutdown for its whole wait.
    let waiting = tokio::spawn(async move {
        get(addr, &format!("/v1/predictions?after={far}&wait_ms=10000")).await
    });
    assert!(
        eventually(20, || async {
            h.running.metrics().prediction_polls_waiting() == 1
        })
        .await,
        "the poll never began to wait"
    );
    h.running.shutdown().await.unwrap();
    let r = waiting.await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["since"], serde_json::json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_in_use_fails_start_before_the_store_is_opened() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut cfg = config(dir.path());
    cfg.listen = taken.local_addr().unwrap();
    let err = seer_collector::Collector::new(cfg)
        .start()
        .await
        .unwrap_err();
    assert!(
        matches!(err, seer_collector::StartError::Bind { .. }),
        "{err}"
    );
    // Nothing was left holding the store: a second start on a free port opens it.
    let running = seer_collector::Collector::new(config(dir.path()))
        .start()
        .await
        .unwrap();
    running.shutdown().await.unwrap();
}

/// A predictor that panics on its first tick.
struct Panicking;

impl Predictor for Panicking {
    fn name(&self) -> &'static str {
        "panicking"
    }
    fn observe(&mut self, _: &TickInput<'_>) -> PredictionSet {
        panic!("the predictor failed (on purpose, in a test)");
    }
    fn outcome(&mut self, _: &TickOutcome<'_>) {}
    fn stats(&self) -> PredictorStats {
        PredictorStats::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_names_a_thread_that_died() {
    let h = start_with(
        |c| {
            c.tick_ms = 50;
            c.watermark_ms = 50;
        },
        |c| c.with_predictor(Box::new(Panicking)),
    )
    .await;
    let r = get(h.addr, "/readyz").await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    // Ticks close and reach the predictor, which panics: its thread is gone.
    let last = Arc::new(Mutex::new(String::new()));
    let died = eventually(20, || {
        let (addr, last) = (h.addr, Arc::clone(&last));
        async move {
            let b = batch("fe", 50_000_000, now_ns(), 0.1, 5);
            post(addr, "/v1/seer/windows", PB, b.encode_to_vec()).await;
            let r = get(addr, "/readyz").await;
            *last.lock().unwrap() = String::from_utf8_lossy(&r.body).into_owned();
            r.status == 503
        }
    })
    .await;
    let last = last.lock().unwrap().clone();
    assert!(died, "/readyz still answers {last:?}");
    assert!(last.contains("seer-predict"), "{last}");
    // Liveness is another matter, and shutdown still works.
    assert_eq!(get(h.addr, "/healthz").await.status, 200);
    h.running.shutdown().await.unwrap();
}
