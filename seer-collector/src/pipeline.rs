//! The running pipeline: the state shared by HTTP handlers, the aggregator thread that feeds
//! the prediction thread, and the sink that publishes advice, predictions and alerts.
//!
//! ```text
//! HTTP workers --try_send--> store writer thread (group commit, acks 200s)
//!              --try_send--> aggregator thread --(closed ticks)--> prediction thread
//! node sampler thread -----> aggregator thread         |--> advice board (window replies)
//!                                                      |--> store (predictions, alerts)
//!                                                      '--> webhook task (alerts)
//! ```
//! Every queue is bounded; every drop is counted in `/metrics`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crossbeam::channel::{Receiver, RecvTimeoutError, Sender};

use crate::config::Config;
use crate::hw::{NodeSample, TargetMap};
use crate::ingest::budget::{Budget, Reservation};
use crate::ingest::{Pending, now_unix_ns};
use crate::internal_events::{
    AlertEmitted, DropStage, Dropped, Metrics, PredictionMade, QueueFill, SdkCountersReported,
    TickClosed,
};
use crate::predict::PredictorStats;
use crate::predict::advice::Advice;
use crate::predict::alerts::{Alert, AlertPhase};
use crate::predict::thread::{PredictSink, PredictionRecord, TickFrame};
use crate::store::Store;
use crate::store::writer::{Record, StoreHandle};
use crate::window::{Aggregator, AggregatorConfig, ClosedTick, Edge, Episode, Label};

/// A message to the aggregator thread.
#[derive(Debug)]
pub enum AggMsg {
    /// A stored span batch.
    Spans(Arc<Pending>),
    /// A native window batch.
    Windows {
        /// The batch.
        batch: Box<seer_proto::WindowBatch>,
        /// The sender's node.
        node: Option<String>,
        /// Ingest memory held for the batch until it is merged.
        reservation: Reservation,
    },
    /// A node sample.
    Node {
        /// The sample.
        sample: NodeSample,
        /// Ingest memory held for a posted sample until it is merged (none for this node's
        /// own samples).
        reservation: Option<Reservation>,
    },
    /// A ground-truth label.
    Label(Label),
}

/// One service as `GET /v1/services` shows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ServiceView {
    /// Name.
    pub service: String,
    /// Node it runs on, when known.
    pub node: Option<String>,
    /// Whether it sends native windows (else its windows are derived from spans).
    pub native_windows: bool,
    /// Last tick with data.
    pub last_tick: u64,
}

/// What the aggregator publishes for the API after every tick.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Snapshot {
    /// Latest closed tick.
    pub tick: u64,
    /// Services.
    pub services: Vec<ServiceView>,
    /// The service graph.
    pub edges: Vec<Edge>,
    /// The open violation episode, if any.
    pub episode: Option<Episode>,
    /// Windowed QoS values of the latest tick, ms, per spec.
    pub qos_ms: Vec<Option<f64>>,
}

/// State shared between the threads and the HTTP handlers.
#[derive(Debug, Default)]
pub struct Shared {
    /// Latest advice per service.
    pub advice: RwLock<HashMap<String, Advice>>,
    /// The last [`RECENT_PREDICTIONS`] predictions, oldest first (the latest at the back), so
    /// a client following them with `GET /v1/predictions?after=` gets every one even when two
    /// ticks are predicted between its requests.
    pub recent: RwLock<std::collections::VecDeque<PredictionRecord>>,
    /// Woken (all waiters) whenever a prediction is added to `recent`:
    /// `GET /v1/predictions?after=` waits on it.
    pub latest_changed: tokio::sync::Notify,
    /// Latest aggregator snapshot.
    pub snapshot: RwLock<Snapshot>,
    /// Counters probed at start: (name, supported).
    pub counters: RwLock<Vec<(String, bool)>>,
    /// Ready to serve (store open, threads running).
    pub ready: AtomicBool,
    /// Predictor name.
    pub predictor: RwLock<String>,
    /// Closed ticks queued for the prediction thread.
    pub frames_queued: std::sync::atomic::AtomicUsize,
    /// The collector's threads, watched by `/readyz`.
    pub threads: Threads,
}

