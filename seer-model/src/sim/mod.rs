//! The offline quality check: a seeded queueing simulation streamed through online training and
//! prediction, scored against a reactive baseline on the same data in the same run.
//!
//! Run it with `cargo xtask model-eval [--seed N]`.
//!
//! # Data
//!
//! [`World`] simulates a 13-service graph after DeathStarBench's Social Network (fan-out at the
//! frontend and at compose-post, chains such as compose-post -> text -> url-shorten) at 100 ms
//! ticks: Poisson arrivals, Poisson service at each service's capacity, backlog, spiky
//! measurement noise like the live demo's, machine-wide stalls, benign load bursts, and faults of
//! two classes (gradual: 10-30 s to overload; step). Labels come from the simulated end-to-end
//! p99 over a 1 s sliding window against a 100 ms target. The culprit of a violation is the
//! service where the active (or just-ended) fault was injected.
//!
//! # Metrics
//!
//! Both predictors are scored the same way, after a warm-up share of the stream (the model keeps
//! learning online throughout):
//!
//! - **alarm**: the highest per-service risk (P(this service causes a violation within H)) at or
//!   over the threshold (0.5) in two consecutive ticks; an alarm *run* is a maximal run of such
//!   ticks. Both predictors alarm on their highest service risk (the rule's global risk is that
//!   maximum anyway); the model's separate global head is reported, not scored.
//! - **precision** (all alarms): alarm runs followed by a violation tick between their start and
//!   H ticks after their end, over all alarm runs.
//! - **recall** (gradual faults): a gradual fault is detected when the last alarm run that began
//!   before its violation episode began after the fault started and was still on within H ticks
//!   of the episode; recall = detected / gradual faults whose episode started in the span.
//! - **lead_ticks_p50**: median of (episode start - that run's start) over detected faults.
//! - **culprit_top1** (all faults): the service with the highest risk at the first alarm tick in
//!   `[max(fault start, episode start - H), episode start + 10]` is the injected one; a fault
//!   with no alarm there counts as wrong.
//! - **train_step_ms**: mean wall time of the recent training steps; **infer_ms**: median wall
//!   time of one `observe` call (all services of a tick) through the handle.

mod baseline;
mod score;
mod world;

use std::time::Instant;

use serde::Serialize;

pub use baseline::Reactive;
pub use score::{Scores, Trace, episodes, score};
pub use world::{FEATURES, Fault, FaultClass, NODE_FEATURES, SimTick, World, WorldConfig};

use crate::{ModelConfig, ModelError, ModelHandle, Outcome, TickFeatures};

/// Settings of one evaluation run.
#[derive(Debug, Clone)]
pub struct EvalConfig {
    /// The simulated world.
    pub world: WorldConfig,
    /// The model under test.
    pub model: ModelConfig,
    /// Share of the stream used only for warm-up (not scored).
    pub warmup: f64,
}

impl EvalConfig {
    /// The default evaluation for `seed`: 40 faults per class, default model with a 50-tick
    /// horizon, 40% warm-up.
    pub fn new(seed: u64) -> Self {
        EvalConfig {
            world: WorldConfig {
                seed,
                ..WorldConfig::default()
            },
            model: ModelConfig::default()
                .with_horizon(50)
                .with_train_every(4)
                .with_seed(seed),
            warmup: 0.4,
        }
    }
}

/// One predictor's figures.
#[derive(Debug, Clone, Serialize)]
pub struct PredictorReport {
    /// Quality.
    #[serde(flatten)]
    pub scores: Scores,
    /// Mean training step, ms (0 for the rule).
    pub train_step_ms: f64,
    /// Median prediction for one tick, ms.
    pub infer_ms: f64,
}

