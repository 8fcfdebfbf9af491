// ingest: the collector's span path.
//
// Latest results (2-vCPU AMD EPYC VM shared with two other builds; rustc 1.95, bench profile).
// Absolute rates follow the machine's load; the ratio to prost in the same run is stable (~2.2x).
//   load avg 4-6:  decode+derive 1.47-1.50 M/s per core (decode alone 1.8-2.0 M, prost 0.66 M),
//                  stored 390-408 K/s
//   load avg 8-9:  decode+derive 0.52 M (prost 0.23 M), stored 189 K/s
//   flood, collector capped at 0.1 core (cgroup v1 cfs quota), quiet machine (load avg < 1),
//   SEER_FLOOD_SECS=10, two runs: sustainable 51.6 K spans/s under the cap (closed loop),
//   offered 502-516 K spans/s = 10.0x, ~4.8-5.1 K requests answered 429/503, ~4.3 K client-side
//   failures (timeouts/resets while the capped child is throttled), max RSS 146-155 MiB
//   (limit 256), accepted_lost 0. Earlier, uncapped: the client could offer only 0.55-0.63 M
//   spans/s, about 1.5x the stored rate.
//   2026-12-03, quiet machine, full 30 s flood: ingest decode+derive 1.81 M spans/s per core
//   (decode alone 2.26 M, prost 0.97 M: 1.88x), stored 774 K/s; flood: sustainable 43.0 K
//   spans/s under the 0.1-core cap, offered 430 K/s = 10.0x for 30 s, 16.1 K requests answered
//   429/503, 7.8 K client-side failures, 632.8 K spans acknowledged and all of them stored
//   (accepted_lost 0), max RSS 177.8 MiB (limit 256).
//
// Figures:
// - ingest.spans_per_sec_per_core: OTLP/protobuf decode (seer's zero-copy, schema-checking
//   reader) + window derivation and trace assembly in the aggregator, on one thread. Baseline in
//   the same run: decoding the same bodies with prost into opentelemetry-proto types (what a
//   collector built on the generated types pays before doing anything).
// - ingest.stored_spans_per_sec: the same plus the store append through the real writer thread
//   (redb, group commit, fsync per commit).
// - flood: a collector child process (memory limit 256 MiB), in its own CPU-capped cgroup when
//   one can be made, offered 10x its sustainable rate under that cap for 30 s
//   over loopback HTTP: max RSS, the 503 share, and accepted_lost = spans acknowledged with 200
//   that are not in the store afterwards (must be 0). SEER_FLOOD_SECS shortens it.
//
// Requests are 512 spans (the OTel BatchSpanProcessor default), from 4 services, each span with
// 6 attributes, traces of 4 spans (server -> client -> server -> client).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::{Path, PathBuf};
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

/// A CPU allotment for the flood's collector child: a cgroup of its own with a CFS quota, so
/// that its sustainable rate is one the load client (on the same machine) can offer 10x of.
///
/// cgroup v1: a child of this process's group in the `cpu` hierarchy, `cpu.cfs_quota_us` /
/// `cpu.cfs_period_us`. cgroup v2: a sibling of this process's group (v2 lets only leaves hold
/// processes), `cpu.max`. Removed on drop, also when unwinding from a panic: tasks still in it
/// go back to this process's group first.
struct CpuCap {
    dir: PathBuf,
    /// `cgroup.procs` of this process's own group, where leftover tasks go on removal.
    home_procs: PathBuf,
    mechanism: &'static str,
    quota_us: u64,
    period_us: u64,
}

const GROUP_PREFIX: &str = "seer-bench-flood-";

/// `(mount point, root of the mount in the hierarchy)` of the cgroup v1 hierarchy holding the
/// `cpu` controller, or of the cgroup v2 hierarchy (`v2 = true`).
fn cgroup_mount(v2: bool) -> Option<(PathBuf, String)> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        let left: Vec<&str> = left.split(' ').collect();
        let mut right = right.split(' ');
        let (fstype, _source, opts) = (right.next()?, right.next()?, right.next()?);
        let wanted = if v2 {
            fstype == "cgroup2"
        } else {
            fstype == "cgroup" && opts.split(',').any(|o| o == "cpu")
        };
        if !wanted {
            return None;
        }
        Some((PathBuf::from(left.get(4)?), (*left.get(3)?).to_owned()))
    })
}