/// The collector's long-lived threads (store writer, aggregator, prediction, node sampler).
/// Each runs until shutdown, so one that has ended before (a panic, whose message is in the
/// log) leaves the collector broken: `/readyz` names it and answers 503.
#[derive(Debug, Default)]
pub struct Threads(std::sync::Mutex<Vec<std::thread::JoinHandle<()>>>);

impl Threads {
    fn handles(&self) -> std::sync::MutexGuard<'_, Vec<std::thread::JoinHandle<()>>> {
        // A handle list is valid whatever panicked while it was held.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Watches `thread` (until [`Threads::take`]).
    pub fn watch(&self, thread: std::thread::JoinHandle<()>) {
        self.handles().push(thread);
    }

    /// The names of the watched threads that have ended.
    pub fn ended(&self) -> Vec<String> {
        self.handles()
            .iter()
            .filter(|t| t.is_finished())
            .map(|t| t.thread().name().unwrap_or("unnamed").to_owned())
            .collect()
    }

    /// Stops watching every thread and hands their handles over (to join them at shutdown).
    pub fn take(&self) -> Vec<std::thread::JoinHandle<()>> {
        std::mem::take(&mut *self.handles())
    }
}

impl Shared {
    /// The latest prediction, if any tick has been predicted.
    pub fn latest_prediction(&self) -> Option<PredictionRecord> {
        self.recent.read().ok().and_then(|r| r.back().cloned())
    }

    /// Adds `record` as the latest prediction (the oldest of [`RECENT_PREDICTIONS`] goes) and
    /// wakes everyone waiting for one.
    pub fn publish_prediction(&self, record: PredictionRecord) {
        if let Ok(mut r) = self.recent.write() {
            while r.len() >= RECENT_PREDICTIONS {
                r.pop_front();
            }
            r.push_back(record);
        }
        self.latest_changed.notify_waiters();
    }

    /// The tick of the latest prediction.
    pub fn latest_tick(&self) -> Option<u64> {
        self.recent
            .read()
            .ok()
            .and_then(|r| r.back().map(|p| p.tick))
    }
}

/// How many predictions [`Shared::recent`] keeps: 6.4 s at the default 100 ms tick.
pub const RECENT_PREDICTIONS: usize = 64;

/// Capacity of the queue from the aggregator to the prediction thread.
pub const FRAME_QUEUE: usize = 64;

/// Handler state (cheap to clone).
#[derive(Debug, Clone)]
pub struct AppState {
    /// Settings.
    pub cfg: Arc<Config>,
    /// Self-telemetry.
    pub metrics: Arc<Metrics>,
    /// Ingest memory budget.
    pub budget: Arc<Budget>,
    /// The store (absent in agent mode).
    pub store: Option<Arc<Store>>,
    /// The store writer (absent in agent mode).
    pub writer: Option<StoreHandle>,
    /// The aggregator queue.
    pub agg_tx: Sender<AggMsg>,
    /// Shared views.
    pub shared: Arc<Shared>,
    /// Processes the node sampler watches.
    pub targets: TargetMap,
    /// Upstream forwarder (agent mode).
    pub forward: Option<Arc<crate::agent::Forwarder>>,
    /// This node's name.
    pub node: Arc<str>,
    /// Turns true when the collector begins to shut down; handlers that wait (the predictions
    /// long poll) stop waiting.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
}

impl AppState {
    /// The node a peer address stands for: this node for loopback, else the peer's IP.
    pub fn node_for_peer(&self, peer: Option<SocketAddr>) -> String {
        match peer {
            Some(p) if !p.ip().is_loopback() => p.ip().to_string(),
            _ => self.node.to_string(),
        }
    }

    /// Learns a local service's pid and cgroup from its window post.
    pub fn learn_target(&self, b: &seer_proto::WindowBatch, node: &str) {
        if node != &*self.node || (b.pid == 0 && b.cgroup.is_empty()) {
            return;
        }
        if let Ok(mut t) = self.targets.lock() {
            if t.len() >= self.cfg.max_services && !t.contains_key(&b.service) {
                return;
            }
            let e = t.entry(b.service.clone()).or_default();
            if b.pid != 0 && !e.pids.contains(&b.pid) {
                if e.pids.len() >= 16 {
                    e.pids.remove(0);
                }
                e.pids.push(b.pid);
            }
            if !b.cgroup.is_empty() {
                e.cgroup = Some(b.cgroup.clone());
            }
        }
    }