/// The result of [`evaluate`].
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    /// Seed of the world and the model.
    pub seed: u64,
    /// Ticks simulated.
    pub ticks: u64,
    /// First scored tick.
    pub scored_from: u64,
    /// The model.
    #[serde(flatten)]
    pub model: PredictorReport,
    /// The reactive baseline on the same data.
    pub baseline: PredictorReport,
    /// Model version (training steps) at the end.
    pub model_version: u64,
    /// Trainable parameters.
    pub parameters: usize,
    /// Mode at the end.
    pub mode: crate::Mode,
    /// Share of scored ticks in which the model was trusted (`predicting`).
    pub predicting_share: f64,
    /// Wall time of the whole run, s.
    pub wall_s: f64,
}

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Streams the simulated world through the model (online) and the reactive baseline, and scores
/// both.
///
/// # Errors
///
/// Any [`ModelError`] from the model.
pub fn evaluate(cfg: &EvalConfig) -> Result<EvalReport, ModelError> {
    let started = Instant::now();
    let mut world = World::new(cfg.world);
    let services = world.services();
    let edges = world.edges();
    let horizon = cfg.model.horizon() as u64;
    let threshold = cfg.model.threshold();
    let model = ModelHandle::spawn(cfg.model.clone())?;
    let mut rule = Reactive::new(services.len());
    let ticks = world.len();
    let from = (ticks as f64 * cfg.warmup) as u64;
    let width = FEATURES.len();
    let node_names = NODE_FEATURES;
    let mut model_trace = Trace::default();
    let mut rule_trace = Trace::default();
    let mut violation = Vec::with_capacity(ticks as usize);
    let mut infer = Vec::new();
    let mut infer_rule = Vec::new();
    let mut predicting = 0u64;
    let faults = world.faults().to_vec();
    let mut dump = std::env::var_os("SEER_EVAL_TRACE").and_then(|p| std::fs::File::create(p).ok());
    for _ in 0..ticks {
        let t = world.step();
        let node: Vec<(&str, f32)> = node_names
            .iter()
            .copied()
            .zip(t.node.iter().copied())
            .collect();
        let input = TickFeatures {
            tick: t.tick,
            services: &services,
            features: &t.features,
            feature_names: FEATURES,
            edges,
            node: &node,
        };
        let t0 = Instant::now();
        let p = model.observe(&input)?;
        let dt = t0.elapsed().as_secs_f64() * 1000.0;
        let risks: Vec<f32> = p.services.iter().map(|s| s.risk).collect();
        model_trace.push(risks.iter().copied().fold(0.0, f32::max), &risks);

        let queues: Vec<f64> = (0..services.len())
            .map(|i| f64::from(t.features[i * width + 3]))
            .collect();
        let self_p99: Vec<f64> = (0..services.len())
            .map(|i| f64::from(t.features[i * width + 6]))
            .collect();
        let t1 = Instant::now();
        let rule_risks = rule.observe(&queues, &self_p99);
        let dt_rule = t1.elapsed().as_secs_f64() * 1000.0;
        let rule_global = rule_risks.iter().copied().fold(0.0, f32::max);
        rule_trace.push(rule_global, &rule_risks);
        if t.tick >= from {
            infer.push(dt);
            infer_rule.push(dt_rule);
            predicting += u64::from(p.mode == crate::Mode::Predicting);
        }

        // The culprit of a violation: the fault active now or ended within the drain time.
        let culprit = if t.violation {
            let i = faults.partition_point(|f| f.end + 100 <= t.tick);
            faults
                .get(i)
                .filter(|f| f.start <= t.tick)
                .map(|f| services[f.service].as_str())
        } else {
            None
        };
        model.outcome(&Outcome {
            tick: t.tick,
            violation: t.violation,
            culprit,
        })?;
        violation.push(t.violation);
        if let Some(f) = dump.as_mut() {
            use std::io::Write;
            let fault = t.fault.map(|i| faults[i]);
            let _ = writeln!(
                f,
                "{},{:.3},{},{:.3},{},{},{},{},{},{},{:.1},{:.3},{:.2},{:.2},{:.1},{:.1}",
                t.tick,
                p.global_risk,
                model_trace.top.last().copied().unwrap_or(0),
                rule_global,
                rule_trace.top.last().copied().unwrap_or(0),
                u8::from(t.violation),
                fault.map_or(-1, |f| f.service as i64),
                fault.map_or("-", |f| if f.class == FaultClass::Gradual {
                    "g"
                } else {
                    "s"
                }),
                u8::from(t.stall),
                u8::from(t.burst),
                t.p99_ms,
                risks.iter().copied().fold(0.0, f32::max),
                queues[model_trace.top.last().copied().unwrap_or(0)],
                queues.iter().copied().fold(0.0, f64::max),
                self_p99[model_trace.top.last().copied().unwrap_or(0)],
                t.features[model_trace.top.last().copied().unwrap_or(0) * width + 10],
            );
        }
    }
    let status = model.status()?;
    let parameters = model.parameters()?;
    let model_scores = score(&model_trace, &violation, &faults, from, horizon, threshold);
    let rule_scores = score(&rule_trace, &violation, &faults, from, horizon, 0.5);
    Ok(EvalReport {
        seed: cfg.world.seed,
        ticks,
        scored_from: from,
        model: PredictorReport {
            scores: model_scores,
            train_step_ms: f64::from(status.train_step_ms.unwrap_or(0.0)),
            infer_ms: median(&mut infer),
        },
        baseline: PredictorReport {
            scores: rule_scores,
            train_step_ms: 0.0,
            infer_ms: median(&mut infer_rule),
        },
        model_version: status.version,
        parameters,
        mode: status.mode,
        predicting_share: predicting as f64 / (ticks - from).max(1) as f64,
        wall_s: started.elapsed().as_secs_f64(),
    })
}

