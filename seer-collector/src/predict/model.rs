//! The CNN+LSTM predictor (feature `model`): `seer-model`'s online-learning network behind the
//! [`Predictor`] seam, with the reactive baseline answering until the model has earned its place.
//!
//! Every tick goes to both: the model (to learn and to keep its own precision and recall on
//! matured labels) and the [`ReactivePredictor`] (to keep its baselines warm). Which answer is
//! served follows the model's [`seer_model::Mode`]:
//!
//! | model mode | served predictions | reported mode |
//! |---|---|---|
//! | predicting | the model's | [`Mode::Predicting`] |
//! | learning | the reactive rule's | [`Mode::Learning`] |
//! | fallback (recent precision under the floor) | the reactive rule's | [`Mode::Fallback`] |
//! | the model thread failed | the reactive rule's | [`Mode::Fallback`] |
//!
//! The model version and its recent precision and recall are reported in every mode.

use seer_model::{ModelConfig, ModelError, ModelHandle, Outcome, TickFeatures};

use super::{
    Mode, PredictionSet, Predictor, PredictorStats, ReactivePredictor, ServicePrediction,
    TickInput, TickOutcome,
};

/// [`seer_model::ModelHandle`] as a [`Predictor`], falling back to a [`ReactivePredictor`].
#[derive(Debug)]
pub struct ModelPredictor {
    model: ModelHandle,
    reactive: ReactivePredictor,
    start_version: u64,
    version: u64,
    failures: u64,
}

impl ModelPredictor {
    /// Starts the model thread with `config` (loading its checkpoint when one is configured).
    ///
    /// # Errors
    ///
    /// Whatever [`ModelHandle::spawn`] reports (bad configuration, libtorch failure). A corrupt
    /// or mismatched checkpoint is not an error: the model starts fresh.
    pub fn new(config: ModelConfig) -> Result<Self, ModelError> {
        let model = ModelHandle::spawn(config)?;
        let start_version = model.status()?.version;
        Ok(Self {
            model,
            reactive: ReactivePredictor::new(),
            start_version,
            version: start_version,
            failures: 0,
        })
    }

    /// Uses `reactive` as the fallback rule.
    #[must_use]
    pub fn with_reactive(mut self, reactive: ReactivePredictor) -> Self {
        self.reactive = reactive;
        self
    }

    /// The model behind this predictor (for status, checkpoints or extra training).
    pub fn handle(&self) -> &ModelHandle {
        &self.model
    }

    /// Model calls that failed since start (each answered by the reactive rule).
    pub fn failures(&self) -> u64 {
        self.failures
    }
}

fn mode_of(mode: seer_model::Mode) -> Mode {
    match mode {
        seer_model::Mode::Learning => Mode::Learning,
        seer_model::Mode::Predicting => Mode::Predicting,
        seer_model::Mode::Fallback => Mode::Fallback,
    }
}

impl Predictor for ModelPredictor {
    fn name(&self) -> &'static str {
        "cnn-lstm"
    }

    fn observe(&mut self, input: &TickInput<'_>) -> PredictionSet {
        let mut fallback = self.reactive.observe(input);
        let names: &[&str] = input.feature_names;
        let answer = self.model.observe(&TickFeatures {
            tick: input.tick,
            services: input.services,
            features: input.features,
            feature_names: names,
            edges: input.edges,
            node: &[],
        });
        match answer {
            Ok(p) => {
                self.version = p.model_version;
                let mode = mode_of(p.mode);
                if mode == Mode::Predicting {
                    return PredictionSet {
                        tick: p.tick,
                        mode,
                        model_version: p.model_version,
                        global_risk: p.global_risk,
                        services: p
                            .services
                            .into_iter()
                            .map(|s| ServicePrediction {
                                service: s.service,
                                risk: s.risk,
                            })
                            .collect(),
                        precision: p.precision,
                        recall: p.recall,
                    };
                }
                fallback.mode = mode;
                fallback.model_version = p.model_version;
                fallback.precision = p.precision;
                fallback.recall = p.recall;
                fallback
            }
            Err(err) => {
                self.failures += 1;
                if self.failures == 1 || self.failures.is_power_of_two() {
                    tracing::warn!(error = %err, failures = self.failures, "model predict failed; the reactive rule answers");
                }
                fallback.mode = Mode::Fallback;
                fallback
            }
        }
    }

    fn outcome(&mut self, outcome: &TickOutcome<'_>) {
        self.reactive.outcome(outcome);
        if let Err(err) = self.model.outcome(&Outcome {
            tick: outcome.tick,
            violation: outcome.violation,
            culprit: outcome.culprit,
        }) {
            self.failures += 1;
            if self.failures == 1 || self.failures.is_power_of_two() {
                tracing::warn!(error = %err, "model outcome failed");
            }
        }
    }

    fn stats(&self) -> PredictorStats {
        PredictorStats::default().with_train_steps(self.version.saturating_sub(self.start_version))
    }
}
