//! Model configuration: window, horizon, widths, feature set, training and mode gating.

use std::path::PathBuf;

/// The default input features: the "own queue" signals that name a culprit (see the crate docs),
/// plus arrivals and inclusive latency for load and QoS context, and the two slow signals of a
/// service losing headroom before its queue builds: its median own latency (the p99's spikes do
/// not reach it) and the CPU it uses. Names follow the collector's feature columns.
pub const DEFAULT_FEATURES: &[&str] = &[
    "queue_depth_mean",
    "latency_p99_ms",
    "local_inflight_mean",
    "queue_wait_p99_ms",
    "self_latency_p99_ms",
    "runq_wait_ms_per_s",
    "throttled_ms_per_s",
    "arrivals_rps",
    "self_latency_p50_ms",
    "cpu_used_cores",
];

/// Everything that shapes the network, its training and when it is trusted.
///
/// Build one with [`ModelConfig::default`] and the `with_*` setters. The defaults are:
///
/// | setting | default | meaning |
/// |---|---|---|
/// | `window` | 64 ticks | history W each prediction sees (6.4 s at 100 ms ticks) |
/// | `horizon` | 30 ticks | H: predict a violation within the next H ticks (3 s) |
/// | `features` | [`DEFAULT_FEATURES`] | input columns, picked by name from each tick |
/// | `conv_channels` | 32 | width of both convolution layers (stride 2 each: W/4 LSTM steps) |
/// | `lstm_hidden` | 48 | LSTM state width |
/// | `embed` | 32 | per-service embedding width after the neighbour mix |
/// | `threads` | 1 | libtorch intra-op threads |
/// | `learning_rate` | 2e-3 | Adam, decayed as `1 / sqrt(1 + steps / 2000)` |
/// | `batch_ticks` | 8 | ticks per training batch (all their services are the batch) |
/// | `train_every` | 2 | one training step per this many observed ticks |
/// | `replay_capacity` | 4096 | matured samples kept per class (violation / healthy) |
/// | `positive_fraction` | 0.5 | share of violation samples in a batch (upsampling) |
/// | `history` | 16384 ticks | normalised frames kept for replay windows |
/// | `smoothing` | 0.2 | weight of a new tick in the exponentially smoothed risks while they rise |
/// | `decay` | 0.1 | weight of a new tick while they fall (slower: an alarm does not flicker off and on as a fault builds) |
/// | `threshold` | 0.5 | risk at or above which a prediction is an alarm |
/// | `score_window` | 3000 ticks | matured ticks behind the online precision / recall |
/// | `min_train_steps` | 300 | steps before the model may leave learning mode |
/// | `min_positives` | 50 | matured violation ticks scored before leaving learning mode |
/// | `precision_floor` | 0.8 | below it the model falls back to the reactive rule |
/// | `recall_floor` | 0.5 | below it the model has not earned its place yet, and (once 20 violation ticks have matured in the score window) falls back |
/// | `checkpoint` | none | file written every `checkpoint_every` steps and on shutdown |
/// | `checkpoint_every` | 500 steps | |
/// | `seed` | 0 | seeds libtorch and the replay sampler |
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub(crate) window: usize,
    pub(crate) horizon: usize,
    pub(crate) features: Vec<String>,
    pub(crate) conv_channels: i64,
    pub(crate) lstm_hidden: i64,
    pub(crate) embed: i64,
    pub(crate) threads: usize,
    pub(crate) learning_rate: f64,
    pub(crate) batch_ticks: usize,
    pub(crate) train_every: usize,
    pub(crate) replay_capacity: usize,
    pub(crate) positive_fraction: f64,
    pub(crate) history: usize,
    pub(crate) smoothing: f32,
    pub(crate) decay: f32,
    pub(crate) threshold: f32,
    pub(crate) score_window: usize,
    pub(crate) min_train_steps: u64,
    pub(crate) min_positives: u64,
    pub(crate) precision_floor: f32,
    pub(crate) recall_floor: f32,
    pub(crate) checkpoint: Option<PathBuf>,
    pub(crate) checkpoint_every: u64,
    pub(crate) seed: u64,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            window: 64,
            horizon: 30,
            features: DEFAULT_FEATURES.iter().map(|s| (*s).to_owned()).collect(),
            conv_channels: 32,
            lstm_hidden: 48,
            embed: 32,
            threads: 1,
            learning_rate: 2e-3,
            batch_ticks: 8,
            train_every: 2,
            replay_capacity: 4096,
            positive_fraction: 0.5,
            history: 16384,
            smoothing: 0.2,
            decay: 0.1,
            threshold: 0.5,
            score_window: 3000,
            min_train_steps: 300,
            min_positives: 50,
            precision_floor: 0.8,
            recall_floor: 0.5,
            checkpoint: None,
            checkpoint_every: 500,
            seed: 0,
        }
    }
}