/// Speed of one model configuration, measured through the handle on one libtorch thread.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Speed {
    /// Median `observe` call (all services of one tick), ms.
    pub infer_ms: f64,
    /// Median training step, ms.
    pub train_step_ms: f64,
    /// Mean prediction time on the model thread alone (without the channel round trip), ms.
    pub infer_thread_ms: f64,
    /// Trainable parameters.
    pub parameters: usize,
}

/// Measures inference for `services` services with a `window`-tick history, and training steps
/// of `batch_ticks` ticks (so `batch_ticks x services` windows), `iters` times each.
///
/// # Errors
///
/// Any [`ModelError`] from the model.
pub fn speed(
    services: usize,
    window: usize,
    batch_ticks: usize,
    iters: usize,
) -> Result<Speed, ModelError> {
    let cfg = ModelConfig::default()
        .with_window(window)
        .with_horizon(5)
        .with_batch_ticks(batch_ticks)
        .with_train_every(0)
        .with_threads(1);
    let model = ModelHandle::spawn(cfg)?;
    let names: Vec<String> = (0..services).map(|i| format!("svc-{i}")).collect();
    let edges: Vec<(usize, usize)> = (1..services).map(|i| ((i - 1) / 3, i)).collect();
    let width = FEATURES.len();
    let mut infer = Vec::with_capacity(iters);
    let warm = window + 10;
    for k in 0..(warm + iters) {
        let features: Vec<f32> = (0..services * width)
            .map(|i| ((i * 31 + k * 17) % 23) as f32 * 0.1)
            .collect();
        let input = TickFeatures {
            tick: k as u64,
            services: &names,
            features: &features,
            feature_names: FEATURES,
            edges: &edges,
            node: &[],
        };
        let t0 = Instant::now();
        model.observe(&input)?;
        if k >= warm {
            infer.push(t0.elapsed().as_secs_f64() * 1000.0);
        }
        model.outcome(&Outcome {
            tick: k as u64,
            violation: k % 7 == 0,
            culprit: Some(names[k % services].as_str()),
        })?;
    }
    let mut train = Vec::with_capacity(iters);
    model.train(3)?;
    for _ in 0..iters {
        let t0 = Instant::now();
        let losses = model.train(1)?;
        if losses.is_empty() {
            return Err(ModelError::Input(
                "no matured samples to train on".to_owned(),
            ));
        }
        train.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    let status = model.status()?;
    Ok(Speed {
        infer_thread_ms: f64::from(status.infer_ms.unwrap_or(0.0)),
        infer_ms: median(&mut infer),
        train_step_ms: median(&mut train),
        parameters: model.parameters()?,
    })
}
