// ingest: the collector's span path.
//
// Latest results (2-vCPU AMD EPYC VM shared with two other builds; rustc 1.95, bench profile).
// Absolute rates follow the machine's load; the ratio to prost in the same run is stable (~2.2x).
//   load avg 4-6:  decode+derive 1.47-1.50 M/s per core (decode alone 1.8-2.0 M, prost 0.66 M),
//                  stored 390-408 K/s
//   load avg 8-9:  decode+derive 0.52 M (prost 0.23 M), stored 189 K/s
//   flood (30 s, memory limit 256 MiB): offered 0.55-0.63 M spans/s (the client shares the two
//   cores and cannot reach 10x), 33-43 K requests answered 503 + Retry-After, ~1 K client-side
//   failures (timeouts/resets), max RSS 167-183 MiB, accepted_lost 0
//
// Figures:
// - ingest.spans_per_sec_per_core: OTLP/protobuf decode (seer's zero-copy, schema-checking
//   reader) + window derivation and trace assembly in the aggregator, on one thread. Baseline in
//   the same run: decoding the same bodies with prost into opentelemetry-proto types (what a
//   collector built on the generated types pays before doing anything).
// - ingest.stored_spans_per_sec: the same plus the store append through the real writer thread
//   (redb, group commit, fsync per commit).
// - flood: an in-process collector (memory limit 256 MiB) offered 10x the stored rate for 30 s
//   over loopback HTTP: max RSS, the 503 share, and accepted_lost = spans acknowledged with 200
//   that are not in the store afterwards (must be 0). SEER_FLOOD_SECS shortens it.
//
// Requests are 512 spans (the OTel BatchSpanProcessor default), from 4 services, each span with
// 6 attributes, traces of 4 spans (server -> client -> server -> client).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;
use seer_collector::config::Config;
use seer_collector::ingest::Pending;
use seer_collector::ingest::budget::Budget;
use seer_collector::internal_events::Metrics;
use seer_collector::store::Store;
use seer_collector::store::writer::{self, RetentionPolicy};
use seer_collector::window::{Aggregator, AggregatorConfig};

const SPANS_PER_REQUEST: usize = 512;

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

fn s(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

fn i(k: &str, v: i64) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(Value::IntValue(v)),
        }),
        ..Default::default()
    }
}

