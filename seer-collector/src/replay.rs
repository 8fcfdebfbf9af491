//! Offline replay: the stored windows and node samples of a run, rebuilt tick by tick into the
//! [`TickFrame`]s the live pipeline built, run through a predictor and scored against the run's
//! ground truth (`seer-collector replay`).
//!
//! Frames are assembled by [`TickFrame::assemble`], the function the live aggregator uses. What
//! the store does not keep is approximated: call-graph edges are absent (so the `downstream`
//! diagnosis never appears), a service's `last_tick` counts only its stored windows, node
//! features are the latest sample taken before the tick closed (tick end plus the watermark),
//! and the QoS verdict comes from the stored predictions (`violation`) and episodes.
//!
//! Scoring follows the evaluation harness (`examples/src/metrics.rs`), in collector ticks:
//! a service is **named** in a tick when it is flagged culprit with risk at or above the
//! threshold, **confirmed** when it was also named in the [`CONFIRM_TICKS`]` - 1` ticks before.
//! Per fault (window: start to end + [`GRACE_NS`]): the first confirmed service, the first tick
//! confirming the injected service (time to culprit) and the resource named with it, and the
//! lead of the first confirmed tick over the first violation tick of the window (from the
//! labels' client-side ticks). An alarm is a run of confirmed ticks (gaps up to 10 merged); it
//! is false when it overlaps no fault window and starts more than [`HORIZON_TICKS`] before
//! every violation episode. The harness reads predictions by polling, a few ticks behind the
//! collector; the replay does not, so its times are shorter by that lag.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::hw::{NodeSample, ServiceHw};
use crate::predict::advice::{Advice, AdviceConfig};
use crate::predict::thread::{
    FrameRow, FrameVerdict, PredictConfig, PredictSink, PredictionEngine, PredictionRecord,
    TickFrame,
};
use crate::predict::{Predictor, PredictorStats};
use crate::store::{Store, StoreError};
use crate::window::{Episode, ServiceWindow, idle_feature_row};

/// Ticks in a row a service must be named before it counts (the harness's confirmation).
pub const CONFIRM_TICKS: usize = 3;
/// Ticks before a violation episode in which an alarm still counts as true.
pub const HORIZON_TICKS: u64 = 50;
/// Time after a fault's end that still belongs to its window, nanoseconds.
pub const GRACE_NS: u64 = 5_000_000_000;
/// Violation ticks closer than this merge into one episode when scoring alarms.
pub const EPISODE_GAP_TICKS: u64 = 10;

