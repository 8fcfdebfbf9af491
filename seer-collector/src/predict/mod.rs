//! The predictor seam: what the collector asks of a model.
//!
//! The collector owns this trait. `seer-model` plugs in behind the default `model` feature; a
//! reactive baseline (queue depth and latency against an EWMA baseline) is always available.
//!
//! Calls come from one dedicated thread (never an async worker), once per tick, in tick order:
//! first [`Predictor::observe`] with that tick's aligned features, then [`Predictor::outcome`]
//! with what the QoS evaluator saw in that tick. A predictor matures its own labels: the input
//! of tick `t` is labelled once the outcomes up to `t + H` are known.
//!
//! Around the seam: [`ReactivePredictor`] (the always-available baseline), [`advice`] (the
//! documented policy from risk to `admit_fraction`/`max_in_flight`), [`diagnosis`] (the scarce
//! resource of a flagged service), [`alerts`] and [`thread`] (the OS thread that drives any
//! `Box<dyn Predictor>` once per tick).

pub mod advice;
pub mod alerts;
pub mod diagnosis;
#[cfg(feature = "model")]
pub mod model;
mod reactive;
pub mod thread;

#[cfg(feature = "model")]
pub use model::ModelPredictor;
pub use reactive::{ReactiveConfig, ReactivePredictor};

/// Names of the per-service features, in column order of [`TickInput::features`].
///
/// These are the "own queue" signals that name a culprit (local in-flight, queue wait, self
/// latency, run-queue wait, throttling) plus the load and latency context.
pub const FEATURES: &[&str] = &[
    "arrivals_rps",
    "inflight_mean",
    "local_inflight_mean",
    "queue_depth_mean",
    "queue_wait_p99_ms",
    "self_latency_p50_ms",
    "self_latency_p99_ms",
    "latency_p99_ms",
    "error_rate",
    "shed_rate",
    "runq_wait_ms_per_s",
    "cpu_used_cores",
    "throttled_ms_per_s",
];

/// One tick of aligned per-service features.
#[derive(Debug, Clone, Copy)]
pub struct TickInput<'a> {
    /// Tick index: `tick_start_unix_ns / tick_ns`.
    pub tick: u64,
    /// Service names; row `i` of `features` belongs to `services[i]`. The set may change between
    /// ticks (services come and go).
    pub services: &'a [String],
    /// `services.len() * feature_names.len()` values, row-major. Missing values are `NaN`.
    pub features: &'a [f32],
    /// Column names (normally [`FEATURES`]).
    pub feature_names: &'a [&'static str],
    /// Call-graph edges, caller -> callee, as indices into `services`.
    pub edges: &'a [(usize, usize)],
}

/// What the QoS evaluator saw in one tick.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TickOutcome<'a> {
    /// Tick index.
    pub tick: u64,
    /// The windowed percentile exceeded its target in this tick.
    pub violation: bool,
    /// A violation episode began in this tick.
    pub episode_start: bool,
    /// The culprit of the ongoing episode, if known: injected ground truth when a run provides
    /// it, else the collector's critical-path attribution.
    pub culprit: Option<&'a str>,
}

/// How predictions were made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// The model is training and not yet trusted; the reactive baseline answers.
    Learning,
    /// The model answers.
    Predicting,
    /// The model's recent precision fell below the floor; the reactive baseline answers.
    Fallback,
}

/// One service's prediction.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ServicePrediction {
    /// Service name.
    pub service: String,
    /// P(this service causes a QoS violation within the horizon), 0..1.
    pub risk: f32,
}

/// Predictions for one tick.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PredictionSet {
    /// Tick index the predictions were made at.
    pub tick: u64,
    /// Which answered.
    pub mode: Mode,
    /// Model version (0 for the reactive baseline).
    pub model_version: u64,
    /// P(a QoS violation within the horizon), 0..1.
    pub global_risk: f32,
    /// Per-service risk, one entry per input service, same order.
    pub services: Vec<ServicePrediction>,
    /// Recent precision of alarms on matured labels, when known.
    pub precision: Option<f32>,
    /// Recent recall on matured labels, when known.
    pub recall: Option<f32>,
}

/// A predictor of QoS violations and their culprit.
///
/// Implementations are driven by one thread and may block for the duration of a tick (e.g. to
/// run a network); they must not panic on any input (unknown services, `NaN`s, empty ticks).
pub trait Predictor: Send {
    /// Short name for logs and the API (`"reactive"`, `"cnn-lstm"`).
    fn name(&self) -> &'static str;

    /// Sees one tick's features and predicts.
    fn observe(&mut self, input: &TickInput<'_>) -> PredictionSet;

    /// Learns what happened in a tick (labels mature `H` ticks later inside the predictor).
    fn outcome(&mut self, outcome: &TickOutcome<'_>);

    /// Counters for `/metrics`, read once per tick after [`Predictor::outcome`]. The default
    /// reports nothing (a predictor that does not train).
    fn stats(&self) -> PredictorStats {
        PredictorStats::default()
    }
}

/// Counters a predictor exposes on `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PredictorStats {
    /// Training steps taken since start.
    pub train_steps: u64,
}

impl PredictorStats {
    /// Stats with `train_steps` set.
    pub fn with_train_steps(mut self, train_steps: u64) -> Self {
        self.train_steps = train_steps;
        self
    }
}