/// This process's group in the cpu v1 hierarchy (`v2 = false`) or the v2 hierarchy, as a path
/// under the mount.
fn own_cgroup(v2: bool, mount: &Path, mount_root: &str) -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = text.lines().find_map(|l| {
        let mut f = l.splitn(3, ':');
        let (id, controllers, path) = (f.next()?, f.next()?, f.next()?);
        let wanted = if v2 {
            id == "0" && controllers.is_empty()
        } else {
            controllers.split(',').any(|c| c == "cpu")
        };
        wanted.then_some(path)
    })?;
    let rel = path.strip_prefix(mount_root).unwrap_or(path);
    Some(mount.join(rel.trim_start_matches('/')))
}

fn write(path: &Path, value: &str) -> Result<(), String> {
    std::fs::write(path, value).map_err(|e| format!("writing {value:?} to {}: {e}", path.display()))
}

impl CpuCap {
    /// A new group named `seer-bench-flood-<pid>-<ns>` capped at `cores` (e.g. 0.1) over a
    /// 100 ms period, or why none could be made.
    fn create(cores: f64) -> Result<Self, String> {
        let period_us = 100_000u64;
        let quota_us = ((cores * period_us as f64).round() as u64).max(1_000);
        let name = format!("{GROUP_PREFIX}{}-{}", std::process::id(), now_ns());
        let mut why = Vec::new();
        // cgroup v1 cpu controller.
        match cgroup_mount(false) {
            Some((mount, root)) => match own_cgroup(false, &mount, &root) {
                Some(home) => {
                    remove_stale_groups(&home);
                    let dir = home.join(&name);
                    match std::fs::create_dir(&dir) {
                        Ok(()) => {
                            let cap = Self {
                                dir,
                                home_procs: home.join("cgroup.procs"),
                                mechanism: "cgroup v1 cpu controller (cfs quota)",
                                quota_us,
                                period_us,
                            };
                            // On error the drop removes the group.
                            write(&cap.dir.join("cpu.cfs_period_us"), &period_us.to_string())?;
                            write(&cap.dir.join("cpu.cfs_quota_us"), &quota_us.to_string())?;
                            return Ok(cap);
                        }
                        Err(e) => why.push(format!("v1: mkdir {}: {e}", dir.display())),
                    }
                }
                None => why.push("v1: own group not found in /proc/self/cgroup".to_owned()),
            },
            None => why.push("v1: no cpu hierarchy mounted".to_owned()),
        }
        // cgroup v2 with the cpu controller enabled for our parent's children.
        match cgroup_mount(true) {
            Some((mount, root)) => match own_cgroup(true, &mount, &root) {
                Some(own) => {
                    let base = if own == mount {
                        own.clone()
                    } else {
                        own.parent().map_or_else(|| own.clone(), Path::to_path_buf)
                    };
                    let enabled = |p: &Path| {
                        std::fs::read_to_string(p.join("cgroup.subtree_control"))
                            .is_ok_and(|s| s.split_whitespace().any(|c| c == "cpu"))
                    };
                    if !enabled(&base) {
                        // Only possible where `base` holds no processes itself (or is the root).
                        let _ = std::fs::write(base.join("cgroup.subtree_control"), "+cpu");
                    }
                    if enabled(&base) {
                        remove_stale_groups(&base);
                        let dir = base.join(&name);
                        match std::fs::create_dir(&dir) {
                            Ok(()) => {
                                let cap = Self {
                                    dir,
                                    home_procs: own.join("cgroup.procs"),
                                    mechanism: "cgroup v2 cpu controller (cpu.max)",
                                    quota_us,
                                    period_us,
                                };
                                write(
                                    &cap.dir.join("cpu.max"),
                                    &format!("{quota_us} {period_us}"),
                                )?;
                                return Ok(cap);
                            }
                            Err(e) => why.push(format!("v2: mkdir {}: {e}", dir.display())),
                        }
                    } else {
                        why.push(format!(
                            "v2: cpu controller not enabled in {}/cgroup.subtree_control",
                            base.display()
                        ));
                    }
                }
                None => why.push("v2: own group not found in /proc/self/cgroup".to_owned()),
            },
            None => why.push("v2: no cgroup2 hierarchy mounted".to_owned()),
        }
        Err(why.join("; "))
    }

    /// Moves process `pid` (all its threads) into the group.
    fn add(&self, pid: u32) -> Result<(), String> {
        write(&self.dir.join("cgroup.procs"), &pid.to_string())
    }