/// Errors of the replay.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The store could not be read.
    #[error("reading the store: {0}")]
    Store(#[from] StoreError),
    /// A file could not be read or copied.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The labels file is not a run record.
    #[error("{path}: {reason}")]
    Labels {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
}

/// Settings of a replay (the collector's, as far as frames and advice go).
#[derive(Debug, Clone)]
pub struct ReplayConfig {
    /// Tick length, ns.
    pub tick_ns: u64,
    /// Watermark, ns: a tick closed this long after its end.
    pub watermark_ns: u64,
    /// Ticks a service stays in frames after its last window.
    pub service_ttl_ticks: u64,
    /// Advice policy (its threshold is the alarm threshold).
    pub advice: AdviceConfig,
    /// QoS entry services.
    pub entries: HashSet<String>,
}

impl ReplayConfig {
    /// From the collector settings (as the live pipeline derives them).
    pub fn from_config(c: &crate::config::Config) -> Self {
        let tick_ns = c.tick_ns().max(1);
        Self {
            tick_ns,
            watermark_ns: c.watermark_ms.saturating_mul(1_000_000),
            service_ttl_ticks: (10_000_000_000 / tick_ns).max(1),
            advice: c.advice.clone(),
            entries: c.qos.iter().map(|q| q.service.clone()).collect(),
        }
    }
}

impl Default for ReplayConfig {
    fn default() -> Self {
        Self::from_config(&crate::config::Config::default())
    }
}

/// What a replay reads from a store.
#[derive(Debug, Clone, Default)]
pub struct Recorded {
    /// Windows per service, by tick.
    pub windows: BTreeMap<String, BTreeMap<u64, ServiceWindow>>,
    /// Node samples per node, oldest first.
    pub nodes: BTreeMap<String, Vec<NodeSample>>,
    /// The live pipeline's predictions, by tick.
    pub predictions: BTreeMap<u64, PredictionRecord>,
    /// Violation episodes.
    pub episodes: Vec<Episode>,
    /// Ground-truth labels posted to the collector.
    pub labels: Vec<crate::window::Label>,
}

impl Recorded {
    /// Reads everything a replay needs from `store`.
    ///
    /// # Errors
    ///
    /// [`ReplayError::Store`].
    pub fn read(store: &Store) -> Result<Self, ReplayError> {
        let mut out = Self::default();
        let mut node_names = BTreeSet::new();
        for service in store.service_names()? {
            let rows = store.windows(&service, 0, u64::MAX, usize::MAX)?;
            if rows.is_empty() {
                continue;
            }
            for w in &rows {
                if let Some(n) = &w.node {
                    node_names.insert(n.clone());
                }
            }
            out.windows
                .insert(service, rows.into_iter().map(|w| (w.tick, w)).collect());
        }
        for node in node_names {
            let samples = store.node_samples(&node, 0, u64::MAX, usize::MAX)?;
            out.nodes.insert(node, samples);
        }
        out.predictions = store
            .predictions(0, u64::MAX, usize::MAX)?
            .into_iter()
            .map(|p| (p.tick, p))
            .collect();
        out.episodes = store.episodes(usize::MAX)?;
        out.labels = store.labels(usize::MAX)?;
        Ok(out)
    }

    /// Reads a collector data directory. The store file is copied to a temporary directory
    /// first, so the recorded run is never written to (opening a store may write).
    ///
    /// # Errors
    ///
    /// [`ReplayError::Io`] when the copy fails, [`ReplayError::Store`] when the store cannot be
    /// read.
    pub fn read_dir(data_dir: &Path) -> Result<Self, ReplayError> {
        let src = data_dir.join(Store::FILE);
        let tmp = std::env::temp_dir().join(format!(
            "seer-replay-{}-{}",
            std::process::id(),
            crate::ingest::now_unix_ns()
        ));
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| ReplayError::Io { path, source }
        };
        std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
        let result = std::fs::copy(&src, tmp.join(Store::FILE))
            .map_err(io(&src))
            .and_then(|_| {
                let store = Store::open(&tmp, 64 << 20)?;
                Self::read(&store)
            });
        let _ = std::fs::remove_dir_all(&tmp);
        result
    }

    /// The first and last tick with a stored window.
    pub fn tick_range(&self) -> Option<(u64, u64)> {
        let first = self
            .windows
            .values()
            .filter_map(|w| w.keys().next())
            .min()?;
        let last = self
            .windows
            .values()
            .filter_map(|w| w.keys().next_back())
            .max()?;
        Some((*first, *last))
    }

    /// Rebuilds the frames of every tick from the first to the last stored window.
    pub fn frames(&self, cfg: &ReplayConfig) -> Vec<TickFrame> {
        let Some((first, last)) = self.tick_range() else {
            return Vec::new();
        };
        let tick_ns = cfg.tick_ns.max(1);
        let mut cursor: HashMap<&str, usize> = HashMap::new();
        let mut node_latest: HashMap<&str, &NodeSample> = HashMap::new();
        let mut service_hw: HashMap<&str, ServiceHw> = HashMap::new();
        let mut service_node: HashMap<&str, &str> = HashMap::new();
        let mut last_tick: HashMap<&str, u64> = HashMap::new();
        let mut out = Vec::with_capacity(usize::try_from(last - first + 1).unwrap_or(0));
        for tick in first..=last {
            // Node samples the aggregator had taken when this tick closed.
            let closed_at = (tick + 1)
                .saturating_mul(tick_ns)
                .saturating_add(cfg.watermark_ns);
            for (node, samples) in &self.nodes {
                let i = cursor.entry(node.as_str()).or_insert(0);
                while let Some(s) = samples.get(*i).filter(|s| s.unix_ns <= closed_at) {
                    for (svc, hw) in &s.services {
                        service_hw.insert(svc.as_str(), *hw);
                    }
                    node_latest.insert(node.as_str(), s);
                    *i += 1;
                }
            }
            let mut rows = Vec::new();
            for (service, windows) in &self.windows {
                let w = windows.get(&tick);
                if let Some(w) = w {
                    last_tick.insert(service.as_str(), tick);
                    if let Some(n) = &w.node {
                        service_node.insert(service.as_str(), n.as_str());
                    }
                }
                let recent = last_tick
                    .get(service.as_str())
                    .is_some_and(|t| *t > 0 && tick.saturating_sub(*t) <= cfg.service_ttl_ticks);
                if w.is_none() && !recent {
                    continue;
                }
                let features = match w {
                    Some(w) => w.features.clone(),
                    None => idle_feature_row(
                        &service_hw
                            .get(service.as_str())
                            .copied()
                            .unwrap_or_default(),
                        tick_ns,
                    ),
                };
                rows.push(FrameRow {
                    service: service.clone(),
                    node: service_node.get(service.as_str()).map(|n| (*n).to_owned()),
                    features,
                });
            }
            let verdict = self.verdict(tick, tick_ns);
            out.push(TickFrame::assemble(
                tick,
                tick_ns,
                &rows,
                Vec::new(),
                |n| node_latest.get(n).map(|s| s.features.clone()),
                verdict,
            ));
        }
        out
    }

    fn verdict(&self, tick: u64, tick_ns: u64) -> FrameVerdict {
        let violation = self.predictions.get(&tick).is_some_and(|p| p.violation);
        let episode = self
            .episodes
            .iter()
            .find(|e| e.start_tick <= tick && tick <= e.end_tick);
        let mid = tick.saturating_mul(tick_ns).saturating_add(tick_ns / 2);
        let truth = self
            .labels
            .iter()
            .rev()
            .find(|l| l.start <= mid && l.end.is_none_or(|e| mid <= e))
            .map(|l| l.service.clone());
        FrameVerdict {
            violation,
            episode_start: episode.is_some_and(|e| e.start_tick == tick),
            culprit: if violation || episode.is_some() {
                truth.or_else(|| episode.and_then(|e| e.culprit.clone()))
            } else {
                None
            },
        }
    }
}

