//! `seer-collector replay` end to end on a small store written here: three services, a CPU fault
//! on one of them (its cgroup throttled, its queue a little higher), and the run's ground truth
//! in a `run.json` like the harness writes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use seer_collector::hw::{NODE_FEATURES, NodeSample, ServiceHw};
use seer_collector::predict::{FEATURES, ReactivePredictor};
use seer_collector::replay::{self, Recorded, ReplayConfig, Truth};
use seer_collector::store::{Store, WriteBatch};
use seer_collector::window::ServiceWindow;

const TICK_NS: u64 = 100_000_000;
const FIRST: u64 = 17_000_000_000;
const TICKS: u64 = 600;
/// Fault on `b` from tick 300 to 400 (relative to FIRST).
const FAULT: (u64, u64) = (300, 400);

fn faulty(t: u64) -> bool {
    (FAULT.0..FAULT.1).contains(&t)
}

fn window(service: &str, tick: u64) -> ServiceWindow {
    let t = tick - FIRST;
    let noise = ((t * 7 + service.len() as u64 * 13) % 5) as f32 * 0.05;
    let hit = service == "b" && faulty(t);
    let features = FEATURES
        .iter()
        .map(|f| match *f {
            "queue_depth_mean" => Some(noise + if hit { 0.4 } else { 0.1 }),
            "self_latency_p99_ms" => Some(2.0 + noise),
            "throttled_ms_per_s" => Some(if hit { 300.0 } else { noise }),
            "runq_wait_ms_per_s" => Some(if hit { 150.0 } else { 1.0 + noise }),
            "cpu_used_cores" => Some(0.2),
            _ => None,
        })
        .collect();
    ServiceWindow {
        service: service.into(),
        tick,
        tick_start_unix_ns: tick * TICK_NS,
        node: Some("n1".into()),
        source: "sdk".into(),
        arrivals: 10,
        completions: 10,
        errors: 0,
        shed: 0,
        latency_p50_ms: Some(2.0),
        latency_p90_ms: Some(3.0),
        latency_p99_ms: Some(4.0),
        features,
        endpoints: vec![],
    }
}

fn write_store(dir: &std::path::Path) {
    let store = Store::open(dir, 4 << 20).unwrap();
    let mut batch = WriteBatch::default();
    for tick in FIRST..FIRST + TICKS {
        for s in ["a", "b", "c"] {
            batch.windows.push(window(s, tick));
        }
        let t = tick - FIRST;
        batch.nodes.push(NodeSample {
            node: "n1".into(),
            unix_ns: tick * TICK_NS + TICK_NS / 2,
            features: NODE_FEATURES
                .iter()
                .map(|f| (*f == "psi_cpu_some").then_some(if faulty(t) { 0.3 } else { 0.01 }))
                .collect(),
            services: ["a", "b", "c"]
                .iter()
                .map(|s| {
                    (
                        (*s).to_string(),
                        ServiceHw {
                            throttled_ms_per_s: Some(if *s == "b" && faulty(t) {
                                300.0
                            } else {
                                0.0
                            }),
                            ..Default::default()
                        },
                    )
                })
                .collect(),
        });
    }
    store.write(&batch).unwrap();
}

fn run_json(path: &std::path::Path) {
    let origin = FIRST * TICK_NS;
    let ticks: Vec<serde_json::Value> = (0..TICKS)
        .map(|t| serde_json::json!({ "window_p_ms": if (FAULT.0 + 20..FAULT.1).contains(&t) { 300.0 } else { 20.0 } }))
        .collect();
    let v = serde_json::json!({
        "tick_ms": 100,
        "qos_target_ms": 100.0,
        "ticks": ticks,
        "faults": [{
            "id": 0, "service": "b", "resource": "cpu", "class": "gradual", "kind": "cpu-hog",
            "start_unix_ns": origin + FAULT.0 * TICK_NS, "end_unix_ns": origin + FAULT.1 * TICK_NS,
            "start_s": FAULT.0 as f64 / 10.0, "end_s": FAULT.1 as f64 / 10.0,
        }],
    });
    std::fs::write(path, serde_json::to_vec(&v).unwrap()).unwrap();
}

#[test]
fn replay_rebuilds_frames_and_names_the_throttled_service_ahead() {
    let dir = tempfile::tempdir().unwrap();
    write_store(dir.path());
    let recorded = Recorded::read_dir(dir.path()).unwrap();
    let cfg = ReplayConfig::default();
    let frames = recorded.frames(&cfg);
    assert_eq!(frames.len(), TICKS as usize);
    assert_eq!(frames[0].services, vec!["a", "b", "c"]);
    assert_eq!(frames[0].features.len(), 3 * FEATURES.len());
    assert_eq!(frames[0].nodes.len(), 1);

    let labels = dir.path().join("run.json");
    run_json(&labels);
    let truth = Truth::from_run_json(&labels, cfg.tick_ns).unwrap();
    assert_eq!(truth.faults.len(), 1);
    let records = replay::run(&frames, Box::new(ReactivePredictor::new()), &cfg);
    assert_eq!(records.len(), frames.len());
    let s = replay::score(&records, &truth, cfg.tick_ns, cfg.advice.threshold);
    let f = &s.per_fault[0];
    assert_eq!(f.first_named.as_deref(), Some("b"), "{s:?}");
    assert_eq!(f.violation_tick, Some(20));
    let ttc = f.time_to_culprit_ticks.unwrap();
    assert!(ttc <= 5, "named after {ttc} ticks");
    assert!(f.lead_ticks.unwrap() >= 1);
    assert_eq!(f.resource_named.as_deref(), Some("cpu"));
    assert_eq!(s.resource_accuracy, Some(1.0));
    assert_eq!(s.false_alarms, 0, "{s:?}");
}

#[test]
fn replay_subcommand_prints_scores() {
    let dir = tempfile::tempdir().unwrap();
    write_store(dir.path());
    let labels = dir.path().join("run.json");
    run_json(&labels);
    let out = Command::new(env!("CARGO_BIN_EXE_seer-collector"))
        .args([
            "replay",
            "--predictor",
            "reactive",
            "--per-fault",
            "--data-dir",
        ])
        .arg(dir.path())
        .arg("--labels")
        .arg(&labels)
        .env("SEER_LOG", "error")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["frames"], TICKS);
    assert_eq!(v["replayed"]["culprit_accuracy"], 1.0);
    assert_eq!(v["replayed"]["per_fault"][0]["first_named"], "b");
    // Nothing was predicted live in this store.
    assert_eq!(v["recorded"]["alarms"], 0);
    // Tunables can be tried without a rebuild; a CPU weight of 0 loses the early warning.
    let out = Command::new(env!("CARGO_BIN_EXE_seer-collector"))
        .args([
            "replay",
            "--predictor",
            "reactive",
            "--reactive",
            "cpu_weight = 0.0; decay = 0.5",
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .arg("--labels")
        .arg(&labels)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["reactive"], "cpu_weight = 0.0; decay = 0.5");
}