    /// `(periods, throttled periods)` from the group's `cpu.stat`.
    fn throttling(&self) -> Option<(u64, u64)> {
        let stat = std::fs::read_to_string(self.dir.join("cpu.stat")).ok()?;
        let get = |k: &str| {
            stat.lines()
                .find_map(|l| l.strip_prefix(k)?.trim().parse::<u64>().ok())
        };
        Some((get("nr_periods ")?, get("nr_throttled ")?))
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "mechanism": self.mechanism,
            "group": self.dir.file_name().map(|n| n.to_string_lossy().into_owned()),
            "quota_us": self.quota_us,
            "period_us": self.period_us,
            "cores": self.quota_us as f64 / self.period_us as f64,
        })
    }
}

impl Drop for CpuCap {
    fn drop(&mut self) {
        // A group still holding tasks cannot be removed: send them home first.
        for _ in 0..40 {
            if let Ok(pids) = std::fs::read_to_string(self.dir.join("cgroup.procs")) {
                for pid in pids.split_whitespace() {
                    let _ = std::fs::write(&self.home_procs, pid);
                }
            }
            if std::fs::remove_dir(&self.dir).is_ok() || !self.dir.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!(
            "ingest bench: could not remove cgroup {}",
            self.dir.display()
        );
    }
}

/// Removes flood groups left by runs that were killed (their process is gone); best effort.
fn remove_stale_groups(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(GROUP_PREFIX)
            .and_then(|rest| rest.split('-').next())
        else {
            continue;
        };
        if !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir(e.path());
        }
    }
}

/// Kills the collector child if the bench unwinds before shutting it down cleanly.
struct ChildGuard(std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        // After a clean `wait` this is a no-op.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
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

/// CPU seconds (user + system, all threads) process `pid` has used.
fn cpu_secs_of(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // Fields after the command name: state is field 3, utime 14, stime 15.
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
            // USER_HZ is 100 on every Linux ABI.
            Some(ticks as f64 / 100.0)
        })
        .unwrap_or(0.0)
}

const FLOOD_MEMORY_MB: u64 = 256;

/// Requests in flight in the closed-loop phase that measures the sustainable rate.
const PROBE_CONCURRENCY: usize = 16;

/// Most requests in flight on the client side during the open-loop flood.
const FLOOD_IN_FLIGHT: usize = 4096;

/// The collector side of the flood, in a child process (so its RSS is the collector's alone,
/// and its CPU can be capped): prints its address, runs until stdin closes, then shuts down
/// cleanly.
fn flood_server(dir: &Path) {
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

/// What one phase against the child saw.
#[derive(Default)]
struct Phase {
    secs: f64,
    /// Requests sent.
    sent: u64,
    accepted_spans: u64,
    /// Requests answered 429 or 503.
    rejected: u64,
    /// Requests that failed otherwise (timeouts, resets, other statuses).
    other: u64,
    /// Open loop only: requests due but not sent because `FLOOD_IN_FLIGHT` were in flight.
    skipped: u64,
    /// CPU the child used during the phase, in cores.
    child_cores: f64,
    max_rss_mb: f64,
}

impl Phase {
    fn offered_spans(&self) -> u64 {
        self.sent * SPANS_PER_REQUEST as u64
    }
}

type HttpClient = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::Full<Bytes>,
>;

/// Posts one body; `Some(status)` or `None` when the request failed.
async fn post_one(client: &HttpClient, url: &str, body: Bytes) -> Option<u16> {
    seer_collector::agent::post(
        client,
        url,
        "application/x-protobuf",
        None,
        body,
        Duration::from_secs(30),
    )
    .await
    .ok()
    .map(|(s, _)| s.as_u16())
}

#[derive(Default)]
struct Counters {
    accepted_spans: AtomicU64,
    rejected: AtomicU64,
    other: AtomicU64,
}

impl Counters {
    fn count(&self, status: Option<u16>) {
        match status {
            Some(200) => self
                .accepted_spans
                .fetch_add(SPANS_PER_REQUEST as u64, Ordering::Relaxed),
            Some(429 | 503) => self.rejected.fetch_add(1, Ordering::Relaxed),
            _ => self.other.fetch_add(1, Ordering::Relaxed),
        };
    }
}

/// Samples the child's RSS every 50 ms until `stop` is set; returns the maximum.
async fn watch_rss(pid: u32, stop: Arc<std::sync::atomic::AtomicBool>) -> f64 {
    let mut max = rss_of(pid);
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        max = max.max(rss_of(pid));
    }
    max
}

