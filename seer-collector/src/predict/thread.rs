//! The prediction thread: drives a [`Predictor`] once per closed tick on its own OS thread,
//! turns its predictions into advice, diagnoses and alerts, and hands the results to a
//! [`PredictSink`].
//!
//! A service at or above the alarm threshold is diagnosed every tick; when a tick's diagnosis
//! is `unknown` (the deviation dipped), the service keeps the resource last named in the same
//! alarm, until its risk falls below the threshold.

use std::collections::{HashMap, HashSet};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::advice::{Advice, AdviceConfig, AdviceContext, AdvicePolicy};
use super::alerts::{Alert, AlertInput, AlertTracker};
use super::diagnosis::{Diagnoser, Diagnosis, Resource, ServiceView};
use super::{FEATURES, Mode, PredictionSet, Predictor, PredictorStats, TickInput, TickOutcome};

/// One closed tick, as the aggregator hands it to the prediction thread.
#[derive(Debug, Clone, Default)]
pub struct TickFrame {
    /// Tick index (`tick_start_unix_ns / tick_ns`).
    pub tick: u64,
    /// Tick start, unix nanoseconds.
    pub tick_start_unix_ns: u64,
    /// Tick length, nanoseconds.
    pub tick_ns: u64,
    /// Services with data in this tick (or recently), row order of `features`.
    pub services: Vec<String>,
    /// `services.len() * FEATURES.len()` values, row-major; `NaN` when missing.
    pub features: Vec<f32>,
    /// Call-graph edges, caller -> callee, indices into `services`.
    pub edges: Vec<(usize, usize)>,
    /// Node of each service (index into `nodes`), when known.
    pub service_node: Vec<Option<usize>>,
    /// Node names and their features in [`crate::hw::NODE_FEATURES`] order (`None` =
    /// unsupported or not sampled).
    pub nodes: Vec<(String, Vec<Option<f32>>)>,
    /// The QoS evaluator's verdict for this tick.
    pub violation: bool,
    /// A violation episode began in this tick.
    pub episode_start: bool,
    /// Culprit of the ongoing episode: ground truth from `/v1/labels` when present, else the
    /// critical-path attribution.
    pub culprit: Option<String>,
}

/// One service's row of a [`TickFrame`] before assembly: its name, node and features.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameRow {
    /// Service name.
    pub service: String,
    /// Node it runs on, when known.
    pub node: Option<String>,
    /// Features in [`FEATURES`] order (`None` = missing).
    pub features: Vec<Option<f32>>,
}

/// What the QoS evaluator said about a tick, as a [`TickFrame`] carries it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FrameVerdict {
    /// Some target's windowed percentile exceeded it.
    pub violation: bool,
    /// A violation episode began in this tick.
    pub episode_start: bool,
    /// Culprit of the ongoing episode (ground truth or critical-path attribution).
    pub culprit: Option<String>,
}

impl TickFrame {
    /// Assembles one tick's frame from its rows (in the order the predictor sees them, the
    /// live aggregator sorts them by name), the call-graph `edges` (indices into `rows`),
    /// the latest features of each node (`node_features`, `None` = never sampled) and the QoS
    /// verdict. Rows are padded or truncated to [`FEATURES`]; missing values become `NaN`.
    ///
    /// The live aggregator and the offline replay (`seer-collector replay`) both build their
    /// frames here, so a replay sees exactly what the prediction thread saw.
    pub fn assemble(
        tick: u64,
        tick_ns: u64,
        rows: &[FrameRow],
        edges: Vec<(usize, usize)>,
        node_features: impl Fn(&str) -> Option<Vec<Option<f32>>>,
        verdict: FrameVerdict,
    ) -> Self {
        let width = FEATURES.len();
        let mut features = Vec::with_capacity(rows.len() * width);
        let mut node_names: Vec<&str> = Vec::new();
        let mut service_node = Vec::with_capacity(rows.len());
        for row in rows {
            features.extend(
                (0..width).map(|c| row.features.get(c).copied().flatten().unwrap_or(f32::NAN)),
            );
            service_node.push(row.node.as_deref().map(|n| {
                match node_names.iter().position(|x| *x == n) {
                    Some(i) => i,
                    None => {
                        node_names.push(n);
                        node_names.len() - 1
                    }
                }
            }));
        }
        let nodes = node_names
            .iter()
            .map(|n| {
                (
                    (*n).to_owned(),
                    node_features(n).unwrap_or_else(|| vec![None; crate::hw::NODE_FEATURES.len()]),
                )
            })
            .collect();
        Self {
            tick,
            tick_start_unix_ns: tick.saturating_mul(tick_ns),
            tick_ns,
            services: rows.iter().map(|r| r.service.clone()).collect(),
            features,
            edges,
            service_node,
            nodes,
            violation: verdict.violation,
            episode_start: verdict.episode_start,
            culprit: verdict.culprit,
        }
    }
}

