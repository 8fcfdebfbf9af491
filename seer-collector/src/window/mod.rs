//! Aggregation: windows from every service aligned per tick (with a watermark for late data),
//! windows derived from OTLP spans for services that send none, the [time, service, feature]
//! ring, the service graph, critical-path attribution and QoS evaluation.
//!
//! [`Aggregator`] is a plain single-threaded state machine; the pipeline thread feeds it
//! ([`Aggregator::on_windows`], [`Aggregator::on_spans`], [`Aggregator::on_node`],
//! [`Aggregator::on_label`]) and calls [`Aggregator::advance`] with the wall clock, which closes
//! every tick whose watermark has passed.

mod hash;
pub mod qos;
mod ring;
pub mod traces;

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use self::hash::{FastMap, FxBuildHasher};
use crate::config::{Config, QosSpec};
use crate::hw::{NodeSample, ServiceHw};
use crate::ingest::otlp::{DecodedBatch, kind};
use crate::predict::FEATURES;
use crate::predict::thread::{FrameRow, FrameVerdict, TickFrame};
use seer_proto::{EndpointWindow, Histogram, SdkCounters, WindowBatch};

pub use qos::{Episode, QosEvaluator, QosVerdict};
pub use ring::FeatureRing;
pub use traces::{Edge, MiniSpan, ServiceGraph, TraceAssembler};

/// Most endpoints tracked per service and tick (more are folded into the service totals only).
pub const MAX_ENDPOINTS: usize = 64;

/// Most SDK processes tracked per service. A new one past the cap replaces the one that posted
/// least recently; nothing of its data is lost, but early close no longer waits for it and its
/// SDK counters leave the service's sum.
pub const MAX_INSTANCES: usize = 256;

/// A fault record handed in by a controlled run (`POST /v1/labels`): the ground-truth culprit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Label {
    /// The service the fault was injected into.
    pub service: String,
    /// The resource the fault took (`cpu`, `memory`, `cache`, `io`, `network`, ...).
    #[serde(default)]
    pub resource: Option<String>,
    /// Fault class (e.g. `step`, `gradual`, `quota`, `hog`).
    #[serde(default)]
    pub class: Option<String>,
    /// Fault start, unix nanoseconds.
    pub start: u64,
    /// Fault end, unix nanoseconds; absent while ongoing.
    #[serde(default)]
    pub end: Option<u64>,
}

/// Settings of the aggregator.
#[derive(Debug, Clone)]
pub struct AggregatorConfig {
    /// Tick length, ns.
    pub tick_ns: u64,
    /// Watermark, ns.
    pub watermark_ns: u64,
    /// Most services tracked.
    pub max_services: usize,
    /// QoS specs.
    pub qos: Vec<QosSpec>,
    /// Episode gap merge, ticks.
    pub episode_gap_ticks: u32,
    /// Slow threshold without a QoS target, ns.
    pub slow_trace_ns: u64,
    /// Ticks a service stays in frames after its last data.
    pub service_ttl_ticks: u64,
    /// Ticks of features kept in the ring.
    pub ring_ticks: usize,
    /// Close a tick before its watermark once every active SDK process has posted it.
    pub early_close: bool,
    /// Ticks without a window after which a process no longer counts as active (for the early
    /// close).
    pub active_ticks: u64,
}

impl AggregatorConfig {
    /// From the collector settings.
    pub fn from_config(c: &Config) -> Self {
        let tick_ns = c.tick_ns();
        Self {
            tick_ns,
            watermark_ns: c.watermark_ms.saturating_mul(1_000_000),
            max_services: c.max_services,
            qos: c.qos.clone(),
            episode_gap_ticks: c.episode_gap_ticks,
            slow_trace_ns: (c.slow_trace_ms * 1e6) as u64,
            service_ttl_ticks: (10_000_000_000 / tick_ns.max(1)).max(1),
            ring_ticks: 600,
            early_close: c.early_close,
            active_ticks: (1_000_000_000 / tick_ns.max(1)).max(1),
        }
    }
}