    /// The current advice for a service (admit-all when none or expired).
    pub fn advice_for(&self, service: &str) -> Advice {
        let now = now_unix_ns();
        self.shared
            .advice
            .read()
            .ok()
            .and_then(|m| m.get(service).cloned())
            .filter(|a| a.expires_at_unix_ns > now)
            .unwrap_or_else(|| Advice::admit_all(service))
    }
}

/// Runs the aggregator until `rx` disconnects. Closed ticks go to `frames` (dropped and counted
/// when the prediction thread lags), windows and episodes to the store.
pub fn run_aggregator(
    cfg: &Config,
    rx: &Receiver<AggMsg>,
    frames: &std::sync::mpsc::SyncSender<TickFrame>,
    writer: Option<&StoreHandle>,
    shared: &Shared,
    metrics: &Metrics,
) {
    let mut agg = Aggregator::new(AggregatorConfig::from_config(cfg));
    let tick = Duration::from_nanos(cfg.tick_ns());
    let mut next = Instant::now();
    let mut reported = agg.drops();
    let capacity = rx.capacity().unwrap_or(1);
    loop {
        let wait = next.saturating_duration_since(Instant::now());
        match rx.recv_timeout(wait.max(Duration::from_millis(1))) {
            Ok(msg) => {
                handle(&mut agg, msg, writer);
                for _ in 0..4096 {
                    match rx.try_recv() {
                        Ok(m) => handle(&mut agg, m, writer),
                        Err(_) => break,
                    }
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                // Shutting down: store the ticks still open (no predictions for them).
                for c in agg.close_all() {
                    if let Some(w) = writer {
                        store_closed(w, &c);
                    }
                }
                return;
            }
        }
        // On the half-tick cadence, or as soon as every active SDK process has reported the next
        // tick (the early close).
        if Instant::now() < next && !agg.early_ready(now_unix_ns()) {
            continue;
        }
        next = Instant::now() + tick / 2;
        QueueFill {
            queue: 1,
            len: rx.len(),
            capacity,
        }
        .emit(metrics);
        let closed = agg.advance(now_unix_ns());
        if closed.is_empty() {
            continue;
        }
        for c in closed {
            TickClosed {
                services: c.frame.services.len(),
                violation: c.verdict.violation,
            }
            .emit(metrics);
            if let Some(w) = writer {
                store_closed(w, &c);
            }
            if let Ok(mut s) = shared.snapshot.write() {
                s.tick = c.frame.tick;
                s.episode.clone_from(&c.verdict.current);
                s.qos_ms = c
                    .verdict
                    .values_ms
                    .iter()
                    .map(|v| v.is_finite().then_some(*v))
                    .collect();
            }
            if frames.try_send(c.frame).is_ok() {
                let queued = shared.frames_queued.fetch_add(1, Ordering::AcqRel) + 1;
                QueueFill {
                    queue: 2,
                    len: queued,
                    capacity: FRAME_QUEUE,
                }
                .emit(metrics);
            } else {
                Dropped {
                    stage: DropStage::Predict,
                    count: 1,
                }
                .emit(metrics);
            }
        }
        if let Ok(mut s) = shared.snapshot.write() {
            s.edges = agg.edges();
            s.services = agg
                .services()
                .into_iter()
                .map(|(service, node, native_windows, last_tick)| ServiceView {
                    service,
                    node,
                    native_windows,
                    last_tick,
                })
                .collect();
        }
        SdkCountersReported {
            services: agg.sdk_counters(),
        }
        .emit(metrics);
        let d = agg.drops();
        for (stage, now, before) in [
            (DropStage::LateWindow, d.late, reported.late),
            (DropStage::FutureWindow, d.future, reported.future),
            (
                DropStage::ServiceLimit,
                d.service_limit,
                reported.service_limit,
            ),
            (
                DropStage::TraceAssembly,
                d.trace_overflow,
                reported.trace_overflow,
            ),
        ] {
            if now > before {
                Dropped {
                    stage,
                    count: now - before,
                }
                .emit(metrics);
            }
        }
        reported = d;
    }
}

/// Queues a closed tick's windows and episode changes for the store.
fn store_closed(w: &StoreHandle, c: &ClosedTick) {
    if !c.windows.is_empty() {
        w.record(Record::Windows(c.windows.clone()));
    }
    if let Some(e) = &c.verdict.closed {
        w.record(Record::Episode(e.clone()));
    }
    if c.verdict.episode_start
        && let Some(e) = &c.verdict.current
    {
        w.record(Record::Episode(e.clone()));
    }
}

fn handle(agg: &mut Aggregator, msg: AggMsg, writer: Option<&StoreHandle>) {
    match msg {
        AggMsg::Spans(p) => agg.on_spans(&p.batch, now_unix_ns()),
        AggMsg::Windows {
            batch,
            node,
            reservation,
        } => {
            agg.on_windows(&batch, node.as_deref(), now_unix_ns());
            drop(reservation);
        }
        AggMsg::Node {
            sample,
            reservation,
        } => {
            if let Some(w) = writer {
                w.record(Record::Node(sample.clone()));
            }
            agg.on_node(sample);
            drop(reservation);
        }
        AggMsg::Label(l) => agg.on_label(l),
    }
}

/// The prediction thread's sink: publishes advice and predictions, stores them, and hands
/// alerts to the store and the webhook task.
#[derive(Debug)]
pub struct BoardSink {
    /// Shared views.
    pub shared: Arc<Shared>,
    /// Store writer.
    pub writer: Option<StoreHandle>,
    /// Webhook queue.
    pub webhooks: Option<tokio::sync::mpsc::Sender<Alert>>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
}

impl PredictSink for BoardSink {
    fn tick(&mut self, record: &PredictionRecord, advice: &[Advice], stats: PredictorStats) {
        let _ = self
            .shared
            .frames_queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                Some(v.saturating_sub(1))
            });
        PredictionMade {
            latency_us: record.latency_us,
            model_version: record.model_version,
            train_steps: stats.train_steps,
        }
        .emit(&self.metrics);
        if let Ok(mut m) = self.shared.advice.write() {
            m.clear();
            for a in advice {
                m.insert(a.service.clone(), a.clone());
            }
        }
        self.shared.publish_prediction(record.clone());
        if let Some(w) = &self.writer {
            w.record(Record::Prediction(Box::new(record.clone())));
        }
    }

    fn alert(&mut self, alert: &Alert) {
        AlertEmitted {
            phase: match alert.phase {
                AlertPhase::Start => 0,
                AlertPhase::Change => 1,
                AlertPhase::End => 2,
            },
        }
        .emit(&self.metrics);
        tracing::info!(service = %alert.service, phase = ?alert.phase, risk = alert.risk, resource = alert.resource.as_str(), "alert");
        if let Some(w) = &self.writer {
            w.record(Record::Alert(Box::new(alert.clone())));
        }
        if let Some(tx) = &self.webhooks
            && tx.try_send(alert.clone()).is_err()
        {
            Dropped {
                stage: DropStage::Webhook,
                count: 1,
            }
            .emit(&self.metrics);
        }
    }
}