#[derive(Debug, Default)]
struct Collect(Vec<PredictionRecord>);

impl PredictSink for Collect {
    fn tick(&mut self, record: &PredictionRecord, _: &[Advice], _: PredictorStats) {
        self.0.push(record.clone());
    }
    fn alert(&mut self, _: &crate::predict::alerts::Alert) {}
}

/// Runs `frames` through `predictor` with the live prediction thread's engine (advice, culprit
/// choice, diagnosis) and returns its records, one per frame.
pub fn run(
    frames: &[TickFrame],
    predictor: Box<dyn Predictor>,
    cfg: &ReplayConfig,
) -> Vec<PredictionRecord> {
    let mut engine = PredictionEngine::new(
        predictor,
        PredictConfig {
            advice: cfg.advice.clone(),
            entries: cfg.entries.clone(),
            alert_end_ticks: 5,
        },
    );
    let mut sink = Collect::default();
    for f in frames {
        engine.step(f, &mut sink);
    }
    sink.0
}

/// One injected fault, in unix nanoseconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Fault {
    /// Injected service.
    pub service: String,
    /// Resource it took (`cpu`, `memory`, `dependency`, ...).
    pub resource: String,
    /// `gradual` or `step`.
    pub class: String,
    /// Start, unix ns.
    pub start: u64,
    /// End, unix ns.
    pub end: u64,
}

/// The ground truth of a run: its faults and, when known, its violation ticks.
#[derive(Debug, Clone, Default)]
pub struct Truth {
    /// The faults.
    pub faults: Vec<Fault>,
    /// Collector ticks in which the client saw a violation (from a run record).
    pub violations: Option<BTreeSet<u64>>,
}

impl Truth {
    /// From the labels the collector stored (no violation ticks).
    pub fn from_labels(labels: &[crate::window::Label]) -> Self {
        Self {
            faults: labels
                .iter()
                .map(|l| Fault {
                    service: l.service.clone(),
                    resource: l.resource.clone().unwrap_or_default(),
                    class: l.class.clone().unwrap_or_default(),
                    start: l.start,
                    end: l.end.unwrap_or(u64::MAX),
                })
                .collect(),
            violations: None,
        }
    }