/// One OTLP request of `SPANS_PER_REQUEST` spans; `seed` makes trace ids unique.
fn request(seed: u64, t0: u64) -> ExportTraceServiceRequest {
    let services = ["frontend", "compose", "user", "storage"];
    let mut per_service: Vec<Vec<Span>> = vec![Vec::new(); 4];
    for n in 0..(SPANS_PER_REQUEST / 4) as u64 {
        let mut trace = [0u8; 16];
        trace[..8].copy_from_slice(&seed.to_be_bytes());
        trace[8..].copy_from_slice(&(n + 1).to_be_bytes());
        let start = t0 + n * 10_000;
        for hop in 0..4u64 {
            let kind = if hop % 2 == 0 { 2 } else { 3 };
            let svc = (hop / 2 * 2 + hop % 2) as usize % 4;
            per_service[svc].push(Span {
                trace_id: trace.to_vec(),
                span_id: (n * 4 + hop + 1).to_be_bytes().to_vec(),
                parent_span_id: if hop == 0 {
                    vec![]
                } else {
                    (n * 4 + hop).to_be_bytes().to_vec()
                },
                name: if kind == 2 {
                    "POST /compose".into()
                } else {
                    "POST /store".into()
                },
                kind,
                start_time_unix_nano: start + hop * 100_000,
                end_time_unix_nano: start + 5_000_000 - hop * 1_000_000,
                attributes: vec![
                    s("http.request.method", "POST"),
                    s("url.path", "/compose"),
                    s("http.route", "/compose"),
                    i("http.response.status_code", 200),
                    s("server.address", "compose.local"),
                    s("network.protocol.version", "1.1"),
                ],
                status: Some(Status {
                    code: 0,
                    message: String::new(),
                }),
                ..Default::default()
            });
        }
    }
    ExportTraceServiceRequest {
        resource_spans: per_service
            .into_iter()
            .enumerate()
            .map(|(k, spans)| ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![
                        s("service.name", services[k]),
                        s("host.name", "node-1"),
                        s("telemetry.sdk.language", "rust"),
                        s("telemetry.sdk.name", "opentelemetry"),
                    ],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect(),
    }
}

fn bodies(n: u64, t0: u64) -> Vec<Bytes> {
    (0..n)
        .map(|k| Bytes::from(request(k, t0).encode_to_vec()))
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    seer_benches::median(&mut v)
}

fn agg() -> Aggregator {
    Aggregator::new(AggregatorConfig::from_config(&Config::default()))
}

/// Spans per second through decode + derivation on this thread.
fn decode_and_derive(bodies: &[Bytes]) -> f64 {
    let mut a = agg();
    let started = Instant::now();
    let mut spans = 0usize;
    for (k, b) in bodies.iter().enumerate() {
        let batch = seer_collector::ingest::otlp::decode(b.clone()).unwrap();
        spans += batch.spans.len();
        a.on_spans(&batch, now_ns());
        if k % 16 == 0 {
            std::hint::black_box(a.advance(now_ns()));
        }
    }
    spans as f64 / started.elapsed().as_secs_f64()
}

/// Seer's decoder alone.
fn seer_decode(bodies: &[Bytes]) -> f64 {
    let started = Instant::now();
    let mut spans = 0usize;
    for b in bodies {
        spans += std::hint::black_box(seer_collector::ingest::otlp::decode(b.clone()).unwrap())
            .spans
            .len();
    }
    spans as f64 / started.elapsed().as_secs_f64()
}

/// Baseline: prost decode into opentelemetry-proto types only.
fn prost_decode(bodies: &[Bytes]) -> f64 {
    let started = Instant::now();
    let mut spans = 0usize;
    for b in bodies {
        let r = ExportTraceServiceRequest::decode(b.as_ref()).unwrap();
        spans += r
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum::<usize>();
        std::hint::black_box(&r);
    }
    spans as f64 / started.elapsed().as_secs_f64()
}

/// Spans per second through decode + derivation + the store writer (group commit).
fn decode_derive_store(bodies: &[Bytes], dir: &std::path::Path) -> f64 {
    let metrics = Arc::new(Metrics::new());
    let store = Arc::new(Store::open(dir, 64 << 20).unwrap());
    let (handle, join) = writer::spawn(
        Arc::clone(&store),
        1024,
        RetentionPolicy {
            max_age_ns: u64::MAX,
            max_bytes: u64::MAX,
            tick_ns: 100_000_000,
            every: Duration::from_secs(3600),
        },
        Arc::clone(&metrics),
    )
    .unwrap();
    let budget = Budget::new(usize::MAX / 2, Arc::clone(&metrics));
    let mut a = agg();
    let started = Instant::now();
    let mut spans = 0usize;
    let mut acks = std::collections::VecDeque::new();
    for b in bodies {
        let batch = seer_collector::ingest::otlp::decode(b.clone()).unwrap();
        spans += batch.spans.len();
        a.on_spans(&batch, now_ns());
        let pending = Arc::new(Pending {
            batch,
            received_unix_ns: now_ns(),
            reservation: budget.reserve_empty(),
        });
        loop {
            match handle.try_spans(Arc::clone(&pending)) {
                Some(ack) => {
                    acks.push_back(ack);
                    break;
                }
                None => {
                    let ack: writer::Ack =
                        acks.pop_front().expect("queue full implies pending acks");
                    assert!(ack.blocking_recv().unwrap());
                }
            }
        }
        // Keep at most 64 requests in flight, as concurrent HTTP clients would.
        while acks.len() > 64 {
            assert!(acks.pop_front().unwrap().blocking_recv().unwrap());
        }
    }
    for ack in acks {
        assert!(ack.blocking_recv().unwrap());
    }
    let rate = spans as f64 / started.elapsed().as_secs_f64();
    assert_eq!(store.stats().unwrap().spans as usize, spans);
    drop(handle);
    join.join().unwrap();
    rate
}

struct Flood {
    max_rss_mb: f64,
    memory_limit_mb: u64,
    offered_spans: u64,
    accepted_spans: u64,
    rejected_503: u64,
    other: u64,
    accepted_lost: u64,
    secs: f64,
}

fn rss_of(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

const FLOOD_MEMORY_MB: u64 = 256;

/// The collector side of the flood, in a child process (so its RSS is the collector's alone):
/// prints its address, runs until stdin closes, then shuts down cleanly.
fn flood_server(dir: &std::path::Path) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let cfg = Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.to_owned(),
            memory_limit_mb: FLOOD_MEMORY_MB,
            // Keep everything: accepted_lost must not count retention's deletions.
            retention: seer_collector::config::RetentionConfig {
                max_age_secs: 86_400,
                max_bytes: u64::MAX,
            },
            sampler: false,
            ..Config::default()
        };
        let running = seer_collector::Collector::new(cfg).start().await.unwrap();
        println!("{}", running.local_addr());
        tokio::task::spawn_blocking(|| {
            let mut sink = String::new();
            let _ = std::io::Read::read_to_string(&mut std::io::stdin(), &mut sink);
        })
        .await
        .unwrap();
        running.shutdown().await.unwrap();
    });
}