/// One service's entry in a [`PredictionRecord`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceRisk {
    /// Service.
    pub service: String,
    /// Risk, 0..1.
    pub risk: f32,
    /// Whether this service is the named culprit.
    pub culprit: bool,
    /// Diagnosed resource, for services at or above the alarm threshold.
    pub resource: Option<Resource>,
    /// The diagnosis, for services at or above the alarm threshold.
    pub diagnosis: Option<Diagnosis>,
}

/// One tick's predictions, as stored and served by `GET /v1/predictions`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PredictionRecord {
    /// Tick index.
    pub tick: u64,
    /// Tick start, unix nanoseconds.
    pub tick_start_unix_ns: u64,
    /// Predictor name.
    pub predictor: String,
    /// Who answered.
    pub mode: Mode,
    /// Model version (0 = reactive).
    pub model_version: u64,
    /// P(a violation within the horizon).
    pub global_risk: f32,
    /// The culprit service, if any service is at or above the threshold.
    pub culprit: Option<String>,
    /// The culprit's resource.
    pub resource: Option<Resource>,
    /// Per service.
    pub services: Vec<ServiceRisk>,
    /// Recent precision reported by the predictor.
    pub precision: Option<f32>,
    /// Recent recall reported by the predictor.
    pub recall: Option<f32>,
    /// The QoS verdict of this tick.
    pub violation: bool,
    /// Time the predictor took for this tick, microseconds.
    pub latency_us: u64,
}

/// Where the prediction thread puts its results. Called on the prediction thread, once per
/// tick, in tick order; implementations must not block for long (hand off to queues).
pub trait PredictSink: Send {
    /// One tick's predictions and every service's advice.
    fn tick(&mut self, record: &PredictionRecord, advice: &[Advice], stats: PredictorStats);
    /// An alert started, changed or ended.
    fn alert(&mut self, alert: &Alert);
}

/// Settings of the prediction thread.
#[derive(Debug, Clone, Default)]
pub struct PredictConfig {
    /// Advice policy tunables (the alarm threshold is shared with alerts and diagnosis).
    pub advice: AdviceConfig,
    /// Services named as QoS entries (they shed when another service is the culprit).
    pub entries: HashSet<String>,
    /// Quiet ticks before an alert ends.
    pub alert_end_ticks: u32,
}

/// The pieces of the pipeline that run on the prediction thread.
#[derive(Debug)]
pub struct PredictionEngine {
    predictor: Box<dyn Predictor>,
    policy: AdvicePolicy,
    diagnoser: Diagnoser,
    alerts: AlertTracker,
    entries: HashSet<String>,
    /// The last resource named for each service in its ongoing alarm.
    alarm_resource: HashMap<String, Resource>,
}

impl std::fmt::Debug for dyn Predictor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Predictor")
            .field("name", &self.name())
            .finish()
    }
}

fn now_unix_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

impl PredictionEngine {
    /// An engine around `predictor`.
    pub fn new(predictor: Box<dyn Predictor>, config: PredictConfig) -> Self {
        let threshold = config.advice.threshold;
        Self {
            predictor,
            policy: AdvicePolicy::new(config.advice),
            diagnoser: Diagnoser::new(),
            alerts: AlertTracker::new(threshold, config.alert_end_ticks.max(3)),
            entries: config.entries,
            alarm_resource: HashMap::new(),
        }
    }