    /// From a harness run record (`run.json`): `faults` and the client-side `ticks` (a violation
    /// where `window_p_ms` exceeds `qos_target_ms`), mapped onto collector ticks of `tick_ns`.
    ///
    /// # Errors
    ///
    /// [`ReplayError::Io`] or [`ReplayError::Labels`].
    pub fn from_run_json(path: &Path, tick_ns: u64) -> Result<Self, ReplayError> {
        let text = std::fs::read_to_string(path).map_err(|source| ReplayError::Io {
            path: path.to_owned(),
            source,
        })?;
        let bad = |reason: &str| ReplayError::Labels {
            path: path.to_owned(),
            reason: reason.to_owned(),
        };
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| bad(&format!("not JSON: {e}")))?;
        let faults = v
            .get("faults")
            .and_then(|f| f.as_array())
            .ok_or_else(|| bad("no `faults` array"))?;
        let str_of = |f: &serde_json::Value, k: &str| {
            f.get(k)
                .and_then(|x| x.as_str())
                .unwrap_or_default()
                .to_owned()
        };
        let mut out = Vec::new();
        let mut origin = None;
        for f in faults {
            let start = f.get("start_unix_ns").and_then(serde_json::Value::as_u64);
            let end = f.get("end_unix_ns").and_then(serde_json::Value::as_u64);
            let (Some(start), Some(end)) = (start, end) else {
                return Err(bad("a fault without start_unix_ns/end_unix_ns"));
            };
            if let Some(s) = f.get("start_s").and_then(serde_json::Value::as_f64) {
                origin.get_or_insert(start.saturating_sub((s * 1e9) as u64));
            }
            out.push(Fault {
                service: str_of(f, "service"),
                resource: str_of(f, "resource"),
                class: str_of(f, "class"),
                start,
                end,
            });
        }
        let tick_ms = v.get("tick_ms").and_then(serde_json::Value::as_u64);
        let target = v.get("qos_target_ms").and_then(serde_json::Value::as_f64);
        let violations = match (
            origin,
            tick_ms,
            target,
            v.get("ticks").and_then(|t| t.as_array()),
        ) {
            (Some(origin), Some(tick_ms), Some(target), Some(ticks)) => Some(
                ticks
                    .iter()
                    .enumerate()
                    .filter(|(_, t)| {
                        t.get("window_p_ms")
                            .and_then(serde_json::Value::as_f64)
                            .is_some_and(|p| p > target)
                    })
                    .map(|(i, _)| {
                        let at =
                            origin.saturating_add((i as u64).saturating_mul(tick_ms * 1_000_000));
                        at / tick_ns.max(1)
                    })
                    .collect(),
            ),
            _ => None,
        };
        Ok(Self {
            faults: out,
            violations,
        })
    }
}

/// The replay's verdict on one fault.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FaultScore {
    /// The fault.
    pub service: String,
    /// Its class.
    pub class: String,
    /// Tick of its start.
    pub start_tick: u64,
    /// First confirmed service in its window.
    pub first_named: Option<String>,
    /// Ticks from the start to the first tick confirming the injected service.
    pub time_to_culprit_ticks: Option<u64>,
    /// Resource named with the injected service at that tick.
    pub resource_named: Option<String>,
    /// First violation tick of the window, relative to the start (when labels give it).
    pub violation_tick: Option<u64>,
    /// Ticks from the first confirmed tick (any service) to the first violation tick.
    pub lead_ticks: Option<i64>,
    /// Ticks from the first tick confirming the injected service to the first violation tick.
    pub culprit_lead_ticks: Option<i64>,
}

/// Figures of one class of faults.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassScore {
    /// Faults of the class.
    pub faults: usize,
    /// First confirmed service is the injected one, over the faults.
    pub culprit_accuracy: Option<f64>,
    /// Over faults with a violation tick: named at least one tick before it (harness
    /// definition of gradual detection).
    pub detection_rate: Option<f64>,
    /// Median ticks from start to the injected service's first confirmed tick.
    pub time_to_culprit_ticks_p50: Option<f64>,
    /// Faults whose injected service was confirmed within 5 ticks of the start.
    pub within_5_ticks: Option<f64>,
}