/// A service's aggregated window for one tick, as stored and served by `GET /v1/windows`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceWindow {
    /// Service.
    pub service: String,
    /// Tick index.
    pub tick: u64,
    /// Tick start, unix ns.
    pub tick_start_unix_ns: u64,
    /// Node the service runs on, when known.
    pub node: Option<String>,
    /// `"sdk"` for native windows, `"spans"` for windows derived from OTLP spans.
    pub source: String,
    /// Requests that arrived.
    pub arrivals: u64,
    /// Requests completed.
    pub completions: u64,
    /// Errors.
    pub errors: u64,
    /// Shed requests.
    pub shed: u64,
    /// End-to-end latency p50, ms.
    pub latency_p50_ms: Option<f64>,
    /// End-to-end latency p90, ms.
    pub latency_p90_ms: Option<f64>,
    /// End-to-end latency p99, ms.
    pub latency_p99_ms: Option<f64>,
    /// Features in [`FEATURES`] order (`null` = missing).
    pub features: Vec<Option<f32>>,
    /// Per endpoint: (endpoint, arrivals, completions, errors, p99 ms).
    pub endpoints: Vec<EndpointSummary>,
}

/// One endpoint's share of a [`ServiceWindow`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndpointSummary {
    /// Endpoint name.
    pub endpoint: String,
    /// Arrivals.
    pub arrivals: u64,
    /// Completions.
    pub completions: u64,
    /// Errors.
    pub errors: u64,
    /// Latency p99, ms.
    pub latency_p99_ms: Option<f64>,
}

#[derive(Debug, Default, Clone)]
struct EndpointAcc {
    arrivals: u64,
    completions: u64,
    errors: u64,
    latency: Histogram,
}

#[derive(Debug, Default, Clone)]
struct ServiceAcc {
    native: bool,
    arrivals: u64,
    completions: u64,
    errors: u64,
    shed: u64,
    inflight: f64,
    local_inflight: f64,
    queue: Option<f64>,
    busy_ns: u64,
    self_busy_ns: u64,
    latency: Histogram,
    self_latency: Histogram,
    queue_wait: Histogram,
    endpoints: FastMap<String, EndpointAcc>,
}

#[derive(Debug, Default)]
struct TickState {
    services: FastMap<u32, ServiceAcc>,
    qos: Vec<Histogram>,
    /// (service, pid) of every native window batch merged into this tick.
    posted: HashSet<(u32, u32), FxBuildHasher>,
}

#[derive(Debug, Default, Clone)]
struct ServiceInfo {
    name: String,
    node: Option<String>,
    native_tick: Option<u64>,
    last_tick: u64,
    /// SDK processes of this service.
    instances: Vec<Instance>,
}

/// One SDK process of a service.
#[derive(Debug, Clone)]
struct Instance {
    pid: u32,
    /// Newest tick it posted a window for.
    last: u64,
    /// Its cumulative pipeline counters: each field the largest it has reported (batches
    /// retried out of order cannot move a counter back).
    sdk: Option<SdkCounters>,
}

/// Folds `b` into `a` field by field with `f` (max for two reports of one process's cumulative
/// counters, a saturating sum across processes: the values come from the network).
fn fold_counters(a: &mut SdkCounters, b: &SdkCounters, f: fn(u64, u64) -> u64) {
    for (x, y) in [
        (&mut a.recorded, b.recorded),
        (&mut a.exported, b.exported),
        (&mut a.dropped_buffer_full, b.dropped_buffer_full),
        (&mut a.dropped_queue_full, b.dropped_queue_full),
        (&mut a.unsampled, b.unsampled),
        (&mut a.failed_exports, b.failed_exports),
        (&mut a.dropped_rejected, b.dropped_rejected),
        (&mut a.dropped_export_failed, b.dropped_export_failed),
        (&mut a.dropped_window_backlog, b.dropped_window_backlog),
    ] {
        *x = f(*x, y);
    }
}

/// Everything one closed tick produces.
#[derive(Debug, Clone, Default)]
pub struct ClosedTick {
    /// The frame for the prediction thread.
    pub frame: TickFrame,
    /// Windows to store.
    pub windows: Vec<ServiceWindow>,
    /// The QoS verdict.
    pub verdict: QosVerdict,
}

/// Counters the aggregator keeps of what it had to drop.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AggregatorDrops {
    /// Windows or span-derived data for ticks already closed.
    pub late: u64,
    /// Data too far in the future.
    pub future: u64,
    /// Data for services beyond the limit.
    pub service_limit: u64,
    /// Spans not assembled into traces (trace full).
    pub trace_overflow: u64,
}

