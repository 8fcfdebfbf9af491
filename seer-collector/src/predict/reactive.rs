//! The reactive baseline: own-queue depth, self latency and CPU wait, each service normalised
//! against the others.
//!
//! The rule follows what named the culprit in the measured faults (notes in `docs/`): a service's
//! *own* queue (requests waiting for its own worker, not for its callees) compared with the other
//! services' queues, and its self-latency p99 against its own EWMA baseline, divided by the
//! median of the other services' ratios so that machine-wide stalls cancel out.
//!
//! Per service and tick, three terms in 0..1; the raw score is the largest:
//!
//! | term | evidence | scores fully when |
//! |---|---|---|
//! | queue | own queue depth (else local in-flight), at least `queue_floor` | `queue_ratio` x the largest other queue |
//! | latency (x 0.8) | self-latency p99 / own healthy baseline, over the median of the others' ratios | `latency_ratio` |
//! | CPU (x `cpu_weight`) | cgroup throttling above its quiet level, at least `cpu_floor_ms` ms/s; or run-queue wait above its quiet level, at least `runq_floor_ms` ms/s | `cpu_ratio` x the largest other service's |
//!
//! The CPU term is what a CPU shortage inside one service's cgroup looks like (a hog sharing its
//! CFS quota): its throttling and run-queue wait jump while the other services' stay put, often
//! before its queue builds up, so it names the culprit earlier; like the other terms it is
//! relative to the other services, so a machine-wide CPU stall cancels out. The quiet level is
//! the mean of the warm-up ticks, then an EWMA that rises slowly (`cpu_baseline_alpha`, a time
//! constant of 20 s at 100 ms ticks) and falls fast, so a service throttled for good stops
//! alarming, while a fault's ramp is not absorbed. No CPU term during warm-up.
//!
//! Scores are smoothed over ticks, so a single spiky queue tick does not raise an alarm: the
//! risk rises at `smoothing` (or as fast as the CPU term is strong, since throttling and
//! run-queue wait are per-second rates rather than per-tick samples) and falls at `decay`.

use std::collections::HashMap;

use super::{Mode, PredictionSet, Predictor, ServicePrediction, TickInput, TickOutcome};

/// Tunables of [`ReactivePredictor`] (deserializable, missing fields take the defaults, so a
/// replay can try other values: `seer-collector replay --reactive 'cpu_ratio = 4.0'`).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReactiveConfig {
    /// Queue depth below which a service's own queue is never suspicious.
    pub queue_floor: f64,
    /// How many times the largest other queue a service's queue must be to score fully.
    pub queue_ratio: f64,
    /// Self-latency ratio (to its own baseline, relative to the others) that scores fully.
    pub latency_ratio: f64,
    /// EWMA weight of a new healthy tick in the latency baseline.
    pub baseline_alpha: f64,
    /// EWMA weight of a new tick in the smoothed risk (0.5 needs about two ticks to alarm).
    pub smoothing: f64,
    /// Ticks a service must be seen before its latency term counts.
    pub warmup_ticks: u32,
    /// cgroup throttling above the service's own quiet level, ms per second, below which its
    /// CPU quota is never suspicious.
    pub cpu_floor_ms: f64,
    /// Run-queue wait above the service's own quiet level, ms per second, below which it is
    /// never suspicious (healthy run-queue wait is noisy: hundreds of ms/s at p99).
    pub runq_floor_ms: f64,
    /// How many times the largest other service's CPU wait a service's must be to score fully.
    pub cpu_ratio: f64,
    /// Weight of the CPU term in the raw score (0 turns it off).
    pub cpu_weight: f64,
    /// EWMA weight of a tick that raises a service's quiet CPU-wait level (it falls at 20
    /// times this rate; the mean of the warm-up ticks starts it), so a service throttled for
    /// good stops alarming after a few time constants while a fault's ramp is not absorbed.
    pub cpu_baseline_alpha: f64,
    /// EWMA weight of a tick whose raw score is lower than the smoothed risk (the risk rises at
    /// `smoothing`, or at once when the raw score is 1, and falls at this rate).
    pub decay: f64,
}