macro_rules! setter {
    ($(#[$doc:meta])* $name:ident, $field:ident: $ty:ty) => {
        $(#[$doc])*
        #[must_use]
        pub fn $name(mut self, $field: $ty) -> Self {
            self.$field = $field;
            self
        }
    };
}

impl ModelConfig {
    setter!(
        /// Ticks of history per prediction (W, at least 4).
        with_window, window: usize
    );
    setter!(
        /// Prediction horizon in ticks (H, at least 1).
        with_horizon, horizon: usize
    );
    setter!(
        /// Width of the convolution layers.
        with_conv_channels, conv_channels: i64
    );
    setter!(
        /// Width of the LSTM state.
        with_lstm_hidden, lstm_hidden: i64
    );
    setter!(
        /// Width of the per-service embedding.
        with_embed, embed: i64
    );
    setter!(
        /// libtorch intra-op threads (at least 1).
        with_threads, threads: usize
    );
    setter!(
        /// Adam learning rate.
        with_learning_rate, learning_rate: f64
    );
    setter!(
        /// Ticks per training batch.
        with_batch_ticks, batch_ticks: usize
    );
    setter!(
        /// One training step per this many observed ticks (0 disables online training).
        with_train_every, train_every: usize
    );
    setter!(
        /// Matured samples kept per class.
        with_replay_capacity, replay_capacity: usize
    );
    setter!(
        /// Share of violation samples per batch.
        with_positive_fraction, positive_fraction: f64
    );
    setter!(
        /// Normalised frames kept for replay.
        with_history, history: usize
    );
    /// Weight of a new tick in the smoothed risks, rising and falling alike (1 = no smoothing).
    /// Call [`with_decay`](Self::with_decay) afterwards for a different weight while they fall.
    #[must_use]
    pub fn with_smoothing(mut self, smoothing: f32) -> Self {
        self.smoothing = smoothing;
        self.decay = smoothing;
        self
    }
    setter!(
        /// Weight of a new tick in the smoothed risks while they fall.
        with_decay, decay: f32
    );
    setter!(
        /// Alarm threshold on risk.
        with_threshold, threshold: f32
    );
    setter!(
        /// Matured ticks behind the online precision and recall.
        with_score_window, score_window: usize
    );
    setter!(
        /// Training steps before the model may leave learning mode.
        with_min_train_steps, min_train_steps: u64
    );
    setter!(
        /// Matured violation ticks needed before the model may leave learning mode.
        with_min_positives, min_positives: u64
    );
    setter!(
        /// Precision below which the model falls back to the reactive rule.
        with_precision_floor, precision_floor: f32
    );
    setter!(
        /// Recall the model must reach before it is trusted.
        with_recall_floor, recall_floor: f32
    );
    setter!(
        /// Training steps between checkpoints.
        with_checkpoint_every, checkpoint_every: u64
    );
    setter!(
        /// Seed for libtorch and the replay sampler.
        with_seed, seed: u64
    );

    /// The input feature columns, by name.
    #[must_use]
    pub fn with_features<I, S>(mut self, features: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.features = features.into_iter().map(Into::into).collect();
        self
    }

    /// Where to keep the checkpoint; it is loaded at start when present.
    #[must_use]
    pub fn with_checkpoint(mut self, path: impl Into<PathBuf>) -> Self {
        self.checkpoint = Some(path.into());
        self
    }

    /// History window W in ticks.
    pub fn window(&self) -> usize {
        self.window
    }

    /// Horizon H in ticks.
    pub fn horizon(&self) -> usize {
        self.horizon
    }

    /// Input feature names.
    pub fn features(&self) -> &[String] {
        &self.features
    }

    /// Alarm threshold on risk.
    pub fn threshold(&self) -> f32 {
        self.threshold
    }

    /// Input channels per tick: each feature appears normalised online, relative to the other
    /// services and relative to the service's own baseline, plus one presence channel.
    pub(crate) fn channels(&self) -> usize {
        3 * self.features.len() + 1
    }

    /// Checks the settings; the message names the first bad one.
    pub(crate) fn validate(&self) -> Result<(), String> {
        let checks: [(bool, &str); 11] = [
            (
                self.smoothing > 0.0 && self.smoothing <= 1.0,
                "smoothing must be within (0, 1]",
            ),
            (
                self.decay > 0.0 && self.decay <= 1.0,
                "decay must be within (0, 1]",
            ),
            (self.window >= 4, "window must be at least 4 ticks"),
            (self.horizon >= 1, "horizon must be at least 1 tick"),
            (!self.features.is_empty(), "the feature set is empty"),
            (
                self.conv_channels >= 1 && self.lstm_hidden >= 1 && self.embed >= 1,
                "widths must be positive",
            ),
            (self.threads >= 1, "threads must be at least 1"),
            (self.batch_ticks >= 1, "batch_ticks must be at least 1"),
            (
                (0.0..=1.0).contains(&self.positive_fraction),
                "positive_fraction must be within 0..=1",
            ),
            (
                self.history > self.window + self.horizon,
                "history must exceed window + horizon",
            ),
            (
                self.replay_capacity >= 1 && self.score_window >= 1,
                "replay_capacity and score_window must be positive",
            ),
        ];
        match checks.iter().find(|(ok, _)| !ok) {
            Some((_, msg)) => Err((*msg).to_owned()),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_setters_apply() {
        let cfg = ModelConfig::default();
        assert!(cfg.validate().is_ok());
        assert_eq!(cfg.channels(), 3 * DEFAULT_FEATURES.len() + 1);
        let cfg = cfg.with_window(2);
        assert!(cfg.validate().is_err());
        let cfg = ModelConfig::default()
            .with_features(["a", "b"])
            .with_horizon(5);
        assert_eq!(cfg.features(), ["a", "b"]);
        assert_eq!(cfg.horizon(), 5);
        let cfg = ModelConfig::default().with_smoothing(0.5);
        assert_eq!((cfg.smoothing, cfg.decay), (0.5, 0.5));
        let cfg = cfg.with_decay(0.05);
        assert_eq!((cfg.smoothing, cfg.decay), (0.5, 0.05));
        assert!(ModelConfig::default().with_decay(0.0).validate().is_err());
    }
}