/// The aggregation state machine (see the module docs).
#[derive(Debug)]
pub struct Aggregator {
    cfg: AggregatorConfig,
    open: BTreeMap<u64, TickState>,
    /// Every tick below this is closed.
    closed_upto: Option<u64>,
    names: HashMap<String, u32>,
    services: Vec<ServiceInfo>,
    graph: ServiceGraph,
    assembler: TraceAssembler,
    qos: QosEvaluator,
    labels: Vec<Label>,
    nodes: HashMap<String, NodeSample>,
    service_hw: HashMap<String, ServiceHw>,
    attribution: HashMap<u32, f64>,
    ring: FeatureRing,
    drops: AggregatorDrops,
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

impl Aggregator {
    /// A fresh aggregator.
    pub fn new(cfg: AggregatorConfig) -> Self {
        let idle = (1_000_000_000 / cfg.tick_ns.max(1)).max(2);
        Self {
            qos: QosEvaluator::new(&cfg.qos, cfg.tick_ns, cfg.episode_gap_ticks),
            ring: FeatureRing::new(cfg.ring_ticks),
            cfg,
            open: BTreeMap::new(),
            closed_upto: None,
            names: HashMap::new(),
            services: Vec::new(),
            graph: ServiceGraph::new(65_536),
            assembler: TraceAssembler::new(20_000, 1_000, 262_144, idle),
            labels: Vec::new(),
            nodes: HashMap::new(),
            service_hw: HashMap::new(),
            attribution: HashMap::new(),
            drops: AggregatorDrops::default(),
        }
    }

    /// What was dropped so far.
    pub fn drops(&self) -> AggregatorDrops {
        AggregatorDrops {
            trace_overflow: self.assembler.overflow,
            ..self.drops
        }
    }

    /// The feature ring.
    pub fn ring(&self) -> &FeatureRing {
        &self.ring
    }

    /// Tick length, ns.
    pub fn tick_ns(&self) -> u64 {
        self.cfg.tick_ns
    }

    /// The service graph's edges.
    pub fn edges(&self) -> Vec<Edge> {
        self.graph.edges(|i| self.name(i).to_owned())
    }

    /// Known services with their node.
    pub fn services(&self) -> Vec<(String, Option<String>, bool, u64)> {
        self.services
            .iter()
            .map(|s| {
                (
                    s.name.clone(),
                    s.node.clone(),
                    s.native_tick.is_some(),
                    s.last_tick,
                )
            })
            .collect()
    }

    /// Each service's SDK pipeline counters (recorded, exported, dropped by reason): the sum,
    /// over the processes it still tracks, of each one's newest report. A process forgotten
    /// after a restart leaves the sum, which Prometheus reads as a counter reset.
    pub fn sdk_counters(&self) -> Vec<(String, SdkCounters)> {
        self.services
            .iter()
            .filter_map(|s| {
                let mut reports = s.instances.iter().filter_map(|i| i.sdk.as_ref());
                let mut total = reports.next()?.clone();
                for r in reports {
                    fold_counters(&mut total, r, u64::saturating_add);
                }
                Some((s.name.clone(), total))
            })
            .collect()
    }

    fn name(&self, id: u32) -> &str {
        self.services
            .get(id as usize)
            .map_or("?", |s| s.name.as_str())
    }

    fn intern(&mut self, name: &str) -> Option<u32> {
        if let Some(id) = self.names.get(name) {
            return Some(*id);
        }
        if self.services.len() >= self.cfg.max_services {
            self.drops.service_limit += 1;
            return None;
        }
        let id = u32::try_from(self.services.len()).ok()?;
        self.names.insert(name.to_owned(), id);
        self.services.push(ServiceInfo {
            name: name.to_owned(),
            ..Default::default()
        });
        Some(id)
    }

    /// Accepts data for `tick`? Counts late and future drops.
    fn admit_tick(&mut self, tick: u64, now_tick: u64) -> bool {
        if self.closed_upto.is_some_and(|c| tick < c) {
            self.drops.late += 1;
            return false;
        }
        if tick > now_tick + 50 {
            self.drops.future += 1;
            return false;
        }
        true
    }