    /// The predictor's name.
    pub fn predictor_name(&self) -> &'static str {
        self.predictor.name()
    }

    /// Runs one tick through the predictor, the policy, the diagnoser and the alert tracker.
    pub fn step(&mut self, frame: &TickFrame, sink: &mut dyn PredictSink) {
        let width = FEATURES.len();
        let rows = frame.services.len();
        // Defensive: a malformed frame never reaches the predictor.
        let mut features = frame.features.clone();
        features.resize(rows * width, f32::NAN);
        let edges: Vec<(usize, usize)> = frame
            .edges
            .iter()
            .copied()
            .filter(|(a, b)| *a < rows && *b < rows)
            .collect();
        let started = Instant::now();
        let set: PredictionSet = self.predictor.observe(&TickInput {
            tick: frame.tick,
            services: &frame.services,
            features: &features,
            feature_names: FEATURES,
            edges: &edges,
        });
        self.predictor.outcome(&TickOutcome {
            tick: frame.tick,
            violation: frame.violation,
            episode_start: frame.episode_start,
            culprit: frame.culprit.as_deref(),
        });
        let latency_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        let stats = self.predictor.stats();

        // Risk per input row (the predictor may reorder or omit services).
        let risk_of = |svc: &str| -> f32 {
            set.services
                .iter()
                .find(|p| p.service == svc)
                .map_or(0.0, |p| if p.risk.is_finite() { p.risk } else { 0.0 })
        };
        let local_col = FEATURES
            .iter()
            .position(|f| *f == "local_inflight_mean")
            .unwrap_or(0);
        let local_inflight: Vec<f32> = set
            .services
            .iter()
            .map(|p| {
                frame
                    .services
                    .iter()
                    .position(|s| *s == p.service)
                    .and_then(|i| features.get(i * width + local_col).copied())
                    .unwrap_or(f32::NAN)
            })
            .collect();
        let advice = self.policy.advise(
            &set,
            &AdviceContext {
                tick_start_unix_ns: frame.tick_start_unix_ns,
                now_unix_ns: now_unix_ns(),
                tick_ns: frame.tick_ns,
                entries: &self.entries,
                local_inflight: &local_inflight,
            },
        );
        let threshold = self.policy.config().threshold;
        let node_names = crate::hw::NODE_FEATURES;
        let mut services = Vec::with_capacity(rows);
        for (i, svc) in frame.services.iter().enumerate() {
            let risk = risk_of(svc);
            let view = ServiceView {
                service: svc,
                features: &features[i * width..(i + 1) * width],
                feature_names: FEATURES,
                node: frame
                    .service_node
                    .get(i)
                    .copied()
                    .flatten()
                    .and_then(|n| frame.nodes.get(n))
                    .map(|(n, f)| (n.as_str(), f.as_slice())),
                node_feature_names: node_names,
            };
            let diagnosis = if risk >= threshold {
                let callees: Vec<(&str, f32)> = edges
                    .iter()
                    .filter(|(a, _)| *a == i)
                    .map(|(_, b)| (frame.services[*b].as_str(), risk_of(&frame.services[*b])))
                    .collect();
                let mut d = self.diagnoser.diagnose(&view, risk, &callees);
                // An alarm keeps the resource it was given while the deviation dips.
                if d.resource == Resource::Unknown {
                    if let Some(r) = self.alarm_resource.get(svc.as_str()) {
                        d.resource = *r;
                        r.action().clone_into(&mut d.action);
                    }
                } else {
                    self.alarm_resource.insert(svc.clone(), d.resource);
                }
                Some(d)
            } else {
                self.alarm_resource.remove(svc.as_str());
                self.diagnoser.learn(&view);
                None
            };
            let culprit = advice.iter().any(|a| a.service == *svc && a.culprit);
            services.push(ServiceRisk {
                service: svc.clone(),
                risk,
                culprit,
                resource: diagnosis.as_ref().map(|d| d.resource),
                diagnosis,
            });
        }
        let culprit = services.iter().find(|s| s.culprit);
        let record = PredictionRecord {
            tick: frame.tick,
            tick_start_unix_ns: frame.tick_start_unix_ns,
            predictor: self.predictor.name().to_owned(),
            mode: set.mode,
            model_version: set.model_version,
            global_risk: if set.global_risk.is_finite() {
                set.global_risk.clamp(0.0, 1.0)
            } else {
                0.0
            },
            culprit: culprit.map(|s| s.service.clone()),
            resource: culprit.and_then(|s| s.resource),
            services,
            precision: set.precision,
            recall: set.recall,
            violation: frame.violation,
            latency_us,
        };
        sink.tick(&record, &advice, stats);
        let inputs: Vec<AlertInput<'_>> = record
            .services
            .iter()
            .map(|s| AlertInput {
                service: &s.service,
                risk: s.risk,
                culprit: s.culprit,
                diagnosis: s.diagnosis.as_ref(),
            })
            .collect();
        for alert in self.alerts.update(
            frame.tick,
            now_unix_ns(),
            set.mode,
            set.model_version,
            &inputs,
        ) {
            sink.alert(&alert);
        }
    }
}