impl Default for ReactiveConfig {
    fn default() -> Self {
        Self {
            queue_floor: 0.5,
            queue_ratio: 3.0,
            latency_ratio: 3.0,
            baseline_alpha: 0.05,
            smoothing: 0.5,
            warmup_ticks: 20,
            cpu_floor_ms: 50.0,
            runq_floor_ms: 1000.0,
            cpu_ratio: 3.0,
            cpu_weight: 1.0,
            cpu_baseline_alpha: 0.005,
            decay: 0.5,
        }
    }
}

#[derive(Debug, Clone, Default)]
struct ServiceState {
    /// EWMA of the self-latency p99 (ms) over healthy ticks.
    latency_baseline: Option<f64>,
    /// Smoothed risk.
    risk: f64,
    /// Quiet level of the cgroup throttling and run-queue wait, ms/s.
    cpu_baseline: [Option<f64>; 2],
    /// Ticks seen.
    seen: u32,
    /// Tick last seen, to forget services that left.
    last_tick: u64,
}

/// The reactive baseline predictor. Always available; model version 0.
///
/// Reports [`Mode::Fallback`]: it is the rule the collector falls back to whenever no trained
/// model answers.
#[derive(Debug, Clone, Default)]
pub struct ReactivePredictor {
    config: ReactiveConfig,
    state: HashMap<String, ServiceState>,
}

/// Column indices the rule reads, resolved per tick from `feature_names`.
#[derive(Debug, Clone, Copy)]
struct Columns {
    queue: Option<usize>,
    local_inflight: Option<usize>,
    self_p99: Option<usize>,
    latency_p99: Option<usize>,
    throttled: Option<usize>,
    runq: Option<usize>,
}

impl Columns {
    fn resolve(names: &[&str]) -> Self {
        let find = |n: &str| names.iter().position(|x| *x == n);
        Self {
            queue: find("queue_depth_mean"),
            local_inflight: find("local_inflight_mean"),
            self_p99: find("self_latency_p99_ms"),
            latency_p99: find("latency_p99_ms"),
            throttled: find("throttled_ms_per_s"),
            runq: find("runq_wait_ms_per_s"),
        }
    }
}

fn finite(v: Option<f32>) -> Option<f64> {
    v.map(f64::from).filter(|x| x.is_finite())
}

impl ReactivePredictor {
    /// A predictor with the default tunables.
    pub fn new() -> Self {
        Self::default()
    }

    /// A predictor with the given tunables.
    pub fn with_config(config: ReactiveConfig) -> Self {
        Self {
            config,
            state: HashMap::new(),
        }
    }

    /// The tunables in use.
    pub fn config(&self) -> &ReactiveConfig {
        &self.config
    }