    fn state(&mut self, tick: u64) -> &mut TickState {
        let n = self.qos.len();
        self.open.entry(tick).or_insert_with(|| TickState {
            services: FastMap::default(),
            qos: vec![Histogram::new_latency(); n],
            posted: HashSet::default(),
        })
    }

    /// Merges one native window batch (histograms already checked by the caller).
    /// `node` is the sender's node when the batch names none.
    pub fn on_windows(&mut self, batch: &WindowBatch, node: Option<&str>, now_ns: u64) {
        let tick = batch.tick_start_unix_ns / self.cfg.tick_ns.max(1);
        let now_tick = now_ns / self.cfg.tick_ns.max(1);
        let Some(id) = self.intern(&batch.service) else {
            return;
        };
        {
            // The process is alive now, whatever tick it claims: a window from the future (a
            // clock stepped on its host, or a bogus post) is dropped below, and must not keep
            // the service "active" until that tick comes.
            let seen = tick.min(now_tick);
            let info = &mut self.services[id as usize];
            info.native_tick = Some(info.native_tick.unwrap_or(0).max(seen));
            info.last_tick = info.last_tick.max(seen);
            match info.instances.iter_mut().find(|i| i.pid == batch.pid) {
                Some(i) => {
                    i.last = i.last.max(seen);
                    match (&mut i.sdk, &batch.sdk) {
                        (Some(old), Some(c)) => fold_counters(old, c, u64::max),
                        (None, Some(c)) => i.sdk = Some(c.clone()),
                        (_, None) => {}
                    }
                }
                None => {
                    // Forget processes that have been silent for long (restarts bring new pids).
                    let ttl = self.cfg.service_ttl_ticks;
                    info.instances
                        .retain(|i| seen.saturating_sub(i.last) <= ttl);
                    // Past the cap (pid churn, pre-fork workers, a client making pids up) the
                    // stalest process makes room: early close then waits for fewer processes.
                    if info.instances.len() >= MAX_INSTANCES
                        && let Some(stalest) = info
                            .instances
                            .iter()
                            .enumerate()
                            .min_by_key(|(_, i)| i.last)
                            .map(|(k, _)| k)
                    {
                        info.instances.swap_remove(stalest);
                    }
                    info.instances.push(Instance {
                        pid: batch.pid,
                        last: seen,
                        sdk: batch.sdk.clone(),
                    });
                }
            }
            let n = if batch.node.is_empty() {
                node
            } else {
                Some(batch.node.as_str())
            };
            if let Some(n) = n
                && info.node.as_deref() != Some(n)
            {
                info.node = Some(n.to_owned());
            }
        }
        if !self.admit_tick(tick, now_tick) {
            return;
        }
        let qos_idx: Vec<Vec<usize>> = batch
            .windows
            .iter()
            .map(|w| {
                (0..self.qos.len())
                    .filter(|i| self.qos.matches(*i, &batch.service, &w.endpoint))
                    .collect()
            })
            .collect();
        let st = self.state(tick);
        st.posted.insert((id, batch.pid));
        let acc = st.services.entry(id).or_default();
        acc.native = true;
        for (w, specs) in batch.windows.iter().zip(qos_idx) {
            let latency = Histogram::decode(&w.latency).unwrap_or_default();
            merge_window(acc, w, &latency);
            for i in specs {
                if let Some(h) = st.qos.get_mut(i) {
                    let _ = h.merge(&latency);
                }
            }
        }
    }