/// Runs `engine` on the calling thread until `frames` disconnects. Meant to be the body of a
/// dedicated OS thread (see [`spawn`]).
pub fn run(mut engine: PredictionEngine, frames: &Receiver<TickFrame>, sink: &mut dyn PredictSink) {
    loop {
        match frames.recv_timeout(Duration::from_secs(1)) {
            Ok(frame) => engine.step(&frame, sink),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// Spawns the prediction thread (`seer-predict`). It ends when the sender side of `frames` is
/// dropped.
///
/// # Errors
///
/// The OS error if the thread cannot be spawned.
pub fn spawn(
    engine: PredictionEngine,
    frames: Receiver<TickFrame>,
    mut sink: Box<dyn PredictSink>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("seer-predict".into())
        .spawn(move || run(engine, &frames, sink.as_mut()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::predict::ReactivePredictor;
    use std::sync::mpsc;

    #[derive(Default)]
    struct Collect {
        records: Vec<PredictionRecord>,
        advice: Vec<Vec<Advice>>,
        alerts: Vec<Alert>,
    }
    impl PredictSink for std::sync::Arc<std::sync::Mutex<Collect>> {
        fn tick(&mut self, r: &PredictionRecord, a: &[Advice], _: PredictorStats) {
            let mut g = self.lock().unwrap();
            g.records.push(r.clone());
            g.advice.push(a.to_vec());
        }
        fn alert(&mut self, a: &Alert) {
            self.lock().unwrap().alerts.push(a.clone());
        }
    }

    fn frame(tick: u64, queues: &[f32]) -> TickFrame {
        let width = FEATURES.len();
        let q = FEATURES
            .iter()
            .position(|f| *f == "queue_depth_mean")
            .unwrap();
        let mut features = vec![f32::NAN; queues.len() * width];
        for (i, v) in queues.iter().enumerate() {
            features[i * width + q] = *v;
        }
        TickFrame {
            tick,
            tick_start_unix_ns: tick * 100_000_000,
            tick_ns: 100_000_000,
            services: (0..queues.len()).map(|i| format!("s{i}")).collect(),
            features,
            edges: vec![(0, 1), (0, 9)],
            ..Default::default()
        }
    }

    #[test]
    fn thread_drives_predictor_and_raises_an_alert_with_advice() {
        let out = std::sync::Arc::new(std::sync::Mutex::new(Collect::default()));
        let (tx, rx) = mpsc::sync_channel(16);
        let engine =
            PredictionEngine::new(Box::new(ReactivePredictor::new()), PredictConfig::default());
        let handle = spawn(engine, rx, Box::new(out.clone())).unwrap();
        for t in 0..10 {
            tx.send(frame(t, &[0.1, 0.1, 0.1])).unwrap();
        }
        for t in 10..14 {
            tx.send(frame(t, &[0.1, 5.0, 0.1])).unwrap();
        }
        drop(tx);
        handle.join().unwrap();
        let g = out.lock().unwrap();
        assert_eq!(g.records.len(), 14);
        let last = g.records.last().unwrap();
        assert_eq!(last.culprit.as_deref(), Some("s1"));
        assert!(last.services[1].resource.is_some());
        assert!(g.advice.last().unwrap()[1].admit_fraction < 1.0);
        assert!(g.alerts.iter().any(|a| a.service == "s1"));
        // Malformed frame (edge out of range, short features) did not panic: the thread ran all ticks.
    }
}