    /// Scores one tick without the smoothing: per service, a raw risk in 0..1 and its CPU term.
    fn raw_scores(&mut self, input: &TickInput<'_>) -> Vec<(f64, f64)> {
        let cols = Columns::resolve(input.feature_names);
        let width = input.feature_names.len();
        let n = input.services.len();
        let cell = |row: usize, col: Option<usize>| -> Option<f64> {
            let col = col?;
            finite(input.features.get(row * width + col).copied())
        };
        // Own queue: queue depth where the SDK reports it, else local in-flight (span-derived).
        let queues: Vec<f64> = (0..n)
            .map(|i| {
                cell(i, cols.queue)
                    .or_else(|| cell(i, cols.local_inflight))
                    .unwrap_or(0.0)
                    .max(0.0)
            })
            .collect();
        // Latency ratio against the service's own baseline.
        let ratios: Vec<Option<f64>> = (0..n)
            .map(|i| {
                let lat = cell(i, cols.self_p99).or_else(|| cell(i, cols.latency_p99))?;
                let st = self.state.get(&input.services[i])?;
                if st.seen < self.config.warmup_ticks {
                    return None;
                }
                let base = st.latency_baseline?;
                Some(lat / base.max(0.05))
            })
            .collect();
        // CPU wait above the service's own quiet level: [throttling, run-queue wait].
        let cpu_cols = [cols.throttled, cols.runq];
        let excess: Vec<[f64; 2]> = (0..n)
            .map(|i| {
                let st = self.state.get(&input.services[i]);
                let mut e = [0.0; 2];
                // No CPU term while the quiet level is being learnt.
                if st.is_none_or(|s| s.seen < self.config.warmup_ticks) {
                    return e;
                }
                for (k, col) in cpu_cols.iter().enumerate() {
                    if let Some(v) = cell(i, *col) {
                        let base = st.and_then(|s| s.cpu_baseline[k]).unwrap_or(0.0);
                        e[k] = (v - base).max(0.0);
                    }
                }
                e
            })
            .collect();
        let mut raw = Vec::with_capacity(n);
        let mut cpu_terms = Vec::with_capacity(n);
        for i in 0..n {
            let mut cpu_term = 0.0_f64;
            for (k, floor) in [self.config.cpu_floor_ms, self.config.runq_floor_ms]
                .into_iter()
                .enumerate()
            {
                let own = excess[i][k];
                if own < floor {
                    continue;
                }
                let others = excess
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .map(|(_, e)| e[k])
                    .fold(0.0_f64, f64::max);
                let rel = own / others.max(floor / 2.0);
                let term = ((rel - 1.0) / (self.config.cpu_ratio - 1.0)).clamp(0.0, 1.0);
                cpu_term = cpu_term.max(term);
            }
            let others_max_queue = queues
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, q)| *q)
                .fold(0.0_f64, f64::max);
            let queue_term = if queues[i] >= self.config.queue_floor {
                let rel = queues[i] / others_max_queue.max(self.config.queue_floor / 2.0);
                ((rel - 1.0) / (self.config.queue_ratio - 1.0)).clamp(0.0, 1.0)
            } else {
                0.0
            };
            let latency_term = match ratios[i] {
                Some(r) => {
                    let mut others: Vec<f64> = ratios
                        .iter()
                        .enumerate()
                        .filter(|(j, _)| *j != i)
                        .filter_map(|(_, r)| *r)
                        .collect();
                    others.sort_by(f64::total_cmp);
                    let median = others.get(others.len() / 2).copied().unwrap_or(1.0);
                    let rel = r / median.max(1.0);
                    ((rel - 1.0) / (self.config.latency_ratio - 1.0)).clamp(0.0, 1.0)
                }
                None => 0.0,
            };
            raw.push(
                queue_term
                    .max(0.8 * latency_term)
                    .max(self.config.cpu_weight.clamp(0.0, 1.0) * cpu_term),
            );
            cpu_terms.push(self.config.cpu_weight.clamp(0.0, 1.0) * cpu_term);
        }
        // Update baselines from this tick (healthy ticks only move the baseline).
        for (i, raw_i) in raw.iter().enumerate() {
            let lat = cell(i, cols.self_p99).or_else(|| cell(i, cols.latency_p99));
            let st = self.state.entry(input.services[i].clone()).or_default();
            st.seen = st.seen.saturating_add(1);
            st.last_tick = input.tick;
            // The quiet CPU-wait level: the mean during warm-up, then an EWMA that rises
            // slowly and falls fast, on every tick (so a lasting new level stops alarming).
            for (k, col) in cpu_cols.iter().enumerate() {
                let Some(v) = cell(i, *col) else { continue };
                let b = st.cpu_baseline[k].get_or_insert(v);
                let a = if st.seen <= self.config.warmup_ticks {
                    1.0 / f64::from(st.seen.max(1))
                } else if v > *b {
                    self.config.cpu_baseline_alpha
                } else {
                    20.0 * self.config.cpu_baseline_alpha
                };
                *b += a.clamp(0.0, 1.0) * (v - *b);
            }
            if let Some(lat) = lat {
                let alpha = if st.seen <= self.config.warmup_ticks {
                    1.0 / f64::from(st.seen.max(1))
                } else {
                    self.config.baseline_alpha
                };
                if *raw_i < 0.5 {
                    st.latency_baseline = Some(match st.latency_baseline {
                        Some(b) => b + alpha * (lat - b),
                        None => lat,
                    });
                }
            }
        }
        raw.into_iter().zip(cpu_terms).collect()
    }
}