    /// Derives windows from a decoded OTLP batch (for services that send no native windows),
    /// and feeds the trace assembler.
    pub fn on_spans(&mut self, batch: &DecodedBatch, now_ns: u64) {
        let tick_ns = self.cfg.tick_ns.max(1);
        let now_tick = now_ns / tick_ns;
        let ids: Vec<Option<u32>> = batch.services.iter().map(|s| self.intern(s)).collect();
        let derive: Vec<bool> = ids
            .iter()
            .map(|id| {
                id.is_some_and(|id| {
                    self.services[id as usize]
                        .native_tick
                        .is_none_or(|t| now_tick.saturating_sub(t) > self.cfg.service_ttl_ticks)
                })
            })
            .collect();
        // Time each span spent in direct client/producer children (for self latency).
        let mut blocked: FastMap<[u8; 8], u64> = FastMap::default();
        if derive.iter().any(|d| *d) {
            for s in &batch.spans {
                if !s.is_root() && matches!(s.kind, kind::CLIENT | kind::PRODUCER) {
                    let b = blocked.entry(s.parent_id).or_default();
                    *b = b.saturating_add(s.duration_ns());
                }
            }
        }
        for s in &batch.spans {
            let Some(Some(id)) = ids.get(s.service as usize).copied() else {
                continue;
            };
            let end_tick = s.end_ns / tick_ns;
            // Trace assembly (graph + critical path).
            let mini = MiniSpan {
                span_id: u64::from_be_bytes(s.span_id),
                parent: u64::from_be_bytes(s.parent_id),
                service: id,
                endpoint: 0,
                start: s.start_ns,
                end: s.end_ns.max(s.start_ns),
                error: s.error,
            };
            if let Some(evicted) = self.assembler.add(s.trace_id, mini, now_tick) {
                self.finalize_trace(&evicted);
            }
            let info = &mut self.services[id as usize];
            info.last_tick = info.last_tick.max(end_tick.min(now_tick));
            if !derive[s.service as usize] {
                continue;
            }
            let is_request = matches!(s.kind, kind::SERVER | kind::CONSUMER)
                || (s.is_root() && s.kind != kind::CLIENT && s.kind != kind::PRODUCER);
            if !is_request {
                continue;
            }
            if !self.admit_tick(end_tick, now_tick) {
                continue;
            }
            let name = batch.name(s);
            let dur = s.duration_ns();
            let self_ns = dur.saturating_sub(blocked.get(&s.span_id).copied().unwrap_or(0));
            let mut specs = 0u64; // bit i: spec i covers this endpoint (first 64 specs)
            for i in 0..self.qos.len().min(64) {
                if self
                    .qos
                    .matches(i, &batch.services[s.service as usize], name)
                {
                    specs |= 1 << i;
                }
            }
            let st = self.state(end_tick);
            while specs != 0 {
                let i = specs.trailing_zeros() as usize;
                specs &= specs - 1;
                if let Some(h) = st.qos.get_mut(i) {
                    h.record_ns(dur);
                }
            }
            let acc = st.services.entry(id).or_default();
            acc.arrivals = acc.arrivals.saturating_add(1);
            acc.completions = acc.completions.saturating_add(1);
            acc.errors = acc.errors.saturating_add(u64::from(s.error));
            acc.busy_ns = acc.busy_ns.saturating_add(dur);
            acc.self_busy_ns = acc.self_busy_ns.saturating_add(self_ns);
            acc.latency.record_ns(dur);
            acc.self_latency.record_ns(self_ns);
            let bump = |ep: &mut EndpointAcc| {
                ep.arrivals = ep.arrivals.saturating_add(1);
                ep.completions = ep.completions.saturating_add(1);
                ep.errors = ep.errors.saturating_add(u64::from(s.error));
                ep.latency.record_ns(dur);
            };
            if let Some(ep) = acc.endpoints.get_mut(name) {
                bump(ep);
            } else if acc.endpoints.len() < MAX_ENDPOINTS {
                let mut ep = EndpointAcc::default();
                bump(&mut ep);
                acc.endpoints.insert(name.to_owned(), ep);
            }
        }
    }

    /// Takes a node sample.
    pub fn on_node(&mut self, sample: NodeSample) {
        for (svc, hw) in &sample.services {
            // Names come from the network: known services always, others (a sample may come
            // before a service's first window) only up to the service limit.
            if self.names.contains_key(svc.as_str())
                || self.service_hw.contains_key(svc)
                || self.service_hw.len() < self.cfg.max_services
            {
                self.service_hw.insert(svc.clone(), *hw);
            }
        }
        if self.nodes.len() < 4096 || self.nodes.contains_key(&sample.node) {
            self.nodes.insert(sample.node.clone(), sample);
        }
    }

    /// Takes a ground-truth label.
    pub fn on_label(&mut self, label: Label) {
        if self.labels.len() >= 1024 {
            self.labels.remove(0);
        }
        self.labels.push(label);
    }