/// Closed loop: `PROBE_CONCURRENCY` clients each post the next request as soon as the previous
/// one is answered, for `secs`. The accepted rate is the rate the child sustains.
async fn closed_loop(
    client: &HttpClient,
    url: &str,
    pool: &Arc<Vec<Bytes>>,
    pid: u32,
    secs: f64,
) -> Phase {
    let counters = Arc::new(Counters::default());
    let sent = Arc::new(AtomicU64::new(0));
    let stop_rss = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let rss = tokio::spawn(watch_rss(pid, Arc::clone(&stop_rss)));
    let cpu0 = cpu_secs_of(pid);
    let started = Instant::now();
    let stop_at = tokio::time::Instant::now() + Duration::from_secs_f64(secs);
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..PROBE_CONCURRENCY {
        let (client, url, pool, counters, sent) = (
            client.clone(),
            url.to_owned(),
            Arc::clone(pool),
            Arc::clone(&counters),
            Arc::clone(&sent),
        );
        workers.spawn(async move {
            let mut k = w;
            while tokio::time::Instant::now() < stop_at {
                sent.fetch_add(1, Ordering::Relaxed);
                counters.count(post_one(&client, &url, pool[k % pool.len()].clone()).await);
                k += PROBE_CONCURRENCY;
            }
        });
    }
    while workers.join_next().await.is_some() {}
    let secs = started.elapsed().as_secs_f64();
    stop_rss.store(true, Ordering::Relaxed);
    Phase {
        secs,
        sent: sent.load(Ordering::Relaxed),
        accepted_spans: counters.accepted_spans.load(Ordering::Relaxed),
        rejected: counters.rejected.load(Ordering::Relaxed),
        other: counters.other.load(Ordering::Relaxed),
        skipped: 0,
        child_cores: (cpu_secs_of(pid) - cpu0) / secs,
        max_rss_mb: rss.await.unwrap(),
    }
}