/// Offers `target_spans_per_sec` open-loop (a new request every period, whatever the replies)
/// for `secs`, with at most 4096 requests in flight on the client side.
fn flood(target_spans_per_sec: f64, secs: u64) -> Flood {
    use std::io::BufRead;
    let dir = tempfile_dir();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .env("SEER_FLOOD_SERVER", &dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line.trim().to_owned();
    let pid = child.id();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (f, _) = rt.block_on(async move {
        let url = format!("http://{addr}/v1/traces");
        let pool: Arc<Vec<Bytes>> = Arc::new(bodies(64, now_ns()));
        let counters = Arc::new([
            AtomicU64::new(0),
            AtomicU64::new(0),
            AtomicU64::new(0),
            AtomicU64::new(0),
        ]);
        let in_flight = Arc::new(tokio::sync::Semaphore::new(4096));
        let client = seer_collector::agent::client();
        let period =
            Duration::from_secs_f64(SPANS_PER_REQUEST as f64 / target_spans_per_sec.max(1.0));
        let started = Instant::now();
        let stop_at = tokio::time::Instant::now() + Duration::from_secs(secs);
        let mut next = tokio::time::Instant::now();
        let mut k = 0usize;
        let mut max_rss = rss_of(pid);
        let mut last_sample = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        while tokio::time::Instant::now() < stop_at {
            // Catch up in bursts when behind (open loop), yielding between bursts.
            while next <= tokio::time::Instant::now() {
                next += period;
                let Ok(permit) = Arc::clone(&in_flight).try_acquire_owned() else {
                    break;
                };
                let (body, url, client, counters) = (
                    pool[k % pool.len()].clone(),
                    url.clone(),
                    client.clone(),
                    Arc::clone(&counters),
                );
                k += 1;
                counters[0].fetch_add(SPANS_PER_REQUEST as u64, Ordering::Relaxed);
                tasks.spawn(async move {
                    match seer_collector::agent::post(
                        &client,
                        &url,
                        "application/x-protobuf",
                        None,
                        body,
                        Duration::from_secs(30),
                    )
                    .await
                    {
                        Ok((s, _)) if s == 200 => {
                            counters[1].fetch_add(SPANS_PER_REQUEST as u64, Ordering::Relaxed)
                        }
                        Ok((s, _)) if s == 503 || s == 429 => {
                            counters[2].fetch_add(1, Ordering::Relaxed)
                        }
                        _ => counters[3].fetch_add(1, Ordering::Relaxed),
                    };
                    drop(permit);
                });
            }
            while tasks.try_join_next().is_some() {}
            if last_sample.elapsed() >= Duration::from_millis(50) {
                max_rss = max_rss.max(rss_of(pid));
                last_sample = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        while tasks.join_next().await.is_some() {
            max_rss = max_rss.max(rss_of(pid));
        }
        let secs = started.elapsed().as_secs_f64();
        (
            Flood {
                max_rss_mb: max_rss,
                memory_limit_mb: FLOOD_MEMORY_MB,
                offered_spans: counters[0].load(Ordering::Relaxed),
                accepted_spans: counters[1].load(Ordering::Relaxed),
                rejected_503: counters[2].load(Ordering::Relaxed),
                other: counters[3].load(Ordering::Relaxed),
                accepted_lost: 0,
                secs,
            },
            (),
        )
    });
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success(), "collector child failed");
    let store = Store::open(&dir, 8 << 20).unwrap();
    let stored = store.stats().unwrap().spans;
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
    Flood {
        accepted_lost: f.accepted_spans.saturating_sub(stored),
        ..f
    }
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("seer-bench-{}-{}", std::process::id(), now_ns()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn main() {
    if let Some(dir) = std::env::var_os("SEER_FLOOD_SERVER") {
        flood_server(std::path::Path::new(&dir));
        return;
    }
    // `cargo bench` passes --bench; cargo test --benches runs us with no flag: keep that quick.
    let quick = !std::env::args().any(|a| a == "--bench");
    let t0 = now_ns();
    let n = if quick { 8 } else { 400 };
    let data = bodies(n, t0);
    let rounds = if quick { 1 } else { 5 };
    let mut ours = Vec::new();
    let mut base = Vec::new();
    let mut decode_only = Vec::new();
    for _ in 0..rounds {
        ours.push(decode_and_derive(&data));
        base.push(prost_decode(&data));
        decode_only.push(seer_decode(&data));
    }
    let decode_only = median(decode_only);
    let mut stored = Vec::new();
    for _ in 0..rounds.min(3) {
        let dir = tempfile_dir();
        stored.push(decode_derive_store(&data, &dir));
        let _ = std::fs::remove_dir_all(&dir);
    }
    let per_core = median(ours);
    let prost = median(base);
    let stored = median(stored);
    if std::env::var("SEER_BENCH_CPU_ONLY").is_ok() {
        println!(
            "decode+derive {per_core:.0}/s, decode only {decode_only:.0}/s, prost {prost:.0}/s, stored {stored:.0}/s"
        );
        return;
    }
    let secs: u64 = std::env::var("SEER_FLOOD_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 2 } else { 30 });
    let f = flood(stored * 10.0, secs);
    let report = serde_json::json!({
        "ingest": {
            "spans_per_sec_per_core": per_core.round(),
            "stored_spans_per_sec": stored.round(),
            "decode_only_spans_per_sec": decode_only.round(),
            "baseline_prost_decode_spans_per_sec": prost.round(),
            "ratio_vs_prost_decode": (per_core / prost * 100.0).round() / 100.0,
            "spans_per_request": SPANS_PER_REQUEST,
            "targets": {"spans_per_sec_per_core": 1_000_000, "stored_spans_per_sec": 300_000},
        },
        "flood": {
            "target_offered_spans_per_sec": (stored * 10.0).round(),
            "achieved_offered_spans_per_sec": (f.offered_spans as f64 / f.secs).round(),
            "seconds": (f.secs * 10.0).round() / 10.0,
            "offered_spans": f.offered_spans,
            "accepted_spans": f.accepted_spans,
            "rejected_requests_503": f.rejected_503,
            "failed_requests_other": f.other,
            "max_rss_mb": (f.max_rss_mb * 10.0).round() / 10.0,
            "memory_limit_mb": f.memory_limit_mb,
            "accepted_lost": f.accepted_lost,
        }
    });
    if quick {
        println!("{report}");
    } else {
        seer_benches::report("ingest", &report).unwrap();
    }
    assert_eq!(f.accepted_lost, 0, "spans acknowledged with 200 were lost");
}