    fn finalize_trace(&mut self, spans: &[MiniSpan]) {
        let qos = &self.qos;
        let services = &self.services;
        let default_slow = self.cfg.slow_trace_ns;
        let summary = traces::summarize(spans, |root| {
            let svc = services
                .get(root.service as usize)
                .map_or("", |s| s.name.as_str());
            qos.target_ns(svc, "").unwrap_or(default_slow)
        });
        for (a, b, err) in summary.calls {
            self.graph.call(a, b, err);
        }
        for (svc, ns) in summary.exclusive_ns {
            *self.attribution.entry(svc).or_default() += ns as f64;
        }
    }

    fn truth_at(&self, unix_ns: u64) -> Option<&Label> {
        self.labels
            .iter()
            .rev()
            .find(|l| l.start <= unix_ns && l.end.is_none_or(|e| unix_ns <= e))
    }

    /// Whether `tick` can close before its watermark: it has ended, and every SDK process active
    /// in the last second (see [`AggregatorConfig::active_ticks`]) has posted its window for it.
    /// Never while a service that sends only spans is active: its derived windows trickle in
    /// with the span batches, so only the watermark bounds them.
    fn reported_by_all(&self, tick: u64, now_tick: u64) -> bool {
        if !self.cfg.early_close || tick >= now_tick {
            return false;
        }
        let Some(st) = self.open.get(&tick) else {
            return false;
        };
        let since = tick.saturating_sub(self.cfg.active_ticks);
        let mut expected = 0usize;
        for (id, info) in self.services.iter().enumerate() {
            if info.last_tick == 0 || info.last_tick < since {
                continue;
            }
            if info.native_tick.is_none_or(|t| t < since) {
                return false;
            }
            for inst in &info.instances {
                if inst.last < since {
                    continue;
                }
                expected += 1;
                let key = (u32::try_from(id).unwrap_or(u32::MAX), inst.pid);
                if !st.posted.contains(&key) {
                    return false;
                }
            }
        }
        expected > 0
    }

    /// Whether [`Aggregator::advance`] at `now_ns` would close a tick early (cheap; lets the
    /// pipeline close as soon as the last window of a tick arrives).
    pub fn early_ready(&self, now_ns: u64) -> bool {
        let now_tick = now_ns / self.cfg.tick_ns.max(1);
        let next = match self.closed_upto {
            Some(c) => c,
            None => match self.open.keys().next() {
                Some(k) => *k,
                None => return false,
            },
        };
        self.reported_by_all(next, now_tick)
    }

    /// Closes every tick whose end plus the watermark is at or before `now_ns`, then (with
    /// [`AggregatorConfig::early_close`]) every following ended tick that all active SDK
    /// processes have already reported.
    pub fn advance(&mut self, now_ns: u64) -> Vec<ClosedTick> {
        let tick_ns = self.cfg.tick_ns.max(1);
        let now_tick = now_ns / tick_ns;
        // Finalize idle traces first, so attribution is fresh.
        for t in self.assembler.drain_idle(now_tick, 10_000) {
            self.finalize_trace(&t);
        }
        let first = match self.closed_upto {
            Some(c) => c,
            None => match self.open.keys().next() {
                Some(k) => *k,
                None => return Vec::new(),
            },
        };
        // Ticks below `limit` close: those past the watermark, then those all processes reported.
        let mut limit = (now_ns.saturating_sub(self.cfg.watermark_ns) / tick_ns).max(first);
        while self.reported_by_all(limit, now_tick) {
            limit += 1;
        }
        let mut out = Vec::new();
        // Bound the catch-up after a long pause.
        let first = first.max(limit.saturating_sub(100));
        for tick in first..limit {
            let state = self.open.remove(&tick).unwrap_or_default();
            out.push(self.close(tick, state));
        }
        // Drop anything older that slipped in (cannot happen after the first close).
        while let Some((&k, _)) = self.open.first_key_value() {
            if k < limit {
                self.open.remove(&k);
            } else {
                break;
            }
        }
        if limit > first {
            self.closed_upto = Some(limit);
        }
        out
    }

    /// Closes every open tick, watermark or not: at shutdown what was accepted is aggregated
    /// and stored rather than left in memory.
    pub fn close_all(&mut self) -> Vec<ClosedTick> {
        let Some((&last, _)) = self.open.last_key_value() else {
            return Vec::new();
        };
        let tick_ns = self.cfg.tick_ns.max(1);
        let end = last
            .saturating_add(1)
            .saturating_mul(tick_ns)
            .saturating_add(self.cfg.watermark_ns);
        self.advance(end)
    }