/// Open loop: a new request every period whatever the replies, for `secs`, with at most
/// `FLOOD_IN_FLIGHT` in flight (requests due beyond that are counted as skipped, not sent).
async fn open_loop(
    client: &HttpClient,
    url: &str,
    pool: &Arc<Vec<Bytes>>,
    pid: u32,
    target_spans_per_sec: f64,
    secs: f64,
) -> Phase {
    let counters = Arc::new(Counters::default());
    let in_flight = Arc::new(tokio::sync::Semaphore::new(FLOOD_IN_FLIGHT));
    let stop_rss = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let rss = tokio::spawn(watch_rss(pid, Arc::clone(&stop_rss)));
    let period = Duration::from_secs_f64(SPANS_PER_REQUEST as f64 / target_spans_per_sec.max(1.0));
    let cpu0 = cpu_secs_of(pid);
    let started = Instant::now();
    let stop_at = tokio::time::Instant::now() + Duration::from_secs_f64(secs);
    let mut next = tokio::time::Instant::now();
    let (mut sent, mut skipped) = (0u64, 0u64);
    let mut tasks = tokio::task::JoinSet::new();
    while tokio::time::Instant::now() < stop_at {
        // Catch up in bursts when behind (open loop), yielding between bursts.
        let now = tokio::time::Instant::now();
        while next <= now {
            next += period;
            let Ok(permit) = Arc::clone(&in_flight).try_acquire_owned() else {
                skipped += 1;
                continue;
            };
            let (body, url, client, counters) = (
                pool[sent as usize % pool.len()].clone(),
                url.to_owned(),
                client.clone(),
                Arc::clone(&counters),
            );
            sent += 1;
            tasks.spawn(async move {
                counters.count(post_one(&client, &url, body).await);
                drop(permit);
            });
        }
        while tasks.try_join_next().is_some() {}
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // The offered window ends here; the answers still outstanding are awaited below.
    let offer_secs = started.elapsed().as_secs_f64();
    let child_cores = (cpu_secs_of(pid) - cpu0) / offer_secs;
    while tasks.join_next().await.is_some() {}
    stop_rss.store(true, Ordering::Relaxed);
    Phase {
        secs: offer_secs,
        sent,
        accepted_spans: counters.accepted_spans.load(Ordering::Relaxed),
        rejected: counters.rejected.load(Ordering::Relaxed),
        other: counters.other.load(Ordering::Relaxed),
        skipped,
        child_cores,
        max_rss_mb: rss.await.unwrap(),
    }
}

/// The flood: a collector child (memory limit `FLOOD_MEMORY_MB`) in a CPU cap of `cap_cores`
/// (none when `None` or when no cgroup can be made), its sustainable rate measured closed-loop
/// for `probe_secs`, then 10x that offered open-loop for `secs`; afterwards the store is read
/// to count acknowledged spans that are missing.
fn flood(cap_cores: Option<f64>, probe_secs: f64, secs: f64) -> serde_json::Value {
    use std::io::BufRead;
    let dir = tempfile_dir();
    // Declared before `child`, so dropped (the group removed) after the child is gone.
    let mut cap = match cap_cores {
        Some(c) => CpuCap::create(c),
        None => Err("disabled (SEER_FLOOD_CPU_PCT=0)".to_owned()),
    };
    let mut child = ChildGuard(
        std::process::Command::new(std::env::current_exe().unwrap())
            .env("SEER_FLOOD_SERVER", &dir)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let pid = child.0.id();
    if let Ok(c) = &cap
        && let Err(e) = c.add(pid)
    {
        cap = Err(e);
    }
    let cap_json = match &cap {
        Ok(c) => c.json(),
        Err(why) => {
            eprintln!("ingest bench: flood child NOT CPU-capped: {why}");
            serde_json::json!({"mechanism": "none (uncapped: the child shares the machine with the client)", "why": why})
        }
    };
    let mut line = String::new();
    std::io::BufReader::new(child.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = format!("http://{}/v1/traces", line.trim());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (probe, target, fl) = rt.block_on(async {
        let pool: Arc<Vec<Bytes>> = Arc::new(bodies(64, now_ns()));
        let client = seer_collector::agent::client();
        let probe = closed_loop(&client, &url, &pool, pid, probe_secs).await;
        let sustainable = probe.accepted_spans as f64 / probe.secs;
        assert!(
            sustainable > 0.0,
            "the collector accepted nothing in the closed loop"
        );
        let target = sustainable * 10.0;
        let fl = open_loop(&client, &url, &pool, pid, target, secs).await;
        (probe, target, fl)
    });
    let throttling = cap.as_ref().ok().and_then(CpuCap::throttling);
    drop(child.0.stdin.take());
    assert!(child.0.wait().unwrap().success(), "collector child failed");
    drop(cap);
    let store = Store::open(&dir, 8 << 20).unwrap();
    let stored = store.stats().unwrap().spans;
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
    let accepted = probe.accepted_spans + fl.accepted_spans;
    let sustainable = probe.accepted_spans as f64 / probe.secs;
    let offered = fl.offered_spans() as f64 / fl.secs;
    let max_rss = probe.max_rss_mb.max(fl.max_rss_mb);
    let r1 = |x: f64| (x * 10.0).round() / 10.0;
    let r2 = |x: f64| (x * 100.0).round() / 100.0;
    serde_json::json!({
        "cpu_cap": cap_json,
        "sustainable": {
            "spans_per_sec": sustainable.round(),
            "method": format!("closed loop, {PROBE_CONCURRENCY} requests in flight, under the same cap"),
            "seconds": r1(probe.secs),
            "accepted_spans": probe.accepted_spans,
            "rejected_requests_429_503": probe.rejected,
            "failed_requests_other": probe.other,
            "child_cpu_cores": r2(probe.child_cores),
        },
        "target_offered_spans_per_sec": target.round(),
        "achieved_offered_spans_per_sec": offered.round(),
        "offered_ratio_vs_sustainable": r2(offered / sustainable),
        "seconds": r1(fl.secs),
        "offered_spans": fl.offered_spans(),
        "accepted_spans": fl.accepted_spans,
        "accepted_spans_per_sec": (fl.accepted_spans as f64 / fl.secs).round(),
        "rejected_requests_429_503": fl.rejected,
        "failed_requests_other": fl.other,
        "skipped_requests_client_in_flight_cap": fl.skipped,
        "child_cpu_cores": r2(fl.child_cores),
        "cgroup_periods_throttled": throttling.map(|(p, t)| serde_json::json!({"periods": p, "throttled": t})),
        "max_rss_mb": r1(max_rss),
        "memory_limit_mb": FLOOD_MEMORY_MB,
        "rss_under_limit": max_rss < FLOOD_MEMORY_MB as f64,
        "stored_spans": stored,
        "accepted_lost": accepted.saturating_sub(stored),
    })
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
    let secs: f64 = std::env::var("SEER_FLOOD_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 2.0 } else { 30.0 });
    let probe_secs = (secs / 3.0).clamp(1.0, 10.0);
    // The child's CPU allotment in percent of one core; 0 runs it uncapped.
    let cap_pct: f64 = std::env::var("SEER_FLOOD_CPU_PCT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10.0);
    let flood = flood((cap_pct > 0.0).then_some(cap_pct / 100.0), probe_secs, secs);
    let lost = flood["accepted_lost"].as_u64();
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
        "flood": flood,
    });
    if quick {
        println!("{report}");
    } else {
        seer_benches::report("ingest", &report).unwrap();
    }
    assert_eq!(lost, Some(0), "spans acknowledged with 200 were lost");
}