/// Marks the pipeline ready or not.
pub fn set_ready(shared: &Shared, ready: bool) {
    shared.ready.store(ready, Ordering::Release);
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::predict::Mode;

    /// A prediction for `tick` with no services.
    pub(crate) fn record(tick: u64) -> PredictionRecord {
        PredictionRecord {
            tick,
            tick_start_unix_ns: tick * 100_000_000,
            predictor: "t".into(),
            mode: Mode::Fallback,
            model_version: 0,
            global_risk: 0.0,
            culprit: None,
            resource: None,
            services: Vec::new(),
            precision: None,
            recall: None,
            violation: false,
            latency_us: 0,
        }
    }

    #[test]
    fn the_recent_predictions_keep_the_newest_in_order() {
        let shared = Shared::default();
        assert_eq!(shared.latest_tick(), None);
        let n = RECENT_PREDICTIONS as u64 + 5;
        for t in 0..n {
            shared.publish_prediction(record(t));
            assert_eq!(shared.latest_tick(), Some(t));
        }
        let ticks: Vec<u64> = shared
            .recent
            .read()
            .map(|r| r.iter().map(|p| p.tick).collect())
            .unwrap_or_default();
        let want: Vec<u64> = (n - RECENT_PREDICTIONS as u64..n).collect();
        assert_eq!(ticks, want, "the oldest 5 went, the rest in order");
        assert_eq!(shared.latest_prediction().map(|p| p.tick), Some(n - 1));
    }
}