/// The replay's summary.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Score {
    /// Ticks scored.
    pub ticks: usize,
    /// Faults.
    pub faults: usize,
    /// First confirmed service is the injected one, over all faults.
    pub culprit_accuracy: Option<f64>,
    /// Right resource named with the injected service, over faults of resource cpu, memory
    /// or dependency.
    pub resource_accuracy: Option<f64>,
    /// Resources named with the injected service, and how often.
    pub resources_named: BTreeMap<String, usize>,
    /// Alarms (runs of confirmed ticks).
    pub alarms: usize,
    /// Alarms overlapping no fault window and not shortly before a violation episode.
    pub false_alarms: usize,
    /// False alarms per hour of replayed time.
    pub false_alarms_per_hour: f64,
    /// The false alarms: first tick, last tick, services confirmed in its first tick.
    pub false_alarm_list: Vec<(u64, u64, Vec<String>)>,
    /// Gradual faults.
    pub gradual: ClassScore,
    /// Step faults.
    pub step: ClassScore,
    /// Per fault.
    pub per_fault: Vec<FaultScore>,
}

fn named(r: &PredictionRecord, threshold: f32) -> Vec<(&str, &str)> {
    let flagged: Vec<(&str, &str)> = r
        .services
        .iter()
        .filter(|s| s.culprit && s.risk >= threshold)
        .map(|s| (s.service.as_str(), s.resource.map_or("", |x| x.as_str())))
        .collect();
    if !flagged.is_empty() || r.services.iter().any(|s| s.culprit) {
        return flagged;
    }
    // The harness's fallback: the riskiest service at or above the threshold.
    r.services
        .iter()
        .filter(|s| s.risk >= threshold)
        .max_by(|a, b| a.risk.total_cmp(&b.risk))
        .map(|s| (s.service.as_str(), s.resource.map_or("", |x| x.as_str())))
        .into_iter()
        .collect()
}

fn ratio(n: usize, d: usize) -> Option<f64> {
    (d > 0).then(|| n as f64 / d as f64)
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let idx = ((v.len() - 1) as f64 * 0.5).round() as usize;
    v.get(idx).copied()
}

fn runs(ticks: impl Iterator<Item = u64>, gap: u64) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for t in ticks {
        match out.last_mut() {
            Some((_, end)) if t - *end <= gap.max(1) => *end = t,
            _ => out.push((t, t)),
        }
    }
    out
}