    fn close(&mut self, tick: u64, state: TickState) -> ClosedTick {
        let tick_ns = self.cfg.tick_ns.max(1);
        let tick_s = tick_ns as f64 / 1e9;
        let start_ns = tick * tick_ns;
        self.graph.close_tick(tick_s);
        for v in self.attribution.values_mut() {
            *v *= 0.9;
        }
        self.attribution.retain(|_, v| *v > 1.0);
        // Services in the frame: data this tick, or seen recently.
        let ttl = self.cfg.service_ttl_ticks;
        let mut rows: Vec<u32> = (0..self.services.len() as u32)
            .filter(|id| {
                state.services.contains_key(id)
                    || tick.saturating_sub(self.services[*id as usize].last_tick) <= ttl
                        && self.services[*id as usize].last_tick > 0
            })
            .collect();
        rows.sort_by(|a, b| self.name(*a).cmp(self.name(*b)));
        let mut frame_rows = Vec::with_capacity(rows.len());
        let mut windows = Vec::new();
        for id in &rows {
            let info = &self.services[*id as usize];
            let hw = self.service_hw.get(&info.name).copied().unwrap_or_default();
            let acc = state.services.get(id);
            let row = feature_row(acc, &hw, tick_ns);
            frame_rows.push(FrameRow {
                service: info.name.clone(),
                node: info.node.clone(),
                features: row.clone(),
            });
            if let Some(acc) = acc {
                windows.push(ServiceWindow {
                    service: info.name.clone(),
                    tick,
                    tick_start_unix_ns: start_ns,
                    node: info.node.clone(),
                    source: if acc.native { "sdk" } else { "spans" }.to_owned(),
                    arrivals: acc.arrivals,
                    completions: acc.completions,
                    errors: acc.errors,
                    shed: acc.shed,
                    latency_p50_ms: q(&acc.latency, 0.5),
                    latency_p90_ms: q(&acc.latency, 0.9),
                    latency_p99_ms: q(&acc.latency, 0.99),
                    features: row,
                    endpoints: {
                        let mut e: Vec<EndpointSummary> = acc
                            .endpoints
                            .iter()
                            .map(|(name, ep)| EndpointSummary {
                                endpoint: name.clone(),
                                arrivals: ep.arrivals,
                                completions: ep.completions,
                                errors: ep.errors,
                                latency_p99_ms: q(&ep.latency, 0.99),
                            })
                            .collect();
                        e.sort_by(|a, b| a.endpoint.cmp(&b.endpoint));
                        e
                    },
                });
            }
        }
        let index: HashMap<u32, usize> = rows.iter().enumerate().map(|(i, id)| (*id, i)).collect();
        let mut edges: Vec<(usize, usize)> = self
            .graph
            .pairs()
            .filter_map(|(a, b)| Some((*index.get(&a)?, *index.get(&b)?)))
            .collect();
        edges.sort_unstable();
        let culprit = self
            .truth_at(start_ns + tick_ns / 2)
            .map(|l| l.service.clone())
            .or_else(|| {
                self.attribution
                    .iter()
                    .max_by(|a, b| a.1.total_cmp(b.1))
                    .map(|(id, _)| self.name(*id).to_owned())
            });
        let verdict = self.qos.close_tick(tick, state.qos, culprit.as_deref());
        let frame = TickFrame::assemble(
            tick,
            tick_ns,
            &frame_rows,
            edges,
            |n| self.nodes.get(n).map(|s| s.features.clone()),
            FrameVerdict {
                violation: verdict.violation,
                episode_start: verdict.episode_start,
                culprit: if verdict.violation || verdict.current.is_some() {
                    culprit
                } else {
                    None
                },
            },
        );
        self.ring.push(tick, &frame.services, &frame.features);
        ClosedTick {
            frame,
            windows,
            verdict,
        }
    }

    /// Whether a service name is known.
    pub fn knows(&self, service: &str) -> bool {
        self.names.contains_key(service)
    }

