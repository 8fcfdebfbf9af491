use super::*;
use crate::ingest::otlp;
use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use proptest::prelude::*;
use prost::Message;

const TICK: u64 = 100_000_000;

fn cfg(qos: Vec<QosSpec>) -> AggregatorConfig {
    AggregatorConfig {
        tick_ns: TICK,
        watermark_ns: 2 * TICK,
        max_services: 8,
        qos,
        episode_gap_ticks: 2,
        slow_trace_ns: 50_000_000,
        service_ttl_ticks: 100,
        ring_ticks: 100,
        early_close: false,
        active_ticks: 10,
    }
}

fn early_cfg() -> AggregatorConfig {
    AggregatorConfig {
        early_close: true,
        ..cfg(vec![])
    }
}

/// Posts one window of `service`'s process `pid` for `tick`, arriving at `at_ns`.
fn post(a: &mut Aggregator, service: &str, pid: u32, tick: u64, at_ns: u64) {
    let mut b = window(service, tick, "GET /", &[5], 0.0);
    b.pid = pid;
    a.on_windows(&b, None, at_ns);
}

/// Ticks of the closed frames.
fn ticks(closed: &[ClosedTick]) -> Vec<u64> {
    closed.iter().map(|c| c.frame.tick).collect()
}

fn window(service: &str, tick: u64, endpoint: &str, lat_ms: &[u64], queue: f64) -> WindowBatch {
    let mut h = Histogram::new_latency();
    for l in lat_ms {
        h.record_ns(l * 1_000_000);
    }
    WindowBatch {
        version: seer_proto::WIRE_VERSION,
        service: service.into(),
        node: "n1".into(),
        tick_start_unix_ns: tick * TICK,
        tick_ns: TICK,
        windows: vec![EndpointWindow {
            endpoint: endpoint.into(),
            arrivals: lat_ms.len() as u64,
            completions: lat_ms.len() as u64,
            queue_depth_mean: queue,
            latency: h.encode(),
            self_latency: h.encode(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn col(name: &str) -> usize {
    FEATURES.iter().position(|f| *f == name).unwrap()
}

#[test]
fn windows_align_per_tick_and_late_data_is_dropped() {
    let mut a = Aggregator::new(cfg(vec![]));
    a.on_windows(&window("a", 10, "GET /", &[5, 5], 1.0), None, 10 * TICK);
    a.on_windows(&window("b", 10, "GET /", &[7], 0.5), None, 10 * TICK);
    a.on_windows(&window("a", 10, "POST /", &[9], 2.0), None, 10 * TICK);
    assert!(a.advance(11 * TICK).is_empty(), "watermark not passed");
    assert!(
        a.advance(12 * TICK + 1).is_empty(),
        "tick 10 ends at 11, +2 watermark"
    );
    let closed = a.advance(13 * TICK);
    assert_eq!(closed.len(), 1);
    let f = &closed[0].frame;
    assert_eq!(f.tick, 10);
    assert_eq!(f.services, vec!["a".to_string(), "b".to_string()]);
    let w = FEATURES.len();
    assert_eq!(f.features[col("queue_depth_mean")], 3.0);
    assert_eq!(f.features[w + col("queue_depth_mean")], 0.5);
    assert_eq!(f.features[col("arrivals_rps")], 30.0);
    assert_eq!(closed[0].windows[0].arrivals, 3);
    assert_eq!(closed[0].windows[0].endpoints.len(), 2);
    assert_eq!(f.nodes[0].0, "n1");
    // Late: tick 10 is closed.
    a.on_windows(&window("a", 10, "GET /", &[5], 1.0), None, 13 * TICK);
    assert_eq!(a.drops().late, 1);
    // Next ticks close contiguously, even without data.
    let closed = a.advance(15 * TICK);
    assert_eq!(
        closed.iter().map(|c| c.frame.tick).collect::<Vec<_>>(),
        vec![11, 12]
    );
    assert_eq!(a.ring().len(), 3);
}

#[test]
fn qos_violation_from_windows_and_label_culprit() {
    let spec = QosSpec {
        service: "fe".into(),
        endpoint: Some("POST /compose".into()),
        percentile: 0.99,
        target_ms: 100.0,
        window_ms: 100,
    };
    let mut a = Aggregator::new(cfg(vec![spec]));
    a.on_label(Label {
        service: "c".into(),
        resource: Some("cpu".into()),
        class: Some("step".into()),
        start: 5 * TICK,
        end: None,
    });
    a.on_windows(
        &window("fe", 5, "POST /compose", &[10], 0.0),
        None,
        5 * TICK,
    );
    a.on_windows(
        &window("fe", 6, "POST /compose", &[500], 0.0),
        None,
        6 * TICK,
    );
    a.on_windows(&window("fe", 6, "GET /other", &[900], 0.0), None, 6 * TICK);
    let closed = a.advance(9 * TICK);
    assert!(!closed[0].frame.violation);
    assert!(closed[1].frame.violation && closed[1].frame.episode_start);
    assert_eq!(closed[1].frame.culprit.as_deref(), Some("c"));
}

fn span(trace: u8, id: u8, parent: u8, kind: i32, name: &str, start_ms: u64, end_ms: u64) -> Span {
    Span {
        trace_id: vec![trace; 16],
        span_id: vec![id; 8],
        parent_span_id: if parent == 0 { vec![] } else { vec![parent; 8] },
        name: name.into(),
        kind,
        start_time_unix_nano: start_ms * 1_000_000,
        end_time_unix_nano: end_ms * 1_000_000,
        ..Default::default()
    }
}

fn rs(service: &str, spans: Vec<Span>) -> ResourceSpans {
    ResourceSpans {
        resource: Some(Resource {
            attributes: vec![KeyValue {
                key: "service.name".into(),
                value: Some(AnyValue {
                    value: Some(Value::StringValue(service.into())),
                }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        scope_spans: vec![ScopeSpans {
            spans,
            ..Default::default()
        }],
        ..Default::default()
    }
}

#[test]
fn spans_derive_windows_graph_and_critical_path() {
    let mut a = Aggregator::new(cfg(vec![]));
    // tick 10 = 1000..1100 ms. fe (1000..1090) -> client (1005..1085) -> c server (1006..1084).
    let req = ExportTraceServiceRequest {
        resource_spans: vec![
            rs(
                "fe",
                vec![
                    span(1, 1, 0, 2, "GET /home", 1000, 1090),
                    span(1, 2, 1, 3, "call c", 1005, 1085),
                ],
            ),
            rs("c", vec![span(1, 3, 2, 2, "GET /c", 1006, 1084)]),
        ],
    };
    let b = otlp::decode(Bytes::from(req.encode_to_vec())).unwrap();
    a.on_spans(&b, 1000 * 1_000_000);
    let closed = a.advance(1300 * 1_000_000);
    let c10 = closed.iter().find(|c| c.frame.tick == 10).unwrap();
    let fe = c10.windows.iter().find(|w| w.service == "fe").unwrap();
    assert_eq!(fe.source, "spans");
    assert_eq!(fe.arrivals, 1);
    let self_p50 = fe.features[col("self_latency_p50_ms")].unwrap();
    assert!(
        (9.0..=11.0).contains(&self_p50),
        "fe self time ~10ms, got {self_p50}"
    );
    // Traces finalize after 1 s idle: then the graph has fe -> c and c is credited.
    let closed = a.advance(2500 * 1_000_000);
    assert!(!closed.is_empty());
    let edges = a.edges();
    assert_eq!(edges.len(), 1);
    assert_eq!(
        (edges[0].caller.as_str(), edges[0].callee.as_str()),
        ("fe", "c")
    );
    let last = a.advance(2600 * 1_000_000);
    let f = &last.last().unwrap().frame;
    assert_eq!(f.edges.len(), 1);
}

#[test]
fn service_limit_is_enforced() {
    let mut a = Aggregator::new(cfg(vec![]));
    for i in 0..20 {
        a.on_windows(&window(&format!("s{i}"), 1, "GET /", &[1], 0.0), None, TICK);
    }
    assert_eq!(a.services().len(), 8);
    assert_eq!(a.drops().service_limit, 12);
}

proptest! {
    // No window is lost or double-counted at tick edges, whatever the arrival order.
    #[test]
    fn every_window_counted_once(ticks in proptest::collection::vec(0u64..20, 1..100)) {
        let mut a = Aggregator::new(cfg(vec![]));
        for t in &ticks {
            a.on_windows(&window("s", *t, "GET /", &[1], 0.0), None, 0);
        }
        let closed = a.advance(100 * TICK);
        let total: u64 = closed.iter().flat_map(|c| c.windows.iter()).map(|w| w.arrivals).sum();
        prop_assert_eq!(total, ticks.len() as u64);
        prop_assert_eq!(a.drops().late, 0);
    }
}

#[test]
fn a_tick_closes_early_once_every_active_process_posted_it() {
    let mut a = Aggregator::new(early_cfg());
    let ms = 1_000_000;
    // Ticks 10 and 11 from two processes.
    for t in [10, 11] {
        post(&mut a, "a", 1, t, (t + 1) * TICK + ms);
        post(&mut a, "b", 2, t, (t + 1) * TICK + ms);
    }
    // Both ended and fully reported: they close before their watermarks (10's passes at 13).
    assert!(a.early_ready(12 * TICK + 2 * ms));
    assert_eq!(ticks(&a.advance(12 * TICK + 2 * ms)), vec![10, 11]);
    // Tick 12: only a has posted; it waits for b.
    post(&mut a, "a", 1, 12, 13 * TICK + ms);
    assert!(!a.early_ready(13 * TICK + ms));
    assert!(a.advance(13 * TICK + ms).is_empty());
    post(&mut a, "b", 2, 12, 13 * TICK + 2 * ms);
    assert!(a.early_ready(13 * TICK + 2 * ms));
    let closed = a.advance(13 * TICK + 2 * ms);
    assert_eq!(ticks(&closed), vec![12]);
    assert_eq!(
        closed[0].windows.len(),
        2,
        "both windows are in the early frame"
    );
    // A tick that has not ended never closes early, even when reported.
    post(&mut a, "a", 1, 13, 13 * TICK + 3 * ms);
    post(&mut a, "b", 2, 13, 13 * TICK + 3 * ms);
    assert!(!a.early_ready(13 * TICK + 50 * ms));
    assert!(a.advance(13 * TICK + 50 * ms).is_empty());
    assert_eq!(ticks(&a.advance(14 * TICK)), vec![13]);
    assert_eq!(a.drops().late, 0);
}

#[test]
fn the_first_ticks_close_early_too() {
    let mut a = Aggregator::new(early_cfg());
    // The very first tick seen is 10; it is fully reported at 11.01, long before its watermark.
    post(&mut a, "a", 1, 10, 11 * TICK);
    assert!(a.early_ready(11 * TICK + 1));
    assert_eq!(ticks(&a.advance(11 * TICK + 1)), vec![10]);
}

#[test]
fn every_process_of_a_service_counts_and_silent_ones_expire() {
    let mut a = Aggregator::new(early_cfg());
    // Two replicas of a (pids 1 and 3).
    for t in [10, 11] {
        post(&mut a, "a", 1, t, (t + 1) * TICK);
        post(&mut a, "a", 3, t, (t + 1) * TICK);
    }
    assert_eq!(ticks(&a.advance(13 * TICK)), vec![10, 11]);
    post(&mut a, "a", 1, 12, 13 * TICK + 1);
    assert!(
        !a.early_ready(13 * TICK + 1),
        "replica 3 has not posted tick 12"
    );
    // Replica 3 is gone. Tick t closes at its own end only when early; ticks up to 21 wait for
    // replica 3 (silent since 11, active for `active_ticks` = 10 more), so 21 closes on its
    // watermark at the end of 23, and 22 and 23 close early with it.
    let mut early_at = None;
    for t in 12..40 {
        post(&mut a, "a", 1, t, (t + 1) * TICK + 1);
        if ticks(&a.advance((t + 1) * TICK + 1)).contains(&t) {
            early_at = Some(t);
            break;
        }
    }
    assert_eq!(early_at, Some(23));
}

#[test]
fn a_span_only_service_keeps_the_watermark() {
    let mut a = Aggregator::new(early_cfg());
    let ms = 1_000_000;
    for t in [10, 11] {
        post(&mut a, "a", 1, t, (t + 1) * TICK + ms);
    }
    assert_eq!(ticks(&a.advance(13 * TICK)), vec![10, 11]);
    // "s" sends only OTLP spans (tick 12 = 1200..1300 ms).
    let req = ExportTraceServiceRequest {
        resource_spans: vec![rs("s", vec![span(9, 1, 0, 2, "GET /s", 1210, 1220)])],
    };
    let b = otlp::decode(Bytes::from(req.encode_to_vec())).unwrap();
    a.on_spans(&b, 1250 * ms);
    post(&mut a, "a", 1, 12, 13 * TICK + ms);
    assert!(!a.early_ready(13 * TICK + ms));
    assert!(a.advance(13 * TICK + ms).is_empty());
    let closed = a.advance(15 * TICK);
    assert_eq!(ticks(&closed), vec![12]);
    assert!(closed[0].windows.iter().any(|w| w.service == "s"));
}

#[test]
fn early_close_off_waits_for_the_watermark() {
    let mut a = Aggregator::new(cfg(vec![]));
    for t in [10, 11, 12] {
        post(&mut a, "a", 1, t, (t + 1) * TICK);
    }
    assert_eq!(ticks(&a.advance(13 * TICK)), vec![10]);
    assert!(!a.early_ready(13 * TICK + 1));
    assert!(a.advance(13 * TICK + 1).is_empty());
}

/// Posts one window of `service`'s process `pid` for `tick` carrying SDK counters.
fn post_counters(a: &mut Aggregator, service: &str, pid: u32, tick: u64, c: SdkCounters) {
    let mut b = window(service, tick, "GET /", &[5], 0.0);
    b.pid = pid;
    b.sdk = Some(c);
    a.on_windows(&b, None, tick * TICK);
}

#[test]
fn sdk_counters_sum_each_process_newest_report() {
    let mut a = Aggregator::new(cfg(vec![]));
    let c = |recorded, backlog| SdkCounters {
        recorded,
        exported: recorded / 2,
        dropped_window_backlog: backlog,
        ..Default::default()
    };
    post_counters(&mut a, "a", 1, 10, c(100, 1));
    post_counters(&mut a, "a", 2, 10, c(40, 0));
    post_counters(&mut a, "a", 1, 11, c(130, 3));
    // A retried batch from before arrives late: counters never move back.
    post_counters(&mut a, "a", 1, 10, c(120, 2));
    // A process that sends no counters (an older SDK) is not a service with counters.
    post(&mut a, "b", 7, 11, 11 * TICK);
    let got = a.sdk_counters();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0, "a");
    assert_eq!(got[0].1.recorded, 170);
    assert_eq!(got[0].1.exported, 65 + 20);
    assert_eq!(got[0].1.dropped_window_backlog, 3);
}

#[test]
fn sdk_counters_saturate_and_forget_processes_gone_past_the_ttl() {
    let mut a = Aggregator::new(cfg(vec![]));
    let big = SdkCounters {
        recorded: u64::MAX - 1,
        ..Default::default()
    };
    post_counters(&mut a, "a", 1, 10, big.clone());
    post_counters(&mut a, "a", 2, 10, big);
    assert_eq!(a.sdk_counters()[0].1.recorded, u64::MAX);
    // Pid 3 starts long after 1 and 2 went silent (ttl 100 ticks): only its counters remain.
    let fresh = SdkCounters {
        recorded: 5,
        ..Default::default()
    };
    post_counters(&mut a, "a", 3, 500, fresh);
    assert_eq!(a.sdk_counters()[0].1.recorded, 5);
}

#[test]
fn a_window_from_the_future_is_dropped_and_does_not_keep_its_service_active() {
    let mut a = Aggregator::new(cfg(vec![]));
    a.on_windows(&window("a", 10, "GET /", &[5], 0.0), None, 10 * TICK);
    // An hour ahead (a clock stepped on the sender's host).
    a.on_windows(&window("a", 36_010, "GET /", &[5], 0.0), None, 10 * TICK);
    assert_eq!(a.drops().future, 1);
    let last = a.services().into_iter().find(|s| s.0 == "a").map(|s| s.3);
    assert_eq!(last, Some(10));
    // Silent past its ttl (100 ticks), the service leaves the frames.
    let closed = a.advance(300 * TICK);
    let newest = closed.last().unwrap();
    assert!(
        newest.frame.services.is_empty(),
        "{:?}",
        newest.frame.services
    );
}

#[test]
fn counts_from_the_network_saturate_instead_of_overflowing() {
    let mut a = Aggregator::new(cfg(vec![]));
    let mut b = window("a", 10, "GET /", &[5], 0.0);
    b.windows[0].arrivals = u64::MAX;
    b.windows[0].errors = u64::MAX;
    a.on_windows(&b, None, 10 * TICK);
    b.pid = 2;
    a.on_windows(&b, None, 10 * TICK);
    let closed = a.advance(13 * TICK);
    assert_eq!(closed[0].windows[0].arrivals, u64::MAX);
    assert_eq!(closed[0].windows[0].errors, u64::MAX);
}

#[test]
fn processes_past_the_cap_replace_the_stalest() {
    let mut a = Aggregator::new(cfg(vec![]));
    let one = SdkCounters {
        recorded: 1,
        ..Default::default()
    };
    for pid in 0..(MAX_INSTANCES as u32 + 44) {
        post_counters(&mut a, "a", pid, 10 + u64::from(pid) / 100, one.clone());
    }
    let got = a.sdk_counters();
    assert_eq!(got[0].1.recorded, MAX_INSTANCES as u64);
}

#[test]
fn node_samples_track_at_most_the_service_limit_of_unknown_services() {
    let mut a = Aggregator::new(cfg(vec![]));
    post(&mut a, "known", 1, 10, 10 * TICK);
    let sample = NodeSample {
        node: "n1".into(),
        services: (0..1000)
            .map(|i| (format!("made-up-{i}"), ServiceHw::default()))
            .chain(std::iter::once(("known".to_owned(), ServiceHw::default())))
            .collect(),
        ..Default::default()
    };
    a.on_node(sample);
    // max_services is 8 in these tests; a known service is always kept.
    assert_eq!(a.service_hw.len(), 9);
    assert!(a.service_hw.contains_key("known"));
}

#[test]
fn close_all_closes_every_open_tick_before_its_watermark() {
    let mut a = Aggregator::new(cfg(vec![]));
    a.on_windows(&window("a", 10, "GET /", &[5], 0.0), None, 10 * TICK);
    a.on_windows(&window("a", 11, "GET /", &[5, 5], 0.0), None, 11 * TICK);
    assert!(a.advance(11 * TICK).is_empty(), "before the watermark");
    let closed = a.close_all();
    assert_eq!(ticks(&closed), vec![10, 11]);
    assert_eq!(closed[1].windows[0].arrivals, 2);
    assert!(a.close_all().is_empty(), "nothing left open");
}