/// Scores `records` (one per tick, in tick order) against `truth` with the alarm `threshold`.
pub fn score(records: &[PredictionRecord], truth: &Truth, tick_ns: u64, threshold: f32) -> Score {
    let tick_ns = tick_ns.max(1);
    let by_tick: BTreeMap<u64, Vec<(&str, &str)>> = records
        .iter()
        .map(|r| (r.tick, named(r, threshold)))
        .collect();
    let raw = |t: u64| by_tick.get(&t).map_or(&[][..], Vec::as_slice);
    // Confirmed: named in this tick and the CONFIRM_TICKS - 1 before.
    let confirmed: BTreeMap<u64, Vec<(&str, &str)>> = by_tick
        .iter()
        .filter_map(|(t, names)| {
            let c: Vec<(&str, &str)> = names
                .iter()
                .filter(|(s, _)| {
                    (1..CONFIRM_TICKS as u64).all(|k| {
                        t.checked_sub(k)
                            .is_some_and(|p| raw(p).iter().any(|(n, _)| n == s))
                    })
                })
                .copied()
                .collect();
            (!c.is_empty()).then_some((*t, c))
        })
        .collect();
    let mut per_fault = Vec::new();
    let mut windows = Vec::new();
    for f in &truth.faults {
        let s = f.start / tick_ns;
        let e = f.end.saturating_add(GRACE_NS) / tick_ns;
        windows.push((s, e));
        let in_window = || confirmed.range(s..e.max(s));
        let first_named = in_window().next().map(|(t, c)| (*t, c[0].0.to_owned()));
        let culprit = in_window().find_map(|(t, c)| {
            c.iter()
                .find(|(n, _)| *n == f.service)
                .map(|(_, r)| (*t, (*r).to_owned()))
        });
        let v = truth
            .violations
            .as_ref()
            .and_then(|v| v.range(s..e.max(s)).next().copied());
        let lead = v.and_then(|v| {
            confirmed
                .range(s..=v)
                .next()
                .map(|(a, _)| v as i64 - *a as i64)
        });
        let culprit_lead = v.and_then(|v| {
            culprit
                .as_ref()
                .filter(|(t, _)| *t <= v)
                .map(|(t, _)| v as i64 - *t as i64)
        });
        per_fault.push(FaultScore {
            service: f.service.clone(),
            class: f.class.clone(),
            start_tick: s,
            first_named: first_named.map(|(_, n)| n),
            time_to_culprit_ticks: culprit.as_ref().map(|(t, _)| t - s),
            resource_named: culprit.map(|(_, r)| r),
            violation_tick: v.map(|v| v - s),
            lead_ticks: lead,
            culprit_lead_ticks: culprit_lead,
        });
    }
    let class = |c: &str| -> ClassScore {
        let of: Vec<&FaultScore> = per_fault.iter().filter(|f| f.class == c).collect();
        let violating: Vec<&&FaultScore> =
            of.iter().filter(|f| f.violation_tick.is_some()).collect();
        let ttc: Vec<f64> = of
            .iter()
            .filter_map(|f| f.time_to_culprit_ticks.map(|t| t as f64))
            .collect();
        ClassScore {
            faults: of.len(),
            culprit_accuracy: ratio(
                of.iter()
                    .filter(|f| f.first_named.as_ref() == Some(&f.service))
                    .count(),
                of.len(),
            ),
            detection_rate: ratio(
                violating
                    .iter()
                    .filter(|f| f.lead_ticks.is_some_and(|l| l >= 1))
                    .count(),
                violating.len(),
            ),
            time_to_culprit_ticks_p50: median(ttc),
            within_5_ticks: ratio(
                of.iter()
                    .filter(|f| f.time_to_culprit_ticks.is_some_and(|t| t <= 5))
                    .count(),
                of.len(),
            ),
        }
    };
    let pool: Vec<(&Fault, &FaultScore)> = truth
        .faults
        .iter()
        .zip(&per_fault)
        .filter(|(f, _)| matches!(f.resource.as_str(), "cpu" | "memory" | "dependency"))
        .collect();
    let resource_ok = pool
        .iter()
        .filter(|(f, s)| {
            let want = if f.resource == "dependency" {
                "downstream"
            } else {
                f.resource.as_str()
            };
            s.resource_named.as_deref() == Some(want)
        })
        .count();
    let mut resources_named = BTreeMap::new();
    for f in &per_fault {
        if let Some(r) = &f.resource_named {
            *resources_named
                .entry(if r.is_empty() { "none" } else { r.as_str() }.to_owned())
                .or_insert(0) += 1;
        }
    }
    let alarms = runs(confirmed.keys().copied(), 10);
    let episodes = truth
        .violations
        .as_ref()
        .map(|v| runs(v.iter().copied(), EPISODE_GAP_TICKS))
        .unwrap_or_default();
    let false_alarm_list: Vec<(u64, u64, Vec<String>)> = alarms
        .iter()
        .filter(|(a, b)| {
            let in_fault = windows.iter().any(|(s, e)| a <= e && b >= s);
            let before = episodes
                .iter()
                .any(|(es, ee)| a + HORIZON_TICKS >= *es && a <= ee);
            !in_fault && !before
        })
        .map(|(a, b)| {
            let who = confirmed
                .get(a)
                .map(|c| c.iter().map(|(n, _)| (*n).to_owned()).collect())
                .unwrap_or_default();
            (*a, *b, who)
        })
        .collect();
    let false_alarms = false_alarm_list.len();
    let hours = records.len() as f64 * tick_ns as f64 / 3.6e12;
    Score {
        ticks: records.len(),
        faults: truth.faults.len(),
        culprit_accuracy: ratio(
            per_fault
                .iter()
                .filter(|f| f.first_named.as_ref() == Some(&f.service))
                .count(),
            per_fault.len(),
        ),
        resource_accuracy: ratio(resource_ok, pool.len()),
        resources_named,
        alarms: alarms.len(),
        false_alarms,
        false_alarms_per_hour: if hours > 0.0 {
            false_alarms as f64 / hours
        } else {
            0.0
        },
        gradual: class("gradual"),
        step: class("step"),
        per_fault,
        false_alarm_list,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::predict::FEATURES;
    use crate::predict::thread::ServiceRisk;

    fn record(tick: u64, culprit: Option<&str>) -> PredictionRecord {
        PredictionRecord {
            culprit: culprit.map(str::to_owned),
            services: ["a", "b"]
                .iter()
                .map(|s| ServiceRisk {
                    service: (*s).to_owned(),
                    risk: if culprit == Some(*s) { 0.9 } else { 0.1 },
                    culprit: culprit == Some(*s),
                    resource: (culprit == Some(*s))
                        .then_some(crate::predict::diagnosis::Resource::Cpu),
                    diagnosis: None,
                })
                .collect(),
            ..crate::pipeline::tests::record(tick)
        }
    }

    #[test]
    fn scoring_confirms_over_three_ticks_and_counts_false_alarms() {
        let tick_ns = 100_000_000;
        // Fault on b from tick 100 to 200 (window to 250); b named from 110; a named 400..405.
        let records: Vec<PredictionRecord> = (0..600)
            .map(|t| {
                let c = if (110..150).contains(&t) {
                    Some("b")
                } else if (400..406).contains(&t) {
                    Some("a")
                } else {
                    None
                };
                record(t, c)
            })
            .collect();
        let truth = Truth {
            faults: vec![Fault {
                service: "b".into(),
                resource: "cpu".into(),
                class: "step".into(),
                start: 100 * tick_ns,
                end: 200 * tick_ns,
            }],
            violations: Some([130, 131, 132].into_iter().collect()),
        };
        let s = score(&records, &truth, tick_ns, 0.5);
        let f = &s.per_fault[0];
        assert_eq!(f.first_named.as_deref(), Some("b"));
        assert_eq!(f.time_to_culprit_ticks, Some(12));
        assert_eq!(f.violation_tick, Some(30));
        assert_eq!(f.lead_ticks, Some(18));
        assert_eq!(f.culprit_lead_ticks, Some(18));
        assert_eq!(s.resource_accuracy, Some(1.0));
        assert_eq!(s.culprit_accuracy, Some(1.0));
        assert_eq!(s.step.time_to_culprit_ticks_p50, Some(12.0));
        assert_eq!(s.step.within_5_ticks, Some(0.0));
        assert_eq!(s.alarms, 2);
        assert_eq!(s.false_alarms, 1);
    }

    #[test]
    fn frames_rebuild_rows_idle_services_and_nodes() {
        let mut rec = Recorded::default();
        let w = |svc: &str, tick: u64, q: f32| ServiceWindow {
            service: svc.into(),
            tick,
            tick_start_unix_ns: tick * 100_000_000,
            node: Some("n1".into()),
            source: "sdk".into(),
            arrivals: 1,
            completions: 1,
            errors: 0,
            shed: 0,
            latency_p50_ms: None,
            latency_p90_ms: None,
            latency_p99_ms: None,
            features: FEATURES
                .iter()
                .map(|f| (*f == "queue_depth_mean").then_some(q))
                .collect(),
            endpoints: vec![],
        };
        rec.windows
            .entry("b".into())
            .or_default()
            .insert(10, w("b", 10, 2.0));
        rec.windows
            .entry("a".into())
            .or_default()
            .insert(11, w("a", 11, 1.0));
        rec.nodes.insert(
            "n1".into(),
            vec![NodeSample {
                node: "n1".into(),
                unix_ns: 11 * 100_000_000,
                features: vec![Some(0.5); crate::hw::NODE_FEATURES.len()],
                services: vec![(
                    "b".into(),
                    ServiceHw {
                        throttled_ms_per_s: Some(40.0),
                        ..Default::default()
                    },
                )],
            }],
        );
        let frames = rec.frames(&ReplayConfig::default());
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0].services, vec!["b".to_string()]);
        assert_eq!(frames[0].nodes[0].1[0], Some(0.5), "sample before close");
        // Tick 11: a has data, b is idle but recent: zero in-flight, hw from the sample.
        assert_eq!(frames[1].services, vec!["a".to_string(), "b".to_string()]);
        let width = FEATURES.len();
        let col = |n: &str| FEATURES.iter().position(|f| *f == n).unwrap();
        assert_eq!(frames[1].features[col("queue_depth_mean")], 1.0);
        assert_eq!(frames[1].features[width + col("throttled_ms_per_s")], 40.0);
        assert_eq!(frames[1].features[width + col("arrivals_rps")], 0.0);
        assert!(frames[1].features[width + col("queue_depth_mean")].is_nan());
        assert_eq!(frames[1].service_node, vec![Some(0), Some(0)]);
    }
}