    /// Names of services seen in the last `ticks` ticks before `now_tick`.
    pub fn recent_services(&self, now_tick: u64, ticks: u64) -> HashSet<String> {
        self.services
            .iter()
            .filter(|s| now_tick.saturating_sub(s.last_tick) <= ticks)
            .map(|s| s.name.clone())
            .collect()
    }
}

fn q(h: &Histogram, quantile: f64) -> Option<f64> {
    (!h.is_empty()).then(|| ms(h.quantile_ns(quantile)))
}

/// Merges one endpoint window into its service's tick. Counts saturate: they come from the
/// network.
fn merge_window(acc: &mut ServiceAcc, w: &EndpointWindow, latency: &Histogram) {
    acc.arrivals = acc.arrivals.saturating_add(w.arrivals);
    acc.completions = acc.completions.saturating_add(w.completions);
    acc.errors = acc.errors.saturating_add(w.errors);
    acc.shed = acc.shed.saturating_add(w.shed);
    if w.inflight_mean.is_finite() {
        acc.inflight += w.inflight_mean.max(0.0);
    }
    if w.local_inflight_mean.is_finite() {
        acc.local_inflight += w.local_inflight_mean.max(0.0);
    }
    if w.queue_depth_mean.is_finite() {
        *acc.queue.get_or_insert(0.0) += w.queue_depth_mean.max(0.0);
    }
    let _ = acc.latency.merge(latency);
    if let Ok(h) = Histogram::decode(&w.self_latency) {
        let _ = acc.self_latency.merge(&h);
    }
    if let Ok(h) = Histogram::decode(&w.queue_wait) {
        let _ = acc.queue_wait.merge(&h);
    }
    if acc.endpoints.len() < MAX_ENDPOINTS || acc.endpoints.contains_key(&w.endpoint) {
        let ep = acc.endpoints.entry(w.endpoint.clone()).or_default();
        ep.arrivals = ep.arrivals.saturating_add(w.arrivals);
        ep.completions = ep.completions.saturating_add(w.completions);
        ep.errors = ep.errors.saturating_add(w.errors);
        let _ = ep.latency.merge(latency);
    }
}

/// The feature row of a service without data in a tick (kept in frames for a while after its
/// last window): zero load, its node-sampled signals, the rest missing.
pub(crate) fn idle_feature_row(hw: &ServiceHw, tick_ns: u64) -> Vec<Option<f32>> {
    feature_row(None, hw, tick_ns)
}

/// One service's feature row for a tick, in [`FEATURES`] order.
fn feature_row(acc: Option<&ServiceAcc>, hw: &ServiceHw, tick_ns: u64) -> Vec<Option<f32>> {
    let tick_s = tick_ns as f64 / 1e9;
    let f = |v: f64| Some(v as f32);
    FEATURES
        .iter()
        .map(|name| match (*name, acc) {
            ("runq_wait_ms_per_s", _) => hw.runq_wait_ms_per_s,
            ("cpu_used_cores", _) => hw.cpu_used_cores,
            ("throttled_ms_per_s", _) => hw.throttled_ms_per_s,
            (_, None) => match *name {
                "arrivals_rps" | "inflight_mean" | "local_inflight_mean" => Some(0.0),
                _ => None,
            },
            (n, Some(a)) => match n {
                "arrivals_rps" => f(a.arrivals as f64 / tick_s),
                "inflight_mean" if a.native => f(a.inflight),
                "inflight_mean" => f(a.busy_ns as f64 / tick_ns as f64),
                "local_inflight_mean" if a.native => f(a.local_inflight),
                "local_inflight_mean" => f(a.self_busy_ns as f64 / tick_ns as f64),
                "queue_depth_mean" => a.queue.map(|v| v as f32),
                "queue_wait_p99_ms" => q(&a.queue_wait, 0.99).map(|v| v as f32),
                "self_latency_p50_ms" => q(&a.self_latency, 0.5).map(|v| v as f32),
                "self_latency_p99_ms" => q(&a.self_latency, 0.99).map(|v| v as f32),
                "latency_p99_ms" => q(&a.latency, 0.99).map(|v| v as f32),
                "error_rate" => {
                    (a.completions > 0).then(|| (a.errors as f64 / a.completions as f64) as f32)
                }
                "shed_rate" => (a.arrivals > 0).then(|| (a.shed as f64 / a.arrivals as f64) as f32),
                _ => None,
            },
        })
        .collect()
}

#[cfg(test)]
mod tests;