impl Predictor for ReactivePredictor {
    fn name(&self) -> &'static str {
        "reactive"
    }

    fn observe(&mut self, input: &TickInput<'_>) -> PredictionSet {
        let raw = self.raw_scores(input);
        let rise = self.config.smoothing.clamp(0.0, 1.0);
        let fall = self.config.decay.clamp(0.0, 1.0);
        let mut services = Vec::with_capacity(raw.len());
        let mut global = 0.0_f32;
        for (name, (r, cpu)) in input.services.iter().zip(raw) {
            let st = self.state.entry(name.clone()).or_default();
            // Rise at `smoothing`, or as fast as the CPU term is strong (throttling is a
            // per-second counter, not a spiky per-tick sample: one full tick is enough);
            // fall at `decay`.
            let alpha = if r >= st.risk { rise.max(cpu) } else { fall };
            st.risk += alpha * (r - st.risk);
            let risk = st.risk.clamp(0.0, 1.0) as f32;
            global = global.max(risk);
            services.push(ServicePrediction {
                service: name.clone(),
                risk,
            });
        }
        // Forget services not seen for a long time (bounded state).
        let tick = input.tick;
        self.state
            .retain(|_, st| tick.saturating_sub(st.last_tick) < 6_000);
        PredictionSet {
            tick,
            mode: Mode::Fallback,
            model_version: 0,
            global_risk: global,
            services,
            precision: None,
            recall: None,
        }
    }

    fn outcome(&mut self, _outcome: &TickOutcome<'_>) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::predict::FEATURES;

    fn row(queue: f32, self_p99: f32) -> Vec<f32> {
        FEATURES
            .iter()
            .map(|f| match *f {
                "queue_depth_mean" => queue,
                "self_latency_p99_ms" => self_p99,
                _ => f32::NAN,
            })
            .collect()
    }

    /// One tick of `features` (row-major, [`FEATURES`] wide) for services `s0`, `s1`, ...
    fn observe(p: &mut ReactivePredictor, t: u64, features: &[f32]) -> PredictionSet {
        let n = features.len() / FEATURES.len();
        let services: Vec<String> = (0..n).map(|i| format!("s{i}")).collect();
        p.observe(&TickInput {
            tick: t,
            services: &services,
            features,
            feature_names: FEATURES,
            edges: &[],
        })
    }

    fn tick(p: &mut ReactivePredictor, t: u64, rows: &[(f32, f32)]) -> PredictionSet {
        let features: Vec<f32> = rows.iter().flat_map(|(q, l)| row(*q, *l)).collect();
        observe(p, t, &features)
    }

    #[test]
    fn one_service_queueing_alone_is_named_after_two_ticks() {
        let mut p = ReactivePredictor::new();
        for t in 0..30 {
            let s = tick(&mut p, t, &[(0.1, 2.0), (0.2, 2.0), (0.1, 2.0)]);
            assert!(
                s.global_risk < 0.2,
                "healthy tick {t} scored {}",
                s.global_risk
            );
        }
        let first = tick(&mut p, 30, &[(0.1, 2.0), (4.0, 2.0), (0.2, 2.0)]);
        assert!(
            first.services[1].risk < 0.6,
            "one tick must not alarm fully"
        );
        let second = tick(&mut p, 31, &[(0.1, 2.0), (4.0, 2.0), (0.2, 2.0)]);
        assert!(second.services[1].risk >= 0.7);
        assert!(second.services[0].risk < 0.1 && second.services[2].risk < 0.1);
        assert_eq!(second.mode, Mode::Fallback);
    }

    #[test]
    fn machine_wide_stall_cancels_out() {
        let mut p = ReactivePredictor::new();
        for t in 0..30 {
            tick(&mut p, t, &[(0.1, 2.0), (0.1, 2.0), (0.1, 2.0)]);
        }
        for t in 30..35 {
            let s = tick(&mut p, t, &[(3.0, 20.0), (3.0, 20.0), (3.0, 20.0)]);
            assert!(s.global_risk < 0.2, "stall scored {}", s.global_risk);
        }
    }

    #[test]
    fn self_latency_rise_on_one_service_scores() {
        let mut p = ReactivePredictor::new();
        for t in 0..30 {
            tick(&mut p, t, &[(0.0, 2.0), (0.0, 2.0), (0.0, 2.0)]);
        }
        let mut last = None;
        for t in 30..34 {
            last = Some(tick(&mut p, t, &[(0.0, 2.0), (0.0, 12.0), (0.0, 2.0)]));
        }
        let s = last.unwrap();
        assert!(s.services[1].risk > 0.6 && s.services[0].risk < 0.1);
    }

    fn cpu_tick(p: &mut ReactivePredictor, t: u64, throttled: &[f32]) -> PredictionSet {
        let features: Vec<f32> = throttled
            .iter()
            .flat_map(|thr| {
                FEATURES.iter().map(move |f| match *f {
                    "queue_depth_mean" => 0.1,
                    "self_latency_p99_ms" => 2.0,
                    "throttled_ms_per_s" => *thr,
                    "runq_wait_ms_per_s" => 100.0,
                    _ => f32::NAN,
                })
            })
            .collect();
        observe(p, t, &features)
    }

    #[test]
    fn one_service_throttled_alone_is_named_at_once() {
        let mut p = ReactivePredictor::new();
        for t in 0..30 {
            let s = cpu_tick(&mut p, t, &[0.0, 0.0, 0.0]);
            assert!(s.global_risk < 0.2);
        }
        let s = cpu_tick(&mut p, 30, &[0.0, 900.0, 0.0]);
        assert!(s.services[1].risk >= 0.9, "{s:?}");
        assert!(s.services[0].risk < 0.1 && s.services[2].risk < 0.1);
        // A little throttling is not enough.
        let mut p = ReactivePredictor::new();
        for t in 0..30 {
            cpu_tick(&mut p, t, &[0.0, 0.0, 0.0]);
        }
        let s = cpu_tick(&mut p, 30, &[0.0, 30.0, 0.0]);
        assert!(s.global_risk < 0.2, "{s:?}");
    }

    #[test]
    fn machine_wide_throttling_cancels_and_chronic_throttling_fades() {
        let mut p = ReactivePredictor::new();
        for t in 0..30 {
            cpu_tick(&mut p, t, &[0.0, 0.0, 0.0]);
        }
        for t in 30..35 {
            let s = cpu_tick(&mut p, t, &[500.0, 600.0, 550.0]);
            assert!(s.global_risk < 0.2, "stall scored {}", s.global_risk);
        }
        // A service throttled from the start sets its own quiet level.
        let mut p = ReactivePredictor::new();
        let mut last = None;
        for t in 0..30 {
            last = Some(cpu_tick(&mut p, t, &[0.0, 200.0, 0.0]));
        }
        assert!(last.unwrap().global_risk < 0.2);
    }

    #[test]
    fn nans_and_empty_ticks_do_not_panic() {
        let mut p = ReactivePredictor::new();
        let s = p.observe(&TickInput {
            tick: 1,
            services: &[],
            features: &[],
            feature_names: FEATURES,
            edges: &[],
        });
        assert!(s.services.is_empty());
        let s = tick(&mut p, 2, &[(f32::NAN, f32::NAN)]);
        assert_eq!(s.services.len(), 1);
        assert!(s.services[0].risk.is_finite());
        // Truncated feature rows are treated as missing.
        let names = vec!["a".to_string(), "b".to_string()];
        let s = p.observe(&TickInput {
            tick: 3,
            services: &names,
            features: &[1.0],
            feature_names: FEATURES,
            edges: &[],
        });
        assert_eq!(s.services.len(), 2);
    }
}
